package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
)

// HealthCheck is how a trunk's peers are watched: an OPTIONS to each
// every Interval; a peer is down after DownAfter misses in a row (no
// answer within Timeout, a transport error, or a 5xx) and up again
// after UpAfter answers in a row. Interval 0: not watched (always up).
type HealthCheck struct {
	Interval  time.Duration
	Timeout   time.Duration
	DownAfter int
	UpAfter   int
}

// PeerHealth is one trunk peer as the OPTIONS pings found it.
type PeerHealth struct {
	Trunk     string        `json:"trunk"`
	Peer      string        `json:"peer"` // host:port/transport
	Up        bool          `json:"up"`
	Since     time.Time     `json:"since"`
	Checked   time.Time     `json:"checked,omitempty"`
	LastError string        `json:"last_error,omitempty"`
	RTT       time.Duration `json:"rtt_ns,omitempty"` // of the last answer
	misses    int
	answers   int
}

// Health watches the peers of every trunk with a HealthCheck, following
// reloads, and tells routing which peers are down. Safe for concurrent
// use; a nil Health has every peer up.
type Health struct {
	log *slog.Logger

	states  sync.Map // peerKey -> *atomic.Pointer[PeerHealth]
	changes [2]atomic.Uint64

	latest   atomic.Pointer[Gateway]
	updating sync.Mutex

	mu     sync.Mutex
	parent context.Context // guarded by mu; set by Start
	via    *Registrations  // guarded by mu; the clients OPTIONS go out by
	loops  map[string]*regLoop
	closed bool
	wg     sync.WaitGroup
}

// NewHealth returns a Health that watches nothing until Start.
func NewHealth(log *slog.Logger) *Health {
	return &Health{log: log, loops: map[string]*regLoop{}}
}

// String is how logs, metrics and the API name a peer: host:port/transport.
func (p Peer) String() string { return fmt.Sprintf("%s:%d/%s", p.Host, p.Port, p.Transport) }

func peerKey(trunk string, p Peer) string { return trunk + "|" + p.String() }

// Down reports whether the trunk's peer is known to be down.
func (h *Health) Down(trunk string, p Peer) bool {
	if h == nil {
		return false
	}
	v, ok := h.states.Load(peerKey(trunk, p))
	return ok && !v.(*atomic.Pointer[PeerHealth]).Load().Up
}

// Peers returns the watched peers' states, by trunk and peer.
func (h *Health) Peers() []PeerHealth {
	if h == nil {
		return nil
	}
	var out []PeerHealth
	h.states.Range(func(_, v any) bool {
		out = append(out, *v.(*atomic.Pointer[PeerHealth]).Load())
		return true
	})
	slices.SortFunc(out, func(a, b PeerHealth) int { return strings.Compare(a.Trunk+"|"+a.Peer, b.Trunk+"|"+b.Peer) })
	return out
}

// Start watches g's peers until ctx ends, sending OPTIONS through the
// registrations' clients (one per transport, from the first listener).
func (h *Health) Start(ctx context.Context, g *Gateway, via *Registrations) {
	h.mu.Lock()
	h.parent, h.via = ctx, via
	h.mu.Unlock()
	h.Update(g)
}

// Update watches g's peers (a reload): a peer whose trunk's check is
// unchanged keeps its loop and state; a new one starts as up; a removed
// one is forgotten.
func (h *Health) Update(g *Gateway) {
	if h == nil {
		return
	}
	h.latest.Store(g)
	h.updating.Lock()
	defer h.updating.Unlock()
	g = h.latest.Load()
	type watched struct {
		t *Trunk
		p Peer
	}
	want := map[string]watched{}
	for _, t := range g.Trunks() {
		if t.Health.Interval <= 0 {
			continue
		}
		for _, p := range t.Peers {
			want[peerKey(t.Name, p)] = watched{t, p}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.parent == nil || h.closed || h.parent.Err() != nil {
		return
	}
	for key, l := range h.loops {
		if w, ok := want[key]; !ok || l.key != fmt.Sprint(w.t.Health) {
			l.cancel()
			delete(h.loops, key)
			if !ok {
				h.states.Delete(key)
			}
		}
	}
	for key, w := range want {
		if _, ok := h.loops[key]; ok {
			continue
		}
		st, _ := h.states.LoadOrStore(key, &atomic.Pointer[PeerHealth]{})
		ptr := st.(*atomic.Pointer[PeerHealth])
		if ptr.Load() == nil {
			ptr.Store(&PeerHealth{Trunk: w.t.Name, Peer: w.p.String(), Up: true, Since: time.Now()})
		}
		ctx, cancel := context.WithCancel(h.parent)
		l := &regLoop{key: fmt.Sprint(w.t.Health), cancel: cancel, done: make(chan struct{})}
		h.loops[key] = l
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer close(l.done)
			defer cancel()
			h.watch(ctx, w.t.Name, w.p, w.t.Health, ptr)
		}()
	}
}

// Wait waits for every watch to end (after Start's context did).
func (h *Health) Wait() {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.wg.Wait()
}

// watch pings one peer every interval (the first after a random part of
// it, so a restart does not ping every peer at once).
func (h *Health) watch(ctx context.Context, trunk string, p Peer, hc HealthCheck, st *atomic.Pointer[PeerHealth]) {
	wait := time.Duration(rand.Int64N(int64(hc.Interval)/4 + 1))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = hc.Interval
		start := time.Now()
		// Each ping its own transaction outside any dialog: a new Call-ID,
		// as Kamailio's dispatcher sends them.
		err := h.ping(ctx, p, hc.Timeout, fmt.Sprintf("vxping-%d", rand.Int64()), 1)
		if ctx.Err() != nil {
			return
		}
		h.record(trunk, p, hc, st, err, time.Since(start))
	}
}

