package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/auth"
	"github.com/voxvisor/voxvisor/sip/location"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

func testProxy(t *testing.T) *Proxy {
	t.Helper()
	a, err := auth.New("voxvisor.local", []string{"MD5"}, time.Minute, []auth.User{
		{Username: "1001", Password: "x1001"}, {Username: "1002", Password: "x1002"}, {Username: "1003", Password: "x1003"},
	}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := location.New(nil)
	exp := time.Now().Add(time.Hour)
	loc.Update("1002@voxvisor.local", func([]location.Binding) ([]location.Binding, error) {
		return []location.Binding{
			{Contact: "sip:1002@10.0.0.2:5062", Source: "198.51.100.2:4000", Transport: "udp", Expires: exp, Q: 0.5},
			{Contact: "sip:1002@10.0.0.3:5062;transport=tcp", Source: "198.51.100.3:4001", Transport: "udp", Expires: exp, Q: 1},
			{Contact: "sip:1002@10.0.0.4:5063;transport=tls", Source: "198.51.100.4:4002", Transport: "tls", Expires: exp, Q: 0.1},
		}, nil
	})
	self := sip.NewSelf("voxvisor.local", []sip.Listener{
		{Transport: "udp", Bound: netip.MustParseAddrPort("127.0.0.1:5060"), Host: "127.0.0.1", Port: 5060},
		{Transport: "tcp", Bound: netip.MustParseAddrPort("127.0.0.1:5060"), Host: "127.0.0.1", Port: 5060},
		{Transport: "tls", Bound: netip.MustParseAddrPort("127.0.0.1:5061"), Host: "127.0.0.1", Port: 5061},
	})
	return New(nil, self, loc, a, Config{RingTimeout: time.Minute}, logging.Discard())
}

func invite(ruri, from string, extra ...string) string {
	return strings.Join(append([]string{
		"INVITE " + ruri + " SIP/2.0",
		"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport",
		"From: <" + from + ">;tag=1",
		"To: <" + ruri + ">",
		"Call-ID: c1",
		"CSeq: 1 INVITE",
		"Max-Forwards: 70",
	}, append(extra, "Content-Length: 0")...), "\n")
}

func TestRouteInitial(t *testing.T) {
	p := testProxy(t)
	for _, tc := range []struct {
		name, raw string
		user      string // already authenticated as
		want      int    // status, 0 for targets
		targets   []string
	}{
		// (Who must authenticate is the auth step's: see sip/auth.)
		{"fork to every contact, best q first", invite("sip:1002@voxvisor.local", "sip:1001@voxvisor.local"), "1001", 0,
			[]string{"198.51.100.3:4001", "198.51.100.2:4000", "10.0.0.4:5063"}},
		{"address as domain", invite("sip:1002@127.0.0.1", "sip:1001@voxvisor.local"), "1001", 0,
			[]string{"198.51.100.3:4001", "198.51.100.2:4000", "10.0.0.4:5063"}},
		// (No connection is up in this test, so the TLS contact is
		// dialled at its Contact address.)
		{"sips: reaches only the contact registered over TLS", invite("sips:1002@voxvisor.local", "sips:1001@voxvisor.local"), "1001", 0,
			[]string{"10.0.0.4:5063"}},
		{"sips: to a user without a TLS contact", invite("sips:1003@voxvisor.local", "sips:1001@voxvisor.local"), "1001", 480, nil},
		{"known user, no binding", invite("sip:1003@voxvisor.local", "sip:1001@voxvisor.local"), "1001", 480, nil},
		{"unknown user", invite("sip:4242@voxvisor.local", "sip:1001@voxvisor.local"), "1001", 404, nil},
		{"foreign domain is no relay", invite("sip:+15551234@carrier.example", "sip:1001@voxvisor.local"), "1001", 403, nil},
		{"outside caller may reach a local user", invite("sip:1002@voxvisor.local", "sip:alice@elsewhere.example"), "", 0,
			[]string{"198.51.100.3:4001", "198.51.100.2:4000", "10.0.0.4:5063"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := siptest.Request(tc.raw, "203.0.113.9:5060", "udp")
			if err != nil {
				t.Fatal(err)
			}
			r.User = tc.user
			ts, _, err := p.routeInitial(r, r.Request.Clone(), &call{rt: p.currentRouting()})
			if tc.want != 0 {
				if err == nil || sip.StatusOf(err).Code != tc.want {
					t.Fatalf("got %v, want %d", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range ts {
				got = append(got, tg.dest)
			}
			if strings.Join(got, ",") != strings.Join(tc.targets, ",") {
				t.Fatalf("targets = %v, want %v", got, tc.targets)
			}
			if ts[0].uri.Host == "" {
				t.Error("target has no Request-URI")
			}
		})
	}
}

func TestInDialogFollowsFlow(t *testing.T) {
	p := testProxy(t)
	flow := flowToken{transport: "tcp", addr: netip.MustParseAddrPort("198.51.100.3:4001")}
	rr := p.recordRoute(p.self.Listeners[1], flow, "c1", false)
	caller := p.recordRoute(p.self.Listeners[0], flowToken{transport: "udp", addr: netip.MustParseAddrPort("203.0.113.9:5060")}, "c1", false)
	r := inDialog(t, "c1", "Route: "+caller.Value(), "Route: "+rr.Value())
	fwd := r.Request.Clone()
	got, popped, forged := p.popOwnRoutes(fwd)
	if !popped || forged || got == nil || *got != flow {
		t.Fatalf("flow = %+v (popped %v, forged %v), want %+v", got, popped, forged, flow)
	}
	if fwd.Route() != nil {
		t.Fatalf("our Route entries left in the request: %v", fwd.Route())
	}
	tg, err := p.routeInDialog(r, got, forged)
	if err != nil || tg.dest != "198.51.100.3:4001" || tg.transport != "tcp" {
		t.Fatalf("target = %+v, %v", tg, err)
	}
}

// inDialog is a BYE with a To-tag, Call-ID callID and the given extra
// header lines, from 203.0.113.9.
func inDialog(t *testing.T, callID string, hdrs ...string) *sip.Request {
	t.Helper()
	lines := []string{
		"BYE sip:+4930123456@198.51.100.77 SIP/2.0",
		"Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK2",
	}
	lines = append(lines, hdrs...)
	lines = append(lines, "From: <sip:1001@voxvisor.local>;tag=1", "To: <sip:+4930123456@voxvisor.local>;tag=x",
		"Call-ID: "+callID, "CSeq: 2 BYE", "Max-Forwards: 70", "Content-Length: 0")
	r, _, err := siptest.Request(strings.Join(lines, "\n"), "203.0.113.9:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestInDialogRefused: a To-tag is no ticket. A request claiming to be in
// a dialog goes nowhere unless it carries our own Record-Route entry,
// signed for its Call-ID: not by its Request-URI, not by a Route to a
// carrier, not with a hand-made or copied flow token.
func TestInDialogRefused(t *testing.T) {
	p := testProxy(t)
	carrier := flowToken{transport: "udp", addr: netip.MustParseAddrPort("198.51.100.77:5060")}
	other := p.recordRoute(p.self.Listeners[0], carrier, "another-call", false)
	for _, tc := range []struct {
		name string
		hdrs []string
		code int
	}{
		{"Request-URI only", nil, 481},
		{"Route to the carrier", []string{"Route: <sip:198.51.100.77;lr>"}, 481},
		{"our address without a token", []string{"Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:198.51.100.77;lr>"}, 481},
		{"unsigned token", []string{"Route: <sip:127.0.0.1:5060;lr;vxf=" + carrier.plain() + ">"}, 403},
		{"bad signature", []string{"Route: <sip:127.0.0.1:5060;lr;vxf=" + carrier.plain() + "~AAAAAAAAAAAAAAAA>"}, 403},
		{"token of another call", []string{"Route: " + other.Value()}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := inDialog(t, "attack-1", tc.hdrs...)
			fwd := r.Request.Clone()
			flow, _, forged := p.popOwnRoutes(fwd)
			tg, err := p.routeInDialog(r, flow, forged)
			if err == nil {
				t.Fatalf("forwarded to %s", tg.dest)
			}
			if got := sip.StatusOf(err).Code; got != tc.code {
				t.Fatalf("status %d, want %d", got, tc.code)
			}
		})
	}
}

func TestFlowTokenRoundTrip(t *testing.T) {
	key := []byte("k")
	for _, s := range []string{"198.51.100.3:4001", "[2001:db8::1]:5060"} {
		f := flowToken{transport: "udp", addr: netip.MustParseAddrPort(s)}
		g, ok := verifyFlow(newFlowKey(key), "c", f.sign(newFlowKey(key), "c"))
		if !ok || *g != f {
			t.Errorf("%s: round trip gave %+v", s, g)
		}
		if _, ok := verifyFlow(newFlowKey(key), "d", f.sign(newFlowKey(key), "c")); ok {
			t.Errorf("%s: token for Call-ID c accepted for d", s)
		}
		if _, ok := verifyFlow(newFlowKey([]byte("other")), "c", f.sign(newFlowKey(key), "c")); ok {
			t.Errorf("%s: token accepted under another key", s)
		}
	}
	for _, bad := range []string{"", "sctp~1.2.3.4~5", "udp~nohost", "udp~1.2.3.4~x"} {
		if _, ok := parseFlow(bad); ok {
			t.Errorf("parseFlow(%q) accepted", bad)
		}
	}
}

func resp(code int, hdrs ...string) *siplib.Response {
	r := siplib.NewResponse(code, "x")
	for _, h := range hdrs {
		name, val, _ := strings.Cut(h, ": ")
		r.AppendHeader(siplib.NewHeader(name, val))
	}
	return r
}

func TestBestResponse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []*siplib.Response
		want  int
		auths int
	}{
		{"6xx wins", []*siplib.Response{resp(486), resp(603), resp(404)}, 603, 0},
		{"lowest class", []*siplib.Response{resp(503), resp(486)}, 486, 0},
		{"487 only when nothing else", []*siplib.Response{resp(487), resp(480)}, 480, 0},
		{"503 becomes 500", []*siplib.Response{resp(503)}, 500, 0},
		{"challenges merged", []*siplib.Response{resp(401, "WWW-Authenticate: Digest realm=\"a\""), resp(407, "Proxy-Authenticate: Digest realm=\"b\"")}, 401, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := bestResponse(tc.in)
			if got.StatusCode != tc.want {
				t.Fatalf("best = %d, want %d", got.StatusCode, tc.want)
			}
			if n := len(got.GetHeaders("WWW-Authenticate")) + len(got.GetHeaders("Proxy-Authenticate")); n != tc.auths && tc.auths > 0 {
				t.Fatalf("challenges = %d, want %d", n, tc.auths)
			}
		})
	}
	if bestResponse(nil) != nil {
		t.Fatal("best of nothing")
	}
}

func TestTLSTargets(t *testing.T) {
	for _, tc := range []struct{ uri, dest, transport string }{
		{"sips:1002@192.0.2.7", "192.0.2.7:5061", "tls"},
		{"sip:1002@192.0.2.7;transport=tls", "192.0.2.7:5061", "tls"},
		{"sip:1002@192.0.2.7:5071;transport=TLS", "192.0.2.7:5071", "tls"},
		{"sip:1002@192.0.2.7", "192.0.2.7:5060", "udp"},
		{"sip:carrier.example;transport=tcp", "carrier.example:5060", "tcp"},
	} {
		var u siplib.Uri
		if err := siplib.ParseUri(tc.uri, &u); err != nil {
			t.Fatal(err)
		}
		if got := uriTarget(u); got.dest != tc.dest || got.transport != tc.transport {
			t.Errorf("%s: target %s over %s, want %s over %s", tc.uri, got.dest, got.transport, tc.dest, tc.transport)
		}
	}
}

// TestSecureRecordRoute: a sips: dialog is record-routed with sips: URIs
// on the TLS listener, and the flow it remembers is parsed back.
func TestSecureRecordRoute(t *testing.T) {
	p := testProxy(t)
	flow := flowToken{transport: "tls", addr: netip.MustParseAddrPort("198.51.100.4:4002")}
	tlsL, _ := p.self.Listener("tls")
	rr := p.recordRoute(tlsL, flow, "c", true)
	if got := rr.Value(); !strings.HasPrefix(got, "<sips:127.0.0.1:5061;lr;vxf=tls~") {
		t.Fatalf("Record-Route %s is not a sips: URI on the TLS listener", got)
	}
	if plain := p.recordRoute(tlsL, flow, "c", false).Value(); !strings.Contains(plain, "transport=tls") {
		t.Fatalf("Record-Route %s for a sip: dialog over TLS lacks transport=tls", plain)
	}
	if !p.self.IsMe(rr.Address) {
		t.Fatal("our own sips: Record-Route is not recognised as ours")
	}
	v, _ := rr.Address.UriParams.Get(flowParam)
	got, ok := verifyFlow(p.flows, "c", v)
	if !ok || *got != flow {
		t.Fatalf("flow %s parsed as %+v", v, got)
	}
}

// TestBranchMaxForwards: every forked branch carries one hop less than
// the request had (sipgo shares the parsed header between clones: it
// once went 0, 4294967295, 4294967294 over three branches), capped at 70,
// and its Via branch carries the request's loop key.
func TestBranchMaxForwards(t *testing.T) {
	p := testProxy(t)
	for _, tc := range []struct{ in, want string }{{"1", "0"}, {"70", "69"}, {"4000000000", "70"}} {
		raw := strings.Replace(invite("sip:1002@voxvisor.local", "sip:stranger@example.net"), "Max-Forwards: 70", "Max-Forwards: "+tc.in, 1)
		r, _, err := siptest.Request(raw, "203.0.113.9:5060", "udp")
		if err != nil {
			t.Fatal(err)
		}
		fwd := r.Request.Clone()
		for i, dest := range []string{"198.51.100.2:4000", "198.51.100.3:4001", "198.51.100.4:4002"} {
			out, err := p.prepare(r, fwd, target{dest: dest, transport: "udp"}, true, true)
			if err != nil {
				t.Fatal(err)
			}
			if got := out.GetHeader("Max-Forwards").Value(); got != tc.want {
				t.Fatalf("Max-Forwards %s: branch %d carries %s, want %s", tc.in, i, got, tc.want)
			}
			if b, _ := out.Via().Params.Get("branch"); !strings.HasPrefix(b, sip.BranchPrefix+r.LoopKey()+".") {
				t.Fatalf("branch %s lacks the loop key", b)
			}
		}
		if got := r.Request.GetHeader("Max-Forwards").Value(); got != tc.in {
			t.Fatalf("the received request's Max-Forwards changed to %s", got)
		}
	}
}

// TestHopTokens: a hop token leads to its flow while its binding lasts,
// only as the one Route entry of ours on the request (what lets the
// request past authentication is what routes it), and not once expired
// or altered.
func TestHopTokens(t *testing.T) {
	p := testProxy(t)
	b := location.Binding{AOR: "1002@voxvisor.local", Source: "198.51.100.2:4000", Transport: "udp", Local: "127.0.0.1:5060",
		Expires: time.Now().Add(time.Hour)}
	hop := p.HopURI(b)
	if !strings.HasPrefix(hop, "sip:127.0.0.1:5060;lr;vxh=udp~198.51.100.2~4000~") {
		t.Fatalf("hop %s", hop)
	}
	req := func(routes ...string) *siplib.Request {
		var hs []string
		for _, rt := range routes {
			hs = append(hs, "Route: <"+rt+">")
		}
		r, _, err := siptest.Request(invite("sip:1002@10.0.0.2:5062", "sip:1001@voxvisor.local", hs...), "127.0.0.2:5060", "udp")
		if err != nil {
			t.Fatal(err)
		}
		return r.Request
	}
	good := req(hop, "sip:edge.example.net;lr")
	if !p.IsHop(good) {
		t.Fatal("a valid hop, a foreign entry after it: not a hop")
	}
	if f, _, forged := p.popOwnRoutes(good); forged || f == nil || !f.hop || f.addr.String() != "198.51.100.2:4000" {
		t.Fatalf("routing follows %+v (forged %v)", f, forged)
	}
	// Our own flow token behind the hop: authentication would be skipped
	// for the hop while routing followed the other entry.
	rr := p.recordRoute(sip.Listener{Transport: "udp", Host: "127.0.0.1", Port: 5060},
		flowToken{transport: "udp", addr: netip.MustParseAddrPort("203.0.113.7:5060")}, "c1", false)
	mixed := req(hop, rr.Address.String())
	if p.IsHop(mixed) {
		t.Error("a hop followed by another entry of ours passed as a hop")
	}
	if _, _, forged := p.popOwnRoutes(mixed); !forged {
		t.Error("a hop followed by another entry of ours not refused in routing")
	}
	b.Expires = time.Now().Add(-time.Second)
	if p.IsHop(req(p.HopURI(b))) {
		t.Error("an expired hop accepted")
	}
	if p.IsHop(req(strings.Replace(hop, "198.51.100.2", "198.51.100.9", 1))) {
		t.Error("a hop to another address (MAC unchanged) accepted")
	}
}
