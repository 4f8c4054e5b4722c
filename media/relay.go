package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Config holds the relay's tunables.
type Config struct {
	Addr       netip.Addr    // address the relay binds and announces
	PortMin    int           // first port of the range (even)
	PortMax    int           // last port of the range
	Quarantine time.Duration // before a released pair is reused
	Timeout    time.Duration // no RTP for this long ends the call
	// HoldTimeout replaces Timeout while a stream is on hold.
	HoldTimeout time.Duration
	// Learning says which sources a leg may learn as its side's address.
	Learning Learning
	// LearnWindow is how long a leg learns, from the first packet of its
	// first candidate source, before it locks to the best one seen.
	LearnWindow time.Duration
	// LockAfter is how many packets from the best candidate lock a side
	// before the window ends (the exact SDP address locks at once; a
	// source learned only under LearnAny waits for the window).
	LockAfter int
	// Offload, when set, forwards each latched leg's RTP outside the
	// relay's sockets (the kernel path); nil forwards all in userspace.
	Offload Offload
}

// Named defaults.
const (
	DefaultPortMin     = 20000
	DefaultPortMax     = 29999
	DefaultQuarantine  = 2 * time.Second
	DefaultTimeout     = 60 * time.Second
	DefaultHoldTimeout = time.Hour
	DefaultLockAfter   = 5
	DefaultLearnWindow = 3 * time.Second
)

// Relay owns every relay session. Safe for concurrent use.
//
// Lock order: a Session's mu, then the Relay's mu (Open undoing a session
// it created), then the Allocator's. Nothing takes a Session's mu while
// holding the Relay's: the timeout sweep works on a copy of the sessions.
type Relay struct {
	cfg       Config
	alloc     *Allocator
	log       *slog.Logger
	onTimeout func(id string) // set once
	learn     learnCounters
	offload   offloadCounters
	retired   atomic.Uint64 // RTP packets received on streams since closed

	mu       sync.Mutex
	sessions map[string]*Session // guarded by mu
}

// New returns a relay. onTimeout (may be nil) is called once for a
// session whose media stopped; the caller then hangs up and releases it.
func New(cfg Config, log *slog.Logger, onTimeout func(id string)) (*Relay, error) {
	if !cfg.Addr.IsValid() {
		return nil, errors.New("media: relay address not set")
	}
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = DefaultPortMin, DefaultPortMax
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.LockAfter == 0 {
		cfg.LockAfter = DefaultLockAfter
	}
	if cfg.LearnWindow == 0 {
		cfg.LearnWindow = DefaultLearnWindow
	}
	if cfg.Learning > LearnAny {
		return nil, fmt.Errorf("media: learning mode %d unknown: use LearnHeuristic, LearnStrict or LearnAny", cfg.Learning)
	}
	a, err := NewAllocator(cfg.PortMin, cfg.PortMax, cfg.Quarantine)
	if err != nil {
		return nil, err
	}
	return &Relay{cfg: cfg, alloc: a, log: log, onTimeout: onTimeout, sessions: map[string]*Session{}}, nil
}

// Addr is the relay's address.
func (r *Relay) Addr() netip.Addr { return r.cfg.Addr }

// Allocator exposes the port pool, for metrics and tests.
func (r *Relay) Allocator() *Allocator { return r.alloc }

// Get returns the session with id, or nil.
func (r *Relay) Get(id string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[id]
}

// Sessions returns the live sessions.
func (r *Relay) Sessions() []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s)
	}
	return out
}

// Len returns the number of live sessions.
func (r *Relay) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Open returns the session with id, creating it, and gives stream i
// two legs, each an even/odd port pair, when want[i] is set and it has
// none yet: only the streams a description accepts (port not 0) take
// ports. On error (a *PoolError) nothing new is left allocated, and a
// session just created is gone again.
func (r *Relay) Open(id string, want []bool) (*Session, error) {
	r.mu.Lock()
	s := r.sessions[id]
	created := s == nil
	if created {
		s = &Session{ID: id, relay: r, created: time.Now()}
		s.lastRTP.Store(time.Now().UnixNano())
		r.sessions[id] = s
	}
	r.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	var made []int
	for i, w := range want {
		if !w || (i < len(s.streams) && s.streams[i] != nil) {
			continue
		}
		st, err := r.newStream(s, i)
		if err != nil {
			for _, j := range made {
				s.streams[j].close()
				s.streams[j] = nil
			}
			if created {
				r.mu.Lock()
				delete(r.sessions, id)
				r.mu.Unlock()
			}
			return nil, err
		}
		for len(s.streams) <= i {
			s.streams = append(s.streams, nil)
		}
		s.streams[i] = st
		made = append(made, i)
	}
	return s, nil
}

