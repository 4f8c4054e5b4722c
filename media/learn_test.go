package media

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
)

// lan is a private address a NATed phone writes in its SDP; the relay
// never sees packets from it.
var (
	lanRTP  = netip.MustParseAddrPort("10.9.9.9:4000")
	lanRTCP = netip.MustParseAddrPort("10.9.9.9:4001")
)

// learning opens a one-stream session; the A side's SDP says sdpA and its
// signalling comes from sig (zero: unknown); B is a loopback phone that
// announced its own address. It returns the stream, B, and A's leg.
func learning(t *testing.T, r *Relay, id string, sdpRTP, sdpRTCP netip.AddrPort, sig netip.Addr) (*Stream, *phone, netip.AddrPort) {
	t.Helper()
	s, err := r.Open(id, one)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Release(id) })
	st := s.Stream(0)
	b := newPhone(t, "127.0.0.1")
	br, bc := b.addrs()
	st.Legs[0].SetSignalling(sig)
	st.Legs[0].SetRemote(sdpRTP, sdpRTCP, false, false)
	st.Legs[1].SetRemote(br, bc, false, false)
	return st, b, netip.AddrPortFrom(lo, uint16(st.Legs[0].Port()))
}

// ssrcOf is an RTP packet's SSRC.
func ssrcOf(b []byte) uint32 {
	if len(b) < 12 {
		return 0
	}
	return uint32(b[8])<<24 | uint32(b[9])<<16 | uint32(b[10])<<8 | uint32(b[11])
}

func rtpFrom(ssrc uint32, seq uint16) []byte {
	b := rtpPacket(seq, uint32(seq)*160)
	b[8], b[9], b[10], b[11] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
	return b
}

// send sends n RTP packets with ssrc from c to dst.
func send(c *net.UDPConn, dst netip.AddrPort, ssrc uint32, n int) {
	for i := 0; i < n; i++ {
		c.WriteToUDPAddrPort(rtpFrom(ssrc, uint16(i)), dst)
	}
}

// drain reads what c receives until it has been quiet for quiet, and
// counts the RTP packets by SSRC.
func drain(c *net.UDPConn, quiet time.Duration) map[uint32]int {
	got := map[uint32]int{}
	buf := make([]byte, 1500)
	for {
		c.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return got
		}
		got[ssrcOf(buf[:n])]++
	}
}

