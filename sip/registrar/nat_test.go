package registrar

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/sip"
)

// TestNATDetection: the binding is marked NATed exactly when its REGISTER
// shows a router in between, as Kamailio's nat_uac_test would see it.
func TestNATDetection(t *testing.T) {
	for _, tc := range []struct {
		name, source, transport, via, contact string
		nat                                   bool
	}{
		{"public phone, all agree", "192.0.2.7:5060", "udp", "192.0.2.7:5060;rport", "sip:1001@192.0.2.7:5060", false},
		{"default ports agree", "192.0.2.7:5060", "udp", "192.0.2.7", "sip:1001@192.0.2.7", false},
		{"LAN phone on a LAN switch", "10.0.0.5:5062", "udp", "10.0.0.5:5062;rport", "sip:1001@10.0.0.5:5062", false},
		{"private contact, public source", "192.0.2.7:40000", "udp", "192.0.2.7:40000;rport", "sip:1001@192.168.1.20:5060", true},
		{"CGNAT contact (RFC 6598)", "192.0.2.7:40000", "udp", "192.0.2.7:40000", "sip:1001@100.64.3.4:40000", true},
		{"ULA contact", "[2001:db8::7]:40000", "udp", "[2001:db8::7]:40000", "sip:1001@[fd00::20]:5060", true},
		{"contact elsewhere", "192.0.2.7:5060", "udp", "192.0.2.7:5060", "sip:1001@198.51.100.9:5060", true},
		{"UDP port rewritten by the router", "192.0.2.7:40000", "udp", "192.0.2.7:5060", "sip:1001@192.0.2.7:5060", true},
		{"private Via, public contact = source", "192.0.2.7:5060", "udp", "10.0.0.5:5060;rport", "sip:1001@192.0.2.7:5060", true},
		{"Via received differs", "192.0.2.7:5060", "udp", "192.0.2.7:5060;received=198.51.100.3", "sip:1001@192.0.2.7:5060", true},
		{"Via rport differs", "192.0.2.7:5060", "udp", "192.0.2.7:5060;rport=5070", "sip:1001@192.0.2.7:5060", true},
		{"TCP: the source port is the phone's choice", "192.0.2.7:51234", "tcp", "192.0.2.7:5060", "sip:1001@192.0.2.7:5060;transport=tcp", false},
		{"TCP behind NAT", "192.0.2.7:51234", "tcp", "10.0.0.5:5060", "sip:1001@10.0.0.5:5060;transport=tcp", true},
		{"a host name proves nothing", "192.0.2.7:5060", "udp", "192.0.2.7:5060", "sip:1001@phone.example", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.g.SetLocalAddr(func(tp string, src netip.AddrPort) string { return "198.51.100.1:5060" })
			res := f.registerFrom(t, tc.source, tc.transport, tc.via, "secret1001", "MD5", "Contact: <"+tc.contact+">")
			if res.StatusCode != 200 {
				t.Fatalf("status %d %s", res.StatusCode, res.Reason)
			}
			b := f.store.Lookup("1001@" + realm)[0]
			if b.NAT != tc.nat {
				t.Fatalf("NAT = %v, want %v (binding %+v)", b.NAT, tc.nat, b)
			}
			if b.Source != netip.MustParseAddrPort(tc.source).String() {
				t.Fatalf("source = %s", b.Source)
			}
			if wantLocal := map[bool]string{true: "198.51.100.1:5060", false: ""}[tc.transport == "udp"]; b.Local != wantLocal {
				t.Fatalf("local = %q, want %q", b.Local, wantLocal)
			}
		})
	}
}

// TestNATMaxExpires: nat.max_expires shortens what a NATed contact is
// granted, and only a NATed one's.
func TestNATMaxExpires(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.g.SetNAT(NAT{MaxExpires: 90})
	res := f.registerFrom(t, "192.0.2.7:40000", "udp", "192.168.1.20:5060;rport", "secret1001", "MD5",
		"Contact: <sip:1001@192.168.1.20:5060>", "Expires: 3600")
	if res.StatusCode != 200 || !strings.Contains(contacts(res)[0], "expires=90") {
		t.Fatalf("NATed contact: %d %v, want expires=90", res.StatusCode, contacts(res))
	}
	f2 := newFixture(t, time.Minute)
	f2.g.SetNAT(NAT{MaxExpires: 90})
	res = f2.registerFrom(t, "192.0.2.7:5060", "udp", "192.0.2.7:5060", "secret1001", "MD5",
		"Contact: <sip:1001@192.0.2.7:5060>", "Expires: 3600")
	if res.StatusCode != 200 || !strings.Contains(contacts(res)[0], "expires=3600") {
		t.Fatalf("public contact: %d %v, want expires=3600", res.StatusCode, contacts(res))
	}
}

