package guard

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// Slots bounds how many of one thing (connections, requests in
// progress, calls) each source holds at once, like Kamailio's
// per-source limits: one source at its limit is refused while every
// other source goes on. A nil *Slots, or one with Max 0, allows all.
type Slots struct {
	Max    int
	exempt func(netip.Addr) bool // sources without a limit; may be nil

	mu   sync.Mutex
	held map[netip.Addr]int  // guarded by mu; sources holding at least one
	full map[netip.Addr]bool // guarded by mu; refused since they last had room

	Refused atomic.Uint64 // takes refused
	Blocks  atomic.Uint64 // times a source reached its limit (each logged once)
}

// NewSlots returns slots allowing max per source; 0 allows all.
func NewSlots(max int) *Slots {
	return &Slots{Max: max, held: map[netip.Addr]int{}, full: map[netip.Addr]bool{}}
}

// Take takes a slot for src. ok is false at the limit; first is true for
// the first refusal since src last had room, so the caller logs it once.
func (s *Slots) Take(src netip.Addr) (ok, first bool) { return s.TakeN(src, 1) }

// TakeN takes n slots for src at once (a call's port pairs), or none:
// ok is false when src would go over the limit; first as for Take.
func (s *Slots) TakeN(src netip.Addr, n int) (ok, first bool) {
	if s == nil || s.Max <= 0 || n <= 0 {
		return true, false
	}
	if s.exempt != nil && s.exempt(src) {
		s.mu.Lock()
		s.held[src] += n // counted, so Give stays balanced, but never refused
		s.mu.Unlock()
		return true, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[src]+n > s.Max {
		s.Refused.Add(1)
		if s.full[src] {
			return false, false
		}
		s.full[src] = true
		s.Blocks.Add(1)
		return false, true
	}
	s.held[src] += n
	return true, false
}

// Give returns a slot src took.
func (s *Slots) Give(src netip.Addr) { s.GiveN(src, 1) }

// GiveN returns n slots src took.
func (s *Slots) GiveN(src netip.Addr, n int) {
	if s == nil || s.Max <= 0 || n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch h := s.held[src]; {
	case h <= n:
		delete(s.held, src)
	default:
		s.held[src] = h - n
	}
	delete(s.full, src)
}

// Held returns how many slots src holds.
func (s *Slots) Held(src netip.Addr) int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[src]
}
