package softswitch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/cluster"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
)

// node starts a switch on ip as cluster node name over redis.
func node(t *testing.T, redis *testenv.RedisServer, ip, name string) *running {
	t.Helper()
	return start(t, t.TempDir(), func(c *config.Config) {
		c.SIP.Listen = []config.Listener{{Transport: "udp", Address: ip + ":0"}, {Transport: "tcp", Address: ip + ":0"}}
		c.Media.Address = ip
		c.Cluster = config.Cluster{Node: name, Redis: config.Redis{Address: redis.Addr(), Prefix: "voxvisor:"}}
	})
}

// TestClusterSharedLocation: two nodes on 127.0.0.11 and .12 with one
// real Redis. A phone registered on A is called through B, and one
// registered on B through A (SIPp on both sides); the bindings carry the
// node that holds their flow; a node started after the REGISTERs serves
// them at once.
func TestClusterSharedLocation(t *testing.T) {
	redis := testenv.Redis(t)
	a := node(t, redis, "127.0.0.11", "a")
	b := node(t, redis, "127.0.0.12", "b")

	call := func(registrar, via *running, callee string) {
		t.Helper()
		port := freePort(t)
		registrar.register(t, callee, "udp", port)
		waitFor(t, 2*time.Second, callee+" on the other node", func() bool { return len(via.Store.Lookup(callee+"@voxvisor.local")) == 1 })
		wait := sippAsync(t, "uas.xml", port, "udp")
		trace := sipp(t, via.udp, "uac_call.xml", freePort(t), "udp", "-s", callee, "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
		if uas := wait(); !strings.Contains(trace, "SIP/2.0 200 OK") || !strings.Contains(uas, "INVITE sip:"+callee+"@") {
			t.Fatalf("a call through %s to %s registered on %s failed:\n%s", via.udp, callee, registrar.udp, trace)
		}
	}
	// Each node trusts the other's address, as limits.trusted would.
	waitFor(t, 2*cluster.HeartbeatEvery+time.Second, "the nodes trusting each other", func() bool {
		return a.Guard.Trusted(netip.MustParseAddr("127.0.0.12")) && b.Guard.Trusted(netip.MustParseAddr("127.0.0.11")) &&
			!a.Guard.Trusted(netip.MustParseAddr("127.0.0.13"))
	})
	call(a, b, "1002")
	call(b, a, "1003")
	if got := b.Store.Lookup("1002@voxvisor.local")[0].Node; got != "a" {
		t.Fatalf("1002's binding says node %q, want a (it registered there)", got)
	}
	if got := a.Store.Lookup("1003@voxvisor.local")[0].Node; got != "b" {
		t.Fatalf("1003's binding says node %q, want b", got)
	}
	// A node (re)started now has every binding from its start.
	c := node(t, redis, "127.0.0.13", "c")
	if len(c.Store.Lookup("1002@voxvisor.local")) != 1 || len(c.Store.Lookup("1003@voxvisor.local")) != 1 {
		t.Fatal("a node started after the REGISTERs does not have them")
	}
	waitFor(t, 5*time.Second, "three nodes in the membership, each with what it holds", func() bool {
		_, body := a.api(t, "GET", "/api/v1/cluster")
		return strings.Count(body, `"name"`) == 3 && strings.Contains(body, `"name": "a"`) &&
			regexp.MustCompile(`"name": "b",[^}]*"bindings": 1`).MatchString(body)
	})
	if _, m := b.api(t, "GET", "/metrics"); metric(m, "voxvisor_cluster_redis_up") != 1 {
		t.Fatalf("cluster metrics:\n%s", grepLines(m, "cluster"))
	}

	// Redis goes away: calls to the bindings the nodes know go on, and a
	// REGISTER still succeeds (kept, written when Redis is back).
	redis.Stop()
	port := freePort(t)
	a.Store.Remove("1002@voxvisor.local", "") // its old callee is gone
	a.register(t, "1002", "udp", port)
	wait := sippAsync(t, "uas.xml", port, "udp")
	trace := sipp(t, a.udp, "uac_call.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if uas := wait(); !strings.Contains(trace, "SIP/2.0 200 OK") || !strings.Contains(uas, "INVITE sip:1002@") {
		t.Fatalf("a call with Redis down failed:\n%s", trace)
	}
	if _, m := a.api(t, "GET", "/metrics"); metric(m, "voxvisor_cluster_redis_up") != 0 || metric(m, "voxvisor_cluster_redis_write_failures_total") < 1 {
		t.Fatalf("cluster metrics with Redis down:\n%s", grepLines(m, "cluster"))
	}
	redis.Start()
	waitFor(t, 10*time.Second, "the REGISTER made during the outage on the other node", func() bool {
		bs := b.Store.Lookup("1002@voxvisor.local")
		return len(bs) == 1 && strings.Contains(bs[0].Contact, ":"+strconv.Itoa(port)+";")
	})
	// Redis came back empty: each node wrote its own bindings again.
	waitFor(t, 10*time.Second, "the bindings from before the outage back in Redis", func() bool {
		return redis.CLI("exists", "voxvisor:aor:1002@voxvisor.local", "voxvisor:aor:1003@voxvisor.local") == "2"
	})
}

// TestClusterTrunkChannels: a trunk's max_channels 2 holds across three
// nodes: with one call up through A and one through B, a third through C
// gets 503 and never reaches the carrier; when the calls end, the
// channels are free on every node.
func TestClusterTrunkChannels(t *testing.T) {
	redis := testenv.Redis(t)
	carrier := freePort(t)
	trunked := func(ip, name string) *running {
		return start(t, t.TempDir(), func(c *config.Config) {
			c.SIP.Listen = []config.Listener{{Transport: "udp", Address: ip + ":0"}}
			c.Media.Address = ip
			c.Cluster = config.Cluster{Node: name, Redis: config.Redis{Address: redis.Addr(), Prefix: "voxvisor:"}}
			c.Trunks = []config.Trunk{{Name: "carrier", RegExpires: 600, MaxChannels: 2,
				Peers: []config.Peer{{Host: "127.0.0.1", Port: carrier, Transport: "udp"}}}}
			c.DialPlan = []config.Rule{{Prefix: "0", Strip: 1, Prepend: "+49", Trunks: []string{"carrier"}}}
		})
	}
	a, b, c := trunked("127.0.0.11", "a"), trunked("127.0.0.12", "b"), trunked("127.0.0.13", "c")
	waitFor(t, 5*time.Second, "three nodes in the membership", func() bool {
		_, body := c.api(t, "GET", "/api/v1/cluster")
		return strings.Count(body, `"name"`) == 3
	})
	uas := sippAsync(t, "uas_timeout.xml", carrier, "udp", "-m", "2", "-key", "rtp_port", strconv.Itoa(newReceiver(t).port()))
	var up []<-chan string
	for _, via := range []*running{a, b} {
		up = append(up, sippGo(t, via.udp, "uac_timeout.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001",
			"-au", "1001", "-ap", "demo1001", "-mp", strconv.Itoa(mediaPorts(t))))
		waitFor(t, 10*time.Second, "the call through "+via.udp+" up", func() bool { return via.Gateway().Trunk("carrier").Channels() == 1 })
	}
	if held, err := c.Members.Held(context.Background(), "carrier"); err != nil || held["a"] != 1 || held["b"] != 1 {
		t.Fatalf("channels held in Redis: %v, %v; want a and b one each", held, err)
	}
	trace := sipp(t, c.udp, "uac_auth_503.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 503 ") {
		t.Fatalf("the third call was not refused:\n%s", trace)
	}
	for _, via := range []*running{a, b} {
		var calls []struct {
			CallID string `json:"call_id"`
		}
		_, body := via.api(t, "GET", "/api/v1/calls")
		json.Unmarshal([]byte(body), &calls)
		if len(calls) != 1 {
			t.Fatalf("%s has %d calls up, want 1", via.udp, len(calls))
		}
		if code, _ := via.api(t, "DELETE", "/api/v1/calls/"+calls[0].CallID); code != 200 {
			t.Fatalf("hang up on %s: %d", via.udp, code)
		}
	}
	for _, done := range up {
		<-done
	}
	if tr := uas(); strings.Count(tr, "INVITE sip:+4930123456@") != 2 {
		t.Fatalf("the carrier got other than the two calls:\n%s", tr)
	}
	waitFor(t, 5*time.Second, "the channels free across the cluster", func() bool {
		held, err := c.Members.Held(context.Background(), "carrier")
		return err == nil && held["a"] == 0 && held["b"] == 0 && held["c"] == 0
	})
}

// registrarPeer is a carrier's registrar: it answers every REGISTER 200
// with the expiry asked, and records who holds a binding.
type registrarPeer struct {
	*sipPeer
	mu   sync.Mutex
	from map[string]time.Time // source -> binding expiry
}

func newRegistrarPeer(t *testing.T) *registrarPeer {
	t.Helper()
	p := &registrarPeer{from: map[string]time.Time{}}
	p.sipPeer = newSIPPeer(t, func(req string, src *net.UDPAddr) (string, []string) {
		if sipMethod(req) != "REGISTER" {
			return "", nil
		}
		expires := 0
		for _, l := range strings.Split(req, "\r\n") {
			if name, value, _ := strings.Cut(l, ":"); strings.EqualFold(strings.TrimSpace(name), "expires") {
				expires, _ = strconv.Atoi(strings.TrimSpace(value))
			}
		}
		p.mu.Lock()
		if expires > 0 {
			p.from[src.String()] = time.Now().Add(time.Duration(expires) * time.Second)
		} else {
			delete(p.from, src.String())
		}
		p.mu.Unlock()
		return "200 OK", []string{fmt.Sprintf("Expires: %d", expires)}
	})
	return p
}

// bound returns the sources with a live binding.
func (p *registrarPeer) bound() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for src, exp := range p.from {
		if exp.After(time.Now()) {
			out = append(out, src)
		}
	}
	return out
}