// newStream opens stream i's two legs and starts them.
func (r *Relay) newStream(s *Session, i int) (*Stream, error) {
	st := &Stream{Index: i}
	for j := range st.Legs {
		l, err := r.newLeg(s)
		if err != nil {
			for _, made := range st.Legs[:j] {
				made.close()
			}
			return nil, err
		}
		st.Legs[j] = l
	}
	st.Legs[0].other, st.Legs[1].other = st.Legs[1], st.Legs[0]
	st.Legs[0].stream, st.Legs[1].stream = st, st
	st.Legs[0].start()
	st.Legs[1].start()
	return st, nil
}

func (r *Relay) newLeg(s *Session) (*Leg, error) {
	l := &Leg{session: s, cfg: &r.cfg}
	port, err := r.alloc.Get(func(p int) error {
		rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.cfg.Addr, uint16(p))))
		if err != nil {
			return err
		}
		rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.cfg.Addr, uint16(p+1))))
		if err != nil {
			rtp.Close()
			return err
		}
		l.rtp, l.rtcp = rtp, rtcp
		return nil
	})
	if err != nil {
		return nil, err
	}
	l.port = port
	return l, nil
}

// Release closes session id and returns its ports to the pool. It waits
// for the session's forwarding goroutines to stop.
func (r *Relay) Release(id string) {
	r.mu.Lock()
	s := r.sessions[id]
	delete(r.sessions, id)
	r.mu.Unlock()
	if s != nil {
		s.close()
	}
}

// Run checks media timeouts every interval until ctx ends, then releases
// every session.
func (r *Relay) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			ids := make([]string, 0, len(r.sessions))
			for id := range r.sessions {
				ids = append(ids, id)
			}
			r.mu.Unlock()
			for _, id := range ids {
				r.Release(id)
			}
			return
		case now := <-t.C:
			r.checkTimeouts(now)
		}
	}
}

func (r *Relay) checkTimeouts(now time.Time) {
	var dead []string
	for _, s := range r.Sessions() {
		// Not under r.mu: held takes the session's lock (see Relay).
		id := s.ID
		for _, st := range s.Streams() {
			st.foldOffload(now) // what the kernel forwarded counts as RTP
		}
		if s.answered.Load() == 0 {
			continue // ringing: the proxy's ring timeout bounds it
		}
		limit := r.cfg.Timeout
		if s.held() {
			limit = r.cfg.HoldTimeout
		}
		idle := now.Sub(time.Unix(0, s.lastRTP.Load()))
		if idle > limit && s.timedOut.CompareAndSwap(false, true) {
			dead = append(dead, id)
		}
	}
	for _, id := range dead {
		r.log.Info("media timeout", "session", id)
		if r.onTimeout != nil {
			r.onTimeout(id)
		} else {
			r.Release(id)
		}
	}
}

// Session is one call's media: a Stream per m-line that has ports.
type Session struct {
	ID      string
	relay   *Relay
	created time.Time

	lastRTP  atomic.Int64 // unix nanos of the last RTP packet in either direction, or of the answer
	answered atomic.Int64 // unix nanos of SetAnswered; 0 while ringing
	timedOut atomic.Bool

	mu      sync.Mutex
	streams []*Stream // guarded by mu; by m-line, nil for a line without ports
}

// SetAnswered tells the session its call was answered (a 2xx to the
// INVITE). Until then no media timeout applies: a call may ring longer
// than Config.Timeout (the proxy's ring timeout bounds ringing). The
// timeout then runs from the answer, not from the offer. Later calls
// change nothing.
func (s *Session) SetAnswered() {
	if s.answered.Load() != 0 {
		return
	}
	now := time.Now().UnixNano()
	s.lastRTP.Store(now) // before answered: the sweep must not see an answer with the old time
	s.answered.CompareAndSwap(0, now)
}

// AnsweredAt is when SetAnswered was first called; zero while ringing.
func (s *Session) AnsweredAt() time.Time {
	if n := s.answered.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Stream returns stream i (the i-th m-line), or nil when it has no ports.
func (s *Session) Stream(i int) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < 0 || i >= len(s.streams) {
		return nil
	}
	return s.streams[i]
}

