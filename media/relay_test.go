package media

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/voxvisor/voxvisor/internal/logging"
)

var lo = netip.MustParseAddr("127.0.0.1")

func TestAllocatorEvenRandomQuarantine(t *testing.T) {
	a, err := NewAllocator(30000, 30009, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(int) error { return nil }
	seen := map[int]bool{}
	for i := 0; i < 5; i++ {
		p, err := a.Get(ok)
		if err != nil {
			t.Fatal(err)
		}
		if p%2 != 0 || p < 30000 || p > 30008 || seen[p] {
			t.Fatalf("bad port %d (seen %v)", p, seen)
		}
		seen[p] = true
	}
	if _, err := a.Get(ok); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("6th pair: %v, want exhausted", err)
	}
	for p := range seen {
		a.Put(p)
	}
	if _, err := a.Get(ok); !errors.Is(err, ErrPoolExhausted) {
		t.Fatal("a quarantined pair was reused at once")
	}
	now := time.Now().Add(2 * time.Hour)
	a.now = func() time.Time { return now }
	if _, err := a.Get(ok); err != nil {
		t.Fatalf("after quarantine: %v", err)
	}
	if a.InUse() != 1 {
		t.Fatalf("in use = %d", a.InUse())
	}
}

// phone is a UDP RTP/RTCP endpoint on loopback.
type phone struct {
	rtp, rtcp *net.UDPConn
}

func newPhone(t *testing.T, ip string) *phone {
	t.Helper()
	for i := 0; i < 50; i++ {
		r, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: r.LocalAddr().(*net.UDPAddr).Port + 1})
		if err != nil {
			r.Close()
			continue
		}
		t.Cleanup(func() { r.Close(); c.Close() })
		return &phone{rtp: r, rtcp: c}
	}
	t.Fatal("no port pair")
	return nil
}

func (p *phone) addrs() (netip.AddrPort, netip.AddrPort) {
	return p.rtp.LocalAddr().(*net.UDPAddr).AddrPort(), p.rtcp.LocalAddr().(*net.UDPAddr).AddrPort()
}

func rtpPacket(seq uint16, ts uint32) []byte {
	b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 8, SequenceNumber: seq, Timestamp: ts, SSRC: 0xabc}, Payload: make([]byte, 160)}).Marshal()
	return b
}

func recv(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("nothing received on %s: %v", c.LocalAddr(), err)
	}
	return buf[:n], from
}

func newRelay(t *testing.T, cfg Config, onTimeout func(string)) *Relay {
	t.Helper()
	if !cfg.Addr.IsValid() {
		cfg.Addr = lo
	}
	cfg.PortMin, cfg.PortMax = 31000, 31999
	r, err := New(cfg, logging.Discard(), onTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// connected opens session id with one stream whose legs face two loopback
// phones that announced their own addresses, and returns where each
// phone sends its RTP.
func connected(t *testing.T, r *Relay, id string) (st *Stream, a, b *phone, legA, legB netip.AddrPort) {
	t.Helper()
	s, err := r.Open(id, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Release(id) })
	st = s.Stream(0)
	a, b = newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	ar, ac := a.addrs()
	br, bc := b.addrs()
	st.Legs[0].SetRemote(ar, ac, false, false)
	st.Legs[1].SetRemote(br, bc, false, false)
	return st, a, b, netip.AddrPortFrom(lo, uint16(st.Legs[0].Port())), netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()))
}

func TestRelayForwardsBothWays(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newRelay(t, Config{}, nil)
	st, a, b, legA, legB := connected(t, r, "call-1")
	if legA.Port()%2 != 0 || legB.Port()%2 != 0 {
		t.Fatalf("RTP ports not even: %v %v", legA, legB)
	}

	for i := 0; i < 10; i++ {
		a.rtp.WriteToUDPAddrPort(rtpPacket(uint16(100+i), uint32(160*i)), legA)
		got, from := recv(t, b.rtp)
		if len(got) != 172 || from != legB {
			t.Fatalf("B got %d bytes from %v, want 172 from the B leg %v", len(got), from, legB)
		}
	}
	b.rtp.WriteToUDPAddrPort(rtpPacket(7, 0), legB)
	if _, from := recv(t, a.rtp); from != legA {
		t.Fatalf("A got RTP from %v, want %v", from, legA)
	}
	// RTCP on the odd ports.
	sr, _ := (&rtcp.SenderReport{SSRC: 0xabc, NTPTime: 0x1122334455667788, PacketCount: 10}).Marshal()
	a.rtcp.WriteToUDPAddrPort(sr, netip.AddrPortFrom(lo, legA.Port()+1))
	if _, from := recv(t, b.rtcp); from.Port() != legB.Port()+1 {
		t.Fatalf("B got RTCP from %v, want port %d", from, legB.Port()+1)
	}
	// B reports on A's SR: the relay learns B's round trip.
	time.Sleep(20 * time.Millisecond)
	rr, _ := (&rtcp.ReceiverReport{SSRC: 0xdef, Reports: []rtcp.ReceptionReport{{SSRC: 0xabc, FractionLost: 64, TotalLost: 3, Jitter: 80, LastSenderReport: 0x33445566, Delay: 0}}}).Marshal()
	b.rtcp.WriteToUDPAddrPort(rr, netip.AddrPortFrom(lo, legB.Port()+1))
	recv(t, a.rtcp)

	sa, sb := st.Legs[0].Stats(), st.Legs[1].Stats()
	if sa.Packets != 10 || sa.Bytes != 1720 || sa.Lost != 0 || sa.RTCP != 1 {
		t.Errorf("A leg stats = %+v", sa)
	}
	if sb.Sent != 10 || sb.Packets != 1 || sb.ReportedLost != 3 || sb.ReportedFraction != 0.25 || sb.RTT < 15*time.Millisecond {
		t.Errorf("B leg stats = %+v", sb)
	}
	if sb.ReportedJitterSecs != 0.01 {
		t.Errorf("B reported jitter = %v, want 0.01s", sb.ReportedJitterSecs)
	}
	r.Release("call-1")
	if r.Allocator().InUse() != 0 || r.Len() != 0 {
		t.Fatalf("ports or sessions left: %d %d", r.Allocator().InUse(), r.Len())
	}
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > want {
		t.Fatalf("goroutines: %d, want <= %d", n, want)
	}
}

