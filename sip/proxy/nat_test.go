package proxy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/location"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

// natProxy is testProxy with user 1003's bindings replaced by bs.
func natProxy(t *testing.T, bs ...location.Binding) *Proxy {
	t.Helper()
	p := testProxy(t)
	exp := time.Now().Add(time.Hour)
	for i := range bs {
		bs[i].AOR, bs[i].Expires = "1003@voxvisor.local", exp
	}
	p.loc.Update("1003@voxvisor.local", func([]location.Binding) ([]location.Binding, error) { return bs, nil })
	return p
}

// TestLocateNAT: a contact is reached over its flow. A NATed UDP contact
// at the address its REGISTER came from and from the socket it came to;
// a contact behind an edge proxy through its Path; a stream contact
// whose connection is gone is dialled at its Contact only when it is
// neither NATed nor flow-only (;ob), else left out: 430 when only
// flow-only ones remain, 480 otherwise.
func TestLocateNAT(t *testing.T) {
	natUDP := location.Binding{Contact: "sip:1003@192.168.1.20:5060", Source: "203.0.113.7:40123", Transport: "udp", NAT: true, Local: "127.0.0.1:5060"}
	path := location.Binding{Contact: "sip:1003@192.168.1.21:5060", Source: "198.51.100.20:5060", Transport: "udp",
		Path: []string{"sip:198.51.100.20:5070;lr;ob", "sip:core.example.net;lr"}}
	obTCP := location.Binding{Contact: "sip:1003@192.168.1.22:5060;transport=tcp;ob", Source: "203.0.113.8:51000", Transport: "tcp", Outbound: true}
	natTCP := location.Binding{Contact: "sip:1003@192.168.1.23:5060;transport=tcp", Source: "203.0.113.9:51000", Transport: "tcp", NAT: true}
	plainTCP := location.Binding{Contact: "sip:1003@198.51.100.30:5060;transport=tcp", Source: "198.51.100.30:51000", Transport: "tcp"}

	for _, tc := range []struct {
		name  string
		binds []location.Binding
		want  int      // status, 0 for targets
		dests []string // dest/transport of each target
	}{
		{"NATed UDP: where it came from", []location.Binding{natUDP}, 0, []string{"203.0.113.7:40123/udp"}},
		{"Path: its first hop", []location.Binding{path}, 0, []string{"198.51.100.20:5070/udp"}},
		{"flow-only TCP, connection gone", []location.Binding{obTCP}, 430, nil},
		{"NATed TCP, connection gone", []location.Binding{natTCP}, 480, nil},
		{"flow-only TCP gone, another contact left", []location.Binding{obTCP, natUDP}, 0, []string{"203.0.113.7:40123/udp"}},
		{"public TCP, connection gone: its Contact", []location.Binding{plainTCP}, 0, []string{"198.51.100.30:5060/tcp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := natProxy(t, tc.binds...)
			ts, err := p.locate("1003", false)
			if tc.want != 0 {
				if err == nil || sip.StatusOf(err).Code != tc.want {
					t.Fatalf("got %v (%d targets), want %d", err, len(ts), tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range ts {
				got = append(got, tg.dest+"/"+tg.transport)
			}
			if strings.Join(got, ",") != strings.Join(tc.dests, ",") {
				t.Fatalf("targets %v, want %v", got, tc.dests)
			}
		})
	}

	p := natProxy(t, natUDP)
	ts, _ := p.locate("1003", false)
	if ts[0].local != netip.MustParseAddrPort("127.0.0.1:5060") || ts[0].uri.Host != "192.168.1.20" || !ts[0].flow {
		t.Fatalf("NATed UDP target: %+v, want the socket it registered to and its Contact as Request-URI", ts[0])
	}

	p = natProxy(t, path)
	ts, _ = p.locate("1003", false)
	if ts[0].uri.String() != path.Contact || len(ts[0].route) != 2 {
		t.Fatalf("Path target: uri %s, route %v", ts[0].uri.String(), ts[0].route)
	}
	var hs []string
	for _, h := range ts[0].routeHeaders() {
		hs = append(hs, h.Name()+": "+h.Value())
	}
	if want := "Route: <sip:198.51.100.20:5070;lr;ob>|Route: <sip:core.example.net;lr>"; strings.Join(hs, "|") != want {
		t.Fatalf("Route set %q, want %q", strings.Join(hs, "|"), want)
	}

	// A request routed by initial routing gets there too.
	r, _, err := siptest.Request(invite("sip:1003@voxvisor.local", "sip:1001@voxvisor.local"), "203.0.113.50:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	r.User = "1001"
	if ts, _, err := p.routeInitial(r, r.Request.Clone(), &call{rt: p.currentRouting()}); err != nil || len(ts) != 1 || ts[0].dest != "198.51.100.20:5070" {
		t.Fatalf("routeInitial: %v %+v", err, ts)
	}
}

// TestPrepareFollowsFlow: the request sent to a located contact carries
// its Path as Route set (first hop on top, above nothing of ours) and,
// over UDP, leaves from the socket the contact registered to.
func TestPrepareFollowsFlow(t *testing.T) {
	p := testProxy(t)
	p.self = sip.NewSelf("voxvisor.local", append(p.self.Listeners,
		sip.Listener{Transport: "udp", Bound: netip.MustParseAddrPort("127.0.0.2:5080"), Host: "127.0.0.2", Port: 5080}))
	r, _, err := siptest.Request(invite("sip:1003@voxvisor.local", "sip:1001@voxvisor.local"), "203.0.113.50:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := pathTarget([]string{"sip:198.51.100.20:5070;lr;ob", "sip:core.example.net;lr"})
	out, err := p.prepare(r, r.Request.Clone(), tg, true, true)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, h := range out.GetHeaders("Route") {
		routes = append(routes, h.Value())
	}
	if want := "<sip:198.51.100.20:5070;lr;ob>,<sip:core.example.net;lr>"; strings.Join(routes, ",") != want {
		t.Errorf("Route set %v, want %s", routes, want)
	}
	natTg := target{dest: "203.0.113.7:40123", transport: "udp", flow: true, local: netip.MustParseAddrPort("127.0.0.2:5080")}
	out, err = p.prepare(r, r.Request.Clone(), natTg, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if out.Laddr.String() != "127.0.0.2:5080" {
		t.Errorf("sent from %s, want the socket the contact registered to, 127.0.0.2:5080", out.Laddr.String())
	}
	if v := out.Via(); v == nil || v.Host != "127.0.0.2" || v.Port != 5080 {
		t.Errorf("Via %v, want the socket it leaves from", v)
	}
}
