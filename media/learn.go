package media

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
)

// Learning says which sources a leg may learn as its side's media
// address (symmetric RTP, RFC 4961), in the spirit of rtpengine's
// heuristic learning after CVE-2025-53399. During a short window at the
// start of each stream, and again after a new offer or answer moves that
// side's SDP address, the sources packets arrive from are ranked (see
// Rank); only the best one seen so far is forwarded; then the leg locks
// to it, and everything else is dropped and counted for the rest of the
// call.
type Learning uint8

// Learning modes.
const (
	// LearnHeuristic (the default) learns the SDP address, the SDP IP, or
	// the IP the side's SIP signalling came from: NATed phones work, a
	// stranger elsewhere on the internet cannot take the stream.
	LearnHeuristic Learning = iota
	// LearnStrict learns only the IP written in the SDP.
	LearnStrict
	// LearnAny also learns any source during the window, for carriers and
	// SBCs whose media comes from addresses they do not announce.
	LearnAny
)

// ParseLearning reads a mode's name: heuristic, strict or any.
func ParseLearning(s string) (Learning, error) {
	switch s {
	case "heuristic", "":
		return LearnHeuristic, nil
	case "strict":
		return LearnStrict, nil
	case "any":
		return LearnAny, nil
	}
	return 0, fmt.Errorf("media: learning mode %q: must be heuristic, strict or any", s)
}

func (m Learning) String() string {
	switch m {
	case LearnStrict:
		return "strict"
	case LearnAny:
		return "any"
	}
	return "heuristic"
}

// Rank is how well a packet's source matches what is known of a side; a
// lower rank other than RankNone is better.
type Rank uint8

// Ranks, best first.
const (
	RankNone       Rank = iota // a stranger: never learned
	RankSDPAddress             // exactly the address and port in the SDP: locks at once
	RankSDPIP                  // the SDP's IP, another port
	RankSignalling             // the IP the side's SIP messages came from (a NATed phone)
	RankAny                    // any other address (LearnAny only)
	numRanks
)

func (r Rank) String() string {
	switch r {
	case RankSDPAddress:
		return "sdp_address"
	case RankSDPIP:
		return "sdp_ip"
	case RankSignalling:
		return "signalling"
	case RankAny:
		return "any"
	}
	return "none"
}

// LearningStats counts endpoint learning over all of a relay's legs
// since it started.
type LearningStats struct {
	// Learned counts the sources legs locked to, by Rank (index 0 unused).
	Learned [numRanks]uint64
	// RejectedLearning counts packets dropped while a leg was learning:
	// from sources the mode does not allow, or worse-ranked than the
	// current candidate.
	RejectedLearning uint64
	// RejectedLocked counts packets dropped after the lock, from any
	// source but the learned one.
	RejectedLocked uint64
	// RelatchRefused counts, after the lock, new sources that learning
	// would have accepted (the SDP's IP or the signalling IP from another
	// port; any source in LearnAny): a NAT rebinding, or someone beside
	// the phone, trying to move the stream. Each source counts once in a
	// row, not once per packet.
	RelatchRefused uint64
}

type learnCounters struct {
	learned                          [numRanks]atomic.Uint64
	rejectedLearning, rejectedLocked atomic.Uint64
	relatchRefused                   atomic.Uint64
}

// LearningStats returns the relay's learning counters.
func (r *Relay) LearningStats() LearningStats {
	var s LearningStats
	for i := range s.Learned {
		s.Learned[i] = r.learn.learned[i].Load()
	}
	s.RejectedLearning = r.learn.rejectedLearning.Load()
	s.RejectedLocked = r.learn.rejectedLocked.Load()
	s.RelatchRefused = r.learn.relatchRefused.Load()
	return s
}

// remote is what one side's SDP says about where it receives.
type remote struct {
	ip   netip.Addr
	rtp  netip.AddrPort
	rtcp netip.AddrPort
	mux  bool
	// Learning epochs: a new RTP address starts a new one (gen), and a new
	// RTP or RTCP address a new one for RTCP (rtcpGen).
	gen, rtcpGen uint64
}

// learnedSource is the source a leg's RTP locked to in epoch gen.
type learnedSource struct {
	gen  uint64
	addr netip.AddrPort
	rank Rank
}

// rank ranks src for the leg, from its SDP w (may be nil) and its
// signalling address. rtcp says the packet came to the RTCP socket.
func (l *Leg) rank(w *remote, src netip.AddrPort, rtcp bool) Rank {
	if w != nil && w.rtp.IsValid() {
		exact := w.rtp
		if rtcp && !w.mux {
			exact = w.rtcp
		}
		if src == exact {
			return RankSDPAddress
		}
		if src.Addr() == w.ip {
			return RankSDPIP
		}
	}
	mode := l.cfg.Learning
	if mode == LearnStrict {
		return RankNone
	}
	if sig := l.sig.Load(); sig != nil && *sig == src.Addr() {
		return RankSignalling
	}
	if mode == LearnAny {
		return RankAny
	}
	return RankNone
}

