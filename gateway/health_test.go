package gateway

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/sip"
)

// watchState puts peer p of trunk under h's watch, as Update would.
func watchState(h *Health, trunk string, p Peer) *atomic.Pointer[PeerHealth] {
	st := &atomic.Pointer[PeerHealth]{}
	st.Store(&PeerHealth{Trunk: trunk, Peer: p.String(), Up: true, Since: time.Now()})
	h.states.Store(peerKey(trunk, p), st)
	return st
}

// TestHealthThresholds: down after DownAfter misses in a row (a 5xx is
// a miss), up after UpAfter answers in a row; one answer between misses
// starts the count again; each change is counted once.
func TestHealthThresholds(t *testing.T) {
	h := NewHealth(logging.Discard())
	p := Peer{Host: "192.0.2.1", Port: 5060, Transport: "udp"}
	hc := HealthCheck{Interval: time.Second, Timeout: time.Second, DownAfter: 3, UpAfter: 2}
	st := watchState(h, "a", p)
	miss := errors.New("timeout")
	steps := []struct {
		err  error
		down bool
	}{
		{miss, false}, {miss, false}, {nil, false}, // an answer resets the misses
		{miss, false}, {ErrPeerFailing, false}, {miss, true}, // 3 in a row, a 503 among them
		{nil, true}, {miss, true}, {nil, true}, {nil, false}, // 2 answers in a row
	}
	for i, s := range steps {
		h.record("a", p, hc, st, s.err, time.Millisecond)
		if got := h.Down("a", p); got != s.down {
			t.Fatalf("step %d (%v): down = %v, want %v", i, s.err, got, s.down)
		}
	}
	if h.changes[0].Load() != 1 || h.changes[1].Load() != 1 {
		t.Fatalf("changes down %d up %d, want 1 and 1", h.changes[0].Load(), h.changes[1].Load())
	}
	if ps := h.Peers(); len(ps) != 1 || !ps[0].Up || ps[0].Peer != "192.0.2.1:5060/udp" || ps[0].RTT != time.Millisecond {
		t.Fatalf("Peers = %+v", ps)
	}
}

// TestFailoverSkipsDownPeers: a down peer is left out of the plan; when
// every peer of the call is down, all are tried in order.
func TestFailoverSkipsDownPeers(t *testing.T) {
	h := NewHealth(logging.Discard())
	p1 := Peer{Host: "192.0.2.1", Port: 5060, Transport: "udp"}
	p2 := Peer{Host: "192.0.2.2", Port: 5060, Transport: "udp"}
	p3 := Peer{Host: "198.51.100.1", Port: 5060, Transport: "udp"}
	g, err := New(Options{Health: h, Trunks: []TrunkOptions{
		{Name: "a", Peers: []Peer{p1, p2}},
		{Name: "b", Peers: []Peer{p3}},
	}, DialPlan: []Rule{{Prefix: "+", Trunks: []string{"a", "b"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hosts := func() []string {
		number, trunks, err := g.Outbound("+4930123")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tg := range g.outbound(&sip.Request{}, number, trunks, "outbound").Targets {
			out = append(out, tg.URI.Host)
		}
		return out
	}
	check := func(want ...string) {
		t.Helper()
		got := hosts()
		if len(got) != len(want) {
			t.Fatalf("targets %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("targets %v, want %v", got, want)
			}
		}
	}
	check("192.0.2.1", "192.0.2.2", "198.51.100.1")
	down := func(trunk string, p Peer) {
		st := watchState(h, trunk, p)
		h.record(trunk, p, HealthCheck{DownAfter: 1, UpAfter: 1}, st, errors.New("timeout"), 0)
	}
	down("a", p1)
	check("192.0.2.2", "198.51.100.1")
	down("a", p2)
	down("b", p3)
	check("192.0.2.1", "192.0.2.2", "198.51.100.1")
}
