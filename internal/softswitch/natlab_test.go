package softswitch_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
)

// The NAT lab (issue 13): phones behind two masquerading home routers, a
// phone on the public side and an attacker, all in network namespaces
// the test makes, and the real voxvisor binary in a "switch" namespace on
// the embedded default configuration with only its addresses, users and
// passwords changed.
//
//	switch ns      198.51.100.1     voxvisor: SIP udp+tcp :5060, relay, admin on its own 127.0.0.1
//	  bridge "pub" 198.51.100.0/24  the Internet
//	router 1       198.51.100.11    masquerade (keeps ports when it can), LAN 192.168.1.0/24
//	  1001 192.168.1.10 (SIPp)  1003 192.168.1.11 (SIPp, silent)  1006 192.168.1.20 (baresip)
//	router 2       198.51.100.12    masquerade random (new port per flow), LAN 192.168.2.0/24
//	  1002 192.168.2.10 (SIPp)  1005 192.168.2.20 (linphonec)
//	1004           198.51.100.20    a phone with a public address (SIPp)
//	attacker       198.51.100.66    sprays RTP at the relay's ports
//
// Each router forwards only what its LAN started (conntrack), and forgets
// a UDP flow after labNATTimeout of silence. Every phone namespace counts
// in nftables the RTP that reaches it from the relay (the even ports of
// its range), and separately anything carrying the attacker's SSRC.
const (
	labSwitchIP   = "198.51.100.1"
	labAttackerIP = "198.51.100.66"
	// labNATTimeout is the routers' UDP conntrack timeout, unreplied and
	// stream alike: 30 s, Linux's default for unreplied UDP and a common
	// home-router value (the stream timeout, 120 s by default, is set to
	// it too). nat.ping_interval's default (15 s) is under it, so the lab
	// runs on the default keepalive; a call after 2× this much silence
	// reaches the phone only if the switch kept the binding open.
	labNATTimeout = 30 * time.Second
	// labSprayMark is the SSRC of the attacker's packets (RTP bytes 8-11).
	labSprayMark = 0xbadbad00
	// labPcapPackets is what g711a.pcap holds (PCMA, one packet every
	// 30 ms over 7 s).
	labPcapPackets = 236
	// labMinRTP is the least RTP a phone must receive from one call: most
	// of the other side's 236 packets.
	labMinRTP = 200
	// labPreMS is how long each SIPp phone waits after the ACK before it
	// starts sending (-d), and labTalkMS how long the caller stays on
	// after (natlab_uac.xml).
	labPreMS  = 1000
	labTalkMS = 7600
)

// labPhone is one phone of the lab.
type labPhone struct {
	user, pass string
	ns         string // its namespace
	ip         string // its own address (a LAN address behind a router)
	wan        string // the address the switch sees it come from
}

func (p *labPhone) aor() string { return p.user + "@voxvisor.local" }

// natLab is the running lab.
type natLab struct {
	bin     string // the voxvisor binary
	sw, atk string // namespaces
	phones  map[string]*labPhone
	cfg     *config.Config // the lab's configuration, as voxvisor loads it
	vox     *exec.Cmd
	voxLog  *syncBuf
}

func (l *natLab) phone(user string) *labPhone { return l.phones[user] }