// Streams returns the session's streams that have ports, in m-line
// order (Stream.Index is each one's m-line).
func (s *Session) Streams() []*Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		if st != nil {
			out = append(out, st)
		}
	}
	return out
}

// Drop closes stream i (an answer rejected it, or a new offer removed
// it) and returns its two port pairs to the pool. It reports whether the
// stream had ports.
func (s *Session) Drop(i int) bool {
	s.mu.Lock()
	if i < 0 || i >= len(s.streams) || s.streams[i] == nil {
		s.mu.Unlock()
		return false
	}
	st := s.streams[i]
	s.streams[i] = nil
	s.mu.Unlock()
	st.close()
	return true
}

func (s *Session) held() bool {
	for _, st := range s.Streams() {
		if st.Legs[0].held.Load() || st.Legs[1].held.Load() {
			return true
		}
	}
	return false
}

func (s *Session) close() {
	for _, st := range s.Streams() {
		st.close()
	}
}

// Stream is one m-line: Legs[0] faces the caller (side A), Legs[1] the
// callee (side B). What one leg receives, the other sends on.
type Stream struct {
	Index int // the m-line, from 0
	Legs  [2]*Leg

	closing atomic.Bool
	off     offloadState
}

func (st *Stream) close() {
	st.closing.Store(true)
	st.syncOffload() // every flow goes, its last counters folded
	st.Legs[0].close()
	st.Legs[1].close()
	s := st.Stats()
	st.Legs[0].session.relay.retired.Add(s[0].Packets + s[1].Packets)
}

// Stats returns both legs' statistics.
func (st *Stream) Stats() [2]LegStats {
	return [2]LegStats{st.Legs[0].Stats(), st.Legs[1].Stats()}
}

// Leg is the relay's socket pair facing one side of a stream.
type Leg struct {
	session *Session
	stream  *Stream // set once, before the leg starts
	cfg     *Config
	port    int          // RTP port (even); RTCP is port+1
	rtp     *net.UDPConn // set once
	rtcp    *net.UDPConn // set once
	other   *Leg         // set once
	wg      sync.WaitGroup
	closed  atomic.Bool

	want    atomic.Pointer[remote]         // from SDP; replaced on re-INVITE
	sig     atomic.Pointer[netip.Addr]     // where the side's SIP signalling comes from
	learned atomic.Pointer[learnedSource]  // the RTP source locked to; stale when its gen is old
	dstRTP  atomic.Pointer[netip.AddrPort] // where to send this side's RTP
	dstRTCP atomic.Pointer[netip.AddrPort]
	held    atomic.Bool
	udptl   atomic.Bool // the stream is T.38 fax over UDPTL, not RTP

	stats legCounters
}

// Port returns the leg's RTP port; its RTCP port is Port()+1.
func (l *Leg) Port() int { return l.port }

