package kernel

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

func udp(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// rtpPacket is an RTP header (version 2, payload type pt) and a payload.
func rtpPacket(pt byte, payload string) []byte {
	return append([]byte{0x80, pt, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4}, payload...)
}

// expect reads one datagram on c within a second and checks its source
// and content; want nil expects none for 200 ms.
func expect(t *testing.T, c *net.UDPConn, from netip.AddrPort, want []byte) {
	t.Helper()
	wait := time.Second
	if want == nil {
		wait = 200 * time.Millisecond
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, src, err := c.ReadFromUDPAddrPort(buf)
	if want == nil {
		if err == nil {
			t.Fatalf("%s got %q from %s, want nothing", addr(c), buf[:n], src)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v, want %q from %s", addr(c), err, want, from)
	}
	if src != from || string(buf[:n]) != string(want) {
		t.Fatalf("%s got %q from %s, want %q from %s", addr(c), buf[:n], src, want, from)
	}
}

func send(t *testing.T, c *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

// flowChecks drives one installed flow phone→leg (forwarded as
// other→callee) and checks what the kernel does and leaves alone.
func flowChecks(t *testing.T, f *Forwarder, phone, leg, other, callee, stranger *net.UDPConn) {
	pa, la, oa, ca := addr(phone), addr(leg), addr(other), addr(callee)
	if err := f.Install(pa, la, oa, ca); err != nil {
		t.Fatal(err)
	}
	// RTP from the locked source goes to the callee, from the other leg's
	// address, and never reaches the leg's socket.
	for i := range 3 {
		send(t, phone, la, rtpPacket(0, "voice"+string(rune('0'+i))))
		expect(t, callee, oa, rtpPacket(0, "voice"+string(rune('0'+i))))
	}
	expect(t, leg, netip.AddrPort{}, nil)
	if p, b, ok := f.Counters(pa, la); !ok || p != 3 || b != 3*(12+6) {
		t.Fatalf("counters %d packets %d bytes (%v), want 3 and %d", p, b, ok, 3*18)
	}
	// RTCP on the same port (rtcp-mux), non-RTP, and a stranger's RTP go
	// to the relay's socket as they were.
	rr := rtpPacket(201, "report")
	send(t, phone, la, rr)
	expect(t, leg, pa, rr)
	send(t, phone, la, []byte("not rtp"))
	expect(t, leg, pa, []byte("not rtp"))
	send(t, stranger, la, rtpPacket(0, "spoof"))
	expect(t, leg, addr(stranger), rtpPacket(0, "spoof"))
	expect(t, callee, netip.AddrPort{}, nil)
	if p, _, _ := f.Counters(pa, la); p != 3 {
		t.Fatalf("counted %d packets, want only the 3 forwarded", p)
	}
	// Removed, the flow's packets reach the relay's socket again.
	if p, b := f.Remove(pa, la); p != 3 || b != 3*18 {
		t.Fatalf("Remove returned %d packets, %d bytes", p, b)
	}
	if f.Len() != 0 {
		t.Fatalf("%d flows left after Remove", f.Len())
	}
	send(t, phone, la, rtpPacket(0, "after"))
	expect(t, leg, pa, rtpPacket(0, "after"))
}

// TestLoopback: relay, phones and a stranger on 127.0.0.1 in a namespace
// of the test's, the program on its lo.
func TestLoopback(t *testing.T) {
	testenv.NeedRoot(t)
	ns := testenv.Netns(t, "voxkfwd-lo")
	testenv.InNetns(t, ns, func() {
		testenv.Run(t, "ip", "link", "set", "lo", "up")
		f, err := Open(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if got := f.Interfaces(); len(got) != 1 || got[0] != "lo" {
			t.Fatalf("attached to %v, want [lo]", got)
		}
		flowChecks(t, f,
			udp(t, "127.0.0.1:40000"), udp(t, "127.0.0.1:30000"),
			udp(t, "127.0.0.1:30002"), udp(t, "127.0.0.1:40002"), udp(t, "127.0.0.1:40004"))
	})
}

// TestRedirect: the phones in namespaces of their own behind veth pairs,
// the relay between them: forwarded RTP leaves by the other veth, its
// next hop resolved by the kernel, with forwarding off in the relay's
// namespace (the relay is no router).
func TestRedirect(t *testing.T) {
	testenv.NeedRoot(t)
	r := testenv.Netns(t, "voxkfwd-r")
	a := testenv.Netns(t, "voxkfwd-a")
	b := testenv.Netns(t, "voxkfwd-b")
	ip := func(args ...string) { testenv.Run(t, "ip", args...) }
	for _, side := range []struct{ ns, n string }{{a, "1"}, {b, "2"}} {
		ip("-n", r, "link", "add", "r"+side.n, "type", "veth", "peer", "name", "p"+side.n, "netns", side.ns)
		ip("-n", r, "addr", "add", "10.91."+side.n+".1/24", "dev", "r"+side.n)
		ip("-n", r, "link", "set", "r"+side.n, "up")
		ip("-n", side.ns, "addr", "add", "10.91."+side.n+".2/24", "dev", "p"+side.n)
		ip("-n", side.ns, "link", "set", "p"+side.n, "up")
		ip("-n", side.ns, "link", "set", "lo", "up")
		ip("-n", side.ns, "route", "add", "default", "via", "10.91."+side.n+".1")
	}
	testenv.Run(t, "ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	var phone, stranger, callee, leg, other *net.UDPConn
	testenv.InNetns(t, a, func() {
		phone, stranger = udp(t, "10.91.1.2:40000"), udp(t, "10.91.1.2:40004")
	})
	testenv.InNetns(t, b, func() { callee = udp(t, "10.91.2.2:40002") })
	testenv.InNetns(t, r, func() {
		leg, other = udp(t, "10.91.1.1:30000"), udp(t, "10.91.1.1:30002")
		f, err := Open([]string{"r1", "r2"})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		flowChecks(t, f, phone, leg, other, callee, stranger)
	})
}

// TestIPv6Refused: an IPv6 flow stays in userspace.
func TestIPv6Refused(t *testing.T) {
	if _, err := key(netip.MustParseAddrPort("[2001:db8::1]:4000"), netip.MustParseAddrPort("[2001:db8::2]:30000")); err != ErrUnsupported {
		t.Fatalf("key of an IPv6 flow: %v", err)
	}
}
