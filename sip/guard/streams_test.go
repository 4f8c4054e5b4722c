package guard

import (
	"net/netip"
	"testing"
)

// TestStreamSlots: a call's port pairs are taken all or none; a source
// over its limit is refused (logged once) while a trusted one is not.
func TestStreamSlots(t *testing.T) {
	g := New(Config{Streams: 6})
	a, sbc := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.10")
	g.SetTrusted([]netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")})
	s := g.Streams
	if ok, _ := s.TakeN(a, 4); !ok {
		t.Fatal("4 of 6 refused")
	}
	ok, first := s.TakeN(a, 4)
	if ok || !first {
		t.Fatalf("8 of 6: ok %v first %v, want refused and reported", ok, first)
	}
	if s.Held(a) != 4 {
		t.Fatalf("a refused take kept %d pairs, want 4", s.Held(a))
	}
	if ok, first := s.TakeN(a, 4); ok || first {
		t.Fatal("a second refusal in one episode was reported again")
	}
	if ok, _ := s.TakeN(a, 2); !ok {
		t.Fatal("6 of 6 refused")
	}
	if ok, _ := s.TakeN(sbc, 100); !ok {
		t.Fatal("a trusted source was held to the stream limit")
	}
	s.GiveN(a, 2)
	s.GiveN(a, 4)
	s.GiveN(sbc, 100)
	if s.Held(a) != 0 || s.Held(sbc) != 0 || s.Refused.Load() != 2 || s.Blocks.Load() != 1 {
		t.Fatalf("held %d/%d, refused %d, blocks %d", s.Held(a), s.Held(sbc), s.Refused.Load(), s.Blocks.Load())
	}
	if ok, _ := New(Config{}).Streams.TakeN(a, 1000); !ok {
		t.Fatal("Streams 0 must allow any number")
	}
}
