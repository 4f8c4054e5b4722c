package softswitch_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/softswitch"
	"github.com/voxvisor/voxvisor/internal/testenv"
)

// need returns the path of a tool the integration tests drive. Under
// CI=true a missing tool fails the test: `make test` installs it.
func need(t *testing.T, tool string) string {
	t.Helper()
	return testenv.Need(t, tool)
}

// running is a switch started for one test.
type running struct {
	*softswitch.Switch
	udp, tcp, tls string // bound addresses
	stop          func()
}

// start runs a switch on loopback port 0 with the default users and dir
// as its data directory.
func start(t *testing.T, dir string, mutate func(*config.Config)) *running {
	t.Helper()
	cfg, err := config.Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.SIP.DrainTime = 3 * time.Second
	cfg.SIP.Listen = []config.Listener{
		{Transport: "udp", Address: "127.0.0.1:0"},
		{Transport: "tcp", Address: "127.0.0.1:0"},
	}
	if mutate != nil {
		mutate(cfg)
	}
	log := logging.New(testWriter{t}, "warn", "text")
	sw, err := softswitch.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Serve(ctx) }()
	r := &running{Switch: sw}
	for _, l := range sw.Self.Listeners {
		switch l.Transport {
		case "udp":
			r.udp = l.Bound.String()
		case "tcp":
			r.tcp = l.Bound.String()
		case "tls":
			r.tls = l.Bound.String()
		}
	}
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// freePort returns a loopback port free for UDP and TCP at the moment.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// mediaPorts returns a base for SIPp's media ports (-mp): SIPp binds the
// base and the three after it (audio and video, RTP and RTCP), so all
// four are checked free, and they are taken below the kernel's ephemeral
// range (32768-60999) and the relays' (20000-29999), where no other
// socket of the run is given one of them from under SIPp.
func mediaPorts(t *testing.T) int {
	t.Helper()
	for range 1000 {
		base := 16000 + int(nextMedia.Add(4)%4000)
	probe:
		for {
			var held []net.PacketConn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for i := range 4 {
				c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", base+i))
				if err != nil {
					break probe
				}
				held = append(held, c)
			}
			return base
		}
	}
	t.Fatal("no four free media ports in 16000-19999")
	return 0
}

var nextMedia atomic.Int64

// sipp runs one SIPp scenario to completion and fails the test when SIPp
// reports a failed call. It returns SIPp's message trace.
func sipp(t *testing.T, remote, scenario string, port int, transport string, args ...string) string {
	t.Helper()
	return sippFrom(t, "127.0.0.1", remote, scenario, port, transport, args...)
}

// sippGo runs sipp on its own goroutine: a failure is reported with
// t.Error, never t.Fatal, so the test goroutine waiting on the result
// cannot hang. The channel yields the trace ("" on failure).
func sippGo(t *testing.T, remote, scenario string, port int, transport string, args ...string) <-chan string {
	out := make(chan string, 1)
	go func() {
		trace, err := sippRun(t, "127.0.0.1", remote, scenario, port, transport, args...)
		if err != nil {
			t.Error(err)
		}
		out <- trace
	}()
	return out
}

// sippFrom is sipp with SIPp bound to local address ip (another loopback
// address stands for another host: a carrier, an intruder).
func sippFrom(t *testing.T, ip, remote, scenario string, port int, transport string, args ...string) string {
	t.Helper()
	trace, err := sippRun(t, ip, remote, scenario, port, transport, args...)
	if err != nil {
		t.Fatal(err)
	}
	return trace
}