// SetRemote records where this side wants media, from its SDP: the
// addresses packets are sent to until learning finds the real ones. A
// new RTP address (a re-INVITE or UPDATE that moves the side) starts
// learning again; a hold by c=0.0.0.0 or port 0 keeps what was learned,
// and so does a change of rtcp-mux alone (an offer's mux the answer
// declines).
func (l *Leg) SetRemote(rtp, rtcp netip.AddrPort, mux, held bool) {
	l.held.Store(held)
	rtp, rtcp = unmap(rtp), unmap(rtcp)
	old := l.want.Load()
	usable := rtp.IsValid() && !rtp.Addr().IsUnspecified() && rtp.Port() != 0
	if old != nil && !usable {
		return
	}
	if mux && old != nil && old.rtp == rtp {
		rtcp = old.rtcp // muxed, RTCP uses the RTP port; keep the other for when mux ends
	}
	if old != nil && old.rtp == rtp && old.rtcp == rtcp && old.mux == mux {
		return
	}
	rm := &remote{ip: rtp.Addr(), rtp: rtp, rtcp: rtcp, mux: mux, gen: 1, rtcpGen: 1}
	if old != nil {
		rm.gen, rm.rtcpGen = old.gen, old.rtcpGen
		if old.rtp != rtp {
			rm.gen++
		}
		if old.rtp != rtp || old.rtcp != rtcp {
			rm.rtcpGen++
		}
	}
	l.want.Store(rm)
	if usable {
		if old == nil || rm.gen != old.gen {
			a := rtp
			l.dstRTP.Store(&a)
		}
		if old == nil || rm.rtcpGen != old.rtcpGen {
			b := rtcp
			l.dstRTCP.Store(&b)
		}
	}
	if l.stream != nil {
		l.stream.syncOffload() // a new epoch leaves the kernel until it locks again
	}
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (l *Leg) start() {
	l.wg.Add(2)
	go l.serve(l.rtp, false)
	go l.serve(l.rtcp, true)
}

func (l *Leg) close() {
	if !l.closed.CompareAndSwap(false, true) {
		return
	}
	l.rtp.Close()
	l.rtcp.Close()
	l.wg.Wait()
	l.session.relay.alloc.Put(l.port)
}

// SetUDPTL says whether the leg's stream is T.38 fax over UDPTL (an SDP
// m=image ... udptl t38) rather than RTP. A UDPTL leg forwards every
// datagram from its side as it is, learned and locked like RTP (the same
// ranking, the same lock: a change of kind alone keeps what was
// learned), counts packets and bytes, and parses nothing. UDPTL has no
// RTCP: the leg keeps its odd port bound, so the stream can turn back
// into audio (the end of a fax) on the same ports, but drops and counts
// what arrives there. Both legs of a stream are switched together.
func (l *Leg) SetUDPTL(on bool) {
	l.udptl.Store(on)
	if l.stream != nil {
		l.stream.syncOffload() // UDPTL is forwarded in userspace
	}
}

// maxDatagram is the largest datagram the relay forwards; a larger one
// is dropped, never forwarded cut short.
const maxDatagram = 1500

// isRTCP tells RTCP from RTP on a muxed port (RFC 5761 §4).
func isRTCP(b []byte) bool {
	return len(b) >= 2 && b[1] >= 192 && b[1] <= 223
}

// serve forwards what arrives on c to the other side until c is closed.
// It allocates nothing per packet.
func (l *Leg) serve(c *net.UDPConn, rtcpSock bool) {
	defer l.wg.Done()
	buf := make([]byte, maxDatagram+1) // one more: a longer datagram shows as too long
	var lt learner
	var rl rtcpLearner
	var rs rtpState
	o := l.other
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n > maxDatagram {
			l.stats.dropped.Add(1)
			continue
		}
		if l.udptl.Load() {
			if rtcpSock || n == 0 {
				l.stats.dropped.Add(1) // UDPTL has no RTCP
				continue
			}
			l.forwardUDPTL(&lt, buf[:n], unmap(src))
			continue
		}
		if n < 8 || buf[0]>>6 != 2 {
			l.stats.dropped.Add(1)
			continue
		}
		src = unmap(src)
		pkt := buf[:n]
		now := time.Now()
		rtcp := rtcpSock || isRTCP(pkt)
		var ok bool
		if rtcpSock {
			ok = l.acceptRTCP(&rl, src)
		} else {
			ok = l.acceptRTP(&lt, src, now)
		}
		if !ok {
			l.stats.rejected.Add(1)
			continue
		}
		if rtcp {
			l.onRTCP(pkt, now)
			dst, sock := o.dstRTCP.Load(), o.rtcp
			if w := o.want.Load(); w != nil && w.mux {
				dst, sock = o.dstRTP.Load(), o.rtp
			}
			if dst == nil {
				continue
			}
			if _, err := sock.WriteToUDPAddrPort(pkt, *dst); err == nil {
				o.stats.rtcpSent.Add(1)
			}
			continue
		}
		l.onRTP(&rs, pkt, now)
		l.session.lastRTP.Store(now.UnixNano())
		dst := o.dstRTP.Load()
		if dst == nil {
			l.stats.noDest.Add(1)
			continue
		}
		if _, err := o.rtp.WriteToUDPAddrPort(pkt, *dst); err == nil {
			o.stats.sent.Add(1)
		}
	}
}

// forwardUDPTL forwards one UDPTL datagram from src to the other side
// when src is this side (learned like RTP), counting it; the datagram is
// opaque (T.38 IFP packets with their redundancy or FEC).
func (l *Leg) forwardUDPTL(lt *learner, pkt []byte, src netip.AddrPort) {
	now := time.Now()
	if !l.acceptRTP(lt, src, now) {
		l.stats.rejected.Add(1)
		return
	}
	l.stats.packets.Add(1)
	l.stats.bytes.Add(uint64(len(pkt)))
	l.session.lastRTP.Store(now.UnixNano())
	o := l.other
	dst := o.dstRTP.Load()
	if dst == nil {
		l.stats.noDest.Add(1)
		return
	}
	if _, err := o.rtp.WriteToUDPAddrPort(pkt, *dst); err == nil {
		o.stats.sent.Add(1)
	}
}
