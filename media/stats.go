package media

import (
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
)

// LegStats is what the relay saw from one side of a stream (received)
// and sent to it (sent), with what that side's RTCP reports said.
type LegStats struct {
	Packets  uint64 // RTP (or UDPTL) packets received from this side
	Bytes    uint64 // RTP (or UDPTL) bytes received from this side
	Sent     uint64 // RTP (or UDPTL) packets sent to this side
	Lost     int64  // RTP packets from this side that never arrived (sequence gaps)
	Jitter   float64
	RTCP     uint64 // RTCP packets received from this side
	RTCPSent uint64 // RTCP packets sent to this side
	Rejected uint64 // packets from a source that is not this side
	Dropped  uint64 // packets the stream does not carry: not RTP/RTCP, too long, or on a UDPTL stream's odd port
	NoDest   uint64 // packets the other side had no address for yet
	// Kernel is how many of Packets the kernel forwarded (the offload);
	// Offloaded says the leg's RTP goes through the kernel now. Sequence
	// loss and jitter are measured on the packets the relay's sockets
	// saw; for offloaded RTP, RTCP reports give them.
	Kernel    uint64
	Offloaded bool
	SRTP      bool // the SDP made this side's media SRTP; forwarded untouched
	UDPTL     bool // the stream is T.38 fax over UDPTL: datagrams forwarded as they are, no RTCP

	// Learned is the source this side's RTP is locked to, and how it
	// ranked; zero (RankNone) while the leg is still learning.
	Learned     netip.AddrPort
	LearnedRank Rank

	// From this side's RTCP receiver reports about what it receives.
	ReportedLost       int64   // cumulative packets lost
	ReportedFraction   float64 // fraction lost in the last interval, 0..1
	ReportedJitterSecs float64 // interarrival jitter, seconds
	Reports            uint64  // RTCP report blocks received from this side
	// RTT between the relay and this side, from SR/RR LSR and DLSR;
	// RTTKnown is false until one was measured.
	RTT      time.Duration
	RTTKnown bool
}

// legCounters are updated by the leg's reader goroutines and read by Stats.
type legCounters struct {
	packets, bytes, sent, rtcpIn, rtcpSent atomic.Uint64
	kernel                                 atomic.Uint64 // of packets, forwarded by the offload
	rejected, dropped, noDest              atomic.Uint64
	lost                                   atomic.Int64
	jitterBits                             atomic.Uint64 // float64 bits, RTP timestamp units

	mu                     sync.Mutex // guards the RTCP-derived fields
	repLost                int64
	repFraction, repJitter float64
	repBlocks              uint64
	rtt                    time.Duration
	rttKnown               bool
	srSent                 map[uint32]srMark // SRs forwarded to this side, by SSRC
	clockRate              atomic.Int32
	secure                 atomic.Bool // SRTP: RTCP past its first 8 bytes is ciphertext
}

type srMark struct {
	lsr uint32
	at  time.Time
}

// rtpState is sequence and jitter tracking (RFC 3550 A.1, A.8) for one
// reader goroutine.
type rtpState struct {
	hdr      rtp.Header
	started  bool
	ssrc     uint32
	baseSeq  uint32
	maxSeq   uint32 // extended
	received uint64
	transit  int64
	jitter   float64
	epoch    time.Time
}

func (l *Leg) onRTP(rs *rtpState, pkt []byte, now time.Time) {
	l.stats.packets.Add(1)
	l.stats.bytes.Add(uint64(len(pkt)))
	if _, err := rs.hdr.Unmarshal(pkt); err != nil {
		return
	}
	h := &rs.hdr
	seq := uint32(h.SequenceNumber)
	if !rs.started || h.SSRC != rs.ssrc {
		*rs = rtpState{hdr: rs.hdr, started: true, ssrc: h.SSRC, baseSeq: seq, maxSeq: seq, epoch: now}
	} else {
		// Extend the 16-bit sequence number across wraps.
		cycles := rs.maxSeq &^ 0xffff
		ext := cycles | seq
		if int32(ext-rs.maxSeq) < -0x8000 {
			ext += 1 << 16
		} else if int32(ext-rs.maxSeq) > 0x8000 {
			ext -= 1 << 16
		}
		if ext > rs.maxSeq {
			rs.maxSeq = ext
		}
	}
	rs.received++
	expected := int64(rs.maxSeq-rs.baseSeq) + 1
	l.stats.lost.Store(max(expected-int64(rs.received), 0))

	rate := l.clockRate()
	arrival := int64(now.Sub(rs.epoch).Seconds() * float64(rate))
	transit := arrival - int64(h.Timestamp)
	if rs.received > 1 {
		d := transit - rs.transit
		if d < 0 {
			d = -d
		}
		rs.jitter += (float64(d) - rs.jitter) / 16
		l.stats.jitterBits.Store(math.Float64bits(rs.jitter))
	}
	rs.transit = transit
}