func sippRun(t *testing.T, ip, remote, scenario string, port int, transport string, args ...string) (string, error) {
	bin := need(t, "sipp")
	dir := t.TempDir()
	msgs := filepath.Join(dir, "msgs.log")
	tp := "u1"
	if transport == "tcp" {
		tp = "t1"
	}
	full := append([]string{remote,
		"-sf", filepath.Join(mustAbs(t, "testdata/sipp"), scenario),
		"-t", tp, "-p", fmt.Sprint(port), "-i", ip,
		"-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error",
		"-trace_msg", "-message_file", msgs,
		"-trace_err", "-error_file", filepath.Join(dir, "err.log"),
	}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	trace, _ := os.ReadFile(msgs)
	if err != nil {
		errs, _ := os.ReadFile(filepath.Join(dir, "err.log"))
		return string(trace), fmt.Errorf("sipp %s failed: %v\n%s\nerrors:\n%s\ntrace:\n%s", scenario, err, tail(out, 20), errs, trace)
	}
	return string(trace), nil
}

// sippAsync starts a SIPp UAS and returns a wait function for its result,
// which returns SIPp's message trace.
func sippAsync(t *testing.T, scenario string, port int, transport string, args ...string) func() string {
	t.Helper()
	bin := need(t, "sipp")
	dir := t.TempDir()
	tp := "u1"
	if transport == "tcp" {
		tp = "t1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	var out syncBuf
	cmd, exited := startSIPp(t, ctx, cancel, bin, dir, &out, append([]string{"-sf", filepath.Join(mustAbs(t, "testdata/sipp"), scenario),
		"-t", tp, "-p", fmt.Sprint(port), "-i", "127.0.0.1", "-m", "1", "-nostdin",
		"-timeout", "30s", "-timeout_error", "-trace_msg", "-message_file", filepath.Join(dir, "msgs.log"),
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log")}, args...))
	waited := false
	wait := func() string {
		if waited {
			return ""
		}
		waited = true
		err := <-exited
		cancel()
		trace, _ := os.ReadFile(filepath.Join(dir, "msgs.log"))
		if err != nil {
			why, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
			t.Errorf("sipp UAS %s failed: %v\n%s\nerrors:\n%s\ntrace:\n%s", scenario, err, tail([]byte(out.String()), 20), why, trace)
		}
		return string(trace)
	}
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			<-exited
			cancel()
		}
	})
	// Give SIPp time to bind before anything is sent to it; if it exits
	// first (a port taken, a bad scenario), say why.
	if !waitListeningOr(transport, port, cmd.Process.Pid, exited) {
		waited = true
		cmd.Process.Kill()
		<-exited
		cancel()
		why, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
		t.Fatalf("sipp UAS %s did not bind %s port %d:\n%s\nerrors:\n%s",
			scenario, transport, port, tail([]byte(out.String()), 20), why)
	}
	return wait
}

// udpOn is a UDP socket on ip:port (0: any port), closed when the test
// ends.
func udpOn(t *testing.T, ip string, port int) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startSIPp starts bin (SIPp) with args in dir, its output into out;
// exited delivers how it ended. cancel is called if it does not start.
func startSIPp(t *testing.T, ctx context.Context, cancel func(), bin, dir string, out io.Writer, args []string) (*exec.Cmd, chan error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd, exited
}

// waitListeningOr waits up to 15 s for port to be bound (for udp: by
// process pid), and gives up at once when exited delivers (the error is
// put back for the caller).
func waitListeningOr(transport string, port, pid int, exited chan error) bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return false
		default:
		}
		if transport == "tcp" {
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				c.Close()
				return true
			}
		} else if bound, _ := testenv.UDPPortsBound(pid); bound[port] {
			// The tables of SIPp's own namespace, never /proc/net: that
			// follows the main thread, which a test may have left in a
			// lab's namespace. And not by binding the port ourselves,
			// which could take it from under SIPp as it binds.
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func waitListeningTCP(t *testing.T, port int) {
	t.Helper()
	if !waitListeningOr("tcp", port, 0, make(chan error, 1)) {
		t.Fatalf("nothing listens on tcp port %d within 15 s", port)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (r *running) addr(transport string) string {
	if transport == "tcp" {
		return r.tcp
	}
	return r.udp
}

// register registers user over transport from port with SIPp.
func (r *running) register(t *testing.T, user, transport string, port int) string {
	return sipp(t, r.addr(transport), "register.xml", port, transport,
		"-key", "user", user, "-key", "expires", "3600", "-au", user, "-ap", "demo"+user)
}

func TestRegisterWithDigest(t *testing.T) {
	for _, tp := range []string{"udp", "tcp"} {
		t.Run(tp, func(t *testing.T) {
			sw := start(t, t.TempDir(), nil)
			trace := sw.register(t, "1001", tp, freePort(t))
			if !strings.Contains(trace, "401 Unauthorized") || !strings.Contains(trace, "SIP/2.0 200 OK") {
				t.Fatalf("expected 401 then 200:\n%s", trace)
			}
			if !strings.Contains(trace, ";expires=3600") {
				t.Errorf("200 OK does not list the binding with its expiry:\n%s", trace)
			}
			bs := sw.Store.Lookup("1001@voxvisor.local")
			if len(bs) != 1 || bs[0].Transport != tp {
				t.Fatalf("bindings = %+v", bs)
			}
			sipp(t, sw.addr(tp), "register_forbidden.xml", freePort(t), tp,
				"-key", "user", "1002", "-au", "1002", "-ap", "wrong-password")
			if got := sw.Auth.Failures.Load(); got != 1 {
				t.Errorf("auth failures = %d, want 1", got)
			}
			if bs := sw.Store.Lookup("1002@voxvisor.local"); len(bs) != 0 {
				t.Errorf("wrong password registered: %+v", bs)
			}
		})
	}
}

// TestCallThroughProxy places a call 1001 → 1002 through the proxy:
// INVITE, 407, INVITE with credentials, 180, 200, ACK and BYE along the
// Record-Route route set.
func TestCallThroughProxy(t *testing.T) {
	for _, tc := range []struct{ caller, callee string }{{"udp", "udp"}, {"udp", "tcp"}, {"tcp", "udp"}} {
		t.Run(tc.caller+"-to-"+tc.callee, func(t *testing.T) {
			sw := start(t, t.TempDir(), nil)
			calleePort, callerPort := freePort(t), freePort(t)
			sw.register(t, "1002", tc.callee, calleePort)
			sw.register(t, "1001", tc.caller, callerPort)
			wait := sippAsync(t, "uas.xml", calleePort, tc.callee)
			trace := sipp(t, sw.addr(tc.caller), "uac_call.xml", callerPort, tc.caller,
				"-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
			wait()
			for _, want := range []string{"407 Proxy Authentication Required", "180 Ringing", "BYE sip:", "Route: <sip:127.0.0.1"} {
				if !strings.Contains(trace, want) {
					t.Errorf("caller trace lacks %q", want)
				}
			}
			// Double Record-Route (RFC 5658): the 200 OK carries two entries,
			// both at the switch; the top one faces the callee's transport,
			// the bottom one the caller's, each with its signed flow token.
			rr := recordRoutes(trace, "SIP/2.0 200 OK")
			if len(rr) != 2 {
				t.Errorf("the 200 OK carries %d Record-Route entries, want 2: %q", len(rr), rr)
			} else {
				for i, side := range []string{tc.callee, tc.caller} {
					want := "<sip:" + sw.addr(side)
					if side != "udp" {
						want += ";transport=" + side
					}
					if !strings.HasPrefix(rr[i], want+";lr;vxf=") {
						t.Errorf("Record-Route %d = %q, want %s;lr;vxf=<token>> (facing the %s side)", i, rr[i], want, side)
					}
				}
			}
			if t.Failed() {
				t.Log(trace)
			}
			sw.expectNoMedia(t)
		})
	}
}

// recordRoutes returns the Record-Route entries, in order, of the first
// message in a SIPp trace whose first line starts with first.
func recordRoutes(trace, first string) []string {
	var out []string
	in := false
	for _, line := range strings.Split(trace, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, first):
			in = true
		case in && line == "":
			return out
		case in && strings.HasPrefix(strings.ToLower(line), "record-route:"):
			for _, e := range strings.Split(strings.TrimSpace(line[len("record-route:"):]), ",") {
				out = append(out, strings.TrimSpace(e))
			}
		}
	}
	return out
}

func TestCancelBeforeAnswer(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	calleePort, callerPort := freePort(t), freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_cancel.xml", calleePort, "udp")
	trace := sipp(t, sw.udp, "uac_cancel.xml", callerPort, "udp",
		"-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	wait()
	if !strings.Contains(trace, "487 Request Terminated") {
		t.Fatalf("caller got no 487:\n%s", trace)
	}
	sw.expectNoMedia(t)
}

func TestFailures(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	port := freePort(t)
	// 1003 exists but has no binding: 480.
	trace := sipp(t, sw.udp, "uac_expect.xml", port, "udp", "-s", "1003", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 480 ") {
		t.Errorf("unregistered user: want 480\n%s", trace)
	}
	// 4242 is nobody: 404.
	trace = sipp(t, sw.udp, "uac_expect.xml", port, "udp", "-s", "4242", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 404 ") {
		t.Errorf("unknown user: want 404\n%s", trace)
	}
	// A wrong password on INVITE: 403.
	trace = sipp(t, sw.udp, "uac_expect.xml", port, "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "nope")
	if !strings.Contains(trace, "SIP/2.0 403 ") {
		t.Errorf("wrong credentials: want 403\n%s", trace)
	}
	// Max-Forwards 0: 483, before any authentication.
	trace = sipp(t, sw.udp, "uac_maxforwards0.xml", port, "udp", "-s", "1002", "-key", "user", "1001")
	if !strings.Contains(trace, "SIP/2.0 483 ") {
		t.Errorf("max-forwards 0: want 483\n%s", trace)
	}
}

// expectNoMedia checks that every relay session and port was released.
func (r *running) expectNoMedia(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if r.Relay.Len() == 0 && r.Relay.Allocator().InUse() == 0 && r.Anchor.Calls() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("media left behind: %d sessions, %d port pairs, %d calls", r.Relay.Len(), r.Relay.Allocator().InUse(), r.Anchor.Calls())
}

func TestRegistrationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	sw := start(t, dir, nil)
	port := freePort(t)
	sw.register(t, "1001", "udp", port)
	if n := len(sw.Store.Lookup("1001@voxvisor.local")); n != 1 {
		t.Fatalf("bindings before restart = %d", n)
	}
	sw.stop()

	sw2 := start(t, dir, nil)
	bs := sw2.Store.Lookup("1001@voxvisor.local")
	if len(bs) != 1 || !strings.HasPrefix(bs[0].Contact, "sip:1001@127.0.0.1:") {
		t.Fatalf("bindings after restart = %+v", bs)
	}
	// And the restarted server routes to it: an OPTIONS to 1001 reaches
	// the phone where it registered from (a wedged or forgetful server
	// would leave it unheard), and the phone's answer comes back.
	phone := udpOn(t, "127.0.0.1", port)
	heard := make(chan string, 1)
	go func() {
		buf := make([]byte, 65535)
		phone.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := phone.ReadFromUDP(buf)
		if err != nil {
			heard <- ""
			return
		}
		msg, err := siplib.ParseMessage(buf[:n])
		req, ok := msg.(*siplib.Request)
		if err != nil || !ok {
			heard <- ""
			return
		}
		res := siplib.NewResponseFromRequest(req, 200, "OK", nil)
		phone.WriteToUDP([]byte(res.String()), from)
		heard <- req.StartLine()
	}()
	got := options(t, sw2.udp, "sip:1001@voxvisor.local")
	if line := <-heard; !strings.HasPrefix(line, "OPTIONS sip:1001@127.0.0.1:") {
		t.Fatalf("the phone registered before the restart heard %q, want the OPTIONS (the OPTIONS was answered %q; binding %+v)", line, got, bs)
	}
	if got != "200" {
		t.Fatalf("OPTIONS to the restored user answered %q, want the phone's 200", got)
	}
}

// options sends one OPTIONS over UDP and returns the status code of the
// first final response ("" on timeout).
func options(t *testing.T, addr, ruri string) string {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	la := c.LocalAddr().String()
	msg := "OPTIONS " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + la + ";branch=z9hG4bK" + fmt.Sprint(time.Now().UnixNano()) + ";rport\r\n" +
		"From: <sip:probe@monitor.example>;tag=probe\r\n" + // not one of ours: no challenge

		"To: <" + ruri + ">\r\n" +
		"Call-ID: probe-" + fmt.Sprint(time.Now().UnixNano()) + "\r\n" +
		"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(3 * time.Second)
	for {
		c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err != nil {
			return ""
		}
		line, _, _ := bufio.NewReader(bytes.NewReader(buf[:n])).ReadLine()
		f := strings.Fields(string(line))
		if len(f) >= 2 && f[1] >= "200" {
			return f[1]
		}
	}
}

// TestLargeINVITEToUDPPhone: an INVITE whose SDP takes it past the UDP
// MTU rule still reaches a phone that listens on UDP only (most do), over
// its UDP flow, instead of a TCP attempt and 503.
func TestLargeINVITEToUDPPhone(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	calleePort, callerPort := freePort(t), freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas.xml", calleePort, "udp")
	trace := sipp(t, sw.udp, "uac_bigsdp.xml", callerPort, "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	callee := wait()
	if !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Fatalf("caller not connected:\n%s", trace)
	}
	i := strings.Index(callee, "INVITE sip:")
	if i < 0 || !strings.Contains(callee[i:], "a=fmtp:105") {
		t.Fatalf("callee did not get the whole INVITE over UDP:\n%s", callee)
	}
}

// TestLate2xxRetransmissionsReachTheCaller: a callee whose 200 gets no
// ACK retransmits it for up to 32 s. The switch's client transaction
// lets go of a 2xx after a second (Timer M, capped to keep memory down);
// the retransmissions after that arrive without a transaction and must
// still be forwarded to the caller, statelessly (RFC 3261 §16.7).
func TestLate2xxRetransmissionsReachTheCaller(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) { c.Media.Anchor = "never" })
	callee, calleePort := phoneOn(t, sw.udp, "1002")

	// The callee answers 200 at once, then again 1.5 and 2.5 s later,
	// the same response each time, as an unacknowledged UAS does.
	go readRequests(callee, func(req *siplib.Request, src *net.UDPAddr) {
		if req.Method != siplib.INVITE {
			return
		}
		res := siplib.NewResponseFromRequest(req, 200, "OK", nil)
		res.To().Params.Add("tag", "callee")
		res.AppendHeader(siplib.NewHeader("Contact", fmt.Sprintf("<sip:1002@127.0.0.1:%d>", calleePort)))
		raw := []byte(res.String())
		for _, after := range []time.Duration{0, 1500 * time.Millisecond, time.Second} {
			time.Sleep(after)
			callee.WriteToUDP(raw, src)
		}
	})

	caller := newRawUA(t, "127.0.0.1", sw.udp)
	inv := caller.request("INVITE", "sip:1002@voxvisor.local", "sip:bench@outside.example", "", "late-2xx-1")
	if _, err := caller.conn.WriteToUDP([]byte(inv), caller.to); err != nil {
		t.Fatal(err)
	}
	var oks []time.Duration
	start := time.Now()
	buf := make([]byte, 65535)
	for time.Since(start) < 4*time.Second {
		caller.conn.SetReadDeadline(start.Add(4 * time.Second))
		n, err := caller.conn.Read(buf)
		if err != nil {
			break
		}
		if strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
			oks = append(oks, time.Since(start).Round(10*time.Millisecond))
		}
	}
	// The first 200 and both retransmissions, the last two well past
	// Timer M.
	if len(oks) < 3 || oks[len(oks)-1] < 2*time.Second {
		t.Fatalf("the caller got the 200 at %v, want it three times over 2.5 s", oks)
	}
}

// TestSilentCalleeGets408ToTheCaller: a callee that never answers is
// given up at the ring timeout, and the caller gets a 408 it can match:
// one that carries its own Via.
func TestSilentCalleeGets408ToTheCaller(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Media.Anchor = "never"
		c.SIP.RingTimeout = 2 * time.Second
	})
	phoneOn(t, sw.udp, "1002") // never answers

	caller := newRawUA(t, "127.0.0.1", sw.udp)
	inv := caller.request("INVITE", "sip:1002@voxvisor.local", "sip:bench@outside.example", "", "silent-callee-1")
	res := caller.doWithin(inv, 8*time.Second)
	if res == nil {
		t.Fatal("no final response for the silent callee")
	}
	if res.StatusCode != 408 {
		t.Fatalf("got %d, want 408", res.StatusCode)
	}
	via := res.Via()
	if via == nil || via.Host != "127.0.0.1" || via.Port != caller.conn.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("the 408 does not carry the caller's Via:\n%s", res)
	}
}
