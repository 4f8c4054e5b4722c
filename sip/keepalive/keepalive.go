// Package keepalive keeps contacts behind NAT reachable over UDP, as
// Kamailio's nathelper does with sipping: every interval the switch sends
// each NATed UDP contact a SIP OPTIONS, from the socket the contact
// registered to and to the address its REGISTER came from, so the
// phone's router keeps its way in open. Any response, even 404 or 405,
// counts as alive. A contact that answers no ping (and does not register
// again) for the timeout is removed from the location service, logged
// once and counted, so calls to it fail at once with 480 instead of
// ringing nowhere.
//
// It pings only UDP contacts the registrar marked NATed and reached
// without a Path: a TCP or TLS connection is its own flow (the server
// closes idle ones; a phone's CRLF keep-alives keep it open), and a
// Path's first hop keeps its own flows. It does not decide what is
// NATed (sip/registrar does) and routes nothing.
package keepalive

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip/location"
)

// Options are the pinger's settings.
type Options struct {
	// Interval is the time between two pings of one contact, and how long
	// a ping waits for its answer. 0: no pings (Run waits for its context).
	Interval time.Duration
	// Timeout is how long a contact may answer nothing before it is
	// removed; it should be a few intervals. 0: never removed (pings only
	// keep the way open).
	Timeout time.Duration
	// Node is this node's name in a cluster: only the contacts whose flow
	// it holds (Binding.Node) are its to ping. "": every contact.
	Node string
}

// Store is the location service as the pinger uses it (*location.Store).
type Store interface {
	All() map[string][]location.Binding
	Update(aor string, fn func(cur []location.Binding) ([]location.Binding, error)) ([]location.Binding, error)
}

// Sender sends pings.
type Sender interface {
	// Ping sends one OPTIONS to b's flow and waits, until ctx ends, for
	// any response. It returns nil when one came.
	Ping(ctx context.Context, b location.Binding) error
}

// Stats are the pinger's counters, safe to read at any time.
type Stats struct {
	Sent     atomic.Uint64 // pings sent
	Answered atomic.Uint64 // pings answered (any status)
	Failed   atomic.Uint64 // pings unanswered within the interval, or not sendable
	Dropped  atomic.Uint64 // contacts removed for answering nothing for the timeout
	Pinged   atomic.Int64  // NATed UDP contacts being pinged now
}

// Pinger pings NATed UDP contacts. Its state belongs to the goroutine
// running Run; only Stats are shared.
type Pinger struct {
	// set once
	opts  Options
	store Store
	send  Sender
	log   *slog.Logger

	Stats Stats
}

// New returns a pinger over store sending with send.
func New(store Store, send Sender, opts Options, log *slog.Logger) *Pinger {
	return &Pinger{opts: opts, store: store, send: send, log: log}
}

// key names one contact of one address-of-record.
type key struct{ aor, contact string }

// peer is what Run knows of one pinged contact.
type peer struct {
	b        location.Binding // as last read from the store
	heard    time.Time        // last sign of life: a response, or a new REGISTER
	due      time.Time        // next ping
	inflight bool             // a ping is waiting for its answer
	round    uint64           // last round that saw it in the store
}

// result is a ping's outcome, reported to Run.
type result struct {
	k   key
	pe  *peer
	err error
}

// Run pings until ctx ends, then waits for the pings in flight to stop.
func (p *Pinger) Run(ctx context.Context) {
	if p.opts.Interval <= 0 {
		<-ctx.Done()
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		p.Stats.Pinged.Store(0)
	}()
	r := &run{p: p, ctx: ctx, wg: &wg, peers: map[key]*peer{}, results: make(chan result)}
	t := time.NewTicker(tick(p.opts.Interval))
	defer t.Stop()
	r.round()
	for {
		select {
		case <-ctx.Done():
			return
		case res := <-r.results:
			r.heard(res)
		case <-t.C:
			r.round()
		}
	}
}

// tick is how often Run looks for pings that are due: a sixteenth of the
// interval, between 10 ms and 1 s, so pings keep their spread.
func tick(interval time.Duration) time.Duration {
	return min(max(interval/16, 10*time.Millisecond), time.Second)
}

// run is the state of one Run; touched only by its goroutine.
type run struct {
	p       *Pinger
	ctx     context.Context
	wg      *sync.WaitGroup
	peers   map[key]*peer
	n       uint64 // rounds so far
	results chan result
}

