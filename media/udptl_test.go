package media

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
)

// udptlPacket is a T.38 UDPTL datagram (ITU-T T.38 Annex D): a 16-bit
// sequence number, the primary IFP packet, then redundancy. Nothing in it
// looks like RTP version 2.
func udptlPacket(seq uint16, ifp ...byte) []byte {
	b := []byte{byte(seq >> 8), byte(seq), byte(len(ifp))}
	b = append(b, ifp...)
	return append(b, 0x00) // no redundant packets
}

// faxStream opens a one-stream session turned to UDPTL whose A side
// announced aSDP (its IP, maybe another port) and B side its exact
// address; it returns the stream, both fax endpoints and the relay ports
// each sends to.
func faxStream(t *testing.T, r *Relay, id string, aSDP func(*phone) netip.AddrPort) (*Stream, *phone, *phone, netip.AddrPort, netip.AddrPort) {
	t.Helper()
	s, err := r.Open(id, one)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Release(id) })
	st := s.Stream(0)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	br, _ := b.addrs()
	st.Legs[0].SetUDPTL(true)
	st.Legs[1].SetUDPTL(true)
	st.Legs[0].SetRemote(aSDP(a), netip.AddrPort{}, false, false) // UDPTL: no RTCP address
	st.Legs[1].SetRemote(br, netip.AddrPort{}, false, false)
	return st, a, b, netip.AddrPortFrom(lo, uint16(st.Legs[0].Port())), netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()))
}

// nothing fails when c receives anything within d.
func nothing(t *testing.T, p *phone, d time.Duration) {
	t.Helper()
	buf := make([]byte, 1500)
	for _, c := range []interface {
		SetReadDeadline(time.Time) error
		Read([]byte) (int, error)
	}{p.rtp, p.rtcp} {
		c.SetReadDeadline(time.Now().Add(d))
		if n, err := c.Read(buf); err == nil {
			t.Fatalf("got %d bytes %x, want nothing", n, buf[:n])
		}
	}
}