func TestLossCounted(t *testing.T) {
	r := newRelay(t, Config{}, nil)
	st, a, b, legA, _ := connected(t, r, "loss")
	for _, seq := range []uint16{65530, 65531, 65533, 65535, 1, 2} { // 4 gaps across the wrap
		a.rtp.WriteToUDPAddrPort(rtpPacket(seq, uint32(seq)*160), legA)
		recv(t, b.rtp)
	}
	if got := st.Legs[0].Stats().Lost; got != 3 {
		t.Fatalf("lost = %d, want 3 (65532, 65534, 0)", got)
	}
}

func TestStrictLatchRejectsStrangers(t *testing.T) {
	r := newRelay(t, Config{LockAfter: 3}, nil)
	st, a, b, legA, _ := connected(t, r, "strict")
	stranger := newPhone(t, "127.0.0.2")
	// A stranger (another IP) injecting into A's leg is dropped.
	stranger.rtp.WriteToUDPAddrPort(rtpPacket(1, 0), legA)
	for i := 0; i < 3; i++ {
		a.rtp.WriteToUDPAddrPort(rtpPacket(uint16(2+i), 0), legA)
		recv(t, b.rtp)
	}
	// Locked: the same IP from another port is refused too.
	other := newPhone(t, "127.0.0.1")
	other.rtp.WriteToUDPAddrPort(rtpPacket(9, 0), legA)
	a.rtp.WriteToUDPAddrPort(rtpPacket(10, 0), legA)
	got, _ := recv(t, b.rtp)
	if seq := uint16(got[2])<<8 | uint16(got[3]); seq != 10 {
		t.Fatalf("forwarded seq %d, want 10 (the injected packets must be dropped)", seq)
	}
	if rej := st.Legs[0].Stats().Rejected; rej != 2 {
		t.Fatalf("rejected = %d, want 2", rej)
	}
}

func TestNATModeLatchesToSource(t *testing.T) {
	r := newRelay(t, Config{NAT: true}, nil)
	s, _ := r.Open("nat", 1)
	defer r.Release("nat")
	st := s.Stream(0)
	a, b := newPhone(t, "127.0.0.2"), newPhone(t, "127.0.0.1")
	br, bc := b.addrs()
	// A's SDP names a private address it cannot be reached at.
	st.Legs[0].SetRemote(netip.MustParseAddrPort("10.9.9.9:4000"), netip.MustParseAddrPort("10.9.9.9:4001"), false, false)
	st.Legs[1].SetRemote(br, bc, false, false)
	legA := netip.AddrPortFrom(lo, uint16(st.Legs[0].Port()))
	legB := netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()))
	a.rtp.WriteToUDPAddrPort(rtpPacket(1, 0), legA)
	recv(t, b.rtp)
	b.rtp.WriteToUDPAddrPort(rtpPacket(1, 0), legB)
	if _, from := recv(t, a.rtp); from != legA {
		t.Fatalf("A got media from %v", from)
	}
}

func TestRTCPMux(t *testing.T) {
	r := newRelay(t, Config{}, nil)
	s, _ := r.Open("mux", 1)
	defer r.Release("mux")
	st := s.Stream(0)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	ar, _ := a.addrs()
	br, bc := b.addrs()
	st.Legs[0].SetRemote(ar, ar, true, false) // A muxes
	st.Legs[1].SetRemote(br, bc, false, false)
	legA := netip.AddrPortFrom(lo, uint16(st.Legs[0].Port()))
	legB := netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()))
	rr, _ := (&rtcp.ReceiverReport{SSRC: 1}).Marshal()
	a.rtp.WriteToUDPAddrPort(rr, legA) // RTCP on the RTP port
	if _, from := recv(t, b.rtcp); from.Port() != legB.Port()+1 {
		t.Fatalf("muxed RTCP not sent on B's RTCP port: from %v", from)
	}
	b.rtcp.WriteToUDPAddrPort(rr, netip.AddrPortFrom(lo, legB.Port()+1))
	if _, from := recv(t, a.rtp); from != legA {
		t.Fatalf("RTCP to a muxing side must use its RTP port, came from %v", from)
	}
}

