// Package media is the RTP/RTCP relay that anchors calls: an allocator of
// even/odd port pairs, relay sessions with two legs per stream that
// forward packets between the call's two sides, latching of each side's
// real address, RTCP statistics (pion/rtcp) and media timeouts.
//
// It knows no SIP: the anchoring glue tells it what each side's SDP
// said and asks it for ports.
package media

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrPoolExhausted means no free port pair is left: answer 503.
var ErrPoolExhausted = errors.New("media: relay port pool exhausted")

// Allocator hands out RTP ports: an even port, whose next odd port carries
// RTCP, chosen at random in [min, max]. A released pair waits in
// quarantine before reuse, so stale packets of an old call cannot reach a
// new one. Safe for concurrent use.
type Allocator struct {
	min, max   int           // set once; min even
	quarantine time.Duration // set once
	now        func() time.Time

	mu       sync.Mutex
	used     map[int]bool      // guarded by mu
	released map[int]time.Time // guarded by mu: port -> free again at
}

// NewAllocator returns an allocator over [min, max].
func NewAllocator(min, max int, quarantine time.Duration) (*Allocator, error) {
	if min%2 == 1 {
		min++
	}
	if min < 1024 || max > 65535 || max-min < 1 {
		return nil, fmt.Errorf("media: port range %d-%d: need an even start >= 1024 and at least one pair", min, max)
	}
	return &Allocator{min: min, max: max, quarantine: quarantine, now: time.Now,
		used: map[int]bool{}, released: map[int]time.Time{}}, nil
}

// Pairs returns the number of port pairs in the range.
func (a *Allocator) Pairs() int { return (a.max - a.min + 1) / 2 }

// InUse returns the number of pairs handed out and not yet released.
func (a *Allocator) InUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}

// Get returns a free even port p (p+1 is its RTCP port). try is called to
// bind it; a port try rejects (taken by another program) is skipped.
func (a *Allocator) Get(try func(port int) error) (int, error) {
	pairs := a.Pairs()
	start := rand.IntN(pairs)
	a.mu.Lock()
	now := a.now()
	var cands []int
	for i := 0; i < pairs && len(cands) < 16; i++ {
		p := a.min + 2*((start+i)%pairs)
		if a.used[p] {
			continue
		}
		if until, ok := a.released[p]; ok {
			if now.Before(until) {
				continue
			}
			delete(a.released, p)
		}
		a.used[p] = true
		cands = append(cands, p)
	}
	a.mu.Unlock()
	if len(cands) == 0 {
		return 0, ErrPoolExhausted
	}
	got := 0
	var lastErr error
	for _, p := range cands {
		if got == 0 {
			if err := try(p); err == nil {
				got = p
				continue
			} else {
				lastErr = err
			}
		}
		a.mu.Lock()
		delete(a.used, p)
		a.mu.Unlock()
	}
	if got == 0 {
		return 0, fmt.Errorf("%w (last bind error: %v)", ErrPoolExhausted, lastErr)
	}
	return got, nil
}

// Put releases port p into quarantine.
func (a *Allocator) Put(p int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.used[p] {
		return
	}
	delete(a.used, p)
	a.released[p] = a.now().Add(a.quarantine)
}