// newNATLab builds the binary, the namespaces and the configuration, and
// starts voxvisor. Everything goes when the test ends: processes first,
// then the namespaces with their links and rules.
func newNATLab(t *testing.T) *natLab {
	t.Helper()
	testenv.NeedRoot(t)
	for _, tool := range []string{"ip", "nft", "sysctl", "sipp", "go"} {
		need(t, tool)
	}
	l := &natLab{phones: map[string]*labPhone{}, voxLog: &syncBuf{}}
	l.bin = buildVoxvisor(t)

	sweepStaleLabs(t)
	id := strconv.Itoa(os.Getpid())
	netns := func(role string) string {
		ns := testenv.Netns(t, "vxnat-"+role+"-"+id)
		ipIn(t, ns, "link", "set", "lo", "up")
		return ns
	}
	l.sw = netns("sw")
	ipIn(t, l.sw, "link", "add", "pub", "type", "bridge")
	ipIn(t, l.sw, "addr", "add", labSwitchIP+"/24", "dev", "pub")
	ipIn(t, l.sw, "link", "set", "pub", "up")
	public := func(role, addr string) string {
		ns := netns(role)
		ipIn(t, l.sw, "link", "add", "v-"+role, "type", "veth", "peer", "name", "wan", "netns", ns)
		ipIn(t, l.sw, "link", "set", "v-"+role, "master", "pub", "up")
		ipIn(t, ns, "addr", "add", addr+"/24", "dev", "wan")
		ipIn(t, ns, "link", "set", "wan", "up")
		return ns
	}

	cfg, err := config.Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	counters := fmt.Sprintf(`table inet natlab {
	counter spray { }
	counter relay { }
	chain input {
		type filter hook input priority filter; policy accept;
		meta l4proto udp @th,128,32 0x%08x counter name "spray" accept
		ip saddr %s udp sport %d-%d udp sport & 1 == 0 counter name "relay"
	}
}
`, labSprayMark, labSwitchIP, cfg.Media.PortMin, cfg.Media.PortMax+1)
	router := func(n int, masquerade string) string {
		ns := public(fmt.Sprintf("r%d", n), fmt.Sprintf("198.51.100.1%d", n))
		ipIn(t, ns, "link", "add", "lan", "type", "bridge")
		ipIn(t, ns, "addr", "add", fmt.Sprintf("192.168.%d.1/24", n), "dev", "lan")
		ipIn(t, ns, "link", "set", "lan", "up")
		testenv.Sysctl(t, ns, "net.ipv4.ip_forward=1")
		testenv.Nft(t, ns, `table ip natlab {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan" oifname "wan" accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" `+masquerade+`
	}
}
`)
		// Conntrack is on in the namespace now (NAT needs it): its UDP
		// timeouts are the namespace's own.
		s := strconv.Itoa(int(labNATTimeout.Seconds()))
		testenv.Sysctl(t, ns, "net.netfilter.nf_conntrack_udp_timeout="+s, "net.netfilter.nf_conntrack_udp_timeout_stream="+s)
		return ns
	}
	r1 := router(1, "masquerade")
	r2 := router(2, "masquerade random")
	add := func(user, ns, ip, wan string) {
		testenv.Nft(t, ns, counters)
		l.phones[user] = &labPhone{user: user, pass: "lab-" + user + "-" + randHex(t), ns: ns, ip: ip, wan: wan}
	}
	behind := func(router string, n int, user string, host int) {
		ns := netns("p" + user)
		ipIn(t, router, "link", "add", "v-"+user, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipIn(t, router, "link", "set", "v-"+user, "master", "lan", "up")
		ip := fmt.Sprintf("192.168.%d.%d", n, host)
		ipIn(t, ns, "addr", "add", ip+"/24", "dev", "eth0")
		ipIn(t, ns, "link", "set", "eth0", "up")
		ipIn(t, ns, "route", "add", "default", "via", fmt.Sprintf("192.168.%d.1", n))
		add(user, ns, ip, fmt.Sprintf("198.51.100.1%d", n))
	}
	behind(r1, 1, "1001", 10)
	behind(r2, 2, "1002", 10)
	behind(r1, 1, "1003", 11)
	add("1004", public("p1004", "198.51.100.20"), "198.51.100.20", "198.51.100.20")
	behind(r2, 2, "1005", 20)
	behind(r1, 1, "1006", 20)
	l.atk = public("atk", labAttackerIP)
	testenv.Nft(t, l.atk, counters)

	l.cfg = l.writeConfig(t)
	l.start(t)
	return l
}

// sweepStaleLabs deletes the namespaces of labs whose test process is
// gone (killed by a timeout, say, before its cleanups ran): they are named
// vxnat-ROLE-PID.
func sweepStaleLabs(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "vxnat-") {
			continue
		}
		pid, err := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
		if err != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		// What that lab ran there (its switch, phones) goes with it.
		out, _ := testenv.Try("ip", "netns", "pids", name)
		for _, f := range strings.Fields(out) {
			if p, err := strconv.Atoi(f); err == nil {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		if _, err := testenv.Try("ip", "netns", "del", name); err == nil {
			t.Logf("deleted %s, left by a lab whose process is gone", name)
		}
	}
}

func ipIn(t *testing.T, ns string, args ...string) {
	t.Helper()
	testenv.Run(t, "ip", append([]string{"-n", ns}, args...)...)
}

func randHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeConfig writes the embedded default configuration with the lab's
// addresses, users and passwords, and no other change (checked: the file
// loads into exactly the default once those are put back).
func (l *natLab) writeConfig(t *testing.T) *config.Config {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(configs.Default, &doc); err != nil {
		t.Fatal(err)
	}
	section := func(key string) map[string]any {
		m, ok := doc[key].(map[string]any)
		if !ok {
			t.Fatalf("default config: %s is %T, not a mapping", key, doc[key])
		}
		return m
	}
	dir := t.TempDir()
	doc["data_dir"] = filepath.Join(dir, "data")
	listen, ok := section("sip")["listen"].([]any)
	if !ok || len(listen) == 0 {
		t.Fatalf("default config: sip.listen is %T", section("sip")["listen"])
	}
	for _, item := range listen {
		m := item.(map[string]any)
		_, port, err := net.SplitHostPort(fmt.Sprint(m["address"]))
		if err != nil {
			t.Fatal(err)
		}
		m["address"] = net.JoinHostPort(labSwitchIP, port)
	}
	section("media")["address"] = labSwitchIP
	var users []any
	for _, u := range []string{"1001", "1002", "1003", "1004", "1005", "1006"} {
		users = append(users, map[string]any{"username": u, "password": l.phone(u).pass})
	}
	doc["users"] = users
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "voxvisor.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}

	got, err := config.LoadFile(path)
	if err != nil {
		t.Fatalf("lab config: %v\n%s", err, out)
	}
	want, err := config.Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	back := *got
	back.Source, back.DataDir, back.SIP.Listen, back.Media.Address, back.Users = want.Source, want.DataDir, want.SIP.Listen, want.Media.Address, want.Users
	if !reflect.DeepEqual(&back, want) {
		a, _ := json.MarshalIndent(&back, "", " ")
		b, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("the lab's config differs from the default beyond addresses and users:\n%s\ndefault:\n%s", a, b)
	}
	got.Source = path
	return got
}

// start runs voxvisor serve in the switch namespace and waits for its
// listeners and admin API.
func (l *natLab) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := testenv.NetnsCommand(ctx, l.sw, l.bin, "-c", l.cfg.Source, "serve")
	cmd.Stdout, cmd.Stderr = l.voxLog, l.voxLog
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // the test killed: so is the switch
	if err := startOnSpawner(cmd); err != nil {
		cancel()
		t.Fatal(err)
	}
	l.vox = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("voxvisor log (tail):\n%s", tail([]byte(l.voxLog.String()), 60))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("voxvisor exited: %v\n%s", cmd.ProcessState, l.voxLog.String())
		default:
		}
		if strings.Contains(l.voxLog.String(), "transport=udp address="+labSwitchIP+":5060") {
			if _, err := l.admin(t, "/api/v1/registrations"); err == nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("voxvisor did not come up:\n%s", l.voxLog.String())
}

