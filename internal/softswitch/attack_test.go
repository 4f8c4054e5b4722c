package softswitch_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/sip/digest"
	"github.com/voxvisor/voxvisor/sip/location"
)

// The attacker's side of the switch: every test here is the hostile
// version of a happy-path test elsewhere, run against the real switch
// over real sockets (STYLE 20).

// rawUA sends hand-made SIP over UDP from one loopback address.
type rawUA struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
	n    int
}

func newRawUA(t *testing.T, ip, switchAddr string) *rawUA {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	to, err := net.ResolveUDPAddr("udp", switchAddr)
	if err != nil {
		t.Fatal(err)
	}
	return &rawUA{t: t, conn: c, to: to}
}

func (u *rawUA) addr() string { return u.conn.LocalAddr().String() }

// request builds a request from this UA: method, Request-URI, From user
// and host, To (with tag when toTag is set), Call-ID, and extra headers.
func (u *rawUA) request(method, ruri, from, toTag, callID string, extra ...string) string {
	u.n++
	to := "<" + ruri + ">"
	if method == "REGISTER" {
		to = "<" + from + ">"
	}
	if toTag != "" {
		to += ";tag=" + toTag
	}
	lines := []string{
		method + " " + ruri + " SIP/2.0",
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bKatk%d%d;rport", u.addr(), time.Now().UnixNano(), u.n),
		"From: <" + from + ">;tag=atk", "To: " + to, "Call-ID: " + callID,
		fmt.Sprintf("CSeq: %d %s", u.n, method), "Max-Forwards: 70",
		"Contact: <sip:x@" + u.addr() + ">",
	}
	lines = append(lines, extra...)
	return strings.Join(append(lines, "Content-Length: 0", "", ""), "\r\n")
}

// do sends msg and returns the final response (nil after 3 s without one).
func (u *rawUA) do(msg string) *siplib.Response {
	u.t.Helper()
	return u.doWithin(msg, 3*time.Second)
}

// doWithin is do with a wait of d.
func (u *rawUA) doWithin(msg string, d time.Duration) *siplib.Response {
	u.t.Helper()
	if _, err := u.conn.WriteToUDP([]byte(msg), u.to); err != nil {
		u.t.Fatal(err)
	}
	buf := make([]byte, 65535)
	deadline := time.Now().Add(d)
	for {
		u.conn.SetReadDeadline(deadline)
		n, err := u.conn.Read(buf)
		if err != nil {
			return nil
		}
		m, err := siplib.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		if res, ok := m.(*siplib.Response); ok && res.StatusCode >= 200 {
			return res
		}
	}
}

func code(res *siplib.Response) int {
	if res == nil {
		return 0
	}
	return res.StatusCode
}

// authorize answers the challenge in res for user, as a phone would.
func authorize(t *testing.T, res *siplib.Response, user, password, method, uri string) string {
	t.Helper()
	for _, name := range []string{"Proxy-Authenticate", "WWW-Authenticate"} {
		for _, h := range res.GetHeaders(name) {
			ch, err := digest.ParseChallenge(h.Value())
			if err != nil || ch.Algorithm != "MD5" {
				continue
			}
			v, err := digest.Authorize(ch, user, password, method, uri)
			if err != nil {
				t.Fatal(err)
			}
			if name == "Proxy-Authenticate" {
				return "Proxy-Authorization: " + v
			}
			return "Authorization: " + v
		}
	}
	t.Fatalf("no MD5 challenge in %d", code(res))
	return ""
}

// newCarrier is a carrier that answers nothing and records what reaches it.
func newCarrier(t *testing.T) *sipPeer { return newSIPPeer(t, nil) }