// TestClusterOneRegistrationPerTrunk: three nodes with a registering
// trunk; the carrier sees exactly one of them registered at a time;
// when that node stops, another takes the registration over within the
// lease's bound, and the carrier never sees two.
func TestClusterOneRegistrationPerTrunk(t *testing.T) {
	redis := testenv.Redis(t)
	carrier := newRegistrarPeer(t)
	var twice atomic.Bool
	stopWatch := make(chan struct{})
	go func() { // the carrier's view, every 20 ms
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
				if len(carrier.bound()) > 1 {
					twice.Store(true)
				}
			}
		}
	}()
	defer close(stopWatch)
	nodes := map[string]*running{}
	for i, name := range []string{"a", "b", "c"} {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		nodes[ip] = start(t, t.TempDir(), func(c *config.Config) {
			c.SIP.Listen = []config.Listener{{Transport: "udp", Address: ip + ":0"}}
			c.Media.Address = ip
			c.Cluster = config.Cluster{Node: name, Redis: config.Redis{Address: redis.Addr(), Prefix: "voxvisor:"}}
			c.Trunks = []config.Trunk{{Name: "carrier", Register: true, RegExpires: 60,
				Credentials: &config.Credential{Username: "acct", Password: "secret"},
				Peers:       []config.Peer{{Host: "127.0.0.1", Port: carrier.conn.LocalAddr().(*net.UDPAddr).Port, Transport: "udp"}}}}
		})
	}
	var holder string
	waitFor(t, 10*time.Second, "one node registered at the carrier", func() bool {
		b := carrier.bound()
		if len(b) == 1 {
			holder = b[0]
		}
		return len(b) == 1
	})
	time.Sleep(3 * time.Second) // the others keep out
	if b := carrier.bound(); len(b) != 1 || b[0] != holder {
		t.Fatalf("the carrier sees %v, want only %s", b, holder)
	}
	ip, _, _ := strings.Cut(holder, ":")
	// The membership says who holds it.
	waitFor(t, 5*time.Second, "the holder named in the membership", func() bool {
		_, body := nodes[ip].api(t, "GET", "/api/v1/cluster")
		var ns []struct {
			Self   bool     `json:"self"`
			Trunks []string `json:"trunk_registrations"`
		}
		json.Unmarshal([]byte(body), &ns)
		held := 0
		for _, n := range ns {
			if len(n.Trunks) == 1 && n.Trunks[0] == "carrier" {
				held++
				if !n.Self {
					return false
				}
			}
		}
		return held == 1
	})
	began := time.Now()
	nodes[ip].stop()
	var next string
	waitFor(t, 15*time.Second, "another node to take the registration over", func() bool {
		b := carrier.bound()
		if len(b) == 1 && b[0] != holder {
			next = b[0]
			return true
		}
		return false
	})
	t.Logf("registration moved from %s to %s in %s", holder, next, time.Since(began).Round(10*time.Millisecond))
	if twice.Load() {
		t.Fatal("the carrier saw two nodes registered at once")
	}
}

