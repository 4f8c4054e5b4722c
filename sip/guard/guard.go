// Package guard protects the switch from floods and brute force, in the
// spirit of Kamailio's pike and htable-based lockouts: a per-source
// request rate limit with temporary blocking, and an authentication
// failure lockout per user and per source. It only decides; the server
// drops and the authenticator refuses.
package guard

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
)

// Config holds the limits; a zero Rate disables rate limiting, a zero
// AuthFailures disables the lockout.
type Config struct {
	Rate         float64       // requests per second per source
	Burst        float64       // bucket size
	Block        time.Duration // how long a flooding source stays blocked
	AuthFailures int           // failures within AuthWindow that lock out
	AuthWindow   time.Duration
	Lockout      time.Duration // how long a source is locked out
	AuthDelay    time.Duration // failed logins of a user under attack are answered this late

	// What one source may hold at once; 0 allows any number.
	Connections  int // TCP and TLS connections
	Transactions int // requests in progress
	Dialogs      int // calls
	// Relay port pairs the anchored calls of one source hold (each
	// anchored stream takes two, one facing each side).
	Streams int
}

// DefaultAuthDelay is how late failed logins of a user under attack are
// answered: a guesser spread over many sources gets a few tries a second
// per connection at most, while the user, who knows the password, is
// never delayed.
const DefaultAuthDelay = 2 * time.Second

// Guard is safe for concurrent use.
type Guard struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	buckets  map[netip.Addr]*bucket   // guarded by mu
	failures map[string]*failureCount // guarded by mu; by "user:NAME" or "src:ADDR"

	// Per-source limits; never nil.
	Conns, Txs, Dialogs, Streams *Slots

	trusted atomic.Pointer[[]netip.Prefix] // exempt sources; replaced by SetTrusted
	members atomic.Pointer[[]netip.Addr]   // the cluster's other nodes, exempt too; replaced by SetMembers
	shared  Shared                         // set once, before use; nil: this node alone

	// Counters for metrics.
	Dropped  atomic.Uint64 // requests dropped from blocked sources
	Blocks   atomic.Uint64 // sources blocked for flooding
	Lockouts atomic.Uint64 // users or sources locked out
}

type bucket struct {
	tokens  float64
	last    time.Time
	blocked time.Time // until
}

type failureCount struct {
	n      int
	first  time.Time
	locked time.Time // until
}

// New returns a guard.
func New(cfg Config) *Guard {
	if cfg.Burst < cfg.Rate {
		cfg.Burst = cfg.Rate
	}
	g := &Guard{cfg: cfg, now: time.Now, buckets: map[netip.Addr]*bucket{}, failures: map[string]*failureCount{},
		Conns: NewSlots(cfg.Connections), Txs: NewSlots(cfg.Transactions), Dialogs: NewSlots(cfg.Dialogs),
		Streams: NewSlots(cfg.Streams)}
	for _, s := range []*Slots{g.Conns, g.Txs, g.Dialogs, g.Streams} {
		s.exempt = g.Trusted
	}
	return g
}

// SetTrusted replaces the sources exempt from the rate limit, the
// per-source limits and the per-source lockout: carriers, an SBC in
// front, a load generator. A user's lockout still applies to them.
func (g *Guard) SetTrusted(ps []netip.Prefix) {
	ps = slices.Clone(ps)
	g.trusted.Store(&ps)
}

// SetMembers replaces the cluster's other nodes' addresses, exempt as
// the trusted sources are: all of a node's calls to another's phones
// come from one address.
func (g *Guard) SetMembers(addrs []netip.Addr) {
	addrs = slices.Clone(addrs)
	g.members.Store(&addrs)
}