// settle waits until leg l has received want packets from its side (the
// reader goroutine has ranked them all).
func settle(t *testing.T, l *Leg, want func(LegStats) bool) LegStats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s := l.Stats()
		if want(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("leg stats never got there: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	ssrcPhone    = 0x0a
	ssrcStranger = 0x57
	ssrcNeighbor = 0x33
)

// TestHeuristicLearnsSignallingSource: a NATed phone's SDP names its LAN
// address; its RTP comes from the IP its SIP came from (rank 3) and is
// learned and locked; a stranger elsewhere is never forwarded, before or
// after the lock; after the lock even the phone's own IP from another
// port is refused, and counted as a re-latch attempt once.
func TestHeuristicLearnsSignallingSource(t *testing.T) {
	r := newRelay(t, Config{LockAfter: 3}, nil)
	phoneIP := netip.MustParseAddr("127.0.0.2")
	st, b, legA := learning(t, r, "nat", lanRTP, lanRTCP, phoneIP)
	a, stranger, neighbor := newPhone(t, "127.0.0.2"), newPhone(t, "127.0.0.3"), newPhone(t, "127.0.0.2")

	send(stranger.rtp, legA, ssrcStranger, 4) // before anything is learned
	settle(t, st.Legs[0], func(s LegStats) bool { return s.Rejected == 4 })
	send(a.rtp, legA, ssrcPhone, 3) // locks after 3
	s := settle(t, st.Legs[0], func(s LegStats) bool { return s.LearnedRank != RankNone })
	if want, _ := a.addrs(); s.Learned != want || s.LearnedRank != RankSignalling {
		t.Fatalf("learned %v (%v), want %v by its signalling address", s.Learned, s.LearnedRank, want)
	}
	send(stranger.rtp, legA, ssrcStranger, 4)
	send(neighbor.rtp, legA, ssrcNeighbor, 5) // the phone's IP, another port: a re-latch
	send(a.rtp, legA, ssrcPhone, 2)
	settle(t, st.Legs[0], func(s LegStats) bool { return s.Packets == 5 && s.Rejected == 13 })
	if got := drain(b.rtp, 200*time.Millisecond); got[ssrcPhone] != 5 || len(got) != 1 {
		t.Fatalf("B received %v, want only the phone's 5 packets", got)
	}
	// B's media goes to the learned address, not to the LAN one.
	b.rtp.WriteToUDPAddrPort(rtpFrom(0xb, 1), netip.AddrPortFrom(lo, uint16(st.Legs[1].Port())))
	if _, from := recv(t, a.rtp); from != legA {
		t.Fatalf("A got B's media from %v, want %v", from, legA)
	}
	ls := r.LearningStats()
	if ls.Learned[RankSignalling] != 1 || ls.RejectedLearning != 4 || ls.RejectedLocked != 9 || ls.RelatchRefused != 1 {
		t.Fatalf("learning stats %+v: want 1 learned by signalling, 4 rejected learning, 9 after the lock, 1 re-latch refused", ls)
	}
}

// TestStrictRefusesSignallingSource: strict learns only the SDP's IP, so
// the NATed phone of the test above gets nothing through.
func TestStrictRefusesSignallingSource(t *testing.T) {
	r := newRelay(t, Config{Learning: LearnStrict, LockAfter: 3}, nil)
	st, b, legA := learning(t, r, "strict", lanRTP, lanRTCP, netip.MustParseAddr("127.0.0.2"))
	a := newPhone(t, "127.0.0.2")
	send(a.rtp, legA, ssrcPhone, 5)
	s := settle(t, st.Legs[0], func(s LegStats) bool { return s.Rejected == 5 })
	if got := drain(b.rtp, 100*time.Millisecond); len(got) != 0 || s.LearnedRank != RankNone {
		t.Fatalf("strict forwarded %v, learned %v", got, s.Learned)
	}
}

// TestBetterRankReplacesWorse: during the window, a packet from the exact
// SDP address takes over from a source learned by signalling (and locks
// at once); after that the signalling source is refused.
func TestBetterRankReplacesWorse(t *testing.T) {
	r := newRelay(t, Config{LockAfter: 100}, nil)
	a := newPhone(t, "127.0.0.1")
	ar, ac := a.addrs()
	st, b, legA := learning(t, r, "better", ar, ac, netip.MustParseAddr("127.0.0.2"))
	viaSig := newPhone(t, "127.0.0.2")
	send(viaSig.rtp, legA, ssrcNeighbor, 3)
	settle(t, st.Legs[0], func(s LegStats) bool { return s.Packets == 3 })
	send(a.rtp, legA, ssrcPhone, 1)
	s := settle(t, st.Legs[0], func(s LegStats) bool { return s.LearnedRank != RankNone })
	if s.Learned != ar || s.LearnedRank != RankSDPAddress {
		t.Fatalf("learned %v (%v), want %v at once", s.Learned, s.LearnedRank, ar)
	}
	send(viaSig.rtp, legA, ssrcNeighbor, 3)
	settle(t, st.Legs[0], func(s LegStats) bool { return s.Rejected == 3 })
	if got := drain(b.rtp, 200*time.Millisecond); got[ssrcNeighbor] != 3 || got[ssrcPhone] != 1 {
		t.Fatalf("B received %v, want the 3 packets from before the better source, then its 1", got)
	}
	// A worse source does not replace a better one during the window.
	r2 := newRelay(t, Config{Learning: LearnAny, LockAfter: 100}, nil)
	st2, b2, legA2 := learning(t, r2, "worse", lanRTP, lanRTCP, netip.MustParseAddr("127.0.0.2"))
	send(viaSig.rtp, legA2, ssrcNeighbor, 2)
	stranger := newPhone(t, "127.0.0.3")
	send(stranger.rtp, legA2, ssrcStranger, 2)
	settle(t, st2.Legs[0], func(s LegStats) bool { return s.Packets == 2 && s.Rejected == 2 })
	if got := drain(b2.rtp, 200*time.Millisecond); got[ssrcNeighbor] != 2 || got[ssrcStranger] != 0 {
		t.Fatalf("B received %v, want only the signalling source's 2", got)
	}
}

// TestAnyWaitsForWindow: under LearnAny a stranger who sprays first is a
// candidate, but never locks by packet count; the real phone (by its
// signalling IP) displaces it, and the stranger is dropped from then on.
func TestAnyWaitsForWindow(t *testing.T) {
	r := newRelay(t, Config{Learning: LearnAny, LockAfter: 3}, nil)
	st, b, legA := learning(t, r, "any", lanRTP, lanRTCP, netip.MustParseAddr("127.0.0.2"))
	stranger, a := newPhone(t, "127.0.0.3"), newPhone(t, "127.0.0.2")
	send(stranger.rtp, legA, ssrcStranger, 10)
	if s := settle(t, st.Legs[0], func(s LegStats) bool { return s.Packets == 10 }); s.LearnedRank != RankNone {
		t.Fatalf("a source learned only under any locked by count: %v", s.Learned)
	}
	send(a.rtp, legA, ssrcPhone, 3)
	s := settle(t, st.Legs[0], func(s LegStats) bool { return s.LearnedRank != RankNone })
	if want, _ := a.addrs(); s.Learned != want {
		t.Fatalf("learned %v, want the phone %v", s.Learned, want)
	}
	send(stranger.rtp, legA, ssrcStranger, 5)
	settle(t, st.Legs[0], func(s LegStats) bool { return s.Rejected == 5 })
	got := drain(b.rtp, 200*time.Millisecond)
	if got[ssrcPhone] != 3 || got[ssrcStranger] != 10 {
		t.Fatalf("B received %v: want the stranger's 10 from before the phone, then only the phone's 3", got)
	}
	if ls := r.LearningStats(); ls.RelatchRefused != 1 || ls.RejectedLocked != 5 {
		t.Fatalf("learning stats %+v", ls)
	}
}

// TestWindowLocks: a candidate that never reaches LockAfter packets is
// locked when the window ends; after that even the exact SDP address is
// refused (a locked leg never re-latches) until a new SDP address
// restarts learning.
func TestWindowLocks(t *testing.T) {
	r := newRelay(t, Config{LockAfter: 1000, LearnWindow: 150 * time.Millisecond}, nil)
	exact := newPhone(t, "127.0.0.1")
	er, ec := exact.addrs()
	st, b, legA := learning(t, r, "window", er, ec, netip.Addr{})
	samIP := newPhone(t, "127.0.0.1") // the SDP's IP, another port: rank 2
	send(samIP.rtp, legA, ssrcNeighbor, 1)
	settle(t, st.Legs[0], func(s LegStats) bool { return s.Packets == 1 })
	time.Sleep(200 * time.Millisecond)
	send(samIP.rtp, legA, ssrcNeighbor, 1) // the window is over: locks first
	s := settle(t, st.Legs[0], func(s LegStats) bool { return s.Packets == 2 })
	if want, _ := samIP.addrs(); s.Learned != want || s.LearnedRank != RankSDPIP {
		t.Fatalf("learned %v (%v) after the window, want %v by SDP IP", s.Learned, s.LearnedRank, want)
	}
	send(exact.rtp, legA, ssrcPhone, 2)
	settle(t, st.Legs[0], func(s LegStats) bool { return s.Rejected == 2 })
	if got := drain(b.rtp, 200*time.Millisecond); got[ssrcPhone] != 0 || got[ssrcNeighbor] != 2 {
		t.Fatalf("B received %v after the lock", got)
	}
	// A hold by c=0.0.0.0 keeps the lock.
	st.Legs[0].SetRemote(netip.MustParseAddrPort("0.0.0.0:4000"), netip.MustParseAddrPort("0.0.0.0:4001"), false, true)
	if s := st.Legs[0].Stats(); s.LearnedRank != RankSDPIP {
		t.Fatalf("a hold by 0.0.0.0 forgot what was learned: %+v", s)
	}
	// A re-INVITE to a new address starts learning again.
	moved := newPhone(t, "127.0.0.4")
	mr, mc := moved.addrs()
	st.Legs[0].SetRemote(mr, mc, false, false)
	if s := st.Legs[0].Stats(); s.LearnedRank != RankNone {
		t.Fatalf("new SDP address kept the old lock: %+v", s)
	}
	send(moved.rtp, legA, ssrcPhone, 1)
	s = settle(t, st.Legs[0], func(s LegStats) bool { return s.LearnedRank != RankNone })
	if s.Learned != mr || s.LearnedRank != RankSDPAddress {
		t.Fatalf("after the move learned %v (%v), want %v", s.Learned, s.LearnedRank, mr)
	}
	if got := drain(b.rtp, 200*time.Millisecond); got[ssrcPhone] != 1 {
		t.Fatalf("B received %v after the move", got)
	}
}

// TestRTCPFollowsRTP: before RTP is learned, RTCP is ranked like RTP
// (here from the signalling IP); once RTP is locked, RTCP is accepted
// from the learned IP on any port and from nowhere else, and the other
// side's RTCP goes back where the first of it came from.
func TestRTCPFollowsRTP(t *testing.T) {
	r := newRelay(t, Config{LockAfter: 1}, nil)
	st, b, legA := learning(t, r, "rtcp", lanRTP, lanRTCP, netip.MustParseAddr("127.0.0.2"))
	a, stranger := newPhone(t, "127.0.0.2"), newPhone(t, "127.0.0.3")
	rtcpA := netip.AddrPortFrom(lo, legA.Port()+1)
	rr, _ := (&rtcp.ReceiverReport{SSRC: 0xa}).Marshal()
	stranger.rtcp.WriteToUDPAddrPort(rr, rtcpA)
	a.rtcp.WriteToUDPAddrPort(rr, rtcpA) // rank 3 before RTP: accepted
	recv(t, b.rtcp)
	send(a.rtp, legA, ssrcPhone, 1) // locks RTP
	settle(t, st.Legs[0], func(s LegStats) bool { return s.LearnedRank != RankNone })
	other := newPhone(t, "127.0.0.2") // a NAT maps RTCP to another port
	other.rtcp.WriteToUDPAddrPort(rr, rtcpA)
	recv(t, b.rtcp)
	stranger.rtcp.WriteToUDPAddrPort(rr, rtcpA)
	s := settle(t, st.Legs[0], func(s LegStats) bool { return s.Rejected == 2 })
	if s.RTCP != 2 {
		t.Fatalf("A leg took %d RTCP packets, want 2", s.RTCP)
	}
	b.rtcp.WriteToUDPAddrPort(rr, netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()+1)))
	if _, from := recv(t, other.rtcp); from != rtcpA {
		t.Fatalf("B's RTCP reached A's NATed RTCP port from %v", from)
	}
}