func TestMediaTimeout(t *testing.T) {
	timedOut := make(chan string, 1)
	r := newRelay(t, Config{Timeout: 100 * time.Millisecond}, func(id string) { timedOut <- id })
	if _, err := r.Open("quiet", 1); err != nil {
		t.Fatal(err)
	}
	r.checkTimeouts(time.Now().Add(time.Second))
	select {
	case id := <-timedOut:
		if id != "quiet" {
			t.Fatalf("timed out %q", id)
		}
	default:
		t.Fatal("no timeout reported")
	}
	r.checkTimeouts(time.Now().Add(2 * time.Second))
	select {
	case <-timedOut:
		t.Fatal("timeout reported twice")
	default:
	}
	r.Release("quiet")
}

func TestHoldUsesLongerTimeout(t *testing.T) {
	timedOut := make(chan string, 1)
	r := newRelay(t, Config{Timeout: time.Second, HoldTimeout: time.Hour}, func(id string) { timedOut <- id })
	s, _ := r.Open("held", 1)
	defer r.Release("held")
	s.Stream(0).Legs[0].SetRemote(netip.MustParseAddrPort("127.0.0.1:4000"), netip.MustParseAddrPort("127.0.0.1:4001"), false, true)
	r.checkTimeouts(time.Now().Add(time.Minute))
	select {
	case <-timedOut:
		t.Fatal("a held call timed out after the normal timeout")
	default:
	}
}

func TestPoolExhaustion(t *testing.T) {
	r, err := New(Config{Addr: lo, PortMin: 32000, PortMax: 32003}, logging.Discard(), nil) // 2 pairs: one stream
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open("one", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open("two", 1); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("second call: %v, want ErrPoolExhausted", err)
	}
	if r.Len() != 1 || r.Allocator().InUse() != 2 {
		t.Fatalf("failed open left state: sessions %d, pairs %d", r.Len(), r.Allocator().InUse())
	}
	r.Release("one")
}

// BenchmarkForward measures one RTP packet through the relay, A to B.
func BenchmarkForward(b *testing.B) {
	r, _ := New(Config{Addr: lo, PortMin: 33000, PortMax: 33999}, logging.Discard(), nil)
	s, _ := r.Open("bench", 1)
	defer r.Release("bench")
	st := s.Stream(0)
	pa, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	pb, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer pa.Close()
	defer pb.Close()
	ar := pa.LocalAddr().(*net.UDPAddr).AddrPort()
	br := pb.LocalAddr().(*net.UDPAddr).AddrPort()
	st.Legs[0].SetRemote(ar, ar, false, false)
	st.Legs[1].SetRemote(br, br, false, false)
	legA := netip.AddrPortFrom(lo, uint16(st.Legs[0].Port()))
	pkt := rtpPacket(1, 0)
	buf := make([]byte, 1500)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pkt[2], pkt[3] = byte(i>>8), byte(i)
		pa.WriteToUDPAddrPort(pkt, legA)
		pb.ReadFromUDPAddrPort(buf)
	}
}

// TestSRTPForwardedUntouched: on an SRTP stream the relay forwards RTP
// and SRTCP byte for byte, counts RTP from the clear header, and does not
// read the encrypted reports.
func TestSRTPForwardedUntouched(t *testing.T) {
	r := newRelay(t, Config{}, nil)
	st, a, b, legA, _ := connected(t, r, "srtp")
	st.Legs[0].SetSecure(true)
	st.Legs[1].SetSecure(true)
	for i := 0; i < 5; i++ {
		pkt := rtpPacket(uint16(i), uint32(160*i))
		for j := 12; j < len(pkt); j++ {
			pkt[j] = byte(j * 31) // ciphertext stands in for the payload
		}
		pkt = append(pkt, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6) // auth tag
		a.rtp.WriteToUDPAddrPort(pkt, legA)
		got, _ := recv(t, b.rtp)
		if string(got) != string(pkt) {
			t.Fatal("SRTP packet changed on the way")
		}
	}
	// An SRTCP report whose ciphertext happens to parse as a report block
	// claiming 99 lost: the relay must not believe it. (Real SRTCP ends
	// with E|index and a tag; pion would refuse that anyway.)
	srtcp, _ := (&rtcp.ReceiverReport{SSRC: 0xdef, Reports: []rtcp.ReceptionReport{{SSRC: 0xabc, TotalLost: 99}}}).Marshal()
	a.rtcp.WriteToUDPAddrPort(srtcp, netip.AddrPortFrom(lo, legA.Port()+1))
	if got, _ := recv(t, b.rtcp); string(got) != string(srtcp) {
		t.Fatal("SRTCP packet changed on the way")
	}
	s := st.Legs[0].Stats()
	if !s.SRTP || s.Packets != 5 || s.Lost != 0 || s.RTCP != 1 || s.ReportedLost != 0 {
		t.Fatalf("A leg stats = %+v", s)
	}
}