// TestUDPTLForwardedBothWays: on a stream turned to UDPTL (T.38 fax) the
// relay forwards datagrams that are not RTP, byte for byte, both ways,
// on the even ports, after learning the A side by its SDP IP from
// another port (as a fax gateway behind a port-changing NAT would send),
// while a stranger is refused before and after the lock; what reaches an
// odd port is dropped (UDPTL has no RTCP); packets and bytes are counted
// and nothing is parsed as RTP. Turned back to audio, RTP and RTCP flow
// as before and a non-RTP datagram is dropped again.
func TestUDPTLForwardedBothWays(t *testing.T) {
	r := newRelay(t, Config{LockAfter: 3}, nil)
	st, a, b, legA, legB := faxStream(t, r, "fax", func(a *phone) netip.AddrPort {
		ar, _ := a.addrs()
		return netip.AddrPortFrom(ar.Addr(), ar.Port()+100) // the SDP's port is not where A sends from
	})
	stranger := newPhone(t, "127.0.0.2")
	stranger.rtp.WriteToUDPAddrPort(udptlPacket(0, 0xde, 0xad), legA)

	sent := [][]byte{
		udptlPacket(0, 0x06, 0xd0, 0x01), // t30-indicator
		udptlPacket(1, 0xc0, 0x01, 0x80), // data
		{0x80, 0xc8, 0x00, 0x01, 0x02},   // looks like muxed RTCP: still forwarded to the even port
		{0x00, 0x02, 0x01},               // shorter than any RTP header
		bytes.Repeat([]byte{0x5a}, 1500), // the largest datagram relayed
	}
	total := 0
	for _, p := range sent {
		a.rtp.WriteToUDPAddrPort(p, legA)
		got, from := recv(t, b.rtp)
		if !bytes.Equal(got, p) || from != legB {
			t.Fatalf("B got %x from %v, want %x from %v", got, from, p, legB)
		}
		total += len(p)
	}
	// Too long to relay whole: dropped, not cut short.
	a.rtp.WriteToUDPAddrPort(bytes.Repeat([]byte{0x5a}, 1501), legA)
	// B answers: it reaches A where A sends from, not the SDP's port.
	reply := udptlPacket(7, 0x01)
	b.rtp.WriteToUDPAddrPort(reply, legB)
	if got, from := recv(t, a.rtp); !bytes.Equal(got, reply) || from != legA {
		t.Fatalf("A got %x from %v, want %x from %v", got, from, reply, legA)
	}
	// No RTCP: the odd ports forward nothing, the stranger and A's own IP
	// from another port get nothing through after the lock.
	a.rtp.WriteToUDPAddrPort(udptlPacket(2, 0x01), netip.AddrPortFrom(lo, legA.Port()+1))
	b.rtcp.WriteToUDPAddrPort(udptlPacket(8, 0x01), netip.AddrPortFrom(lo, legB.Port()+1))
	stranger.rtp.WriteToUDPAddrPort(udptlPacket(3, 0x01), legA)
	a.rtcp.WriteToUDPAddrPort(udptlPacket(3, 0x01), legA)
	nothing(t, b, 200*time.Millisecond)
	nothing(t, a, 10*time.Millisecond)

	sa, sb := st.Legs[0].Stats(), st.Legs[1].Stats()
	if !sa.UDPTL || sa.Packets != uint64(len(sent)) || sa.Bytes != uint64(total) || sa.Rejected != 3 || sa.Dropped != 2 {
		t.Errorf("A leg: %+v; want UDPTL, %d packets, %d bytes, 3 rejected, 2 dropped (too long, odd port)", sa, len(sent), total)
	}
	if sa.LearnedRank != RankSDPIP || sa.Learned != a.rtp.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort() {
		t.Errorf("A learned %v by %v, want its socket by the SDP's IP", sa.Learned, sa.LearnedRank)
	}
	if sa.Lost != 0 || sa.Jitter != 0 || sa.RTCP != 0 {
		t.Errorf("A leg parsed UDPTL as RTP/RTCP: %+v", sa)
	}
	if sb.Sent != uint64(len(sent)) || sb.Packets != 1 || sb.Dropped != 1 || sb.LearnedRank != RankSDPAddress {
		t.Errorf("B leg: %+v", sb)
	}

	// The fax is over: back to audio on the same ports. A's lock stands
	// (same address); RTP and RTCP flow, a UDPTL datagram is dropped.
	ar, ac := a.addrs()
	br, bc := b.addrs()
	st.Legs[0].SetUDPTL(false)
	st.Legs[1].SetUDPTL(false)
	st.Legs[0].SetRemote(netip.AddrPortFrom(ar.Addr(), ar.Port()+100), ac, false, false)
	st.Legs[1].SetRemote(br, bc, false, false)
	a.rtp.WriteToUDPAddrPort(udptlPacket(9, 0x01), legA)
	a.rtp.WriteToUDPAddrPort(rtpPacket(1, 160), legA)
	if got, _ := recv(t, b.rtp); len(got) != 172 {
		t.Fatalf("after the fax B got %x, want the RTP packet only", got)
	}
	sr, _ := (&rtcp.SenderReport{SSRC: 0xabc}).Marshal()
	a.rtcp.WriteToUDPAddrPort(sr, netip.AddrPortFrom(lo, legA.Port()+1))
	if got, from := recv(t, b.rtcp); !bytes.Equal(got, sr) || from.Port() != legB.Port()+1 {
		t.Fatalf("after the fax RTCP not relayed: %x from %v", got, from)
	}
	if sa := st.Legs[0].Stats(); sa.UDPTL || sa.Dropped != 3 || sa.RTCP != 1 {
		t.Errorf("A leg back on audio: %+v", sa)
	}
}

// TestUDPTLForwardAllocatesNothing: the UDPTL path, learning included,
// allocates nothing per datagram.
func TestUDPTLForwardAllocatesNothing(t *testing.T) {
	r := newRelay(t, Config{}, nil)
	st, a, b, legA, _ := faxStream(t, r, "fax-allocs", func(a *phone) netip.AddrPort { ar, _ := a.addrs(); return ar })
	stranger := newPhone(t, "127.0.0.3")
	pkt := udptlPacket(1, 0xc0, 0x01, 0x80)
	allocs := forwardAllocs(t, a, b, stranger, pkt, legA)
	if allocs > 0.5 {
		t.Fatalf("%.1f allocations per forwarded datagram, want 0", allocs)
	}
	if s := st.Legs[0].Stats(); s.Rejected < 200 || s.Packets < 201 {
		t.Fatalf("A leg: %+v", s)
	}
}