// TestOutboundContact: ;ob in the Contact URI, or a reg-id, asks to be
// reached over the flow only (RFC 5626).
func TestOutboundContact(t *testing.T) {
	for _, tc := range []struct {
		contact string
		ob      bool
	}{
		{"<sip:1001@192.168.1.20:5060;ob>", true},
		{`<sip:1001@192.168.1.20:5060;transport=tcp>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"`, true},
		{"<sip:1001@192.168.1.20:5060>", false},
	} {
		f := newFixture(t, time.Minute)
		if res := f.register(t, "secret1001", "MD5", "Contact: "+tc.contact); res.StatusCode != 200 {
			t.Fatalf("%s: %d", tc.contact, res.StatusCode)
		}
		if b := f.store.Lookup("1001@" + realm)[0]; b.Outbound != tc.ob {
			t.Errorf("%s: outbound = %v, want %v", tc.contact, b.Outbound, tc.ob)
		}
	}
}

// TestPath: a REGISTER through an edge proxy keeps its Path, first hop
// first, is not judged NATed (the source is the edge, not the phone),
// and is answered Supported: path (with the Path echoed to a UA that
// supports it). A Path that is not SIP is refused, and one whose first
// hop is the switch itself or a carrier falls under the contact policy.
func TestPath(t *testing.T) {
	f := newFixture(t, time.Minute)
	res := f.registerFrom(t, "198.51.100.20:5060", "udp", "198.51.100.20:5060", "secret1001", "MD5",
		"Contact: <sip:1001@192.168.1.20:5060>", "Path: <sip:edge1.example.net;lr>", "Path: <sip:198.51.100.20:5060;lr;ob>, <sip:core.example.net;lr>", "Supported: path, outbound")
	if res.StatusCode != 200 {
		t.Fatalf("status %d %s", res.StatusCode, res.Reason)
	}
	b := f.store.Lookup("1001@" + realm)[0]
	if want := "sip:edge1.example.net;lr,sip:198.51.100.20:5060;lr;ob,sip:core.example.net;lr"; strings.Join(b.Path, ",") != want || b.NAT {
		t.Fatalf("path = %v (nat %v), want %s and not NATed", b.Path, b.NAT, want)
	}
	if h := res.GetHeader("Supported"); h == nil || h.Value() != "path" {
		t.Fatalf("Supported = %v, want path", h)
	}
	if ps := res.GetHeaders("Path"); len(ps) != 3 || ps[0].Value() != "<sip:edge1.example.net;lr>" {
		t.Fatalf("Path in the 200 = %v", ps)
	}

	// Without Supported: path the Path is kept but not echoed.
	f = newFixture(t, time.Minute)
	res = f.registerFrom(t, "198.51.100.20:5060", "udp", "198.51.100.20:5060", "secret1001", "MD5",
		"Contact: <sip:1001@192.168.1.20:5060>", "Path: <sip:edge1.example.net;lr>")
	if res.StatusCode != 200 || len(res.GetHeaders("Path")) != 0 || res.GetHeader("Supported") == nil {
		t.Fatalf("without Supported: path: %d, Path %v, Supported %v", res.StatusCode, res.GetHeaders("Path"), res.GetHeader("Supported"))
	}
	if b := f.store.Lookup("1001@" + realm)[0]; len(b.Path) != 1 {
		t.Fatalf("path = %v", b.Path)
	}

	// Without Path, no Supported and nothing stored.
	f = newFixture(t, time.Minute)
	res = f.register(t, "secret1001", "MD5", "Contact: <sip:1001@192.168.1.20:5060>")
	if res.StatusCode != 200 || res.GetHeader("Supported") != nil || f.store.Lookup("1001@" + realm)[0].Path != nil {
		t.Fatalf("no Path: %d, Supported %v", res.StatusCode, res.GetHeader("Supported"))
	}

	self := sip.NewSelf(realm, []sip.Listener{{Transport: "udp", Bound: netip.MustParseAddrPort("198.51.100.1:5060"), Host: "198.51.100.1", Port: 5060}})
	for _, tc := range []struct {
		name, path string
		policy     ContactPolicy
		want       int
	}{
		{"not a SIP URI", "<tel:+4930123>", ContactPolicy{}, 400},
		{"unterminated", "<sip:edge.example.net;lr", ContactPolicy{}, 400},
		{"first hop is the switch", "<sip:198.51.100.1:5060;lr>", ContactPolicy{IsMe: self.IsMe}, 403},
		{"first hop is a carrier", "<sip:203.0.113.10;lr>", ContactPolicy{Peers: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.10:5060")}}, 403},
		{"too many", strings.Repeat("<sip:edge.example.net;lr>,", 9) + "<sip:edge.example.net;lr>", ContactPolicy{}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.g.SetContactPolicy(tc.policy)
			res := f.register(t, "secret1001", "MD5", "Contact: <sip:1001@192.168.1.20:5060>", "Path: "+tc.path)
			if res.StatusCode != tc.want {
				t.Fatalf("status %d %s, want %d", res.StatusCode, res.Reason, tc.want)
			}
			if n := len(f.store.Lookup("1001@" + realm)); n != 0 {
				t.Fatalf("%d bindings stored", n)
			}
		})
	}
}
