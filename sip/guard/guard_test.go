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

func TestAuthLockout(t *testing.T) {
	g := New(Config{AuthFailures: 3, AuthWindow: time.Minute, Lockout: 5 * time.Minute})
	src := netip.MustParseAddr("192.0.2.9")
	locked := false
	for i := 0; i < 3; i++ {
		locked = g.AuthFailed("1001", src) || locked
	}
	if !locked || !g.Locked("1001", netip.MustParseAddr("198.51.100.1")) || !g.Locked("1002", src) {
		t.Fatal("neither the user nor the source was locked out")
	}
	if g.Locked("1002", netip.MustParseAddr("198.51.100.1")) {
		t.Fatal("an innocent user and source were locked out")
	}
}