// TestNoTimeoutWhileRinging: a session not answered never times out; once
// answered, the timeout runs from the answer.
func TestNoTimeoutWhileRinging(t *testing.T) {
	timedOut := make(chan string, 1)
	r := newRelay(t, Config{Timeout: time.Second}, func(id string) { timedOut <- id })
	s, err := r.Open("ringing", one)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release("ringing")
	s.lastRTP.Store(time.Now().Add(-time.Hour).UnixNano()) // offered long ago, no RTP since
	r.checkTimeouts(time.Now().Add(time.Hour))
	if len(timedOut) != 0 {
		t.Fatal("a ringing call timed out")
	}
	if !s.AnsweredAt().IsZero() {
		t.Fatal("answered before SetAnswered")
	}
	s.SetAnswered()
	at := s.AnsweredAt()
	r.checkTimeouts(at.Add(900 * time.Millisecond))
	if len(timedOut) != 0 {
		t.Fatal("the timeout ran from the offer, not from the answer")
	}
	s.SetAnswered() // a re-INVITE's 2xx: changes nothing
	if s.AnsweredAt() != at {
		t.Fatal("a second SetAnswered moved the answer time")
	}
	r.checkTimeouts(at.Add(1100 * time.Millisecond))
	if len(timedOut) != 1 {
		t.Fatal("an answered call without media did not time out")
	}
}

