package softswitch_test

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/internal/config"
)

// TestSoak: SIPp places hundreds of calls through voxvisor at once, of
// every kind a deployment sees: calls hung up normally, callers that
// never send BYE (the media timeout ends them), callees that vanish after
// their 200 (the BYE to them goes unanswered), CANCEL racing the answer,
// calls out through a trunk, a port pool too small for the load (503s),
// operator hang-ups, and a reload every 2 s that takes the trunks away
// and brings them back. Afterwards nothing is left: no dialog, no relay
// session or port, no trunk channel, no per-source count, goroutines back
// near where they were, the heap bounded, one CDR per call begun, and no
// panic.
func TestSoak(t *testing.T) {
	down, up := freePort(t), freePort(t)
	sw := start(t, t.TempDir(), func(c *config.Config) {
		carriers(down, up, freePort(t), 20)(c)
		c.DialPlan[0].Trunks = []string{"up"}
		c.Limits.Rate = 0 // every SIPp is 127.0.0.1: a flood limit would block the test itself
		c.Media.PortMin, c.Media.PortMax = 21000, 21000+2*12-1
		c.Media.Timeout = 2 * time.Second
		c.SIP.RingTimeout = 3 * time.Second
		c.Dialog.MaxAge = 20 * time.Second
	})
	withTrunks := sw.Config
	noTrunks := *sw.Config
	noTrunks.Trunks, noTrunks.DialPlan = nil, nil

	p1002, p1003 := freePort(t), freePort(t)
	sw.register(t, "1002", "udp", p1002)
	sw.register(t, "1003", "udp", p1003)
	sippDaemon(t, "uas_soak.xml", p1002)
	sippDaemon(t, "uas_vanish.xml", p1003, "-default_behaviors", "none")
	sippDaemon(t, "uas_soak.xml", up)

	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var baseMem runtime.MemStats
	runtime.ReadMemStats(&baseMem)

	// The load: each line one SIPp, its calls at a rate, all from 1001.
	type load struct {
		scenario, to string
		rate, calls  int
	}
	loads := []load{
		{"uac_call.xml", "1002", 4, 160},        // hung up by the caller
		{"uac_call.xml", "030123456", 2, 80},    // out through the trunk (or 403/404 while it is gone)
		{"uac_timeout.xml", "1002", 1, 30},      // never hung up: the media timeout ends them
		{"uac_cancel.xml", "1002", 2, 80},       // CANCEL racing the answer
		{"uac_call.xml", "1003", 1, 30},         // the callee vanishes after its 200
		{"uac_timeout.xml", "030777001", 1, 20}, // out through the trunk, never hung up
	}
	var wg sync.WaitGroup
	for _, l := range loads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sippLoad(t, sw.udp, l.scenario, "-s", l.to, "-key", "user", "1001", "-au", "1001", "-ap", "demo1001",
				"-r", strconv.Itoa(l.rate), "-m", strconv.Itoa(l.calls), "-l", "20")
		}()
	}
	loaded := make(chan struct{})
	go func() {
		wg.Wait()
		close(loaded)
	}()

	// Meanwhile: a reload every 2 s, alternately without and with the
	// trunks, and an operator hanging up a call now and then.
	reloads, overlapped, hangups := 0, 0, 0
	reload := time.NewTicker(2 * time.Second)
	hangup := time.NewTicker(700 * time.Millisecond)
	defer reload.Stop()
	defer hangup.Stop()
	for running := true; running; {
		select {
		case <-loaded:
			running = false
		case <-reload.C:
			cfg := withTrunks
			if reloads%2 == 0 {
				cfg = &noTrunks
			}
			if sw.Dialogs.Len() > 0 {
				overlapped++
			}
			if err := sw.Reload(cfg); err != nil {
				t.Fatalf("reload %d: %v", reloads, err)
			}
			reloads++
		case <-hangup.C:
			if ds := sw.Dialogs.Dialogs(); len(ds) > 0 {
				if sw.Hangup(ds[rand.IntN(len(ds))].ID, "operator", "soak") {
					hangups++
				}
			}
		}
	}
	if err := sw.Reload(withTrunks); err != nil {
		t.Fatal(err)
	}

	// Settle: the BYEs to the vanished callee time out (Timer F, 32 s);
	// finished transactions linger.
	src := netip.MustParseAddr("127.0.0.1")
	settled := func() bool {
		return sw.Dialogs.Len() == 0 && sw.Relay.Len() == 0 && sw.Relay.Allocator().InUse() == 0 && sw.Anchor.Calls() == 0 &&
			sw.Gateway().Trunk("up").Channels() == 0 && sw.Guard.Dialogs.Held(src) == 0 && sw.Guard.Streams.Held(src) == 0
	}
	deadline := time.Now().Add(60 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if !settled() {
		t.Errorf("left after the soak: %d dialogs, %d relay sessions, %d port pairs, %d anchored calls, %d trunk channels, %d call slots and %d stream slots of 127.0.0.1",
			sw.Dialogs.Len(), sw.Relay.Len(), sw.Relay.Allocator().InUse(), sw.Anchor.Calls(),
			sw.Gateway().Trunk("up").Channels(), sw.Guard.Dialogs.Held(src), sw.Guard.Streams.Held(src))
	}
	begun, ended := sw.Dialogs.Begun.Load(), sw.Dialogs.Ended.Load()
	cdrs, err := gateway.ReadCDRs(filepath.Join(sw.Config.DataDir, "cdr.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(cdrs)) != begun || ended != begun {
		t.Errorf("%d calls begun, %d ended, %d CDRs: want one CDR per call", begun, ended, len(cdrs))
	}
	if n := sw.Server.Stats.Panics.Load(); n != 0 {
		t.Errorf("%d requests panicked", n)
	}

	// The mix the soak claims happened.
	kinds := map[string]int{}
	for _, c := range cdrs {
		switch {
		case c.Status == 200 && c.HangupBy == "caller":
			kinds["hung up by the caller"]++
		case c.EndReason == "media timeout":
			kinds["media timeout"]++
		case c.HangupBy == "operator":
			kinds["operator"]++
		case c.Status == 487:
			kinds["cancelled"]++
		case c.Status == 503:
			kinds["503"]++
		case c.Trunk == "up" && c.Status == 200:
			kinds["trunk"]++
		}
	}
	t.Logf("soak: %d calls begun, %d reloads (%d with calls up), %d operator hang-ups; CDRs by kind: %v", begun, reloads, overlapped, hangups, kinds)
	for _, k := range []string{"hung up by the caller", "media timeout", "operator", "cancelled", "503"} {
		if kinds[k] == 0 {
			t.Errorf("no call of kind %q in the soak", k)
		}
	}
	if overlapped < 3 {
		t.Errorf("only %d reloads happened with calls up, want 3 or more", overlapped)
	}

	// Goroutines and heap back near where they were.
	deadline = time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > baseGoroutines+20 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseGoroutines+20 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the soak, %d before:\n%s", n, baseGoroutines, buf[:runtime.Stack(buf, true)])
	}
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	if grown := int64(mem.HeapAlloc) - int64(baseMem.HeapAlloc); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB over the soak", grown>>20)
	}
}