// admin GETs path from the admin API, which listens on the switch
// namespace's own loopback. The connection is made by hand from a thread
// in that namespace: http.Transport dials on goroutines of its own.
func (l *natLab) admin(t *testing.T, path string) (string, error) {
	var body string
	var err error
	testenv.InNetns(t, l.sw, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", l.cfg.Admin.Listen, 3*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req, _ := http.NewRequest("GET", "http://"+l.cfg.Admin.Listen+path, nil)
		req.Close = true
		if err = req.Write(c); err != nil {
			return
		}
		var res *http.Response
		res, err = http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		body = string(b)
		if res.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s: %s", path, res.Status, b)
		}
	})
	return body, err
}

// labBinding is a registration as the admin API shows it.
type labBinding struct {
	AOR     string `json:"aor"`
	Contact string `json:"contact"`
	Source  string `json:"source"`
	NAT     bool   `json:"nat"`
}

// bindings returns the registrations of aor the admin API shows.
func (l *natLab) bindings(t *testing.T, aor string) []labBinding {
	t.Helper()
	body, err := l.admin(t, "/api/v1/registrations")
	if err != nil {
		t.Fatal(err)
	}
	var all, out []labBinding
	if err := json.Unmarshal([]byte(body), &all); err != nil {
		t.Fatalf("registrations: %v: %s", err, body)
	}
	for _, b := range all {
		if b.AOR == aor {
			out = append(out, b)
		}
	}
	return out
}