// round reads the NATed UDP contacts from the store, removes those
// silent for too long and pings those that are due.
func (r *run) round() {
	p, now := r.p, time.Now()
	r.n++
	for aor, bs := range p.store.All() {
		for _, b := range bs {
			if !b.NAT || b.Transport != "udp" || len(b.Path) > 0 {
				continue
			}
			if p.opts.Node != "" && b.Node != "" && b.Node != p.opts.Node {
				continue // another node's flow: it pings it
			}
			k := key{aor, b.Contact}
			pe := r.peers[k]
			switch {
			case pe == nil:
				// Spread first pings over the interval, each contact at
				// its own phase: the REGISTER just opened the way.
				pe = &peer{b: b, heard: now, due: now.Add(phase(k, p.opts.Interval))}
				r.peers[k] = pe
			case pe.b.CallID != b.CallID || pe.b.CSeq != b.CSeq || pe.b.Source != b.Source:
				// Registered again: a sign of life; the next ping goes
				// where it came from this time.
				pe.b, pe.heard = b, now
			}
			pe.round = r.n
		}
	}
	for k, pe := range r.peers {
		switch {
		case pe.round != r.n: // expired, unregistered or removed
			delete(r.peers, k)
		case p.opts.Timeout > 0 && now.Sub(pe.heard) >= p.opts.Timeout:
			delete(r.peers, k)
			p.drop(k, pe.b, now.Sub(pe.heard))
		case !pe.inflight && !now.Before(pe.due):
			pe.inflight = true
			if pe.due = pe.due.Add(p.opts.Interval); pe.due.Before(now) {
				pe.due = now.Add(p.opts.Interval)
			}
			r.ping(k, pe)
		}
	}
	p.Stats.Pinged.Store(int64(len(r.peers)))
}

// ping sends one ping on its own goroutine, owned by Run.
func (r *run) ping(k key, pe *peer) {
	r.p.Stats.Sent.Add(1)
	b := pe.b
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, r.p.opts.Interval)
		err := r.p.send.Ping(ctx, b)
		cancel()
		select {
		case r.results <- result{k: k, pe: pe, err: err}:
		case <-r.ctx.Done():
		}
	}()
}

// heard records a ping's outcome.
func (r *run) heard(res result) {
	if res.err != nil {
		r.p.Stats.Failed.Add(1)
	} else {
		r.p.Stats.Answered.Add(1)
	}
	pe := r.peers[res.k]
	if pe != res.pe {
		return // removed, or a new peer under the same key
	}
	pe.inflight = false
	if res.err == nil {
		pe.heard = time.Now()
	} else {
		r.p.log.Debug("NAT ping unanswered", "aor", res.k.aor, "contact", res.k.contact, "source", pe.b.Source, "error", res.err)
	}
}

// errChanged leaves the store as it is.
var errChanged = errors.New("binding changed")

// drop removes b, unless it was registered again meanwhile.
func (p *Pinger) drop(k key, b location.Binding, silent time.Duration) {
	removed := false
	_, err := p.store.Update(k.aor, func(cur []location.Binding) ([]location.Binding, error) {
		keep := make([]location.Binding, 0, len(cur))
		for _, c := range cur {
			if c.Contact == b.Contact && c.CallID == b.CallID && c.CSeq == b.CSeq && c.Source == b.Source {
				removed = true
				continue
			}
			keep = append(keep, c)
		}
		if !removed {
			return nil, errChanged
		}
		return keep, nil
	})
	switch {
	case errors.Is(err, errChanged):
	case err != nil:
		p.log.Warn("could not remove a silent NATed contact", "aor", k.aor, "contact", b.Contact, "error", err)
	case removed:
		p.Stats.Dropped.Add(1)
		p.log.Info("NATed contact removed: no answer to pings", "aor", k.aor, "contact", b.Contact,
			"source", b.Source, "silent_for", silent.Round(time.Millisecond))
	}
}

// phase is k's offset within the interval: the same for a contact every
// time, different between contacts, so pings spread over the interval.
func phase(k key, interval time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(k.aor))
	h.Write([]byte{0})
	h.Write([]byte(k.contact))
	return time.Duration(h.Sum64() % uint64(interval))
}

// Collector exports the pinger's counters.
func (p *Pinger) Collector() prometheus.Collector {
	var m metrics.Set
	ka := &p.Stats
	m.Gauge("nat_bindings_pinged", "NATed UDP contacts kept reachable with OPTIONS pings (nat.ping_interval).", func() float64 { return float64(ka.Pinged.Load()) })
	m.Counter("nat_pings_sent_total", "OPTIONS keep-alives sent to NATed UDP contacts.", func() float64 { return float64(ka.Sent.Load()) })
	m.Counter("nat_pings_answered_total", "NAT keep-alives answered, with any status.", func() float64 { return float64(ka.Answered.Load()) })
	m.Counter("nat_pings_failed_total", "NAT keep-alives not answered within nat.ping_interval (or not sendable).", func() float64 { return float64(ka.Failed.Load()) })
	m.Counter("nat_bindings_dropped_total", "NATed contacts removed because they answered no keep-alive (and did not register again) for nat.ping_timeout.", func() float64 { return float64(ka.Dropped.Load()) })
	return &m
}
