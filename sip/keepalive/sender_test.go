package keepalive

import (
	"net/netip"
	"testing"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/location"
)

// TestPingSocket: a ping leaves from the UDP socket the contact
// registered to; when that socket is gone (another configuration), from
// one of the contact's address family.
func TestPingSocket(t *testing.T) {
	l := func(tp, bound string) sip.Listener {
		ap := netip.MustParseAddrPort(bound)
		return sip.Listener{Transport: tp, Bound: ap, Host: ap.Addr().String(), Port: int(ap.Port())}
	}
	s := NewSIPSender(nil, sip.NewSelf("d", []sip.Listener{
		l("tcp", "192.0.2.1:5060"), l("udp", "192.0.2.1:5060"), l("udp", "[2001:db8::1]:5060"), l("udp", "198.51.100.1:5080"),
	}))
	for _, tc := range []struct{ local, source, want string }{
		{"198.51.100.1:5080", "203.0.113.7:4000", "198.51.100.1:5080"},
		{"[2001:db8::1]:5060", "[2001:db8:1::7]:4000", "[2001:db8::1]:5060"},
		{"", "[2001:db8:1::7]:4000", "[2001:db8::1]:5060"},
		{"192.0.2.9:5060", "203.0.113.7:4000", "192.0.2.1:5060"},
	} {
		got, ok := s.listener(location.Binding{Local: tc.local, Source: tc.source})
		if !ok || got.Bound.String() != tc.want || got.Transport != "udp" {
			t.Errorf("local %q source %s: ping from %s/%s, want udp %s", tc.local, tc.source, got.Transport, got.Bound, tc.want)
		}
	}
	if _, ok := NewSIPSender(nil, sip.NewSelf("d", []sip.Listener{l("tcp", "192.0.2.1:5060")})).listener(location.Binding{Source: "203.0.113.7:4000"}); ok {
		t.Error("a socket without any udp listener")
	}
}