// TestClusterLockout: failed logins count across the nodes and a
// lockout holds on all of them: a guesser spreading wrong passwords over
// A and B is locked out after the limit (3 here) in all, and B then
// refuses even the right password from that source; another source is
// served.
func TestClusterLockout(t *testing.T) {
	redis := testenv.Redis(t)
	limited := func(ip, name string) *running {
		return start(t, t.TempDir(), func(c *config.Config) {
			c.SIP.Listen = []config.Listener{{Transport: "udp", Address: ip + ":0"}}
			c.Media.Address = ip
			c.Limits.AuthFailures = 3
			c.Cluster = config.Cluster{Node: name, Redis: config.Redis{Address: redis.Addr(), Prefix: "voxvisor:"}}
		})
	}
	a, b := limited("127.0.0.11", "a"), limited("127.0.0.12", "b")
	time.Sleep(200 * time.Millisecond) // the lockout watchers subscribe
	for i, via := range []*running{a, b, a} {
		sippFrom(t, "127.0.0.3", via.udp, "register_forbidden.xml", freePort(t), "udp", "-key", "user", "1003", "-au", "1003", "-ap", "guess"+strconv.Itoa(i))
	}
	src := netip.MustParseAddr("127.0.0.3")
	waitFor(t, 2*time.Second, "the lockout on both nodes", func() bool { return a.Guard.Locked(src) && b.Guard.Locked(src) })
	trace := sippFrom(t, "127.0.0.3", b.udp, "register_forbidden.xml", freePort(t), "udp", "-key", "user", "1003", "-au", "1003", "-ap", "demo1003")
	if !strings.Contains(trace, "403 Forbidden") {
		t.Fatalf("the locked-out source was not refused on the other node:\n%s", trace)
	}
	b.register(t, "1003", "udp", freePort(t)) // from 127.0.0.1
	// A node that starts now has the lockout from its start.
	c := limited("127.0.0.13", "c")
	waitFor(t, 2*time.Second, "the lockout on a node started after it", func() bool { return c.Guard.Locked(src) })
}

