// Package media is the RTP/RTCP relay that anchors calls: an allocator of
// even/odd port pairs, relay sessions with two legs per stream that
// forward packets between the call's two sides, learning of each side's
// real address (ranked candidates during a short window, then locked; see
// Learning), RTCP statistics (pion/rtcp) and media timeouts, which apply
// from the answer on. A stream can also carry T.38 fax over UDPTL
// (Leg.SetUDPTL): its datagrams are learned and forwarded like RTP but
// not parsed, and it has no RTCP.
//
// It knows no SIP: the anchoring glue tells it what each side's SDP
// said, where its signalling comes from and when the call is answered,
// and asks it for ports.
package media

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxTries is how many pairs one Get tries to bind before giving up.
const maxTries = 16

// Allocator hands out RTP ports: an even port, whose next odd port carries
// RTCP, chosen at random in [min, max]. A released pair waits in
// quarantine before reuse, so stale packets of an old call do not reach a
// new one; but quarantine only orders the choice: when every other pair
// is in use, the pair released longest ago is taken early rather than a
// call refused (learning still keeps a stranger's packets out, and a
// pool exhausted by quarantine alone would refuse calls with nothing in
// use). Safe for concurrent use.
type Allocator struct {
	min, max   int           // set once; min even
	quarantine time.Duration // set once
	now        func() time.Time

	mu       sync.Mutex
	used     map[int]bool      // guarded by mu
	released map[int]time.Time // guarded by mu: port -> free again at

	early atomic.Uint64 // pairs taken before their quarantine ended
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

// Quarantined returns the number of released pairs still in quarantine:
// free, but taken only when no other pair is.
func (a *Allocator) Quarantined() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.quarantinedLocked(a.now())
}

func (a *Allocator) quarantinedLocked(now time.Time) int {
	n := 0
	for _, until := range a.released {
		if now.Before(until) {
			n++
		}
	}
	return n
}

// EarlyReuses returns how many pairs were taken before their quarantine
// ended because nothing else was free: a sign the range is too small.
func (a *Allocator) EarlyReuses() uint64 { return a.early.Load() }

// Get returns a free even port p (p+1 is its RTCP port). try is called to
// bind it; a port try rejects (taken by another program) is skipped. The
// error is a *PoolError (errors.Is ErrPoolExhausted).
func (a *Allocator) Get(try func(port int) error) (int, error) {
	pairs := a.Pairs()
	start := rand.IntN(pairs)
	a.mu.Lock()
	now := a.now()
	var cands []int
	for i := 0; i < pairs && len(cands) < maxTries; i++ {
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
	// Nothing free outside quarantine: the pairs released longest ago.
	quarantined := map[int]time.Time{}
	if len(cands) == 0 {
		for p, until := range a.released {
			if now.Before(until) {
				cands = append(cands, p)
			}
		}
		slices.SortFunc(cands, func(p, q int) int { return a.released[p].Compare(a.released[q]) })
		if len(cands) > maxTries {
			cands = cands[:maxTries]
		}
		for _, p := range cands {
			quarantined[p] = a.released[p]
			delete(a.released, p)
			a.used[p] = true
		}
	}
	a.mu.Unlock()
	got := 0
	var lastErr error
	for _, p := range cands {
		if got == 0 {
			err := try(p)
			if err == nil {
				got = p
				if _, ok := quarantined[p]; ok {
					a.early.Add(1)
				}
				continue
			}
			lastErr = err
		}
		a.mu.Lock()
		delete(a.used, p)
		if until, ok := quarantined[p]; ok {
			a.released[p] = until
		}
		a.mu.Unlock()
	}
	if got == 0 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return 0, &PoolError{Pairs: pairs, InUse: len(a.used), Quarantined: a.quarantinedLocked(a.now()), Bind: lastErr}
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
