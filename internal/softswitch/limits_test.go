package softswitch_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/sip/location"
)

// dialFrom opens a TCP connection to addr from local address ip.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func optionsMsg(via, callID string) string {
	return "OPTIONS sip:voxvisor.local SIP/2.0\r\nVia: " + via + ";branch=z9hG4bK" + callID + "\r\n" +
		"From: <sip:probe@elsewhere.example>;tag=1\r\nTo: <sip:voxvisor.local>\r\nCall-ID: " + callID + "\r\n" +
		"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// TestConnectionAndCallLimits: one source at its connection limit has
// further connections closed while another source registers over TCP;
// its slots come back when it closes. A source with a call in progress
// at a limit of one gets 503 for a second.
func TestConnectionAndCallLimits(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Limits.Connections, c.Limits.Dialogs = 2, 1
	})
	hog := netip.MustParseAddr("127.0.0.2")
	a, b := dialFrom(t, "127.0.0.2", sw.tcp), dialFrom(t, "127.0.0.2", sw.tcp)
	waitFor(t, 3*time.Second, "two connections held", func() bool { return sw.Guard.Conns.Held(hog) == 2 })
	if _, m := sw.api(t, "GET", "/metrics"); metric(m, `voxvisor_sip_connections{transport="tcp"}`) != 2 {
		t.Errorf("connections gauge:\n%s", grepLines(m, "sip_connections"))
	}
	extra := dialFrom(t, "127.0.0.2", sw.tcp)
	extra.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("a third connection from the same source was kept (read: %v)", err)
	}
	if n := sw.Guard.Conns.Blocks.Load(); n != 1 {
		t.Fatalf("blocks = %d, want 1", n)
	}
	sw.register(t, "1001", "tcp", freePort(t))

	a.Close()
	b.Close()
	waitFor(t, 3*time.Second, "the closed connections' slots back", func() bool { return sw.Guard.Conns.Held(hog) == 0 })
	c := dialFrom(t, "127.0.0.2", sw.tcp)
	fmt.Fprint(c, optionsMsg("SIP/2.0/TCP "+c.LocalAddr().String(), "conn-back"))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("the source is not served again after closing: %q %v", buf[:n], err)
	}

	// Calls: 1002 rings for 3 s; a second call from the same source
	// meanwhile is refused.
	calleePort := freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_slow.xml", calleePort, "udp")
	first := sippGo(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	src := netip.MustParseAddr("127.0.0.1")
	waitFor(t, 5*time.Second, "the first call in progress", func() bool { return sw.Guard.Dialogs.Held(src) == 1 })
	trace := sipp(t, sw.udp, "uac_expect.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "503 Too Many Calls From Source") || !strings.Contains(trace, "Retry-After:") {
		t.Errorf("second call from the source not refused:\n%s", trace)
	}
	<-first
	wait()
	waitFor(t, 3*time.Second, "the call's slot back", func() bool { return sw.Guard.Dialogs.Held(src) == 0 })
	sw.expectNoMedia(t)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestTransactionLimit: a source with two INVITEs ringing at a contact
// that never answers gets 503 for a third, while another source is
// served; the slots come back when the ring timeout ends them.
func TestTransactionLimit(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Limits.Transactions = 2
		c.SIP.RingTimeout = 2 * time.Second
	})
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	sw.Store.Update("1003@voxvisor.local", func([]location.Binding) ([]location.Binding, error) {
		return []location.Binding{{AOR: "1003@voxvisor.local", Contact: "sip:1003@" + silent.LocalAddr().String(),
			Source: silent.LocalAddr().String(), Transport: "udp", Expires: time.Now().Add(time.Hour)}}, nil
	})
	caller, err := net.ListenPacket("udp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	dst, _ := net.ResolveUDPAddr("udp", sw.udp)
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("tx-limit-%d", i)
		msg := "INVITE sip:1003@voxvisor.local SIP/2.0\r\nVia: SIP/2.0/UDP " + caller.LocalAddr().String() + ";branch=z9hG4bK" + id + ";rport\r\n" +
			"From: <sip:alice@elsewhere.example>;tag=" + id + "\r\nTo: <sip:1003@voxvisor.local>\r\nCall-ID: " + id + "\r\n" +
			"CSeq: 1 INVITE\r\nContact: <sip:alice@" + caller.LocalAddr().String() + ">\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
		caller.WriteTo([]byte(msg), dst)
		time.Sleep(100 * time.Millisecond)
	}
	buf := make([]byte, 4096)
	refused := false
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !refused; {
		caller.SetReadDeadline(deadline)
		n, _, err := caller.ReadFrom(buf)
		if err != nil {
			break
		}
		res := string(buf[:n])
		refused = strings.HasPrefix(res, "SIP/2.0 503 Too Many Requests In Progress") && strings.Contains(res, "tx-limit-3")
	}
	if !refused || sw.Guard.Txs.Blocks.Load() != 1 {
		t.Fatalf("third request in progress not refused (blocks %d)", sw.Guard.Txs.Blocks.Load())
	}
	if _, m := sw.api(t, "GET", "/metrics"); !strings.Contains(m, `voxvisor_source_limit_refused_total{limit="transactions"} 1`) {
		t.Errorf("metrics do not count the refusal:\n%s", m)
	}
	if got := options(t, sw.udp, "sip:voxvisor.local"); got != "200" {
		t.Fatalf("another source not served: %q", got)
	}
	src := netip.MustParseAddr("127.0.0.5")
	waitFor(t, 10*time.Second, "the ring timeout to end the two INVITEs", func() bool { return sw.Guard.Txs.Held(src) == 0 })
	sw.expectNoMedia(t)
}

// TestTrustedSourceNotLimited: a source in limits.trusted (an SBC, a load
// generator) sends far past the rate limit and is answered throughout.
func TestTrustedSourceNotLimited(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Limits.Rate, c.Limits.Burst = 20, 40
		c.Limits.Trusted = []string{"127.0.0.4"}
	})
	c, err := net.ListenPacket("udp", "127.0.0.4:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst, _ := net.ResolveUDPAddr("udp", sw.udp)
	const n = 300
	answered := 0
	buf := make([]byte, 4096)
	for i := 0; i < n; i++ {
		c.WriteTo([]byte(optionsMsg("SIP/2.0/UDP "+c.LocalAddr().String(), fmt.Sprintf("trusted-%d", i))), dst)
		if i%20 == 19 { // read as we go, so no socket buffer overflows
			for answered < i-10 {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, _, err := c.ReadFrom(buf); err != nil {
					break
				}
				answered++
			}
		}
	}
	for answered < n {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := c.ReadFrom(buf); err != nil {
			break
		}
		answered++
	}
	if answered != n || sw.Guard.Blocks.Load() != 0 {
		t.Fatalf("trusted source: %d of %d answered, %d blocks", answered, n, sw.Guard.Blocks.Load())
	}
}