// metrics reads the named samples (name{labels}) from /metrics; a sample
// that is not there fails the test.
func (l *natLab) metrics(t *testing.T, names ...string) map[string]float64 {
	t.Helper()
	body, err := l.admin(t, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, n := range names {
		v := metric(body, n)
		if v < 0 {
			t.Fatalf("voxvisor's /metrics has no %s", n)
		}
		out[n] = v
	}
	return out
}

// Metrics the lab reads: how the relay learned each side, and what it
// refused.
const (
	mLearnedSDP       = `voxvisor_media_sources_learned_total{rank="sdp_address"}`
	mLearnedSignal    = `voxvisor_media_sources_learned_total{rank="signalling"}`
	mRejectedLearning = `voxvisor_media_packets_rejected_total{phase="learning"}`
	mRejectedLocked   = `voxvisor_media_packets_rejected_total{phase="locked"}`
)

// learned says how many legs the relay locked by each rank meanwhile.
func (l *natLab) learned(t *testing.T, f func()) (sdp, signalling float64) {
	t.Helper()
	before := l.metrics(t, mLearnedSDP, mLearnedSignal)
	f()
	after := l.metrics(t, mLearnedSDP, mLearnedSignal)
	return after[mLearnedSDP] - before[mLearnedSDP], after[mLearnedSignal] - before[mLearnedSignal]
}

// waitRegistered waits until aor has a binding.
func (l *natLab) waitRegistered(t *testing.T, aor string, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(l.bindings(t, aor)) > 0 {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// counter reads one of a namespace's nftables counters: "relay" (UDP from
// the relay's port range without the attacker's mark) or "spray" (UDP
// with the attacker's SSRC, from anywhere).
func (l *natLab) counter(t *testing.T, ns, name string) uint64 {
	t.Helper()
	n, err := testenv.NftCounter(ns, "inet", "natlab", name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// spawner is an OS thread that lives as long as the test binary and
// starts the lab's programs. Their parent-death signal (Pdeathsig) fires
// when the thread that forked them exits, and Go ends threads (a locked
// one whose goroutine ends) at times of its own: forking from this one
// ties the programs' lives to the test process only.
var spawner struct {
	once sync.Once
	jobs chan func()
}

func startOnSpawner(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.jobs = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread is the spawner
			for job := range spawner.jobs {
				job()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.jobs <- func() { done <- cmd.Start() }
	return <-done
}

// labProc is a program the lab runs in a namespace.
type labProc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuf
	dir  string
	done chan struct{}
	err  error // valid after done
}

// spawn starts a program in namespace ns ("": this one); it is killed,
// if still running, when the test ends. Its working directory is a new
// temporary one.
func spawn(t *testing.T, name, ns string, env []string, stdin io.Reader, prog string, args ...string) *labProc {
	t.Helper()
	p := &labProc{name: name, out: &syncBuf{}, dir: t.TempDir(), done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	if ns == "" {
		p.cmd = exec.CommandContext(ctx, prog, args...)
	} else {
		p.cmd = testenv.NetnsCommand(ctx, ns, prog, args...)
	}
	p.cmd.Dir = p.dir
	p.cmd.Stdout, p.cmd.Stderr, p.cmd.Stdin = p.out, p.out, stdin
	p.cmd.WaitDelay = 5 * time.Second
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // the test killed: so is the program
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	if err := startOnSpawner(p.cmd); err != nil {
		cancel()
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		cancel()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// wait waits for the program to exit, killing it after d.
func (p *labProc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s still running after %v: killed", p.name, d)
	}
}

func (p *labProc) file(name string) string {
	b, _ := os.ReadFile(filepath.Join(p.dir, name))
	return string(b)
}

// report is what went wrong with a program, for a failure message.
func (p *labProc) report(err error) string {
	return fmt.Sprintf("%s: %v\noutput:\n%s\nerrors:\n%s\ntrace:\n%s", p.name, err, tail([]byte(p.out.String()), 20),
		tail([]byte(p.file("err.log")), 20), tail([]byte(p.file("msgs.log")), 80))
}

// sipp starts SIPp as phone ph on its SIP port 5060 and media port 6000.
// remote "" runs a UAS.
func (l *natLab) sipp(t *testing.T, ph *labPhone, remote, scenario string, args ...string) *labProc {
	t.Helper()
	return sippIn(t, ph.ns, ph.ip, 5060, 6000, "udp", remote, scenario,
		append([]string{"-key", "user", ph.user, "-au", ph.user, "-ap", ph.pass}, args...)...)
}

// sippIn starts SIPp in namespace ns ("": this one) on ip:port and media
// port mediaPort, answering out-of-call OPTIONS (-aa), with its message
// trace in msgs.log. remote "" runs a UAS, returned once it has bound its
// UDP port.
func sippIn(t *testing.T, ns, ip string, port, mediaPort int, transport, remote, scenario string, args ...string) *labProc {
	t.Helper()
	tp := "u1"
	if transport == "tcp" {
		tp = "t1"
	}
	full := []string{"-sf", filepath.Join(mustAbs(t, "testdata/sipp"), scenario), "-t", tp, "-p", strconv.Itoa(port), "-i", ip,
		"-mp", strconv.Itoa(mediaPort), "-nostdin", "-aa", "-trace_msg", "-message_file", "msgs.log", "-trace_err", "-error_file", "err.log"}
	if remote != "" {
		full = append([]string{remote}, full...)
	}
	name := "sipp " + scenario
	for i := range args {
		if args[i] == "-key" && i+2 < len(args) && args[i+1] == "user" {
			name = "sipp " + args[i+2] + " " + scenario
		}
	}
	p := spawn(t, name, ns, nil, nil, need(t, "sipp"), append(full, args...)...)
	if remote == "" && transport != "tcp" {
		waitBound(t, p, port)
	}
	return p
}

// waitBound waits until the program has bound a UDP port.
func waitBound(t *testing.T, p *labProc, port int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second) // a loaded machine
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatal(p.report(p.err))
		default:
		}
		if ports, err := testenv.UDPPortsBound(p.cmd.Process.Pid); err == nil && ports[port] {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not bind udp port %d", p.name, port)
}

// register registers ph from its SIP port and returns SIPp's trace.
func (l *natLab) register(t *testing.T, ph *labPhone) string {
	t.Helper()
	p := l.sipp(t, ph, labSwitchIP+":5060", "register.xml", "-m", "1", "-key", "expires", "3600", "-timeout", "10s", "-timeout_error")
	if err := p.wait(20 * time.Second); err != nil {
		t.Fatal(p.report(err))
	}
	return p.file("msgs.log")
}

// quit stops a SIPp UAS the smooth way (SIGUSR1: no new calls, finish the
// current one) and returns its trace; SIPp exits 0 when every call it
// took (the INVITE and any OPTIONS pings) succeeded.
func (p *labProc) quit(t *testing.T) string {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGUSR1)
	if err := p.wait(10 * time.Second); err != nil {
		t.Error(p.report(err))
	}
	return p.file("msgs.log")
}

// rtp is what one call delivered: RTP from the relay counted in each
// phone's namespace, and the attacker's packets that got through.
type rtp struct {
	toCaller, toCallee       uint64
	sprayCaller, sprayCallee uint64
}

// snapshot reads the counters of two phones.
func (l *natLab) snapshot(t *testing.T, caller, callee *labPhone) rtp {
	return rtp{l.counter(t, caller.ns, "relay"), l.counter(t, callee.ns, "relay"),
		l.counter(t, caller.ns, "spray"), l.counter(t, callee.ns, "spray")}
}

func (r rtp) minus(o rtp) rtp {
	return rtp{r.toCaller - o.toCaller, r.toCallee - o.toCallee, r.sprayCaller - o.sprayCaller, r.sprayCallee - o.sprayCallee}
}

// call has SIPp phone caller call SIPp phone callee (registered again
// first, as phones refresh), both playing g711a.pcap labPreMS after the
// ACK, and returns what reached each through the relay.
func (l *natLab) call(t *testing.T, caller, callee *labPhone) rtp {
	t.Helper()
	l.register(t, callee)
	before := l.snapshot(t, caller, callee)
	uas := l.sipp(t, callee, "", "natlab_uas.xml", "-d", strconv.Itoa(labPreMS))
	l.dial(t, caller, callee, uas)
	time.Sleep(300 * time.Millisecond) // the last packets in flight
	return l.snapshot(t, caller, callee).minus(before)
}

// dial runs the caller's side of a call to callee, whose UAS is running,
// and ends the UAS.
func (l *natLab) dial(t *testing.T, caller, callee *labPhone, uas *labProc) {
	t.Helper()
	uac := l.sipp(t, caller, labSwitchIP+":5060", "natlab_uac.xml", "-s", callee.user, "-m", "1",
		"-d", strconv.Itoa(labPreMS), "-timeout", "25s", "-timeout_error")
	if err := uac.wait(40 * time.Second); err != nil {
		t.Error(uac.report(err))
	}
	trace := uas.quit(t)
	if !strings.Contains(trace, "INVITE sip:") || !strings.Contains(trace, "BYE sip:") {
		t.Errorf("callee %s never got the call:\n%s", callee.user, tail([]byte(trace), 60))
	}
}

// checkTwoWay asserts that both phones got the other's audio through the
// relay.
func checkTwoWay(t *testing.T, caller, callee *labPhone, got rtp) {
	t.Helper()
	t.Logf("%s → %s: RTP from the relay at the caller %d, at the callee %d (each side sent %d)",
		caller.user, callee.user, got.toCaller, got.toCallee, labPcapPackets)
	if got.toCallee < labMinRTP {
		t.Errorf("callee %s (%s) got %d RTP packets through the relay, want at least %d of the caller's %d",
			callee.user, callee.ip, got.toCallee, labMinRTP, labPcapPackets)
	}
	if got.toCaller < labMinRTP {
		t.Errorf("caller %s (%s) got %d RTP packets through the relay, want at least %d of the callee's %d",
			caller.user, caller.ip, got.toCaller, labMinRTP, labPcapPackets)
	}
}

// TestNATLab is issue 13's lab: on the default configuration, phones
// behind NAT register, get audio both ways in calls either way, stay
// reachable through long silence, a third party cannot get into their
// media, and a phone with a public address works as before. About 1.5
// minutes, most of it calls' audio and the silence.
func TestNATLab(t *testing.T) {
	l := newNATLab(t)
	p1001, p1002, p1003, p1004 := l.phone("1001"), l.phone("1002"), l.phone("1003"), l.phone("1004")

	// 1003 registers and then stays silent, answering only what reaches
	// it: the switch's keepalive pings, and at the end a call. Beside it,
	// a control flow through the same router that nobody keeps open.
	trace := l.register(t, p1003)
	silentSince := time.Now()
	silent := l.sipp(t, p1003, "", "natlab_uas.xml", "-d", "0")
	if !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Fatalf("1003 did not register:\n%s", trace)
	}
	control := l.newControlFlow(t, p1003)

	t.Run("register through NAT", func(t *testing.T) {
		for _, ph := range []*labPhone{p1001, p1002, p1003, p1004} {
			if ph != p1003 {
				trace := l.register(t, ph)
				if !strings.Contains(trace, "401 Unauthorized") || !strings.Contains(trace, "SIP/2.0 200 OK") {
					t.Errorf("%s: want a challenge, then 200:\n%s", ph.user, trace)
				}
			}
			bs := l.bindings(t, ph.aor())
			if len(bs) != 1 {
				t.Errorf("%s: bindings %+v, want one", ph.user, bs)
				continue
			}
			host, _, _ := net.SplitHostPort(bs[0].Source)
			if host != ph.wan {
				t.Errorf("%s: registration came from %s, want the router's public address %s", ph.user, bs[0].Source, ph.wan)
			}
			if behind := ph.ip != ph.wan; bs[0].NAT != behind {
				t.Errorf("%s at %s from %s: the registrar says NAT=%v, want %v", ph.user, ph.ip, bs[0].Source, bs[0].NAT, behind)
			}
			t.Logf("%s at %s registered from %s, contact %s, NAT %v", ph.user, ph.ip, bs[0].Source, bs[0].Contact, bs[0].NAT)
		}
	})

	// A call between two NATed phones: both legs are learned from the
	// SIP signalling's address (their SDP names LAN addresses).
	natCall := func(t *testing.T, caller, callee *labPhone) {
		var got rtp
		_, signalling := l.learned(t, func() { got = l.call(t, caller, callee) })
		checkTwoWay(t, caller, callee, got)
		if signalling < 2 {
			t.Errorf("the relay learned %v legs by their signalling address, want both", signalling)
		}
	}
	t.Run("NATed caller to NATed callee, two-way RTP", func(t *testing.T) { natCall(t, p1001, p1002) })
	t.Run("the other way round, two-way RTP", func(t *testing.T) { natCall(t, p1002, p1001) })

	t.Run("a third party sprays the relay ports before and after lock", func(t *testing.T) {
		l.attackedCall(t, p1001, p1002)
	})

	t.Run("phone not behind NAT", func(t *testing.T) {
		l.register(t, p1004)
		bs := l.bindings(t, p1004.aor())
		if len(bs) != 1 || bs[0].Contact != "sip:1004@"+p1004.ip+":5060;transport=UDP" && bs[0].Contact != "sip:1004@"+p1004.ip+":5060;transport=udp" {
			t.Errorf("public phone's binding %+v: want its own contact, unchanged", bs)
		}
		// The public phone's leg is learned from its exact SDP address,
		// the NATed one's from its signalling.
		for _, c := range [][2]*labPhone{{p1004, p1001}, {p1002, p1004}} {
			var got rtp
			sdp, signalling := l.learned(t, func() { got = l.call(t, c[0], c[1]) })
			checkTwoWay(t, c[0], c[1], got)
			if sdp < 1 || signalling < 1 {
				t.Errorf("%s → %s: the relay learned %v legs by their SDP address and %v by signalling, want one each", c[0].user, c[1].user, sdp, signalling)
			}
		}
	})

	t.Run("linphonec behind NAT", func(t *testing.T) {
		l.linphonec(t, l.phone("1005"), p1001, p1002)
	})

	t.Run("baresip behind NAT", func(t *testing.T) {
		l.baresip(t, l.phone("1006"), p1001, p1002)
	})

	t.Run("reachable after twice the NAT timeout of silence", func(t *testing.T) {
		quiet := 2*labNATTimeout + 2*time.Second
		if wait := time.Until(silentSince.Add(quiet)); wait > 0 {
			t.Logf("waiting %v more: 1003 has been silent for %v", wait.Round(time.Second), time.Since(silentSince).Round(time.Second))
			time.Sleep(wait)
		}
		// The router has forgotten the control flow, idle as long...
		if control.reaches(t) {
			t.Errorf("router 1 still forwards a UDP flow idle for %v: the lab's NAT timeout (%v) is not in force, so this check proves nothing",
				time.Since(silentSince).Round(time.Second), labNATTimeout)
		}
		// ...but not 1003's binding.
		quiet = time.Since(silentSince)
		before := l.snapshot(t, p1004, p1003)
		l.dial(t, p1004, p1003, silent)
		got := l.snapshot(t, p1004, p1003).minus(before)
		trace := silent.file("msgs.log")
		t.Logf("called after %v of silence (the router's control flow forgotten): the switch had sent 1003 %d OPTIONS; RTP to the callee %d, to the caller %d",
			quiet.Round(time.Second), strings.Count(trace, "OPTIONS sip:"), got.toCallee, got.toCaller)
		checkTwoWay(t, p1004, p1003, got)
	})

	if m, err := l.admin(t, "/metrics"); err == nil {
		t.Logf("voxvisor metrics:\n%s", grepMetrics(m, "media", "nat", "register", "calls", "auth"))
	}
}

// controlFlow is a UDP flow from a LAN through its router to the switch's
// namespace, used once and then left idle: the proof that the router
// forgets idle flows, for the check that the switch keeps phones'
// bindings open.
type controlFlow struct {
	lan, srv *net.UDPConn
	from     *net.UDPAddr // the flow's address on the router, as the switch's side saw it
}

// newControlFlow opens the flow from ph's namespace (port 40001) and
// checks that a reply gets through while it is fresh.
func (l *natLab) newControlFlow(t *testing.T, ph *labPhone) *controlFlow {
	t.Helper()
	c := &controlFlow{}
	var err error
	testenv.InNetns(t, l.sw, func() { c.srv, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(labSwitchIP), Port: 40000}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.srv.Close() })
	testenv.InNetns(t, ph.ns, func() { c.lan, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ph.ip), Port: 40001}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.lan.Close() })
	if _, err := c.lan.WriteToUDP([]byte("hello"), &net.UDPAddr{IP: net.ParseIP(labSwitchIP), Port: 40000}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	c.srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, c.from, err = c.srv.ReadFromUDP(buf); err != nil {
		t.Fatalf("control flow from %s:40001 did not reach the switch's namespace: %v", ph.ip, err)
	}
	if !c.reaches(t) {
		t.Fatalf("control flow: the reply to %v did not get back through the router", c.from)
	}
	return c
}

// reaches says whether a datagram from the switch's side to the flow's
// address on the router gets through to the LAN.
func (c *controlFlow) reaches(t *testing.T) bool {
	t.Helper()
	if _, err := c.srv.WriteToUDP([]byte("ping"), c.from); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	c.lan.SetReadDeadline(time.Now().Add(time.Second))
	_, _, err := c.lan.ReadFromUDP(buf)
	return err == nil
}

// grepMetrics keeps the voxvisor_ sample lines whose name has one of the
// words.
func grepMetrics(body string, words ...string) string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "voxvisor_") {
			continue
		}
		for _, w := range words {
			if strings.Contains(strings.SplitN(line, " ", 2)[0], w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// sprayer is the attacker: from its own address it sends RTP marked with
// labSprayMark to every port the relay has open (it reads them from the
// switch namespace's socket table: an attacker who guessed or sniffed
// them), every 10 ms, and counts whatever comes back.
type sprayer struct {
	conn           *net.UDPConn
	sent, received atomic.Uint64
	stop           chan struct{}
	wg             sync.WaitGroup
}

func (l *natLab) spray(t *testing.T) *sprayer {
	t.Helper()
	s := &sprayer{stop: make(chan struct{})}
	var err error
	testenv.InNetns(t, l.atk, func() {
		s.conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(labAttackerIP)})
	})
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 172) // an RTP header and 160 bytes of PCMA
	pkt[0], pkt[1] = 0x80, 8
	binary.BigEndian.PutUint32(pkt[8:], labSprayMark)
	for i := 12; i < len(pkt); i++ {
		pkt[i] = 0xd5
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, _, err := s.conn.ReadFromUDP(buf); err != nil {
				if !isClosed(err) {
					continue
				}
				return
			}
			s.received.Add(1)
		}
	}()
	go func() {
		defer s.wg.Done()
		var ports []int
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		dst := &net.UDPAddr{IP: net.ParseIP(labSwitchIP)}
		for n := 0; ; n++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			if n%10 == 0 {
				ports = ports[:0]
				bound, _ := testenv.UDPPortsBound(l.vox.Process.Pid)
				for p := range bound {
					if p >= l.cfg.Media.PortMin && p <= l.cfg.Media.PortMax+1 {
						ports = append(ports, p)
					}
				}
			}
			for _, p := range ports {
				binary.BigEndian.PutUint16(pkt[2:], uint16(n))
				binary.BigEndian.PutUint32(pkt[4:], uint32(n*160))
				dst.Port = p
				if _, err := s.conn.WriteToUDP(pkt, dst); err == nil {
					s.sent.Add(1)
				}
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sprayer) close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	s.conn.Close()
	s.wg.Wait()
}