func (l *Leg) clockRate() int {
	if r := l.stats.clockRate.Load(); r > 0 {
		return int(r)
	}
	return 8000
}

// SetClockRate sets the RTP clock rate used for jitter (from the SDP).
func (l *Leg) SetClockRate(hz int) { l.stats.clockRate.Store(int32(hz)) }

// SetSecure marks the leg's media as SRTP (an RTP/SAVP or RTP/SAVPF
// profile): its packets are forwarded as they are, RTP statistics still
// come from the clear RTP header, and SRTCP reports, encrypted past
// their first 8 bytes, are not read.
func (l *Leg) SetSecure(on bool) { l.stats.secure.Store(on) }

// onRTCP reads SR, RR, SDES and BYE from a (compound) RTCP packet.
func (l *Leg) onRTCP(pkt []byte, now time.Time) {
	l.stats.rtcpIn.Add(1)
	if l.stats.secure.Load() {
		return
	}
	pkts, err := rtcp.Unmarshal(pkt)
	if err != nil {
		return
	}
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.SenderReport:
			// Remember the SR so the other side's report on it gives the
			// relay-to-other-side round trip.
			l.other.markSR(p.SSRC, uint32(p.NTPTime>>16), now)
			l.report(p.Reports, now)
		case *rtcp.ReceiverReport:
			l.report(p.Reports, now)
		}
	}
}

// markSR records, on the leg the SR is forwarded to, when it passed.
func (l *Leg) markSR(ssrc, lsr uint32, now time.Time) {
	l.stats.mu.Lock()
	if l.stats.srSent == nil {
		l.stats.srSent = map[uint32]srMark{}
	}
	l.stats.srSent[ssrc] = srMark{lsr: lsr, at: now}
	l.stats.mu.Unlock()
}

func (l *Leg) report(blocks []rtcp.ReceptionReport, now time.Time) {
	l.stats.mu.Lock()
	defer l.stats.mu.Unlock()
	for _, b := range blocks {
		l.stats.repBlocks++
		l.stats.repLost = int64(b.TotalLost)
		l.stats.repFraction = float64(b.FractionLost) / 256
		l.stats.repJitter = float64(b.Jitter) / float64(l.clockRate())
		if b.LastSenderReport == 0 {
			continue
		}
		if m, ok := l.stats.srSent[b.SSRC]; ok && m.lsr == b.LastSenderReport {
			dlsr := time.Duration(float64(b.Delay) / 65536 * float64(time.Second))
			if rtt := now.Sub(m.at) - dlsr; rtt >= 0 {
				l.stats.rtt, l.stats.rttKnown = rtt, true
			}
		}
	}
}

// Stats returns a snapshot of the leg's statistics.
func (l *Leg) Stats() LegStats {
	offloaded := false
	if st := l.stream; st != nil {
		st.foldOffload(time.Now())
		offloaded = st.offloaded(slices.Index(st.Legs[:], l))
	}
	s := LegStats{
		Kernel: l.stats.kernel.Load(), Offloaded: offloaded,
		Packets: l.stats.packets.Load(), Bytes: l.stats.bytes.Load(), Sent: l.stats.sent.Load(),
		Lost: l.stats.lost.Load(), RTCP: l.stats.rtcpIn.Load(), RTCPSent: l.stats.rtcpSent.Load(),
		Rejected: l.stats.rejected.Load(), Dropped: l.stats.dropped.Load(), NoDest: l.stats.noDest.Load(),
		SRTP: l.stats.secure.Load(), UDPTL: l.udptl.Load(),
	}
	if lk, w := l.learned.Load(), l.want.Load(); lk != nil && w != nil && lk.gen == w.gen {
		s.Learned, s.LearnedRank = lk.addr, lk.rank
	}
	rate := float64(l.clockRate())
	s.Jitter = math.Float64frombits(l.stats.jitterBits.Load()) / rate
	l.stats.mu.Lock()
	s.ReportedLost, s.ReportedFraction, s.ReportedJitterSecs, s.RTT = l.stats.repLost, l.stats.repFraction, l.stats.repJitter, l.stats.rtt
	s.Reports, s.RTTKnown = l.stats.repBlocks, l.stats.rttKnown
	l.stats.mu.Unlock()
	return s
}