// TestForgedInDialogNeverReachesCarrier: the toll-fraud trick of issue 12.
// A stranger — or a carrier, with transit off — claims to be inside a
// dialog (a To-tag), with the carrier in the Request-URI, in a Route, or
// in a hand-made flow token. Nothing reaches the carrier; an
// authenticated user's call does.
func TestForgedInDialogNeverReachesCarrier(t *testing.T) {
	carrier := newCarrier(t)
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Trunks = []config.Trunk{
			{Name: "carrier", MaxChannels: 2, Peers: []config.Peer{{Host: "127.0.0.1", Port: carrier.port(), Transport: "udp"}}},
			{Name: "inbound", Peers: []config.Peer{{Host: "127.0.0.2", Port: 5060, Transport: "udp"}},
				Inbound: config.Inbound{CIDRs: []string{"127.0.0.2/32"}},
				DIDs:    []config.DID{{Number: "+4930999002", User: "1002"}}},
		}
		c.DialPlan = []config.Rule{{Prefix: "+", Trunks: []string{"carrier"}}}
	})
	cp := strconv.Itoa(carrier.port())
	_, swPort, _ := net.SplitHostPort(sw.udp)
	target := "sip:+4930123456@127.0.0.1:" + cp
	stranger := newRawUA(t, "127.0.0.66", sw.udp)
	fromCarrier := newRawUA(t, "127.0.0.2", sw.udp)
	for i, tc := range []struct {
		name string
		ua   *rawUA
		ruri string
		hdrs []string
		want int
	}{
		{"To-tag, carrier in Request-URI", stranger, target, nil, 481},
		{"To-tag, Route to the carrier", stranger, "sip:+4930123456@voxvisor.local", []string{"Route: <sip:127.0.0.1:" + cp + ";lr>"}, 481},
		{"hand-made flow token", stranger, target, []string{"Route: <sip:127.0.0.1:" + swPort + ";lr;vxf=udp~127.0.0.1~" + cp + ">"}, 403},
		{"flow token with a made-up signature", stranger, target, []string{"Route: <sip:127.0.0.1:" + swPort + ";lr;vxf=udp~127.0.0.1~" + cp + "~AAAAAAAAAAAAAAAA>"}, 403},
		{"from the other carrier, transit off", fromCarrier, target, nil, 481},
	} {
		// Eight in a row each, beyond the trunk's two channels.
		for j := 0; j < 8; j++ {
			res := tc.ua.do(tc.ua.request("INVITE", tc.ruri, "sip:+4930111@evil.example", "forged", fmt.Sprintf("fraud-%d-%d", i, j), tc.hdrs...))
			if code(res) != tc.want {
				t.Fatalf("%s: attempt %d answered %d, want %d", tc.name, j, code(res), tc.want)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := carrier.requests.Load(); n != 0 {
		t.Fatalf("%d forged requests reached the carrier: %v", n, carrier.seen())
	}
	if sw.Dialogs.Len() != 0 || sw.Gateway().Trunk("carrier").Channels() != 0 {
		t.Fatalf("forged requests left %d calls, %d channels", sw.Dialogs.Len(), sw.Gateway().Trunk("carrier").Channels())
	}

	// The same carrier is reachable the right way: 1001, authenticated.
	phone := newRawUA(t, "127.0.0.10", sw.udp)
	ruri := "sip:+4930123456@voxvisor.local"
	first := phone.request("INVITE", ruri, "sip:1001@voxvisor.local", "", "legit-1")
	res := phone.do(first)
	if code(res) != 407 {
		t.Fatalf("first INVITE of 1001: %d, want 407", code(res))
	}
	phone.conn.WriteToUDP([]byte(phone.request("INVITE", ruri, "sip:1001@voxvisor.local", "", "legit-1",
		authorize(t, res, "1001", "demo1001", "INVITE", ruri))), phone.to)
	waitFor(t, 5*time.Second, "the authenticated call at the carrier", func() bool { return carrier.requests.Load() > 0 })
	if got := carrier.seen()[0]; !strings.HasPrefix(got, "INVITE sip:+4930123456@127.0.0.1:"+cp) {
		t.Fatalf("carrier got %q", got)
	}
}

// TestDigestReplayEndToEnd: a sniffed REGISTER Authorization replayed
// from another address, with another Call-ID and the attacker's Contact,
// does not bind; the phone's own binding stays the only one.
func TestDigestReplayEndToEnd(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	phone, attacker := newRawUA(t, "127.0.0.10", sw.udp), newRawUA(t, "127.0.0.67", sw.udp)
	const ruri = "sip:voxvisor.local"
	reg := func(ua *rawUA, callID string, extra ...string) *siplib.Response {
		return ua.do(ua.request("REGISTER", ruri, "sip:1001@voxvisor.local", "", callID, extra...))
	}
	res := reg(phone, "reg-phone")
	if code(res) != 401 {
		t.Fatalf("REGISTER without credentials: %d, want 401", code(res))
	}
	sniffed := authorize(t, res, "1001", "demo1001", "REGISTER", ruri)
	if res := reg(phone, "reg-phone", sniffed); code(res) != 200 {
		t.Fatalf("the phone's REGISTER: %d", code(res))
	}
	for i := 0; i < 3; i++ {
		if res := reg(attacker, fmt.Sprintf("reg-attacker-%d", i), sniffed); code(res) == 200 {
			t.Fatalf("replayed Authorization bound the attacker's contact (attempt %d)", i)
		}
	}
	binds := sw.Store.Lookup("1001@voxvisor.local")
	if len(binds) != 1 || !strings.Contains(binds[0].Contact, phone.addr()) {
		t.Fatalf("bindings after the replay: %+v", binds)
	}
	if sw.Auth.Replays.Load() < 3 {
		t.Fatalf("replays counted: %d", sw.Auth.Replays.Load())
	}
}

// TestForkingStormBounded: a contact pointing at the switch itself is
// refused at REGISTER; and if bindings pointing back at the switch exist
// anyway (two, over TCP and UDP), one anonymous INVITE ends in a handful
// of requests and a 482, not an exponential storm.
func TestForkingStormBounded(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	phone := newRawUA(t, "127.0.0.10", sw.udp)
	self := "sip:1002@" + sw.tcp + ";transport=tcp"
	res := phone.do(phone.request("REGISTER", "sip:voxvisor.local", "sip:1002@voxvisor.local", "", "reg-loop"))
	res = phone.do(phone.request("REGISTER", "sip:voxvisor.local", "sip:1002@voxvisor.local", "", "reg-loop",
		authorize(t, res, "1002", "demo1002", "REGISTER", "sip:voxvisor.local"), "Contact: <"+self+">"))
	if code(res) != 403 {
		t.Fatalf("REGISTER of a contact at the switch itself: %d, want 403", code(res))
	}

	exp := time.Now().Add(time.Hour)
	sw.Store.Update("1002@voxvisor.local", func([]location.Binding) ([]location.Binding, error) {
		return []location.Binding{
			{AOR: "1002@voxvisor.local", Contact: self, Source: sw.tcp, Transport: "tcp", Expires: exp, CallID: "a"},
			{AOR: "1002@voxvisor.local", Contact: "sip:1002@" + sw.udp, Source: sw.udp, Transport: "udp", Expires: exp, CallID: "b"},
		}, nil
	})
	before := sw.Server.Stats.Requests.Load()
	caller := newRawUA(t, "127.0.0.68", sw.udp)
	res = caller.do(caller.request("INVITE", "sip:1002@voxvisor.local", "sip:anyone@elsewhere.example", "", "storm-1"))
	time.Sleep(time.Second)
	n := sw.Server.Stats.Requests.Load() - before
	if code(res) < 400 || n > 40 {
		t.Fatalf("one INVITE made %d requests and ended %d", n, code(res))
	}
	t.Logf("one INVITE into a forking loop: %d requests, answered %d", n, code(res))
}

// readmeLoadTestConfig is the YAML the README's SIPp load test writes.
func readmeLoadTestConfig(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(b, []byte("cat > my.yaml <<'EOF'\n"))
	body, _, ok2 := bytes.Cut(rest, []byte("\nEOF\n"))
	if !ok || !ok2 {
		t.Fatal("README has no load-test config (cat > my.yaml <<'EOF' ... EOF)")
	}
	return body
}

// TestREADMEConfigLimits: with the README's own load-test config, which
// sets no limit but trusted, every limit is on: a flood from an untrusted
// source is blocked, a password guesser is locked out, and the real user
// still registers from elsewhere.
func TestREADMEConfigLimits(t *testing.T) {
	cfg, err := config.Load("README load test", readmeLoadTestConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	def, _ := config.Load(configs.DefaultName, configs.Default)
	if cfg.Limits.Rate != config.DefaultRate || cfg.Limits.AuthFailures != config.DefaultAuthFailures ||
		cfg.Limits.Connections != config.DefaultConnections || cfg.Limits.Transactions != config.DefaultTransactions ||
		cfg.Limits.Dialogs != config.DefaultDialogs || cfg.Limits.Rate != def.Limits.Rate {
		t.Fatalf("limits of the README config: %+v", cfg.Limits)
	}
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Limits = cfg.Limits
		c.Users = cfg.Users
	})
	flood := newRawUA(t, "127.0.0.70", sw.udp)
	answered := 0
	for i := 0; i < 1000; i++ {
		flood.conn.WriteToUDP([]byte(flood.request("OPTIONS", "sip:voxvisor.local", "sip:scan@x.example", "", fmt.Sprintf("flood-%d", i))), flood.to)
	}
	buf := make([]byte, 4096)
	for {
		flood.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := flood.conn.Read(buf); err != nil {
			break
		}
		answered++
	}
	if answered > int(cfg.Limits.Burst)+50 || sw.Guard.Blocks.Load() == 0 {
		t.Fatalf("flood of 1000 OPTIONS: %d answered, %d blocks", answered, sw.Guard.Blocks.Load())
	}

	guesser, phone := newRawUA(t, "127.0.0.71", sw.udp), newRawUA(t, "127.0.0.72", sw.udp)
	reg := func(ua *rawUA, password string) int {
		res := ua.do(ua.request("REGISTER", "sip:voxvisor.local", "sip:1001@voxvisor.local", "", "bf-"+ua.addr()))
		if code(res) != 401 {
			return code(res)
		}
		return code(ua.do(ua.request("REGISTER", "sip:voxvisor.local", "sip:1001@voxvisor.local", "", "bf-"+ua.addr(),
			authorize(t, res, "1001", password, "REGISTER", "sip:voxvisor.local"))))
	}
	for i := 0; i < 6; i++ {
		if got := reg(guesser, fmt.Sprintf("guess%d", i)); got != 403 {
			t.Fatalf("wrong password %d: %d, want 403", i, got)
		}
	}
	if got := reg(guesser, "demo1001"); got == 200 {
		t.Fatal("the guessing source logged in with the right password during its lockout")
	}
	if got := reg(phone, "demo1001"); got != 200 {
		t.Fatalf("the real user, from elsewhere, during the attack: %d, want 200", got)
	}
	if sw.Guard.Lockouts.Load() == 0 {
		t.Fatal("no lockout counted")
	}
	_ = netip.Addr{}
}

// TestInviteCredentialReplay: the Proxy-Authorization of 1001's call to a
// local user, sniffed and replayed from another address for a call to an
// international number, or for the same call again, reaches no carrier.
func TestInviteCredentialReplay(t *testing.T) {
	carrier := newCarrier(t)
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Peers: []config.Peer{{Host: "127.0.0.1", Port: carrier.port(), Transport: "udp"}}}}
		c.DialPlan = []config.Rule{{Prefix: "+", Trunks: []string{"carrier"}}}
	})
	phone, attacker := newRawUA(t, "127.0.0.10", sw.udp), newRawUA(t, "127.0.0.67", sw.udp)
	const local = "sip:1002@voxvisor.local"
	res := phone.do(phone.request("INVITE", local, "sip:1001@voxvisor.local", "", "call-1"))
	sniffed := authorize(t, res, "1001", "demo1001", "INVITE", local)
	if res := phone.do(phone.request("INVITE", local, "sip:1001@voxvisor.local", "", "call-1", sniffed)); code(res) != 480 {
		t.Fatalf("1001's authenticated call to an unregistered 1002: %d, want 480", code(res))
	}
	for _, ruri := range []string{"sip:+4930123456@voxvisor.local", local} {
		if res := attacker.do(attacker.request("INVITE", ruri, "sip:1001@voxvisor.local", "", "fraud-"+ruri, sniffed)); code(res) != 403 && code(res) != 407 {
			t.Fatalf("replayed credentials for %s: %d, want 403 or 407", ruri, code(res))
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := carrier.requests.Load(); n != 0 {
		t.Fatalf("replayed credentials reached the carrier: %v", carrier.seen())
	}
}