func isClosed(err error) bool { return err != nil && strings.Contains(err.Error(), "use of closed") }

// attackedCall is a call caller → callee while the attacker sprays the
// relay's ports from the moment they are allocated (before either phone
// sends: the learning window) to the hang-up (after lock). Neither phone
// may receive a single marked packet, the attacker may receive nothing,
// and the call's audio must still get through both ways.
func (l *natLab) attackedCall(t *testing.T, caller, callee *labPhone) {
	l.register(t, callee)
	before := l.snapshot(t, caller, callee)
	atkBefore := l.counter(t, l.atk, "relay")
	rejectedBefore := l.metrics(t, mRejectedLearning, mRejectedLocked)
	s := l.spray(t)

	// Note how much was sprayed before the first legitimate packet
	// reached either phone.
	var sprayedBeforeAudio atomic.Uint64
	watch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-watch:
				return
			case <-time.After(50 * time.Millisecond):
			}
			a, _ := testenv.NftCounter(caller.ns, "inet", "natlab", "relay")
			b, _ := testenv.NftCounter(callee.ns, "inet", "natlab", "relay")
			if a > before.toCaller || b > before.toCallee {
				sprayedBeforeAudio.Store(s.sent.Load())
				return
			}
		}
	}()
	uas := l.sipp(t, callee, "", "natlab_uas.xml", "-d", strconv.Itoa(labPreMS))
	l.dial(t, caller, callee, uas)
	time.Sleep(300 * time.Millisecond)
	close(watch)
	<-watched
	s.close()
	got := l.snapshot(t, caller, callee).minus(before)
	atk := l.counter(t, l.atk, "relay") - atkBefore
	rejected := l.metrics(t, mRejectedLearning, mRejectedLocked)
	learning, locked := rejected[mRejectedLearning]-rejectedBefore[mRejectedLearning], rejected[mRejectedLocked]-rejectedBefore[mRejectedLocked]
	total, early := s.sent.Load(), sprayedBeforeAudio.Load()
	t.Logf("attacker sprayed %d packets (%d before the first audio reached a phone, %d after); marked packets at the caller %d, at the callee %d; packets back to the attacker %d (socket) %d (namespace); the relay counted %v rejected while learning, %v after lock",
		total, early, total-early, got.sprayCaller, got.sprayCallee, s.received.Load(), atk, learning, locked)
	if learning == 0 || locked == 0 {
		t.Errorf("the relay's counters show %v packets rejected while learning and %v after lock: want the attacker's in both", learning, locked)
	}
	if early < 50 || total-early < 50 {
		t.Errorf("the spray did not cover the call: %d packets before its audio, %d after (want 50 or more each)", early, total-early)
	}
	if got.sprayCaller != 0 || got.sprayCallee != 0 {
		t.Errorf("the relay forwarded the attacker's packets: %d to the caller, %d to the callee", got.sprayCaller, got.sprayCallee)
	}
	if n := s.received.Load(); n != 0 || atk != 0 {
		t.Errorf("the relay sent the attacker %d packets (%d to any port of its namespace): it latched onto the attacker", n, atk)
	}
	checkTwoWay(t, caller, callee, got)
}

