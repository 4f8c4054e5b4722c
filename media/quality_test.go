package media

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/pion/rtcp"
)

// TestMOS: the simplified E-model at its reference points, and worse
// for every worse input.
func TestMOS(t *testing.T) {
	best := MOS(0, 0, 0) // eff 10 ms: R 92.95
	if best < 4.40 || best > 4.42 {
		t.Fatalf("MOS of a perfect path = %.3f, want ≈ 4.41", best)
	}
	if m := MOS(0, 0, 100); m != 1 {
		t.Fatalf("MOS at 100%% loss = %v, want 1", m)
	}
	prev := best
	for _, in := range [][3]float64{{50, 0, 0}, {50, 20, 0}, {50, 20, 1}, {150, 20, 1}, {300, 40, 5}} {
		m := MOS(in[0], in[1], in[2])
		if m >= prev {
			t.Fatalf("MOS(rtt %v, jitter %v, loss %v%%) = %.3f, not below %.3f", in[0], in[1], in[2], m, prev)
		}
		prev = m
	}
}

// TestQualityWorseWithLoss: a stream through the relay's sockets with a
// tenth of its packets lost, and the side's receiver reports saying so,
// sounds worse than a clean one; each says what it could not measure.
func TestQualityWorseWithLoss(t *testing.T) {
	r := newRelay(t, Config{}, nil)
	quality := func(id string, drop func(seq uint16) bool, fraction uint8) Quality {
		st, a, b, legA, _ := connected(t, r, id)
		for seq := uint16(1); seq <= 100; seq++ {
			if drop(seq) {
				continue
			}
			a.rtp.WriteToUDPAddrPort(rtpPacket(seq, uint32(seq)*160), legA)
			recv(t, b.rtp)
		}
		rr, _ := (&rtcp.ReceiverReport{SSRC: 0xdef, Reports: []rtcp.ReceptionReport{{SSRC: 0x123, FractionLost: fraction, Jitter: 8}}}).Marshal()
		a.rtcp.WriteToUDPAddrPort(rr, netip.AddrPortFrom(lo, legA.Port()+1))
		recv(t, b.rtcp)
		return st.Legs[0].Stats().Quality()
	}
	clean := quality("clean", func(uint16) bool { return false }, 0)
	lossy := quality("lossy", func(seq uint16) bool { return seq%10 == 5 }, 26) // 26/256 ≈ 10%
	if clean.LossPct != 0 || clean.MOS < 4.3 {
		t.Fatalf("clean stream: %+v", clean)
	}
	if lossy.LossPct < 9 || lossy.LossPct > 11 || lossy.MOS >= clean.MOS-0.5 {
		t.Fatalf("lossy stream %+v is not clearly worse than the clean %+v", lossy, clean)
	}
	// No SR crossed the relay: the round trip is unmeasured, and says so.
	if !slices.Contains(clean.Missing, "rtt") || slices.Contains(clean.Missing, "rtcp_reports") {
		t.Fatalf("missing inputs %v, want rtt only", clean.Missing)
	}
	// Nothing at all measured: no MOS.
	if q := (LegStats{}).Quality(); q.MOS != 0 || !slices.Contains(q.Missing, "rtcp_reports") {
		t.Fatalf("empty stats: %+v", q)
	}
}
