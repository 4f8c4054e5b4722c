package media

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Offload forwards a latched leg's RTP outside the relay's sockets: the
// kernel path (media/kernel, eBPF). A flow is what arrives from src at
// dst (the leg's address); it leaves as from newSrc (the other leg's) to
// newDst (the other side). Packets the offload does not take (RTCP,
// strangers, anything unexpected) still reach the leg's sockets.
type Offload interface {
	Install(src, dst, newSrc, newDst netip.AddrPort) error
	// Remove stops the flow and returns its final counters.
	Remove(src, dst netip.AddrPort) (packets, bytes uint64)
	// Counters returns what was forwarded of the flow so far.
	Counters(src, dst netip.AddrPort) (packets, bytes uint64, ok bool)
}

// flow is a leg's installed offload flow and the counters already
// folded into the leg's statistics.
type flow struct {
	on                   bool
	src, dst             netip.AddrPort
	newSrc, newDst       netip.AddrPort
	foldedPkts, foldedBy uint64
}

// offloadState is the stream's offload bookkeeping.
type offloadState struct {
	mu    sync.Mutex
	flows [2]flow // guarded by mu; by leg
}

// offloadCounters counts the relay's use of the offload.
type offloadCounters struct {
	installed, failed atomic.Uint64
	active            atomic.Int64
}

// want computes the flow leg i of st should have in the offload: once the
// leg is locked to its side's source in the current epoch and the other
// side has an address, its RTP goes from that source to the other side
// as from the other leg. ok is false while it should have none (learning,
// UDPTL, closed, IPv6 left to the offload to refuse).
func (st *Stream) want(i int) (f flow, ok bool) {
	l, o := st.Legs[i], st.Legs[1-i]
	if st.closing.Load() || l.udptl.Load() {
		return flow{}, false
	}
	lk, w := l.learned.Load(), l.want.Load()
	if lk == nil || w == nil || lk.gen != w.gen {
		return flow{}, false
	}
	dst := o.dstRTP.Load()
	if dst == nil || !dst.Addr().IsValid() || dst.Addr().IsUnspecified() || dst.Port() == 0 {
		return flow{}, false
	}
	a := l.cfg.Addr
	return flow{src: lk.addr, dst: netip.AddrPortFrom(a, uint16(l.port)),
		newSrc: netip.AddrPortFrom(a, uint16(o.port)), newDst: *dst}, true
}

func (f *flow) same(g flow) bool {
	return f.src == g.src && f.dst == g.dst && f.newSrc == g.newSrc && f.newDst == g.newDst
}

// syncOffload brings both legs' flows in the offload in line with what
// learning and the SDP say now: called after a lock, a new destination,
// a re-INVITE, a switch to UDPTL, and on close (when every flow goes).
func (st *Stream) syncOffload() {
	off := st.Legs[0].cfg.Offload
	if off == nil {
		return
	}
	relay := st.Legs[0].session.relay
	st.off.mu.Lock()
	defer st.off.mu.Unlock()
	for i := range st.Legs {
		cur := &st.off.flows[i]
		w, ok := st.want(i)
		if cur.on && (!ok || !cur.same(w)) {
			p, b := off.Remove(cur.src, cur.dst)
			st.foldLocked(i, p, b, time.Now())
			*cur = flow{}
			relay.offload.active.Add(-1)
		}
		if ok && !cur.on {
			if err := off.Install(w.src, w.dst, w.newSrc, w.newDst); err != nil {
				relay.offload.failed.Add(1)
				continue // stays in userspace
			}
			*cur = w
			cur.on = true
			relay.offload.installed.Add(1)
			relay.offload.active.Add(1)
		}
	}
}

// foldOffload adds what the offload forwarded since the last fold to
// the legs' statistics and, when anything moved, to the session's last
// RTP time (for the media timeout).
func (st *Stream) foldOffload(now time.Time) {
	off := st.Legs[0].cfg.Offload
	if off == nil {
		return
	}
	st.off.mu.Lock()
	defer st.off.mu.Unlock()
	for i := range st.Legs {
		if f := &st.off.flows[i]; f.on {
			if p, b, ok := off.Counters(f.src, f.dst); ok {
				st.foldLocked(i, p, b, now)
			}
		}
	}
}

// foldLocked records leg i's flow counters p, b (cumulative).
func (st *Stream) foldLocked(i int, p, b uint64, now time.Time) {
	f := &st.off.flows[i]
	if p <= f.foldedPkts {
		return
	}
	dp, db := p-f.foldedPkts, b-f.foldedBy
	f.foldedPkts, f.foldedBy = p, b
	l, o := st.Legs[i], st.Legs[1-i]
	l.stats.packets.Add(dp)
	l.stats.bytes.Add(db)
	l.stats.kernel.Add(dp)
	o.stats.sent.Add(dp)
	l.session.lastRTP.Store(now.UnixNano())
}

// offloaded reports whether leg i's RTP is forwarded by the offload.
func (st *Stream) offloaded(i int) bool {
	st.off.mu.Lock()
	defer st.off.mu.Unlock()
	return st.off.flows[i].on
}

// OffloadStats is what the relay did with its offload.
type OffloadStats struct {
	Installed, Failed uint64 // flows installed; refused (they stayed in userspace)
	Active            int64  // flows installed now
}

// OffloadStats returns the relay's offload counts.
func (r *Relay) OffloadStats() OffloadStats {
	return OffloadStats{Installed: r.offload.installed.Load(), Failed: r.offload.failed.Load(), Active: r.offload.active.Load()}
}
