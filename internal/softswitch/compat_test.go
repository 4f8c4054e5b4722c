package softswitch_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/sip/location"
)

// compatChallenges are the digest challenge orders (auth.algorithms) the
// compatibility table tries; the default is added when it is none of them.
var compatChallenges = [][]string{{"MD5", "SHA-256"}, {"SHA-256", "MD5"}, {"MD5"}, {"SHA-256"}}

// compatOutcome is what one step (register, or a call with audio) came to.
type compatOutcome struct {
	ok  bool
	alg string // the algorithm the phone's credentials named ("" when it sent none)
	why string // when not ok, in the phone's words where it has some
}

func (o compatOutcome) String() string {
	switch {
	case o.ok:
		return "yes (" + o.alg + ")"
	case o.why == "":
		return "not tried"
	default:
		return "no: " + o.why
	}
}

// compatPhone is a phone the table covers: the version it reports, and a
// run against a switch over a transport.
type compatPhone struct {
	name    string
	tool    string
	version func(t *testing.T) string
	// run registers the phone as 1001 and, once registered, has it call
	// 1002 (a SIPp callee that answers with audio), and says how each went.
	run func(t *testing.T, sw *running, transport string) (register, call compatOutcome)
}

// TestPhoneCompatibility registers each phone Debian ships (SIPp,
// linphonec, baresip), over UDP and over TCP, with each digest challenge
// order, and has it call a SIPp phone: the call counts when the relay
// forwarded audio both ways. The outcome is the phone compatibility table,
// testdata/compat.md (go test -update rewrites it), which README.md must
// quote verbatim. On the default challenge every phone must register and
// call (issue 13: defaults must work for the phones people have).
func TestPhoneCompatibility(t *testing.T) {
	embedded, err := config.Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(embedded.Auth.Algorithms, config.DefaultAlgorithms) {
		t.Errorf("the embedded configuration challenges with %v, config.DefaultAlgorithms is %v: a config that omits auth.algorithms must get what the embedded one says",
			embedded.Auth.Algorithms, config.DefaultAlgorithms)
	}
	phones := []compatPhone{
		{name: "SIPp", tool: "sipp", version: toolVersion("sipp", []string{"-v"}, `SIPp v([0-9.]+)`), run: compatSIPp},
		{name: "linphonec", tool: "linphonec", version: toolVersion("linphonec", []string{"-v"}, `version: ([0-9.]+)`), run: compatLinphonec},
		{name: "baresip", tool: "baresip", version: toolVersion("baresip", []string{"-h"}, `baresip v([0-9.]+)`), run: compatBaresip},
	}
	challenges := slices.Clone(compatChallenges)
	if !slices.ContainsFunc(challenges, func(c []string) bool { return slices.Equal(c, config.DefaultAlgorithms) }) {
		challenges = append([][]string{config.DefaultAlgorithms}, challenges...)
	}
	type row struct {
		phone, version, transport string
		challenge                 []string
		register, call            compatOutcome
	}
	var rows []*row
	t.Run("runs", func(t *testing.T) {
		for _, ph := range phones {
			need(t, ph.tool)
			version := ph.version(t)
			for _, tp := range []string{"udp", "tcp"} {
				for _, ch := range challenges {
					r := &row{phone: ph.name, version: version, transport: strings.ToUpper(tp), challenge: ch}
					rows = append(rows, r)
					// One at a time: switches started side by side race on
					// sipgo's package-level timers (sip/server lingerTimers).
					t.Run(ph.name+"/"+tp+"/"+strings.Join(ch, ","), func(t *testing.T) {
						sw := start(t, t.TempDir(), func(c *config.Config) { c.Auth.Algorithms = slices.Clone(ch) })
						r.register, r.call = ph.run(t, sw, tp)
						t.Logf("register: %v; call: %v", r.register, r.call)
					})
				}
			}
		}
	})
	if t.Failed() {
		return
	}
	var b strings.Builder
	b.WriteString("| Phone (Debian 12) | Version | Transport | Challenge, in order (`auth.algorithms`) | Registers (credentials sent) | Calls, audio both ways (credentials sent) |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		ch := strings.Join(r.challenge, ", ")
		if slices.Equal(r.challenge, config.DefaultAlgorithms) {
			ch += " (default)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.phone, r.version, r.transport, ch, r.register, r.call)
	}
	table := b.String()
	for _, r := range rows {
		if slices.Equal(r.challenge, config.DefaultAlgorithms) && (!r.register.ok || !r.call.ok) {
			t.Errorf("%s %s over %s fails on the default challenge (%s): registers %v, calls %v",
				r.phone, r.version, r.transport, strings.Join(r.challenge, ", "), r.register, r.call)
		}
	}
	testenv.Golden(t, "testdata/compat.md", table)
	readme, err := os.ReadFile(mustAbs(t, "../../README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), table) {
		t.Errorf("README.md does not quote the phone compatibility table (testdata/compat.md) verbatim; it should contain:\n%s", table)
	}
}

// toolVersion reads a tool's version from what it prints.
func toolVersion(tool string, args []string, pattern string) func(t *testing.T) string {
	re := regexp.MustCompile(pattern)
	return func(t *testing.T) string {
		out, _ := exec.Command(need(t, tool), args...).CombinedOutput() // some exit 1 after printing it
		m := re.FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s %v: no version in:\n%s", tool, args, out)
		}
		return string(m[1])
	}
}

var digestAlg = regexp.MustCompile(`(?i)algorithm="?([A-Za-z0-9-]+)`)

// credentials returns the algorithm named by the first header of the
// given name (Authorization, Proxy-Authorization) in a SIP trace, MD5 when
// it names none (RFC 2617), "" when there is no such header.
func credentials(trace, header string) string {
	for _, line := range strings.Split(trace, "\n") {
		line = strings.TrimSpace(line)
		if len(line) > len(header) && strings.EqualFold(line[:len(header)+1], header+":") {
			if m := digestAlg.FindStringSubmatch(line); m != nil {
				return strings.ToUpper(m[1])
			}
			return "MD5"
		}
	}
	return ""
}

// outcome makes a step's outcome from whether it worked, the phone's SIP
// trace (for the credentials it sent), whether the switch took them
// (authed) and, when it failed, the reason.
func outcome(ok bool, trace, header string, authed bool, why string) compatOutcome {
	o := compatOutcome{ok: ok, alg: credentials(trace, header)}
	switch {
	case ok:
	case authed:
		o.why = why
	case o.alg == "":
		o.why = "sends no credentials"
	default:
		o.why = "its " + o.alg + " credentials are refused"
	}
	if !ok && !authed && why != "" {
		o.why += " (" + why + ")"
	}
	return o
}

// mediaWatch follows the relay's sessions while a call is up, keeping the
// most RTP each leg was sent.
type mediaWatch struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	toCaller uint64
	toCallee uint64
}

