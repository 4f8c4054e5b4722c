package kernel_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/media/kernel"
)

var lo = netip.MustParseAddr("127.0.0.1")

func sock(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ap(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func rtp(seq uint16) []byte {
	return []byte{0x80, 0, byte(seq >> 8), byte(seq), 0, 0, 0, 160, 0, 0, 0, 9, 'p', 'c', 'm', 'u'}
}

// pump sends n RTP packets from from to to, and reads each at at,
// checking it comes from want.
func pump(t *testing.T, n int, from *net.UDPConn, to netip.AddrPort, at *net.UDPConn, want netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 1500)
	for i := range n {
		if _, err := from.WriteToUDPAddrPort(rtp(uint16(i)), to); err != nil {
			t.Fatal(err)
		}
		at.SetReadDeadline(time.Now().Add(time.Second))
		_, src, err := at.ReadFromUDPAddrPort(buf)
		if err != nil || src != want {
			t.Fatalf("packet %d: from %v (%v), want from %v", i, src, err, want)
		}
	}
}

// TestRelayOffloadsLatchedLegs: a call through the relay with the kernel
// path: the first packet of each side is learned and forwarded by the
// relay's socket, the rest by the kernel; both directions arrive, the
// statistics count every packet once, a stranger's RTP is neither
// forwarded nor offloaded, a re-INVITE moving a side takes its flow out
// of the kernel until it locks again, and release empties the map.
func TestRelayOffloadsLatchedLegs(t *testing.T) {
	testenv.NeedRoot(t)
	ns := testenv.Netns(t, "voxkfwd-relay")
	testenv.InNetns(t, ns, func() {
		testenv.Run(t, "ip", "link", "set", "lo", "up")
		f, err := kernel.Open(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r, err := media.New(media.Config{Addr: lo, PortMin: 14000, PortMax: 14099, Offload: f}, logging.Discard(), nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := r.Open("call-k", []bool{true})
		if err != nil {
			t.Fatal(err)
		}
		st := s.Stream(0)
		a, b, stranger := sock(t), sock(t), sock(t)
		st.Legs[0].SetRemote(ap(a), netip.AddrPortFrom(lo, ap(a).Port()+1), false, false)
		st.Legs[1].SetRemote(ap(b), netip.AddrPortFrom(lo, ap(b).Port()+1), false, false)
		legA := netip.AddrPortFrom(lo, uint16(st.Legs[0].Port()))
		legB := netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()))

		pump(t, 50, a, legA, b, legB)
		pump(t, 30, b, legB, a, legA)
		if f.Len() != 2 {
			t.Fatalf("%d flows in the kernel, want 2 (one per direction)", f.Len())
		}
		// The relay counts a packet it forwarded after the send returns,
		// so the receiver may see it first: wait for the counts to settle.
		var sa, sb media.LegStats
		for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
			sa, sb = st.Legs[0].Stats(), st.Legs[1].Stats()
			ok := sa.Offloaded && sb.Offloaded && sa.Packets == 50 && sa.Kernel == 49 && sb.Sent == 50 &&
				sb.Packets == 30 && sb.Kernel == 29 && sa.Sent == 30 && sa.Bytes == 50*16
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stats A %+v\nB %+v\nwant 50 and 30 packets, all but the first of each through the kernel", sa, sb)
			}
		}

		// A stranger spraying at A's leg: not forwarded, counted rejected.
		stranger.WriteToUDPAddrPort(rtp(1), legA)
		b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, src, err := b.ReadFromUDPAddrPort(make([]byte, 100)); err == nil {
			t.Fatalf("B got the stranger's packet from %v", src)
		}
		if got := st.Legs[0].Stats().Rejected; got != 1 {
			t.Fatalf("rejected %d, want the stranger's packet", got)
		}

		// A re-INVITE moves A elsewhere: A's flow leaves the kernel at
		// once (B's flow now sends to the new address), and A's new
		// source locks and is offloaded again.
		a2 := sock(t)
		st.Legs[0].SetRemote(ap(a2), netip.AddrPortFrom(lo, ap(a2).Port()+1), false, false)
		if st.Legs[0].Stats().Offloaded {
			t.Fatal("A's old flow still in the kernel after the re-INVITE")
		}
		pump(t, 5, b, legB, a2, legA)
		pump(t, 5, a2, legA, b, legB)
		if !st.Legs[0].Stats().Offloaded || f.Len() != 2 {
			t.Fatalf("after relearning: offloaded %v, %d flows", st.Legs[0].Stats().Offloaded, f.Len())
		}

		r.Release("call-k")
		if f.Len() != 0 {
			t.Fatalf("%d flows left in the kernel after release", f.Len())
		}
		if o := r.OffloadStats(); o.Active != 0 || o.Installed != 4 || o.Failed != 0 {
			t.Fatalf("offload stats %+v, want 4 installed, none active", o)
		}
	})
}

// refusing is an offload whose every Install fails.
type refusing struct{}

func (refusing) Install(_, _, _, _ netip.AddrPort) error     { return errors.New("refused") }
func (refusing) Remove(_, _ netip.AddrPort) (uint64, uint64) { return 0, 0 }
func (refusing) Counters(_, _ netip.AddrPort) (uint64, uint64, bool) {
	return 0, 0, false
}

// TestRelayOffloadRefused: an offload that refuses a flow leaves it in
// userspace, where it is forwarded as without one.
func TestRelayOffloadRefused(t *testing.T) {
	r, err := media.New(media.Config{Addr: lo, PortMin: 14100, PortMax: 14199, Offload: refusing{}}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Open("call-u", []bool{true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release("call-u")
	st := s.Stream(0)
	a, b := sock(t), sock(t)
	st.Legs[0].SetRemote(ap(a), netip.AddrPortFrom(lo, ap(a).Port()+1), false, false)
	st.Legs[1].SetRemote(ap(b), netip.AddrPortFrom(lo, ap(b).Port()+1), false, false)
	legA := netip.AddrPortFrom(lo, uint16(st.Legs[0].Port()))
	legB := netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()))
	pump(t, 10, a, legA, b, legB)
	pump(t, 10, b, legB, a, legA)
	if sa := st.Legs[0].Stats(); sa.Offloaded || sa.Kernel != 0 || sa.Packets != 10 {
		t.Fatalf("A %+v", sa)
	}
	if o := r.OffloadStats(); o.Failed == 0 || o.Active != 0 {
		t.Fatalf("offload stats %+v, want refusals counted", o)
	}
}
