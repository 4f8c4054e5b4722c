package location

import (
	"context"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/testenv"
)

func sharedStore(t testing.TB, addr, node string) (*Store, *Redis) {
	t.Helper()
	b, err := OpenRedis(RedisOptions{Addr: addr, Node: node, Prefix: "vxtest:"}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx, time.Hour)
	t.Cleanup(func() { cancel(); s.Close() })
	return s, b
}

func register(t *testing.T, s *Store, aor, contact string, ttl time.Duration) {
	t.Helper()
	if _, err := s.Update(aor, func([]Binding) ([]Binding, error) {
		return []Binding{{AOR: aor, Contact: contact, Expires: time.Now().Add(ttl)}}, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		if ok() {
			return time.Since(start)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
	return 0
}

// TestRedisSharedLocation: two nodes over one real redis-server. A phone
// registered on A is found on B (stamped as A's flow) within a bound, an
// unregistration on B reaches A, and a node that starts later serves the
// binding from its first lookup. Redis expires the key with the binding.
func TestRedisSharedLocation(t *testing.T) {
	rs := testenv.Redis(t)
	a, _ := sharedStore(t, rs.Addr(), "a")
	b, _ := sharedStore(t, rs.Addr(), "b")
	time.Sleep(100 * time.Millisecond) // the watchers subscribe

	register(t, a, "1001@example.com", "sip:1001@192.0.2.10:5060", time.Hour)
	took := eventually(t, "the binding on B", func() bool { return len(b.Lookup("1001@example.com")) == 1 })
	t.Logf("a REGISTER on A was visible on B after %s", took)
	if got := b.Lookup("1001@example.com")[0]; got.Node != "a" || got.Contact != "sip:1001@192.0.2.10:5060" {
		t.Fatalf("B sees %+v, want A's flow", got)
	}

	c, _ := sharedStore(t, rs.Addr(), "c") // a node (re)started now
	if len(c.Lookup("1001@example.com")) != 1 {
		t.Fatal("a node started after the REGISTER does not have the binding")
	}
	if n, err := b.Remove("1001@example.com", ""); err != nil || n != 1 {
		t.Fatalf("remove on B: %d, %v", n, err)
	}
	eventually(t, "the removal on A", func() bool { return len(a.Lookup("1001@example.com")) == 0 })

	register(t, a, "1002@example.com", "sip:1002@192.0.2.11:5060", 1500*time.Millisecond)
	eventually(t, "Redis to expire the key with the binding", func() bool {
		return rs.CLI("exists", "vxtest:aor:1002@example.com") == "0"
	})
}

// TestRedisDownThenBack: with Redis gone, a REGISTER still succeeds and
// its binding is served; the outage is counted; when Redis is back
// (empty, restarted) the kept write goes out and the other node gets it.
func TestRedisDownThenBack(t *testing.T) {
	rs := testenv.Redis(t)
	a, ra := sharedStore(t, rs.Addr(), "a")
	b, _ := sharedStore(t, rs.Addr(), "b")
	register(t, a, "1001@example.com", "sip:1001@192.0.2.10:5060", time.Hour)
	eventually(t, "the binding on B", func() bool { return len(b.Lookup("1001@example.com")) == 1 })

	rs.Stop()
	register(t, a, "1003@example.com", "sip:1003@192.0.2.13:5060", time.Hour)
	if len(a.Lookup("1003@example.com")) != 1 || !ra.Down() || ra.Failures() == 0 {
		t.Fatalf("with Redis down: lookup %v, down %v, failures %d", a.Lookup("1003@example.com"), ra.Down(), ra.Failures())
	}
	if len(b.Lookup("1001@example.com")) != 1 {
		t.Fatal("B forgot a binding it knew when Redis went")
	}
	rs.Start()
	took := eventually(t, "the kept write on B after Redis came back", func() bool { return len(b.Lookup("1003@example.com")) == 1 })
	t.Logf("B had the binding written during the outage %s after Redis came back", took)
	eventually(t, "A to see Redis back", func() bool { return !ra.Down() })
	// Redis came back empty: A writes its own binding from before the
	// outage again, rather than forgetting it.
	eventually(t, "A's older binding back in Redis", func() bool {
		return rs.CLI("exists", "vxtest:aor:1001@example.com") == "1"
	})
	eventually(t, "the binding from before the outage on both nodes", func() bool {
		return len(a.Lookup("1001@example.com")) == 1 && len(b.Lookup("1001@example.com")) == 1
	})
}

// TestStartWithRedisDown: a node whose Redis is down at its start starts
// (empty, serving what it is told) and loads the cluster's bindings once
// Redis answers.
func TestStartWithRedisDown(t *testing.T) {
	rs := testenv.Redis(t)
	rs.Stop()
	a, ra := sharedStore(t, rs.Addr(), "a")
	if !ra.Down() {
		t.Fatal("Redis is down and the node does not know it")
	}
	rs.Start()
	b, _ := sharedStore(t, rs.Addr(), "b")
	register(t, b, "1001@example.com", "sip:1001@192.0.2.10:5060", time.Hour)
	took := eventually(t, "the binding on the node that started without Redis", func() bool { return len(a.Lookup("1001@example.com")) == 1 })
	t.Logf("after %s", took)
}