// writeTone writes a WAV file of a 440 Hz tone, 16-bit mono 8 kHz.
func writeTone(t *testing.T, path string, d time.Duration) {
	t.Helper()
	n := int(d.Seconds() * 8000)
	b := make([]byte, 44+2*n)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+2*n))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1)
	binary.LittleEndian.PutUint16(b[22:], 1)
	binary.LittleEndian.PutUint32(b[24:], 8000)
	binary.LittleEndian.PutUint32(b[28:], 16000)
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(2*n))
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(int16(8000*math.Sin(2*math.Pi*440*float64(i)/8000))))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// softCall checks a call between a softphone and a SIPp phone: softRTP
// and sippRTP are the relay's packets counted at each.
func softCall(t *testing.T, what string, soft, sipp *labPhone, softRTP, sippRTP uint64) {
	t.Helper()
	t.Logf("%s: RTP from the relay at %s (softphone) %d, at %s (SIPp) %d", what, soft.user, softRTP, sipp.user, sippRTP)
	if softRTP < labMinRTP {
		t.Errorf("%s: the softphone %s got %d RTP packets through the relay, want at least %d of SIPp's %d", what, soft.user, softRTP, labMinRTP, labPcapPackets)
	}
	if sippRTP < labMinRTP {
		t.Errorf("%s: SIPp phone %s got %d RTP packets from the softphone through the relay, want at least %d", what, sipp.user, sippRTP, labMinRTP)
	}
}