// sippDaemon runs a SIPp UAS on port for any number of calls until the
// test ends.
func sippDaemon(t *testing.T, scenario string, port int, args ...string) {
	t.Helper()
	bin := need(t, "sipp")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuf
	cmd, exited := startSIPp(t, ctx, cancel, bin, dir, &out, append([]string{"-sf", filepath.Join(mustAbs(t, "testdata/sipp"), scenario),
		"-t", "u1", "-p", strconv.Itoa(port), "-i", "127.0.0.1", "-nostdin", "-mp", strconv.Itoa(freePort(t) &^ 1)}, args...))
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	if !waitListeningOr("udp", port, cmd.Process.Pid, exited) {
		t.Fatalf("sipp UAS %s did not bind udp port %d:\n%s", scenario, port, out.String())
	}
}

// sippLoad runs a SIPp UAC against remote until its calls are placed and
// ended. Calls failing is part of a soak: only SIPp not running at all is
// an error.
func sippLoad(t *testing.T, remote, scenario string, args ...string) {
	bin := need(t, "sipp")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{remote, "-sf", filepath.Join(mustAbs(t, "testdata/sipp"), scenario),
		"-t", "u1", "-p", strconv.Itoa(freePort(t)), "-i", "127.0.0.1", "-nostdin", "-timeout", "150s",
		"-mp", strconv.Itoa(freePort(t) &^ 1)}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err != nil && code != 1 {
		// SIPp exits 1 when some calls failed: expected here.
		t.Errorf("sipp %s %v: %v (exit %d)\n%s", scenario, args, err, code, tail(out, 20))
	}
}