func watchMedia(sw *running) *mediaWatch {
	w := &mediaWatch{stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			for _, s := range sw.Relay.Sessions() {
				if st := s.Stream(0); st != nil {
					legs := st.Stats()
					w.mu.Lock()
					w.toCaller, w.toCallee = max(w.toCaller, legs[0].Sent), max(w.toCallee, legs[1].Sent)
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// done stops watching and says whether audio went both ways (two seconds'
// worth each way at least), and if not, what the relay saw.
func (w *mediaWatch) done() (bool, string) {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	const enough = 100
	if w.toCaller >= enough && w.toCallee >= enough {
		return true, ""
	}
	return false, fmt.Sprintf("relay sent %d RTP packets to the caller, %d to the callee", w.toCaller, w.toCallee)
}

// compatCallee is 1002, a SIPp phone over UDP answering one call with
// g711a.pcap; its quit ends it and returns its trace. It is bound in the
// location store directly: it is the fixture, not the phone under test,
// and SIPp cannot register on every challenge.
func compatCallee(t *testing.T, sw *running) *labProc {
	t.Helper()
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if _, err := sw.Store.Update("1002@voxvisor.local", func([]location.Binding) ([]location.Binding, error) {
		return []location.Binding{{AOR: "1002@voxvisor.local", Contact: "sip:1002@" + addr, Source: addr, Transport: "udp",
			Expires: time.Now().Add(time.Hour), CallID: "compat-callee", CSeq: 1}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	return sippIn(t, "", "127.0.0.1", port, mediaPorts(t), "udp", "", "natlab_uas.xml", "-d", "0")
}

// compatRegisterWait is how long a softphone gets to register: on
// loopback it takes milliseconds, a phone that has not by then gave up.
const compatRegisterWait = 4 * time.Second

func registered(sw *running, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(sw.Store.Lookup("1001@voxvisor.local")) > 0 {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// compatSIPp: SIPp's register.xml, then natlab_uac.xml playing g711a.pcap.
func compatSIPp(t *testing.T, sw *running, tp string) (register, call compatOutcome) {
	port := freePort(t)
	creds := []string{"-key", "user", "1001", "-au", "1001", "-ap", "demo1001", "-m", "1", "-timeout", "15s", "-timeout_error"}
	reg := sippIn(t, "", "127.0.0.1", port, mediaPorts(t), tp, sw.addr(tp), "register.xml", append(creds, "-key", "expires", "3600")...)
	err := reg.wait(30 * time.Second)
	register = outcome(err == nil, reg.file("msgs.log"), "Authorization", false, sippWhy(reg))
	if !register.ok {
		return register, call
	}
	callee := compatCallee(t, sw)
	w := watchMedia(sw)
	uac := sippIn(t, "", "127.0.0.1", port, mediaPorts(t), tp, sw.addr(tp), "natlab_uac.xml", append(creds, "-s", "1002", "-d", "0")...)
	err = uac.wait(40 * time.Second)
	trace := callee.quit(t)
	audio, why := w.done()
	if err != nil {
		why = sippWhy(uac)
	}
	return register, outcome(err == nil && audio, uac.file("msgs.log"), "Proxy-Authorization", strings.Contains(trace, "INVITE sip:"), why)
}

// sippWhy is the first thing SIPp's error log says.
func sippWhy(p *labProc) string {
	for _, line := range strings.Split(p.file("err.log"), "\n") {
		if i := strings.Index(line, ": "); i > 0 && strings.Contains(line, "\t") {
			return strings.TrimSpace(line[i+2:])
		}
	}
	return ""
}

// compatLinphonec: linphonec with files for sound, its proxy at the
// switch over the transport; it calls 1002 and hangs up after 5 s.
func compatLinphonec(t *testing.T, sw *running, tp string) (register, call compatOutcome) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".local/share/linphone"), 0o755); err != nil {
		t.Fatal(err)
	}
	tone := filepath.Join(home, "tone.wav")
	writeTone(t, tone, 30*time.Second)
	udpPort, tcpPort := freePort(t), 0
	if tp == "tcp" {
		udpPort, tcpPort = 0, freePort(t)
	}
	rc := filepath.Join(home, "linphonerc")
	if err := os.WriteFile(rc, []byte(fmt.Sprintf(`[sip]
sip_port=%d
sip_tcp_port=%d
sip_tls_port=0
default_proxy=0
[rtp]
audio_rtp_port=%d
[sound]
echocancellation=0
[video]
enabled=0
[proxy_0]
reg_proxy=<sip:%s;transport=%s>
reg_route=<sip:%s;transport=%s;lr>
reg_identity=sip:1001@voxvisor.local
reg_sendregister=1
reg_expires=600
[auth_info_0]
username=1001
passwd=demo1001
realm=voxvisor.local
`, udpPort, tcpPort, mediaPorts(t), sw.addr(tp), tp, sw.addr(tp), tp)), 0o600); err != nil {
		t.Fatal(err)
	}
	stdin, cmds := io.Pipe()
	t.Cleanup(func() { cmds.Close() })
	logFile := filepath.Join(home, "linphonec.log")
	p := spawn(t, "linphonec", "", []string{"HOME=" + home}, stdin, need(t, "linphonec"), "-c", rc, "-d", "6", "-l", logFile)
	say := func(cmd string) { io.WriteString(cmds, cmd+"\n") }
	defer func() {
		say("quit")
		cmds.Close()
		p.wait(10 * time.Second)
	}()
	say("soundcard use files")
	say("play " + tone)
	sipLog := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	ok := registered(sw, compatRegisterWait)
	register = outcome(ok, sipLog(), "Authorization", false, linphonecWhy(sipLog()))
	if !ok {
		return register, call
	}
	callee := compatCallee(t, sw)
	w := watchMedia(sw)
	say("call sip:1002@voxvisor.local")
	time.Sleep(5 * time.Second)
	say("terminate")
	time.Sleep(500 * time.Millisecond)
	trace := callee.quit(t)
	audio, why := w.done()
	if !strings.Contains(trace, "BYE sip:") {
		why = "the call did not reach 1002 and end"
	}
	return register, outcome(audio && why == "", sipLog(), "Proxy-Authorization", strings.Contains(trace, "INVITE sip:"), why)
}

// linphonecWhy is the registration failure linphonec logs, if any.
func linphonecWhy(log string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "to [LinphoneRegistrationFailed]") {
			return "registration failed"
		}
	}
	return ""
}

// compatBaresip: baresip (ausine as microphone), registering over the
// transport; a second run dials 1002 and hangs up when it quits.
func compatBaresip(t *testing.T, sw *running, tp string) (register, call compatOutcome) {
	run := func(quit time.Duration, extra ...string) *labProc {
		dir := t.TempDir()
		rtpLow := freePort(t) &^ 1
		cfg := fmt.Sprintf(`sip_listen 127.0.0.1:%d
net_interface 127.0.0.1
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aubridge.so
module account.so
module menu.so
audio_source ausine,440
audio_player aubridge,1001
audio_alert aubridge,1001
ausrc_srate 48000
auplay_srate 48000
ausrc_channels 2
rtp_ports %d-%d
`, freePort(t), rtpLow, rtpLow+20)
		acct := fmt.Sprintf("<sip:1001@%s;transport=%s>;auth_pass=demo1001;regint=600;audio_codecs=PCMA,PCMU\n", sw.addr(tp), tp)
		if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(acct), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"-s", "-f", dir, "-t", strconv.Itoa(int(quit.Seconds()))}
		for _, e := range extra {
			args = append(args, "-e", e)
		}
		return spawn(t, "baresip", "", nil, nil, need(t, "baresip"), args...)
	}
	stop := func(p *labProc) string {
		p.cmd.Process.Signal(syscall.SIGTERM) // its output is buffered until it exits
		p.wait(10 * time.Second)
		return p.out.String()
	}
	p := run(20 * time.Second)
	ok := registered(sw, compatRegisterWait)
	out := stop(p)
	register = outcome(ok, out, "Authorization", false, baresipWhy(out))
	if !ok {
		return register, call
	}
	callee := compatCallee(t, sw)
	w := watchMedia(sw)
	p = run(7*time.Second, "/dial sip:1002@"+sw.addr(tp)+";transport="+tp)
	p.wait(20 * time.Second)
	trace := callee.quit(t)
	audio, why := w.done()
	if !strings.Contains(trace, "BYE sip:") {
		why = "the call did not reach 1002 and end"
	}
	out = p.out.String()
	if why != "" {
		t.Logf("baresip's call:\n%s", tail([]byte(out), 60))
	}
	if why != "" && baresipWhy(out) != "" {
		why = baresipWhy(out)
	}
	return register, outcome(audio && why == "", out, "Proxy-Authorization", strings.Contains(trace, "INVITE sip:"), why)
}

var baresipErr = regexp.MustCompile(`(?m)(?:reg|call): [^\n]*?: ([A-Z][^\n\x1b]*)`)

// baresipWhy is the error baresip prints for a registration or call, if
// any (e.g. "Register: Function not implemented").
func baresipWhy(out string) string {
	if m := baresipErr.FindStringSubmatch(out); m != nil {
		return strings.TrimSpace(m[1])
	}
	return ""
}
