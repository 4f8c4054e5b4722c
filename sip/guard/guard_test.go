package guard

import (
	"net/netip"
	"testing"
	"time"
)

func TestRateLimitBlocksOneSourceOnly(t *testing.T) {
	g := New(Config{Rate: 10, Burst: 20, Block: time.Minute})
	now := time.Now()
	g.now = func() time.Time { return now }
	flood, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	blocks := 0
	for i := 0; i < 100; i++ {
		if _, b := g.Allow(flood); b {
			blocks++
		}
	}
	if ok, _ := g.Allow(flood); ok || blocks != 1 {
		t.Fatalf("flood not blocked (blocks %d)", blocks)
	}
	if ok, _ := g.Allow(other); !ok {
		t.Fatal("another source was blocked")
	}
	now = now.Add(2 * time.Minute)
	if ok, _ := g.Allow(flood); !ok {
		t.Fatal("block did not expire")
	}
}

// TestAuthLockout: the guessing source is locked out; the user is not
// (anyone could lock a user out otherwise), its failed logins are only
// slowed down; a trusted source is never locked out.
func TestAuthLockout(t *testing.T) {
	g := New(Config{AuthFailures: 3, AuthWindow: time.Minute, Lockout: 5 * time.Minute, AuthDelay: time.Second})
	g.SetTrusted([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")})
	src, elsewhere := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("198.51.100.1")
	if g.FailureDelay("1001") != 0 {
		t.Fatal("a user with no failures is slowed down")
	}
	locked := false
	for i := 0; i < 3; i++ {
		locked = g.AuthFailed("1001", src) || locked
	}
	if !locked || !g.Locked(src) {
		t.Fatal("the guessing source was not locked out")
	}
	if g.Locked(elsewhere) {
		t.Fatal("an innocent source was locked out")
	}
	if d := g.FailureDelay("1001"); d != time.Second {
		t.Fatalf("failure delay of the attacked user = %v, want 1s", d)
	}
	if g.FailureDelay("1002") != 0 {
		t.Fatal("another user is slowed down")
	}
	sbc := netip.MustParseAddr("203.0.113.5")
	for i := 0; i < 10; i++ {
		if g.AuthFailed("1003", sbc) {
			t.Fatal("a trusted source was locked out")
		}
	}
	if g.Locked(sbc) {
		t.Fatal("a trusted source is locked")
	}
}

func TestSlotsPerSource(t *testing.T) {
	s := NewSlots(2)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := 0; i < 2; i++ {
		if ok, _ := s.Take(a); !ok {
			t.Fatalf("take %d refused under the limit", i)
		}
	}
	firsts := 0
	for i := 0; i < 5; i++ {
		ok, first := s.Take(a)
		if ok {
			t.Fatal("a third slot was given")
		}
		if first {
			firsts++
		}
	}
	if firsts != 1 || s.Blocks.Load() != 1 || s.Refused.Load() != 5 {
		t.Fatalf("block reported %d times (blocks %d, refused %d), want once", firsts, s.Blocks.Load(), s.Refused.Load())
	}
	if ok, _ := s.Take(b); !ok {
		t.Fatal("another source was refused")
	}
	s.Give(a)
	if ok, _ := s.Take(a); !ok {
		t.Fatal("a slot given back was not reusable")
	}
	if _, first := s.Take(a); !first {
		t.Fatal("a new block after room was not reported")
	}
	s.Give(a)
	s.Give(a)
	s.Give(b)
	if s.Held(a) != 0 || s.Held(b) != 0 || len(s.held) != 0 {
		t.Fatalf("slots left after every give: %v", s.held)
	}
	var none *Slots
	if ok, _ := none.Take(a); !ok {
		t.Fatal("nil slots refused")
	}
}

// TestTrustedSources: a trusted source is never rate limited, held to a
// per-source limit or locked out as a source; a user's lockout still
// holds from it.
func TestTrustedSources(t *testing.T) {
	g := New(Config{Rate: 10, Burst: 10, Block: time.Minute, AuthFailures: 2, AuthWindow: time.Minute, Lockout: time.Minute, AuthDelay: time.Second, Dialogs: 1})
	sbc, other := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	g.SetTrusted([]netip.Prefix{netip.MustParsePrefix("192.0.2.8/30")})
	for i := 0; i < 100; i++ {
		if ok, _ := g.Allow(sbc); !ok {
			t.Fatalf("trusted source blocked after %d requests", i)
		}
	}
	if ok, _ := g.Dialogs.Take(sbc); !ok {
		t.Fatal("trusted source refused a first call")
	}
	if ok, _ := g.Dialogs.Take(sbc); !ok {
		t.Fatal("trusted source held to the call limit")
	}
	g.Dialogs.Give(sbc)
	g.Dialogs.Give(sbc)
	if g.Dialogs.Held(sbc) != 0 {
		t.Fatal("slots of a trusted source not given back")
	}
	g.AuthFailed("1001", sbc)
	g.AuthFailed("1001", sbc)
	if g.Locked(sbc) || g.FailureDelay("1001") == 0 {
		t.Fatal("want the user's failures slowed and the trusted source not locked")
	}
	// Trust can be withdrawn (a reload).
	g.SetTrusted(nil)
	for i := 0; i < 20; i++ {
		g.Allow(sbc)
	}
	if ok, _ := g.Allow(sbc); ok {
		t.Fatal("a source no longer trusted was not limited")
	}
	if ok, _ := g.Allow(other); !ok {
		t.Fatal("another source was blocked")
	}
}

// The cluster's other nodes are trusted while they are members: a node
// placing all its calls to this node's phones is not rate limited.
func TestClusterMembersTrusted(t *testing.T) {
	g := New(Config{Rate: 5, Burst: 5, Block: time.Minute})
	node := netip.MustParseAddr("10.0.0.12")
	g.SetMembers([]netip.Addr{node})
	for i := 0; i < 50; i++ {
		if ok, _ := g.Allow(node); !ok {
			t.Fatalf("a cluster member blocked after %d requests", i)
		}
	}
	if !g.Trusted(netip.MustParseAddr("::ffff:10.0.0.12")) {
		t.Fatal("a member's address, IPv4-mapped, is not trusted")
	}
	g.SetMembers(nil) // it left the cluster
	for i := 0; i < 10; i++ {
		g.Allow(node)
	}
	if ok, _ := g.Allow(node); ok {
		t.Fatal("a former member is still exempt from the rate limit")
	}
}