// linphonec runs Debian's linphonec as ph (behind NAT, on the default
// challenge), with a tone file as its microphone: callerSIPp calls it
// (auto-answered), then it calls calleeSIPp.
func (l *natLab) linphonec(t *testing.T, ph, callerSIPp, calleeSIPp *labPhone) {
	bin := need(t, "linphonec")
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".local/share/linphone"), 0o755); err != nil {
		t.Fatal(err)
	}
	tone := filepath.Join(home, "tone.wav")
	writeTone(t, tone, time.Minute)
	rc := filepath.Join(home, "linphonerc")
	if err := os.WriteFile(rc, []byte(fmt.Sprintf(`[sip]
sip_port=5060
sip_tcp_port=0
sip_tls_port=0
default_proxy=0
[rtp]
audio_rtp_port=7078
[sound]
echocancellation=0
[video]
enabled=0
[proxy_0]
reg_proxy=<sip:%s:5060;transport=udp>
reg_route=<sip:%s:5060;transport=udp;lr>
reg_identity=sip:%s@voxvisor.local
reg_sendregister=1
reg_expires=600
[auth_info_0]
username=%s
passwd=%s
realm=voxvisor.local
`, labSwitchIP, labSwitchIP, ph.user, ph.user, ph.pass)), 0o600); err != nil {
		t.Fatal(err)
	}
	stdin, cmds := io.Pipe()
	t.Cleanup(func() { cmds.Close() })
	p := spawn(t, "linphonec "+ph.user, ph.ns, []string{"HOME=" + home}, stdin, bin, "-c", rc, "-d", "5", "-l", filepath.Join(home, "linphonec.log"))
	say := func(cmd string) {
		if _, err := io.WriteString(cmds, cmd+"\n"); err != nil {
			t.Errorf("linphonec %q: %v", cmd, err)
		}
	}
	defer func() {
		say("quit")
		cmds.Close()
		p.wait(10 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(home, "linphonec.log"))
			t.Logf("linphonec log (SIP):\n%s", tail([]byte(grepLines(string(b), "SIP/2.0")), 40))
			t.Logf("linphonec output:\n%s", tail([]byte(p.out.String()), 30))
		}
	}()
	say("soundcard use files")
	say("play " + tone)
	say("autoanswer enable")
	if !l.waitRegistered(t, ph.aor(), 15*time.Second) {
		t.Fatalf("linphonec %s did not register through NAT on the default challenge", ph.user)
	}

	// Called: SIPp → linphonec (auto-answered).
	l.sippCalls(t, "linphonec", ph, callerSIPp)

	// Calling: linphonec → SIPp, hung up by linphonec.
	l.register(t, calleeSIPp)
	before := l.snapshot(t, ph, calleeSIPp)
	uas := l.sipp(t, calleeSIPp, "", "natlab_uas.xml", "-d", "0")
	say("call sip:" + calleeSIPp.user + "@voxvisor.local")
	time.Sleep(time.Duration(labPreMS+labTalkMS) * time.Millisecond)
	say("terminate")
	time.Sleep(500 * time.Millisecond)
	trace := uas.quit(t)
	if !strings.Contains(trace, "INVITE sip:") || !strings.Contains(trace, "BYE sip:") {
		t.Errorf("linphonec's call to %s did not arrive and end:\n%s", calleeSIPp.user, tail([]byte(trace), 60))
	}
	got := l.snapshot(t, ph, calleeSIPp).minus(before)
	softCall(t, "linphonec calls SIPp", ph, calleeSIPp, got.toCaller, got.toCallee)
}