// TestClusterHopLeavesFromThePhonesSocket: node a listens on two UDP
// sockets and the phone registered to the second; a call placed on b
// reaches the phone through a from that second socket, the one its NAT
// lets in, not from a's first.
func TestClusterHopLeavesFromThePhonesSocket(t *testing.T) {
	redis := testenv.Redis(t)
	a := start(t, t.TempDir(), func(c *config.Config) {
		c.SIP.Listen = []config.Listener{{Transport: "udp", Address: "127.0.0.11:0"}, {Transport: "udp", Address: "127.0.0.11:0"}}
		c.Media.Address = "127.0.0.11"
		c.Cluster = config.Cluster{Node: "a", Redis: config.Redis{Address: redis.Addr(), Prefix: "voxvisor:"}}
	})
	b := node(t, redis, "127.0.0.12", "b")
	first, second := a.Self.Listeners[0].Bound.String(), a.Self.Listeners[1].Bound.String()
	phone, _ := phoneOn(t, second, "1002")
	waitFor(t, 2*time.Second, "1002 on node b", func() bool { return len(b.Store.Lookup("1002@voxvisor.local")) == 1 })
	invites := make(chan string, 1)
	go readRequests(phone, func(req *siplib.Request, src *net.UDPAddr) {
		if req.Method != siplib.INVITE {
			return
		}
		select {
		case invites <- src.String():
		default:
		}
		res := siplib.NewResponseFromRequest(req, 486, "Busy Here", nil)
		res.To().Params.Add("tag", "phone")
		phone.WriteToUDP([]byte(res.String()), src)
	})
	caller := newRawUA(t, "127.0.0.1", b.udp)
	if res := caller.do(caller.request("INVITE", "sip:1002@voxvisor.local", "sip:bench@outside.example", "", "hop-socket-1")); code(res) != 486 {
		t.Fatalf("the call through b and a: %d, want the phone's 486", code(res))
	}
	select {
	case src := <-invites:
		if src != second {
			t.Fatalf("the phone got the INVITE from %s, want a's socket it registered to (%s; a's first is %s)", src, second, first)
		}
	case <-time.After(time.Second):
		t.Fatal("the phone got no INVITE")
	}
}

