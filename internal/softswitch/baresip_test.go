package softswitch_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
)

// baresip starts one baresip softphone registered as user over UDP,
// quitting after quit; extra are -e commands. It returns a wait function.
func baresip(t *testing.T, sipPort int, user string, rtpLow int, quit time.Duration, extra ...string) func() {
	t.Helper()
	return baresipWith(t, phone{sipPort: sipPort, user: user, rtpLow: rtpLow}, quit, extra...)
}

// phone is one baresip's account and settings.
type phone struct {
	user      string
	sipPort   int    // the switch's port for transport
	transport string // udp (default) or tls
	params    string // more account parameters, e.g. ";mediaenc=srtp-mand"
	config    string // more config lines, e.g. "sip_cafile /path"
	modules   string // more modules, loaded before the accounts: "srtp.so"
	rtpLow    int
}

func baresipWith(t *testing.T, ph phone, quit time.Duration, extra ...string) func() {
	t.Helper()
	bin := need(t, "baresip")
	if ph.transport == "" {
		ph.transport = "udp"
	}
	user, sipPort, rtpLow := ph.user, ph.sipPort, ph.rtpLow
	dir := t.TempDir()
	port := freePort(t)
	mods := ""
	for _, m := range strings.Fields(ph.modules) {
		mods += "module " + m + "\n"
	}
	cfg := fmt.Sprintf(`sip_listen 127.0.0.1:%d
net_interface 127.0.0.1
module_path /usr/lib/baresip/modules
%s`+baresipTone+`rtp_ports %d-%d
%s
`, port, mods, user, user, rtpLow, rtpLow+100, ph.config)
	// The AOR names the port and transport, so baresip does no DNS lookup.
	acct := fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=%s>;auth_pass=demo%s;regint=600;answermode=auto;audio_codecs=PCMU%s\n",
		user, sipPort, ph.transport, user, ph.params)
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(acct), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", dir, "-t", fmt.Sprint(int(quit.Seconds()))}
	for _, e := range extra {
		args = append(args, "-e", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), quit+20*time.Second)
	cmd := exec.CommandContext(ctx, bin, args...)
	logf, _ := os.Create(filepath.Join(dir, "baresip.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := false
	wait := func() {
		if done {
			return
		}
		done = true
		cmd.Wait()
		cancel()
		logf.Close()
	}
	t.Cleanup(func() {
		if !done {
			cmd.Process.Kill()
		}
		wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "baresip.log"))
			t.Logf("baresip %s log:\n%s", user, tail(b, 30))
		}
	})
	return wait
}

// TestBaresipCallThroughRelay: two real softphones register, one calls the
// other, and audio flows both ways through the relay.
func TestBaresipCallThroughRelay(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		// baresip 1.0's libre fails a challenge list that includes
		// SHA-256 (ENOSYS) instead of skipping it: offer MD5 only, as an
		// operator with such phones would.
		c.Auth.Algorithms = []string{"MD5"}
	})
	sipPort := sw.Self.Listeners[0].Bound.Port()
	callee := baresip(t, int(sipPort), "1002", 41000, 12*time.Second)
	waitFor(t, 10*time.Second, "1002 registered", func() bool { return len(sw.Store.Lookup("1002@voxvisor.local")) > 0 })
	caller := baresip(t, int(sipPort), "1001", 41200, 8*time.Second, fmt.Sprintf("/dial sip:1002@127.0.0.1:%d", sipPort))

	var a, b, ka, kb uint64
	// media.kernel is auto and the tests run as root: after learning,
	// the kernel path forwards the audio.
	waitFor(t, 15*time.Second, "audio both ways through the relay, most of it by the kernel path", func() bool {
		ss := sw.Relay.Sessions()
		if len(ss) != 1 || ss[0].Stream(0) == nil {
			return false
		}
		st := ss[0].Stream(0).Stats()
		a, b, ka, kb = st[0].Packets, st[1].Packets, st[0].Kernel, st[1].Kernel
		return a > 100 && b > 100 && st[0].Sent > 100 && st[1].Sent > 100 && ka > a/2 && kb > b/2 && st[0].Offloaded && st[1].Offloaded
	})
	t.Logf("relay forwarded %d packets from the caller (%d by the kernel) and %d from the callee (%d)", a, ka, b, kb)
	caller()
	waitFor(t, 10*time.Second, "the hang-up to release the media", func() bool { return sw.Relay.Len() == 0 })
	if o := sw.Relay.OffloadStats(); o.Active != 0 || o.Installed < 2 {
		t.Fatalf("kernel flows after the call: %+v, want none left of at least 2 installed", o)
	}
	sw.expectNoMedia(t)
	callee()
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// baresipTone is the part of baresip's config the tests share: G.711, a
// 440 Hz tone for a microphone, the speaker and ring bridged to the
// aubridge devices named by its two %s.
const baresipTone = `module g711.so
module ausine.so
module aubridge.so
module account.so
module menu.so
audio_source ausine,440
audio_player aubridge,%s
audio_alert aubridge,%s
ausrc_srate 48000
auplay_srate 48000
ausrc_channels 2
`