// sippCalls has callerSIPp call the softphone ph (which auto-answers) and
// checks the call's media both ways through the relay.
func (l *natLab) sippCalls(t *testing.T, name string, ph, callerSIPp *labPhone) {
	t.Helper()
	before := l.snapshot(t, callerSIPp, ph)
	uac := l.sipp(t, callerSIPp, labSwitchIP+":5060", "natlab_uac.xml", "-s", ph.user, "-m", "1",
		"-d", strconv.Itoa(labPreMS), "-timeout", "25s", "-timeout_error")
	if err := uac.wait(40 * time.Second); err != nil {
		t.Error(uac.report(err))
	}
	time.Sleep(300 * time.Millisecond)
	got := l.snapshot(t, callerSIPp, ph).minus(before)
	softCall(t, "SIPp calls "+name, ph, callerSIPp, got.toCallee, got.toCaller)
}

// baresip runs Debian's baresip as ph (behind NAT, on the default
// challenge), with a 440 Hz tone as its microphone: callerSIPp calls it
// (auto-answered), then a second run calls calleeSIPp.
func (l *natLab) baresip(t *testing.T, ph, callerSIPp, calleeSIPp *labPhone) {
	bin := need(t, "baresip")
	run := func(quit time.Duration, extra ...string) (*labProc, string) {
		dir := t.TempDir()
		// The interface and a DNS server are named: in a namespace,
		// baresip would otherwise pick its address and resolver from
		// the host's files. The AOR names the switch by address.
		cfg := fmt.Sprintf(`sip_listen %s:5060
net_interface eth0
dns_server %s:53
module_path /usr/lib/baresip/modules
`+baresipTone+`rtp_ports 10000-10100
`, ph.ip, labSwitchIP, ph.user, ph.user)
		acct := fmt.Sprintf("<sip:%s@%s:5060;transport=udp>;auth_pass=%s;regint=600;answermode=auto;audio_codecs=PCMA,PCMU\n", ph.user, labSwitchIP, ph.pass)
		if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "accounts"), []byte(acct), 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"-f", dir, "-t", strconv.Itoa(int(quit.Seconds()))}
		for _, e := range extra {
			args = append(args, "-e", e)
		}
		p := spawn(t, "baresip "+ph.user, ph.ns, nil, nil, bin, args...)
		return p, dir
	}
	logOnFailure := func(p *labProc) {
		if t.Failed() {
			t.Logf("baresip output:\n%s", tail([]byte(p.out.String()), 30))
		}
	}

	// Called: SIPp → baresip (auto-answered).
	p, _ := run(30 * time.Second)
	defer logOnFailure(p)
	if !l.waitRegistered(t, ph.aor(), 10*time.Second) {
		p.cmd.Process.Signal(syscall.SIGTERM) // baresip's output is buffered until it exits
		err := p.wait(5 * time.Second)
		t.Fatalf("baresip %s did not register through NAT on the default challenge (exit: %v):\n%s", ph.user, err, grepLines(p.out.String(), "reg:"))
	}
	l.sippCalls(t, "baresip", ph, callerSIPp)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(10 * time.Second)

	// Calling: baresip → SIPp; baresip hangs up when it quits.
	l.register(t, calleeSIPp)
	before := l.snapshot(t, ph, calleeSIPp)
	uas := l.sipp(t, calleeSIPp, "", "natlab_uas.xml", "-d", "0")
	talk := time.Duration(labPreMS+labTalkMS)*time.Millisecond + 2*time.Second
	p2, _ := run(talk, "/dial sip:"+calleeSIPp.user+"@"+labSwitchIP)
	defer logOnFailure(p2)
	if err := p2.wait(talk + 15*time.Second); err != nil {
		t.Error(err)
	}
	time.Sleep(500 * time.Millisecond)
	trace := uas.quit(t)
	if !strings.Contains(trace, "INVITE sip:") || !strings.Contains(trace, "BYE sip:") {
		t.Errorf("baresip's call to %s did not arrive and end:\n%s", calleeSIPp.user, tail([]byte(trace), 60))
	}
	got := l.snapshot(t, ph, calleeSIPp).minus(before)
	softCall(t, "baresip calls SIPp", ph, calleeSIPp, got.toCaller, got.toCallee)
}