// TestForwardAllocatesNothing: the per-packet path, learning included,
// allocates nothing once the leg is locked.
func TestForwardAllocatesNothing(t *testing.T) {
	r := newRelay(t, Config{}, nil)
	st, a, b, legA, _ := connected(t, r, "allocs")
	stranger := newPhone(t, "127.0.0.3")
	pkt := rtpPacket(1, 0)
	allocs := forwardAllocs(t, a, b, stranger, pkt, legA)
	if allocs > 0.5 {
		t.Fatalf("%.1f allocations per forwarded packet, want 0", allocs)
	}
	if st.Legs[0].Stats().Rejected < 200 {
		t.Fatalf("stranger packets not rejected: %+v", st.Legs[0].Stats())
	}
}

// forwardAllocs measures the allocations of 200 rounds of: a packet from
// stranger (dropped by the locked leg), then pkt from a forwarded to b.
func forwardAllocs(t *testing.T, a, b, stranger *phone, pkt []byte, legA netip.AddrPort) float64 {
	t.Helper()
	buf := make([]byte, 1500)
	a.rtp.WriteToUDPAddrPort(pkt, legA)
	recv(t, b.rtp)
	return testing.AllocsPerRun(200, func() {
		stranger.rtp.WriteToUDPAddrPort(pkt, legA)
		a.rtp.WriteToUDPAddrPort(pkt, legA)
		b.rtp.SetReadDeadline(time.Now().Add(2 * time.Second))
		b.rtp.ReadFromUDPAddrPort(buf)
	})
}
