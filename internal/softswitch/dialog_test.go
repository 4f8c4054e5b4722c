package softswitch_test

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/softswitch"
)

// TestLostBYEEndsAtMaxAge: a call out through a trunk, its media not
// anchored (nothing watches the RTP), whose BYE never comes: at
// dialog.max_age the switch sends a BYE each way, the trunk channel and
// the caller's call slot come back, and the CDR says why. Before the
// dialog layer such a call held its channel for ever.
func TestLostBYEEndsAtMaxAge(t *testing.T) {
	down, up := freePort(t), freePort(t)
	sw := start(t, t.TempDir(), func(c *config.Config) {
		carriers(down, up, freePort(t), 1)(c)
		c.DialPlan[0].Trunks = []string{"up"}
		c.Media.Anchor = "never"
		c.Dialog.SessionExpires = 0 // no timer offered: the age bound applies
		c.Dialog.MaxAge = 2 * time.Second
	})
	carrier := sippAsync(t, "uas_timeout.xml", up, "udp", "-key", "rtp_port", strconv.Itoa(freePort(t)))
	caller := sippGo(t, sw.udp, "uac_timeout.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-mp", strconv.Itoa(mediaPorts(t)))
	waitFor(t, 5*time.Second, "the call to take the channel", func() bool { return sw.Gateway().Trunk("up").Channels() == 1 })
	for who, tr := range map[string]string{"caller": <-caller, "carrier": carrier()} {
		if !strings.Contains(tr, "BYE sip:") || !strings.Contains(tr, `text="maximum dialog age"`) {
			t.Errorf("%s got no BYE for the dialog's age:\n%s", who, tr)
		}
	}
	waitFor(t, 5*time.Second, "the dialog to end", func() bool { return sw.Dialogs.Len() == 0 })
	if n := sw.Gateway().Trunk("up").Channels(); n != 0 {
		t.Errorf("trunk channels after the expiry: %d, want 0", n)
	}
	if n := sw.Guard.Dialogs.Held(netip.MustParseAddr("127.0.0.1")); n != 0 {
		t.Errorf("the caller still holds %d call slots", n)
	}
	cdr := readCDRs(t, sw, 1)[0]
	if cdr.HangupBy != "system" || cdr.EndReason != "maximum dialog age" || cdr.Trunk != "up" || cdr.Status != 200 || cdr.Answer == nil {
		t.Errorf("CDR %+v", cdr)
	}
	if sw.Dialogs.Expired.Load() != 1 {
		t.Errorf("dialogs expired = %d, want 1", sw.Dialogs.Expired.Load())
	}
}

// TestSessionTimerThroughProxy: the caller supports session timers, the
// callee does not. The switch offers dialog.session_expires downstream,
// tells the caller in the 2xx to refresh (refresher=uac, Require: timer),
// and when no refresh comes sends a BYE each way at the interval's end.
func TestSessionTimerThroughProxy(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Dialog.MinSE = time.Second // RFC 4028 says 90 s; a test cannot wait that long
		c.Dialog.SessionExpires = 3 * time.Second
		c.Media.Anchor = "never"
	})
	calleePort := freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	callee := sippAsync(t, "uas_timeout.xml", calleePort, "udp", "-key", "rtp_port", strconv.Itoa(freePort(t)))
	caller := sippGo(t, sw.udp, "uac_timeout.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-mp", strconv.Itoa(mediaPorts(t)))
	callerTrace, calleeTrace := <-caller, callee()
	if !strings.Contains(calleeTrace, "Session-Expires: 3") {
		t.Errorf("the INVITE reached the callee without the switch's Session-Expires:\n%s", calleeTrace)
	}
	if !strings.Contains(callerTrace, "Session-Expires: 3;refresher=uac") || !strings.Contains(callerTrace, "Require: timer") {
		t.Errorf("the caller's 2xx does not ask it to refresh:\n%s", callerTrace)
	}
	for who, tr := range map[string]string{"caller": callerTrace, "callee": calleeTrace} {
		if !strings.Contains(tr, `text="session expired"`) {
			t.Errorf("%s got no BYE when the session expired:\n%s", who, tr)
		}
	}
	waitFor(t, 5*time.Second, "the dialog to end", func() bool { return sw.Dialogs.Len() == 0 })
}

// TestSessionIntervalTooSmall: an INVITE asking for less than
// dialog.min_se gets 422 with Min-SE, and takes nothing.
func TestSessionIntervalTooSmall(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	sw.register(t, "1002", "udp", freePort(t))
	c, err := net.Dial("udp", sw.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	la := c.LocalAddr().String()
	fmt.Fprintf(c, "INVITE sip:1002@voxvisor.local SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-se30;rport\r\n"+
		"From: <sip:alice@elsewhere.example>;tag=se30\r\nTo: <sip:1002@voxvisor.local>\r\nCall-ID: se30@%s\r\n"+
		"CSeq: 1 INVITE\r\nContact: <sip:alice@%s>\r\nSupported: timer\r\nSession-Expires: 30\r\n"+
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", la, la, la)
	buf := make([]byte, 65535)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	final := ""
	for final == "" {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no final answer: %v", err)
		}
		if res := string(buf[:n]); !strings.HasPrefix(res, "SIP/2.0 1") {
			final = res
		}
	}
	if !strings.HasPrefix(final, "SIP/2.0 422 ") || !strings.Contains(final, "Min-SE: 90") {
		t.Fatalf("Session-Expires: 30: want 422 with Min-SE: 90, got\n%s", final)
	}
	if sw.Dialogs.Len() != 0 {
		t.Fatalf("%d dialogs left by a refused INVITE", sw.Dialogs.Len())
	}
}

// TestNewUndoesWhatItMade: a switch that cannot bind one of its
// listeners fails to start and closes what it had opened (the location
// store's lock, the CDR file, the sockets bound), so the next start on the
// same data_dir works.
func TestNewUndoesWhatItMade(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg, err := config.Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.Admin.Listen = dir, "off"
	cfg.SIP.Listen = []config.Listener{{Transport: "udp", Address: "127.0.0.1:0"}, {Transport: "tcp", Address: taken.Addr().String()}}
	if _, err := softswitch.New(cfg, logging.Discard()); err == nil || !strings.Contains(err.Error(), "listen tcp") {
		t.Fatalf("start on a taken port: %v, want a listen error", err)
	}
	sw := start(t, dir, nil) // fails (after 2 s) if the store's lock was left held
	sw.stop()
}