// TestClusterCallThroughTheFlowsNode: a phone registered on node A is
// reached only through A, whose address its NAT router lets in: a call
// to it placed on B goes B → A → phone (A's hop, signed by A, stored in
// the binding), and the phone's in-dialog requests go back the same way.
// B authenticates the caller, anchors and owns the call; A asks nothing
// again and keeps no dialog of its own.
func TestClusterCallThroughTheFlowsNode(t *testing.T) {
	redis := testenv.Redis(t)
	a := node(t, redis, "127.0.0.11", "a")
	b := node(t, redis, "127.0.0.12", "b")

	phone, port := phoneOn(t, a.udp, "1002")
	waitFor(t, 2*time.Second, "1002 on node b", func() bool { return len(b.Store.Lookup("1002@voxvisor.local")) == 1 })
	if bs := b.Store.Lookup("1002@voxvisor.local"); bs[0].Node != "a" || !strings.Contains(bs[0].Hop, "sip:127.0.0.11:") {
		t.Fatalf("1002's binding as b sees it: %+v, want node a and a hop to a", bs[0])
	}

	// The phone: answers the INVITE, records where each request came from.
	var mu sync.Mutex
	from := map[string]string{} // method: source
	byes := make(chan string, 4)
	go readRequests(phone, func(req *siplib.Request, src *net.UDPAddr) {
		mu.Lock()
		from[string(req.Method)] = src.String()
		mu.Unlock()
		if req.Method == siplib.BYE {
			byes <- req.CallID().Value() + " from " + src.String()
		}
		var res *siplib.Response
		switch req.Method {
		case siplib.INVITE:
			res = siplib.NewResponseFromRequest(req, 200, "OK", []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"))
			res.To().Params.Add("tag", "phone")
			res.AppendHeader(siplib.NewHeader("Contact", fmt.Sprintf("<sip:1002@127.0.0.1:%d>", port)))
			res.AppendHeader(siplib.NewHeader("Content-Type", "application/sdp"))
		case siplib.BYE:
			res = siplib.NewResponseFromRequest(req, 200, "OK", nil)
		default:
			return
		}
		phone.WriteToUDP([]byte(res.String()), src)
	})

	trace := sipp(t, b.udp, "uac_call.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Fatalf("the call placed on b failed:\n%s", trace)
	}
	mu.Lock()
	for _, m := range []string{"INVITE", "ACK", "BYE"} {
		if from[m] != a.udp {
			t.Errorf("the phone got its %s from %q, want it from node a (%s); all: %v", m, from[m], a.udp, from)
		}
	}
	mu.Unlock()
	<-byes // the caller's

	// b ends a call itself (an operator here; a session timer, a drain
	// or a takeover alike): its BYE to the phone goes through a too, on
	// the route set of the 2xx, or a refuses it and the phone rings on.
	caller := newRawUA(t, "127.0.0.1", b.udp)
	if res := caller.do(caller.request("INVITE", "sip:1002@voxvisor.local", "sip:bench@outside.example", "", "hop-hangup-1")); code(res) != 200 {
		t.Fatalf("second call through b and a: %d", code(res))
	}
	if code, body := b.api(t, "DELETE", "/api/v1/calls/hop-hangup-1"); code != 200 {
		t.Fatalf("hangup on b: %d %s", code, body)
	}
	select {
	case got := <-byes:
		if got != "hop-hangup-1 from "+a.udp {
			t.Errorf("the phone got %q, want b's BYE through a (%s)", got, a.udp)
		}
	case <-time.After(5 * time.Second):
		t.Error("the phone never got the BYE of a call b ended")
	}
	// A hop token is no ticket for anyone else: one with a wrong MAC sent
	// to a by a stranger gets the challenge any caller gets.
	hop := b.Store.Lookup("1002@voxvisor.local")[0].Hop
	forged := regexp.MustCompile(`~[A-Za-z0-9_-]+>?$`).ReplaceAllString(strings.Trim(hop, "<>"), "~AAAAAAAAAAAAAAAA")
	if forged == strings.Trim(hop, "<>") || !strings.Contains(forged, "vxh=") {
		t.Fatalf("could not forge a token from %q", hop)
	}
	stranger := newRawUA(t, "127.0.0.1", a.udp)
	res := stranger.do(stranger.request("INVITE", fmt.Sprintf("sip:1002@127.0.0.1:%d", port), "sip:1001@voxvisor.local", "", "forged-hop-1",
		"Route: <"+forged+">"))
	if code(res) != 407 {
		t.Errorf("an INVITE with a forged hop token got %d, want 407", code(res))
	}
	// One call, owned by b: b wrote its CDR, a none.
	readCDRs(t, b, 1)
	if cs, _ := gatewayCDRs(a); len(cs) != 0 {
		t.Errorf("node a wrote %d CDRs for a call it only passed on", len(cs))
	}
}

// TestClusterChannelsOfADeadNode: a trunk with max_channels 1 on two
// nodes; a call to the carrier is up through node a (a process), so a
// call through b is refused; a is killed with SIGKILL: b hangs the call
// up on both sides (the carrier gets its BYE from b), writes the CDR,
// and the channel comes back: b's next call reaches the carrier.
func TestClusterChannelsOfADeadNode(t *testing.T) {
	redis := testenv.Redis(t)
	carrierPort := freePort(t)
	// The carrier answers two calls and waits for each one's BYE.
	carrier := sippAsync(t, "uas_timeout.xml", carrierPort, "udp", "-m", "2", "-key", "rtp_port", strconv.Itoa(newReceiver(t).port()))
	b := start(t, t.TempDir(), func(c *config.Config) {
		c.SIP.Listen = []config.Listener{{Transport: "udp", Address: "127.0.0.12:0"}}
		c.Media.Address = "127.0.0.12"
		c.Media.Anchor = "never"
		c.Cluster = config.Cluster{Node: "b", Redis: config.Redis{Address: redis.Addr(), Prefix: "voxvisor:"}}
		c.Trunks = []config.Trunk{{Name: "carrier", RegExpires: 600, MaxChannels: 1,
			Peers: []config.Peer{{Host: "127.0.0.1", Port: carrierPort, Transport: "udp"}}}}
		c.DialPlan = []config.Rule{{Prefix: "0", Strip: 1, Prepend: "+49", Trunks: []string{"carrier"}}}
	})
	aAddr, aLog, kill := processNode(t, redis.Addr(), "127.0.0.11", "a", fmt.Sprintf(`trunks:
  - name: carrier
    max_channels: 1
    peers: [{host: 127.0.0.1, port: %d, transport: udp}]
dialplan:
  - {prefix: "0", strip: 1, prepend: "+49", trunks: [carrier]}
`, carrierPort))
	waitFor(t, 10*time.Second, "node a in the membership", func() bool {
		_, body := b.api(t, "GET", "/api/v1/cluster")
		return strings.Contains(body, `"name": "a"`)
	})
	caller := sippGo(t, aAddr, "uac_timeout.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-mp", strconv.Itoa(mediaPorts(t)))
	waitFor(t, 10*time.Second, "the call through a holding the trunk's channel", func() bool {
		held, err := b.Members.Held(context.Background(), "carrier")
		return err == nil && held["a"] == 1
	})
	waitFor(t, 3*time.Second, "the call's record in Redis", func() bool { return redis.CLI("hlen", "voxvisor:dialogs:a") == "1" })
	if trace := sipp(t, b.udp, "uac_auth_503.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001"); !strings.Contains(trace, "SIP/2.0 503 ") {
		t.Fatalf("a second call through b while a holds the one channel:\n%s\n%s", trace, aLog.String())
	}

	kill()
	select {
	case <-caller: // it got its BYE, and answered it
	case <-time.After(cluster.Dead + 3*cluster.HeartbeatEvery + 2*time.Second):
		t.Fatalf("the caller never got a BYE for a's call\n%s", aLog.String())
	}
	// b's CDRs: its own refused call, then a's call it ended.
	if c := readCDRs(t, b, 2)[1]; c.Trunk != "carrier" || c.HangupBy != "system" || c.EndReason != "node a lost" || c.Status != 200 {
		t.Errorf("b's CDR of a's call: %+v", c)
	}
	// The channel is free: b's call reaches the carrier.
	trace := sipp(t, b.udp, "uac_call.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Fatalf("a call through b after a died:\n%s", trace)
	}
	// The carrier got both calls, and a BYE for a's from b.
	if tr := carrier(); strings.Count(tr, "INVITE sip:+4930123456@") != 2 || !strings.Contains(tr, `Reason: SIP;cause=503;text="node a lost"`) {
		t.Fatalf("the carrier's side:\n%s", tr)
	}
}

// processNode runs a cluster node as a process of its own (so the test
// can kill it with SIGKILL), from the default configuration with its SIP
// listener on ip, the console off, media not anchored, its Redis at
// redis, and extra appended (YAML of top-level keys). kill ends it with
// SIGKILL; it is killed when the test ends otherwise.
func processNode(t *testing.T, redis, ip, name, extra string) (addr string, log *syncBuf, kill func()) {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfg := string(configs.Default)
	for _, r := range [][2]string{
		{"address: 127.0.0.1:5060", fmt.Sprintf("address: %s:%d", ip, port)},
		{"data_dir: ./data", "data_dir: " + filepath.Join(dir, "data")},
		{"listen: 127.0.0.1:8060", `listen: "off"`},
		{"anchor: always", "anchor: never"},
	} {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("configs/voxvisor.yaml has no %q", r[0])
		}
		cfg = strings.ReplaceAll(cfg, r[0], r[1])
	}
	cfg += fmt.Sprintf("\ncluster:\n  node: %s\n  redis: {address: %q, prefix: \"voxvisor:\"}\n%s", name, redis, extra)
	cfgPath := filepath.Join(dir, "voxvisor.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log = &syncBuf{}
	cmd := exec.Command(buildVoxvisor(t), "serve", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	t.Cleanup(kill)
	return fmt.Sprintf("%s:%d", ip, port), log, kill
}

// TestClusterCallsOfADeadNode: node a (a real process) owns an answered
// call when it is killed with SIGKILL. Node b notices a's heartbeat gone,
// takes the call over from Redis and ends it: both sides get a BYE from
// b, b writes its CDR (hung up by the system, node a lost), and counts it.
func TestClusterCallsOfADeadNode(t *testing.T) {
	redis := testenv.Redis(t)
	b := node(t, redis, "127.0.0.12", "b")

	// Node a, as a process of its own, reaching Redis through a relay the
	// test can cut.
	cut := testenv.Relay(t, redis.Addr())
	aAddr, aLog, kill := processNode(t, cut.Addr(), "127.0.0.11", "a", "")
	waitFor(t, 10*time.Second, "node a in the membership", func() bool {
		_, body := b.api(t, "GET", "/api/v1/cluster")
		return strings.Contains(body, `"name": "a"`)
	})

	// The callee registers on a; both sides are sockets of the test's
	// that answer and note the BYEs they get, and where from.
	callee, port := phoneOn(t, aAddr, "1002")
	caller := newRawUA(t, "127.0.0.1", aAddr)
	byes := make(chan string, 4) // "callee|caller from ip:port"
	answer := func(who string, c *net.UDPConn) func(*siplib.Request, *net.UDPAddr) {
		return func(req *siplib.Request, src *net.UDPAddr) {
			var res *siplib.Response
			switch req.Method {
			case siplib.INVITE:
				res = siplib.NewResponseFromRequest(req, 200, "OK", nil)
				res.To().Params.Add("tag", "callee")
				res.AppendHeader(siplib.NewHeader("Contact", fmt.Sprintf("<sip:1002@127.0.0.1:%d>", port)))
			case siplib.BYE:
				res = siplib.NewResponseFromRequest(req, 200, "OK", nil)
				byes <- who + " from " + src.String()
			default:
				return
			}
			c.WriteToUDP([]byte(res.String()), src)
		}
	}
	go readRequests(callee, answer("callee", callee))
	inv := caller.request("INVITE", "sip:1002@voxvisor.local", "sip:bench@outside.example", "", "dead-node-call-1")
	if res := caller.do(inv); code(res) != 200 {
		t.Fatalf("the call through node a: %d, want 200\n%s", code(res), aLog.String())
	}
	caller.conn.SetReadDeadline(time.Time{}) // do's
	go readRequests(caller.conn, answer("caller", caller.conn))
	waitFor(t, 3*time.Second, "the call's record in Redis", func() bool {
		return redis.CLI("hlen", "voxvisor:dialogs:a") == "1"
	})

	// Cut off from Redis, a stays alive: its heartbeat lapses, but it
	// answers b's OPTIONS, so b leaves its call alone.
	cut.Cut()
	select {
	case s := <-byes:
		t.Fatalf("a BYE (%s) while node a, cut off from Redis, was alive and answering SIP\n%s", s, aLog.String())
	case <-time.After(cluster.Dead + 3*cluster.HeartbeatEvery):
	}
	if _, m := b.api(t, "GET", "/metrics"); metric(m, "voxvisor_cluster_takeovers_held_total") < 1 || metric(m, "voxvisor_cluster_calls_taken_over_total") != 0 {
		t.Fatalf("with a alive but cut off from Redis, cluster metrics:\n%s", grepLines(m, "cluster"))
	}

	// SIGKILL: no drain, no goodbye; now a does not answer either.
	kill()
	got := map[string]bool{}
	deadline := time.After(cluster.Dead + 3*cluster.HeartbeatEvery + 2*time.Second)
	for len(got) < 2 {
		select {
		case s := <-byes:
			got[s] = true
		case <-deadline:
			t.Fatalf("BYEs after node a died: %v, want one to each side from b", got)
		}
	}
	for _, who := range []string{"callee", "caller"} {
		if !got[who+" from "+b.udp] {
			t.Errorf("BYEs %v: want the %s's from b (%s)", got, who, b.udp)
		}
	}
	cdrs := readCDRs(t, b, 1)
	if c := cdrs[0]; c.HangupBy != "system" || c.EndReason != "node a lost" || c.Status != 200 {
		t.Errorf("b's CDR for a's call: %+v", c)
	}
	if _, m := b.api(t, "GET", "/metrics"); metric(m, "voxvisor_cluster_calls_taken_over_total") != 1 {
		t.Errorf("cluster metrics:\n%s", grepLines(m, "cluster"))
	}
	if n := redis.CLI("exists", "voxvisor:dialogs:a"); n != "0" {
		t.Errorf("node a's calls still in Redis after the takeover (exists = %s)", n)
	}

	// The callee's binding still names a, now dead: b calls it directly
	// rather than through a hop that leads nowhere.
	again := newRawUA(t, "127.0.0.1", b.udp)
	if res := again.do(again.request("INVITE", "sip:1002@voxvisor.local", "sip:bench@outside.example", "", "dead-node-call-2")); code(res) != 200 {
		t.Errorf("a call on b to a phone registered on the dead node a: %d, want 200 (straight to the phone)", code(res))
	}
}
