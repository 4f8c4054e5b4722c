package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/testenv"
)

func member(t *testing.T, addr, name string) (*Members, context.CancelFunc) {
	t.Helper()
	m := New(Options{Addr: addr, Node: name, Prefix: "vxtest:"}, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return m, stop
}

// TestChannelsAcrossNodes: a trunk's max_channels 2 holds across three
// nodes (one real Redis): the third channel is refused wherever it is
// asked for; a release frees one; a node that stops gives its channels
// back, without anyone releasing them.
func TestChannelsAcrossNodes(t *testing.T) {
	rs := testenv.Redis(t)
	a, _ := member(t, rs.Addr(), "a")
	b, stopB := member(t, rs.Addr(), "b")
	c, _ := member(t, rs.Addr(), "c")
	time.Sleep(100 * time.Millisecond) // first heartbeats
	take := func(m *Members, want bool) {
		t.Helper()
		ok, err := m.Acquire("carrier", 2)
		if err != nil || ok != want {
			t.Fatalf("Acquire on %s = %v, %v; want %v", m.self.Name, ok, err, want)
		}
	}
	take(a, true)
	take(b, true)
	take(c, false)
	take(a, false)
	a.Release("carrier")
	take(c, true)
	if held, err := a.Held(context.Background(), "carrier"); err != nil || held["a"] != 0 || held["b"] != 1 || held["c"] != 1 {
		t.Fatalf("held %v, %v", held, err)
	}
	// b stops (its heartbeat key goes): its channel is free for the others.
	stopB()
	take(a, true)
	take(c, false)
	nodes, err := c.List(context.Background())
	if err != nil || len(nodes) != 2 || !nodes[0].Self || nodes[0].Name != "c" {
		t.Fatalf("nodes %+v, %v", nodes, err)
	}
}

// TestChannelsRedisDown: with Redis unreachable Acquire says it cannot
// tell (the gateway then counts on its own node).
func TestChannelsRedisDown(t *testing.T) {
	rs := testenv.Redis(t)
	a, _ := member(t, rs.Addr(), "a")
	rs.Stop()
	if _, err := a.Acquire("carrier", 2); err == nil {
		t.Fatal("Acquire with Redis down gave no error")
	}
}

// TestLease: one node holds a lease at a time; renewing keeps it; a
// clean stop gives it up at once to the next that asks.
func TestLease(t *testing.T) {
	rs := testenv.Redis(t)
	a, stopA := member(t, rs.Addr(), "a")
	b, _ := member(t, rs.Addr(), "b")
	ctx := context.Background()
	hold := func(m *Members, want bool) {
		t.Helper()
		if got, err := m.Hold(ctx, "trunkreg:carrier"); err != nil || got != want {
			t.Fatalf("Hold on %s = %v, %v; want %v", m.self.Name, got, err, want)
		}
	}
	hold(a, true)
	hold(b, false)
	hold(a, true) // a renewal
	if h, _ := b.Holder(ctx, "trunkreg:carrier"); h != "a" {
		t.Fatalf("holder %q, want a", h)
	}
	stopA()
	hold(b, true)
	if ttl := rs.CLI("pttl", "vxtest:lease:trunkreg:carrier"); ttl == "-1" || ttl == "-2" {
		t.Fatalf("the lease has no lifetime: pttl %s", ttl)
	}
}