// learner is the RTP socket's learning state, owned by its reader
// goroutine.
type learner struct {
	gen     uint64
	best    Rank           // the candidate's rank; RankNone: no candidate yet
	cand    netip.AddrPort // the candidate, then the locked source
	count   int            // packets from the candidate
	start   time.Time      // the candidate window's first packet
	locked  bool
	refused netip.AddrPort // the last re-latch refused after the lock
}

// acceptRTP decides whether a packet on the RTP socket (RTP, or RTCP with
// rtcp-mux) from src is from this side, learning src as the side's
// address. Only the best-ranked source seen so far is accepted; a better
// one replaces it during the window; the leg locks at once to the exact
// SDP address, else when the window (from the first candidate's first
// packet) ends or after LockAfter packets from the candidate. A source
// learned only because the mode is LearnAny locks only when the window
// ends, so the real endpoint, if it ranks better, can still displace a
// stranger who sprayed first. After the lock nothing else is accepted.
func (l *Leg) acceptRTP(lt *learner, src netip.AddrPort, now time.Time) bool {
	w := l.want.Load()
	var gen uint64
	if w != nil {
		gen = w.gen
	}
	if gen != lt.gen {
		*lt = learner{gen: gen}
	}
	counters := &l.session.relay.learn
	if !lt.locked && lt.best != RankNone && now.Sub(lt.start) >= l.cfg.LearnWindow {
		l.lock(lt)
	}
	if lt.locked {
		if src == lt.cand {
			return true
		}
		counters.rejectedLocked.Add(1)
		if src != lt.refused && l.rank(w, src, false) != RankNone {
			lt.refused = src
			counters.relatchRefused.Add(1)
		}
		return false
	}
	r := l.rank(w, src, false)
	switch {
	case r == RankNone:
		counters.rejectedLearning.Add(1)
		return false
	case src == lt.cand:
		lt.count++
	case lt.best == RankNone || r < lt.best:
		if lt.best == RankNone {
			lt.start = now
		}
		lt.best, lt.cand, lt.count = r, src, 1
		a := src // once per better candidate: at most one per rank and epoch
		l.dstRTP.Store(&a)
		l.stream.syncOffload() // the other leg's flow sends here now
	default:
		counters.rejectedLearning.Add(1)
		return false
	}
	if lt.best == RankSDPAddress || (lt.best != RankAny && lt.count >= l.cfg.LockAfter) {
		l.lock(lt)
	}
	return true
}

// lock makes the candidate the side's address for the epoch.
func (l *Leg) lock(lt *learner) {
	lt.locked = true
	l.learned.Store(&learnedSource{gen: lt.gen, addr: lt.cand, rank: lt.best})
	l.session.relay.learn.learned[lt.best].Add(1)
	l.stream.syncOffload() // locked: its RTP can go through the kernel
}

// rtcpLearner is the RTCP socket's learning state, owned by its reader
// goroutine.
type rtcpLearner struct {
	gen     uint64 // the remote's rtcpGen
	best    Rank
	cand    netip.AddrPort
	follows *learnedSource // the RTP lock the destination was taken under
}

// acceptRTCP decides whether a packet on the RTCP socket from src is from
// this side. RTCP follows its RTP: once RTP is locked, RTCP is accepted
// from the learned IP on any port (a NAT maps the RTCP port as it likes)
// and sent back to where the first of it came from; before that, by the
// same ranking as RTP, from the best-ranked source seen so far. (With
// rtcp-mux, RTCP arrives on the RTP socket and is RTP's.)
func (l *Leg) acceptRTCP(lt *rtcpLearner, src netip.AddrPort) bool {
	w := l.want.Load()
	var gen, rtcpGen uint64
	if w != nil {
		gen, rtcpGen = w.gen, w.rtcpGen
	}
	if rtcpGen != lt.gen {
		*lt = rtcpLearner{gen: rtcpGen}
	}
	counters := &l.session.relay.learn
	if lk := l.learned.Load(); lk != nil && lk.gen == gen {
		if src.Addr() != lk.addr.Addr() {
			counters.rejectedLocked.Add(1)
			return false
		}
		if lt.follows != lk {
			lt.follows, lt.cand = lk, src
			a := src // once per lock
			l.dstRTCP.Store(&a)
		}
		return true
	}
	r := l.rank(w, src, true)
	switch {
	case r == RankNone:
		counters.rejectedLearning.Add(1)
		return false
	case src == lt.cand:
		return true
	case lt.best == RankNone || r < lt.best:
		lt.best, lt.cand = r, src
		a := src // once per better candidate
		l.dstRTCP.Store(&a)
		return true
	}
	counters.rejectedLearning.Add(1)
	return false
}

// SetSignalling records the IP the side's SIP signalling comes from (a
// request's source for the caller, a response's for the callee): a
// NATed phone's media comes from there, not from the private address in
// its SDP.
func (l *Leg) SetSignalling(ip netip.Addr) {
	if !ip.IsValid() || ip.IsUnspecified() {
		return
	}
	ip = ip.Unmap()
	if old := l.sig.Load(); old != nil && *old == ip {
		return
	}
	l.sig.Store(&ip)
}