// Trusted reports whether src is exempt.
func (g *Guard) Trusted(src netip.Addr) bool {
	if g == nil {
		return false
	}
	src = src.Unmap()
	if ms := g.members.Load(); ms != nil && slices.Contains(*ms, src) {
		return true
	}
	ps := g.trusted.Load()
	if ps == nil {
		return false
	}
	for _, p := range *ps {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// Allow takes a token for src. It returns false while src is blocked;
// blocked is true only for the request that started the block, so the
// caller logs each block once.
func (g *Guard) Allow(src netip.Addr) (ok, blocked bool) {
	if g == nil || g.cfg.Rate <= 0 || g.Trusted(src) {
		return true, false
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.buckets[src]
	if b == nil {
		b = &bucket{tokens: g.cfg.Burst, last: now}
		g.buckets[src] = b
	}
	if now.Before(b.blocked) {
		g.Dropped.Add(1)
		return false, false
	}
	b.tokens = min(g.cfg.Burst, b.tokens+now.Sub(b.last).Seconds()*g.cfg.Rate)
	b.last = now
	if b.tokens < 1 {
		b.blocked = now.Add(g.cfg.Block)
		g.Blocks.Add(1)
		g.Dropped.Add(1)
		return false, true
	}
	b.tokens--
	return true, false
}

// Shared spreads failed logins and lockouts across a cluster's nodes, so
// that a guesser locked out on one node is locked out on all, and cannot
// spread its guesses over them to stay under the limit.
type Shared interface {
	// Failed counts one failed login from src cluster-wide and returns
	// the count within window; an error leaves this node's count alone.
	Failed(src netip.Addr, window time.Duration) (int, error)
	// Lock tells the other nodes that src is locked out for d.
	Lock(src netip.Addr, d time.Duration)
}

// SetShared makes failed logins and lockouts cluster-wide; call it
// before the guard is used.
func (g *Guard) SetShared(s Shared) { g.shared = s }

// LockOut locks src out until until, as another node decided.
func (g *Guard) LockOut(src netip.Addr, until time.Time) {
	if g == nil || g.Trusted(src) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	k := "src:" + src.String()
	f := g.failures[k]
	if f == nil {
		f = &failureCount{first: g.now()}
		g.failures[k] = f
	}
	if until.After(f.locked) {
		f.locked = until
	}
}

// Locked reports whether src is locked out after failed logins. Users are
// never locked out: a stranger could otherwise lock the real user out
// with a few wrong passwords. See FailureDelay.
func (g *Guard) Locked(src netip.Addr) bool {
	if g == nil || g.cfg.AuthFailures <= 0 || g.Trusted(src) {
		return false
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.failures["src:"+src.String()]
	return f != nil && now.Before(f.locked)
}

// AuthFailed records a failed login of user from src and reports whether
// it just locked src out (log it once). A source that is not trusted is
// locked out after AuthFailures failures within AuthWindow; the user's
// failures, from every source, only slow its failed logins down.
func (g *Guard) AuthFailed(user string, src netip.Addr) (lockedNow bool) {
	if g == nil || g.cfg.AuthFailures <= 0 {
		return false
	}
	trusted := g.Trusted(src)
	clusterCount := 0
	if g.shared != nil && !trusted {
		// Outside the lock: a round trip to the cluster, on failures only.
		clusterCount, _ = g.shared.Failed(src, g.cfg.AuthWindow)
	}
	now := g.now()
	g.mu.Lock()
	defer func() {
		g.mu.Unlock()
		if lockedNow && g.shared != nil {
			g.shared.Lock(src, g.cfg.Lockout)
		}
	}()
	keys := []string{"user:" + user}
	if !trusted {
		keys = append(keys, "src:"+src.String())
	}
	for _, k := range keys {
		f := g.failures[k]
		if f == nil || (now.Sub(f.first) > g.cfg.AuthWindow && !now.Before(f.locked)) {
			f = &failureCount{first: now}
			g.failures[k] = f
		}
		f.n++
		if k[0] == 's' && max(f.n, clusterCount) >= g.cfg.AuthFailures && !now.Before(f.locked) {
			f.locked = now.Add(g.cfg.Lockout)
			g.Lockouts.Add(1)
			lockedNow = true
		}
	}
	return lockedNow
}

// FailureDelay is how long to hold back the answer to a failed login of
// user: AuthDelay once the user has had AuthFailures failures within
// AuthWindow (a password guessed from many sources), else 0. A login
// with the right password is never delayed.
func (g *Guard) FailureDelay(user string) time.Duration {
	if g == nil || g.cfg.AuthFailures <= 0 {
		return 0
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.failures["user:"+user]; f != nil && f.n >= g.cfg.AuthFailures && now.Sub(f.first) <= g.cfg.AuthWindow {
		return g.cfg.AuthDelay
	}
	return 0
}

// Sweep forgets idle sources and expired failures.
func (g *Guard) Sweep() {
	if g == nil {
		return
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, b := range g.buckets {
		if now.After(b.blocked) && now.Sub(b.last) > time.Minute {
			delete(g.buckets, k)
		}
	}
	for k, f := range g.failures {
		if now.After(f.locked) && now.Sub(f.first) > g.cfg.AuthWindow {
			delete(g.failures, k)
		}
	}
}

// Collector exports the guard's counters and its per-source limits'.
func (g *Guard) Collector() prometheus.Collector {
	var m metrics.Set
	m.Counter("flood_blocks_total", "Sources blocked for flooding.", func() float64 { return float64(g.Blocks.Load()) })
	m.Counter("flood_dropped_total", "Requests dropped from blocked sources.", func() float64 { return float64(g.Dropped.Load()) })
	m.Counter("auth_lockouts_total", "Sources locked out after failed logins.", func() float64 { return float64(g.Lockouts.Load()) })
	for name, slots := range map[string]*Slots{"connections": g.Conns, "transactions": g.Txs, "dialogs": g.Dialogs, "streams": g.Streams} {
		m.Counter("source_limit_refused_total", "Connections, requests, calls or media streams refused because their source was at its limit (limits.*).",
			func() float64 { return float64(slots.Refused.Load()) }, "limit", name)
		m.Counter("source_limit_blocks_total", "Times a source reached a per-source limit (each logged once).",
			func() float64 { return float64(slots.Blocks.Load()) }, "limit", name)
	}
	return &m
}