// Collector exports the relay's sessions, port pool and learning.
func (r *Relay) Collector() prometheus.Collector {
	var m metrics.Set
	m.Gauge("relay_sessions", "Anchored calls with relay ports.", func() float64 { return float64(r.Len()) })
	m.Gauge("relay_port_pairs_in_use", "RTP/RTCP port pairs allocated.", func() float64 { return float64(r.alloc.InUse()) })
	m.Gauge("relay_port_pairs", "RTP/RTCP port pairs in the range.", func() float64 { return float64(r.alloc.Pairs()) })
	m.Gauge("relay_port_pairs_quarantined", "RTP/RTCP port pairs released moments ago, reused only when no other pair is free.",
		func() float64 { return float64(r.alloc.Quarantined()) })
	m.Counter("relay_port_pairs_reused_early_total", "Port pairs taken before their quarantine ended because no other pair was free (the range is small for the load).",
		func() float64 { return float64(r.alloc.EarlyReuses()) })
	sum := func(f func(s LegStats) float64) func() float64 {
		return func() float64 {
			total := 0.0
			for _, sess := range r.Sessions() {
				for _, st := range sess.Streams() {
					legs := st.Stats()
					total += f(legs[0]) + f(legs[1])
				}
			}
			return total
		}
	}
	live := sum(func(s LegStats) float64 { return float64(s.Packets) })
	m.Gauge("relay_packets", "RTP packets received by the relay on live calls.", live)
	m.Counter("relay_packets_total", "RTP packets received by the relay, on live and ended calls (with the kernel path's).",
		func() float64 { return float64(r.retired.Load()) + live() })
	m.Gauge("relay_bytes", "RTP bytes received by the relay on live calls.", sum(func(s LegStats) float64 { return float64(s.Bytes) }))
	m.Gauge("relay_kernel_packets", "RTP packets of live calls forwarded in the kernel (eBPF, media.kernel), included in relay_packets.", sum(func(s LegStats) float64 { return float64(s.Kernel) }))
	m.Gauge("relay_kernel_flows", "Latched legs whose RTP the kernel forwards now.", func() float64 { return float64(r.OffloadStats().Active) })
	m.Counter("relay_kernel_flows_refused_total", "Latched legs the kernel path refused (IPv6, no route, map full): their RTP stayed in userspace.", func() float64 { return float64(r.OffloadStats().Failed) })
	m.Gauge("relay_lost_packets", "RTP packets lost before the relay on live calls.", sum(func(s LegStats) float64 { return float64(s.Lost) }))
	for rank := RankSDPAddress; rank <= RankAny; rank++ {
		m.Counter("media_sources_learned_total", "Media sources relay legs locked to, by how they matched (media.learning): sdp_address, sdp_ip, signalling (a NATed side), any.",
			func() float64 { return float64(r.LearningStats().Learned[rank]) }, "rank", rank.String())
	}
	for phase, f := range map[string]func(LearningStats) uint64{
		"learning": func(s LearningStats) uint64 { return s.RejectedLearning },
		"locked":   func(s LearningStats) uint64 { return s.RejectedLocked },
	} {
		m.Counter("media_packets_rejected_total", "RTP/RTCP packets the relay dropped because they came from a source that is not the side's: while learning (not allowed by media.learning, or worse-ranked than the candidate) or after the lock.",
			func() float64 { return float64(f(r.LearningStats())) }, "phase", phase)
	}
	m.Counter("media_relatch_refused_total", "New sources refused after a leg locked that learning would have taken (the side's IP from another port, e.g. a NAT rebinding or a device beside it; any source under learning: any); each counted once in a row.",
		func() float64 { return float64(r.LearningStats().RelatchRefused) })
	return &m
}