// record applies one ping's outcome to the peer's state.
func (h *Health) record(trunk string, p Peer, hc HealthCheck, st *atomic.Pointer[PeerHealth], err error, rtt time.Duration) {
	prev := st.Load()
	next := *prev
	next.Checked = time.Now()
	if err == nil {
		next.answers++
		next.misses = 0
		next.LastError, next.RTT = "", rtt
		if !prev.Up && next.answers >= hc.UpAfter {
			next.Up, next.Since = true, next.Checked
			h.changes[1].Add(1)
			h.log.Info("trunk peer up", "trunk", trunk, "peer", p.String(), "answers", next.answers)
		}
	} else {
		next.misses++
		next.answers = 0
		next.LastError = err.Error()
		if prev.Up && next.misses >= hc.DownAfter {
			next.Up, next.Since = false, next.Checked
			h.changes[0].Add(1)
			h.log.Warn("trunk peer down: calls fail over past it", "trunk", trunk, "peer", p.String(), "misses", next.misses, "error", err)
		}
	}
	st.Store(&next)
}

// ErrPeerFailing is a 5xx answer to OPTIONS: the peer is up but not
// taking calls.
var ErrPeerFailing = errors.New("peer answered OPTIONS with a server error")

// ping sends one OPTIONS; any final answer but a 5xx counts.
func (h *Health) ping(ctx context.Context, p Peer, timeout time.Duration, callID string, cseq uint32) error {
	h.mu.Lock()
	via := h.via
	h.mu.Unlock()
	from, ok := via.from[p.Transport]
	if !ok {
		return fmt.Errorf("no %s listener in sip.listen to ping %s from", p.Transport, p)
	}
	target := siplib.Uri{Scheme: "sip", Host: p.Host, Port: p.Port}
	req := siplib.NewRequest(siplib.OPTIONS, target)
	me := from.contact
	me.User = "voxvisor"
	fh := &siplib.FromHeader{Address: me, Params: siplib.NewParams()}
	fh.Params.Add("tag", callID)
	req.AppendHeader(fh)
	req.AppendHeader(&siplib.ToHeader{Address: target, Params: siplib.NewParams()})
	cid := siplib.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&siplib.CSeqHeader{SeqNo: cseq, MethodName: siplib.OPTIONS})
	mf := siplib.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetTransport(strings.ToUpper(p.Transport))
	req.SetDestination(fmt.Sprintf("%s:%d", p.Host, p.Port))
	if p.Transport == "udp" {
		req.Laddr = from.laddr
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := from.client.Do(ctx, req)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("no answer to OPTIONS within %s", timeout)
	case err != nil:
		return fmt.Errorf("OPTIONS to %s: %w", p, err)
	case res.StatusCode >= 500:
		return fmt.Errorf("%w: %d %s", ErrPeerFailing, res.StatusCode, res.Reason)
	}
	return nil
}

var (
	peerUpDesc      = prometheus.NewDesc(metrics.Namespace+"_trunk_peer_up", "1 when the trunk peer answers OPTIONS (trunks with health.interval), 0 when it is down and calls fail over past it.", []string{"trunk", "peer"}, nil)
	peerChangesDesc = prometheus.NewDesc(metrics.Namespace+"_trunk_peer_state_changes_total", "Trunk peers that went down or came back up, by the state they went to.", []string{"state"}, nil)
)

type healthCollector struct{ h *Health }

// Collector exports each watched peer's state and the state changes.
func (h *Health) Collector() prometheus.Collector { return healthCollector{h} }

func (c healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerUpDesc
	ch <- peerChangesDesc
}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.h.Peers() {
		v := 0.0
		if p.Up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(peerUpDesc, prometheus.GaugeValue, v, p.Trunk, p.Peer)
	}
	ch <- prometheus.MustNewConstMetric(peerChangesDesc, prometheus.CounterValue, float64(c.h.changes[0].Load()), "down")
	ch <- prometheus.MustNewConstMetric(peerChangesDesc, prometheus.CounterValue, float64(c.h.changes[1].Load()), "up")
}
