package media

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/voxvisor/voxvisor/internal/logging"
)

var lo = netip.MustParseAddr("127.0.0.1")

// one opens a single stream.
var one = []bool{true}

func TestAllocatorEvenRandom(t *testing.T) {
	a, err := NewAllocator(30000, 30009, 0)
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
	_, err = a.Get(ok)
	var pe *PoolError
	if !errors.Is(err, ErrPoolExhausted) || !errors.As(err, &pe) || pe.InUse != 5 || pe.Pairs != 5 || pe.Quarantined != 0 {
		t.Fatalf("6th pair: %v, want exhausted with 5 of 5 in use", err)
	}
}

// TestAllocatorQuarantine: a released pair is not reused while a pair
// outside quarantine is free; when none is, the pair released longest
// ago is taken rather than a call refused.
func TestAllocatorQuarantine(t *testing.T) {
	a, err := NewAllocator(30000, 30009, time.Hour) // 5 pairs
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.now = func() time.Time { return now }
	ok := func(int) error { return nil }
	var got []int
	for i := 0; i < 4; i++ {
		p, err := a.Get(ok)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	a.Put(got[1])
	now = now.Add(time.Second)
	a.Put(got[0])
	if a.InUse() != 2 || a.Quarantined() != 2 {
		t.Fatalf("in use %d, quarantined %d; want 2 and 2", a.InUse(), a.Quarantined())
	}
	fresh, err := a.Get(ok)
	if err != nil || fresh == got[0] || fresh == got[1] {
		t.Fatalf("got %d (%v) while a pair outside quarantine was free", fresh, err)
	}
	if p, err := a.Get(ok); err != nil || p != got[1] {
		t.Fatalf("got %d (%v), want %d: the pair released longest ago", p, err, got[1])
	}
	if a.EarlyReuses() != 1 || a.Quarantined() != 1 {
		t.Fatalf("early reuses %d, quarantined %d; want 1 and 1", a.EarlyReuses(), a.Quarantined())
	}
	// A quarantined pair that will not bind stays in quarantine.
	busy := errors.New("address already in use")
	_, err = a.Get(func(int) error { return busy })
	var pe *PoolError
	if !errors.As(err, &pe) || pe.InUse != 4 || pe.Quarantined != 1 || !errors.Is(pe.Bind, busy) {
		t.Fatalf("bind failure: %v, want 4 in use, 1 in quarantine and the bind error", err)
	}
	if !strings.Contains(pe.Reason(), "4 of 5 port pairs in use, 1 in quarantine") {
		t.Fatalf("reason %q", pe.Reason())
	}
	if p, err := a.Get(ok); err != nil || p != got[0] {
		t.Fatalf("got %d (%v), want %d", p, err, got[0])
	}
	// Past quarantine nothing counts as quarantined.
	a.Put(got[2])
	now = now.Add(2 * time.Hour)
	if a.Quarantined() != 0 {
		t.Fatalf("quarantined %d after the quarantine", a.Quarantined())
	}
	if _, err := a.Get(ok); err != nil || a.EarlyReuses() != 2 {
		t.Fatalf("after quarantine: %v, early reuses %d (want 2)", err, a.EarlyReuses())
	}
}

// TestOpenOnlyWantedStreams: a stream offered with port 0 gets no ports,
// a stream dropped gives its pairs back, and the session says which
// m-line each stream is.
func TestOpenOnlyWantedStreams(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newRelay(t, Config{}, nil)
	s, err := r.Open("c", []bool{false, true, false})
	if err != nil {
		t.Fatal(err)
	}
	if r.Allocator().InUse() != 2 || s.Stream(0) != nil || s.Stream(2) != nil || s.Stream(1) == nil {
		t.Fatalf("in use %d, streams %v", r.Allocator().InUse(), s.Streams())
	}
	if ss := s.Streams(); len(ss) != 1 || ss[0].Index != 1 {
		t.Fatalf("streams %+v, want only m-line 1", ss)
	}
	// A new offer adds m-line 0 and keeps m-line 1's ports.
	leg1 := s.Stream(1).Legs[0].Port()
	if _, err := r.Open("c", []bool{true, true}); err != nil {
		t.Fatal(err)
	}
	if r.Allocator().InUse() != 4 || s.Stream(1).Legs[0].Port() != leg1 {
		t.Fatalf("in use %d, want 4 with m-line 1 unchanged", r.Allocator().InUse())
	}
	if !s.Drop(1) || s.Drop(1) || s.Drop(7) {
		t.Fatal("Drop reports wrongly")
	}
	if r.Allocator().InUse() != 2 || len(s.Streams()) != 1 || s.Streams()[0].Index != 0 {
		t.Fatalf("after drop: in use %d, streams %d", r.Allocator().InUse(), len(s.Streams()))
	}
	// No stream wanted: a session, no ports.
	if s, err := r.Open("none", []bool{false, false}); err != nil || len(s.Streams()) != 0 {
		t.Fatalf("open without streams: %v", err)
	}
	r.Release("c")
	r.Release("none")
	if r.Allocator().InUse() != 0 || r.Len() != 0 {
		t.Fatalf("left: %d pairs, %d sessions", r.Allocator().InUse(), r.Len())
	}
	waitGoroutines(t, before)
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
	cfg.PortMin, cfg.PortMax = 11000, 11999
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
	s, err := r.Open(id, one)
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

// TestAnyModeLearnsAnySource: in LearnAny a side whose SDP names a
// private address it cannot be reached at is learned from wherever its
// packets come from (the signalling address is not known here).
func TestAnyModeLearnsAnySource(t *testing.T) {
	r := newRelay(t, Config{Learning: LearnAny}, nil)
	s, _ := r.Open("nat", one)
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
	s, _ := r.Open("mux", one)
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
	s, err := r.Open("quiet", one)
	if err != nil {
		t.Fatal(err)
	}
	s.SetAnswered()
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
	s, _ := r.Open("held", one)
	defer r.Release("held")
	s.SetAnswered()
	s.Stream(0).Legs[0].SetRemote(netip.MustParseAddrPort("127.0.0.1:4000"), netip.MustParseAddrPort("127.0.0.1:4001"), false, true)
	r.checkTimeouts(time.Now().Add(time.Minute))
	select {
	case <-timedOut:
		t.Fatal("a held call timed out after the normal timeout")
	default:
	}
}

func TestPoolExhaustion(t *testing.T) {
	r, err := New(Config{Addr: lo, PortMin: 12000, PortMax: 12003}, logging.Discard(), nil) // 2 pairs: one stream
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open("one", one); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open("two", one); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("second call: %v, want ErrPoolExhausted", err)
	}
	// Two streams, one pair left for the second: the first stream's legs
	// are given back too.
	r.Release("one")
	if _, err := r.Open("half", []bool{true, true}); !errors.Is(err, ErrPoolExhausted) || r.Len() != 0 || r.Allocator().InUse() != 0 {
		t.Fatalf("two streams in a one-stream pool: %v, %d sessions, %d pairs left", err, r.Len(), r.Allocator().InUse())
	}
	if _, err := r.Open("one", one); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 1 || r.Allocator().InUse() != 2 {
		t.Fatalf("failed open left state: sessions %d, pairs %d", r.Len(), r.Allocator().InUse())
	}
	r.Release("one")
}

// BenchmarkForward measures one RTP packet through the relay, A to B.
func BenchmarkForward(b *testing.B) {
	r, _ := New(Config{Addr: lo, PortMin: 13000, PortMax: 13999}, logging.Discard(), nil)
	s, _ := r.Open("bench", one)
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

// TestNoDeadlockOpenAgainstSweep: calls opened against a one-pair pool
// (every Open fails, after binding its first leg, and undoes itself)
// while their sessions are answered and the timeout sweep runs. Open
// once held the session's lock when it took the relay's to undo, and the
// sweep held the relay's when it took a session's: the two deadlocked
// within a second, and every later call with it.
func TestNoDeadlockOpenAgainstSweep(t *testing.T) {
	r, err := New(Config{Addr: lo, PortMin: 12100, PortMax: 12101, Timeout: time.Millisecond}, logging.Discard(), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{}, 3)
	var ids [64]string
	for i := range ids {
		ids[i] = "call-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	// spin runs body with 0, 1, 2... on its own goroutine until stop, or
	// until body says it is done.
	spin := func(body func(i int) bool) {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if !body(i) {
					return
				}
			}
		}()
	}
	spin(func(i int) bool { // calls meeting an exhausted pool
		if _, err := r.Open(ids[i%len(ids)], one); !errors.Is(err, ErrPoolExhausted) {
			t.Errorf("open in a one-pair pool: %v, want ErrPoolExhausted", err)
			return false
		}
		return true
	})
	spin(func(i int) bool { // their answers, while they open
		if s := r.Get(ids[i%len(ids)]); s != nil {
			s.SetAnswered()
		}
		return true
	})
	spin(func(int) bool { // the 1 s sweep, as fast as it goes
		r.checkTimeouts(time.Now().Add(time.Hour))
		return true
	})
	time.Sleep(time.Second)
	close(stop)
	for i := 0; i < 3; i++ {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("deadlock: Open, SetAnswered and the sweep did not stop within 10 s\n%s", buf[:runtime.Stack(buf, true)])
		}
	}
	if r.Allocator().InUse() != 0 {
		t.Fatalf("%d pairs left in use after only failed opens", r.Allocator().InUse())
	}
}
