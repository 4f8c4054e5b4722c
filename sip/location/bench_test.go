package location

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// benchRegister is b.N REGISTERs (one binding each, of 10,000 AORs) on s.
func benchRegister(b *testing.B, s *Store) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		aor := fmt.Sprintf("u%d@example.com", i%10000)
		if _, err := s.Update(aor, func([]Binding) ([]Binding, error) {
			return []Binding{{AOR: aor, Contact: "sip:" + aor, Source: "192.0.2.10:5060", Transport: "udp", Expires: time.Now().Add(time.Hour)}}, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRegisterBolt: a REGISTER's write on one node (bbolt, fsync).
func BenchmarkRegisterBolt(b *testing.B) {
	be, err := OpenBolt(filepath.Join(b.TempDir(), "loc.db"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(be)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchRegister(b, s)
}

// BenchmarkRegisterRedis: the same in a cluster (Redis on loopback).
func BenchmarkRegisterRedis(b *testing.B) {
	s, _ := sharedStore(b, testenv.Redis(b).Addr(), "a")
	benchRegister(b, s)
}

// BenchmarkVisibility: the time from a REGISTER's write on node A to
// its binding in node B's memory, over real Redis on loopback; p50 and
// p99 reported.
func BenchmarkVisibility(b *testing.B) {
	rs := testenv.Redis(b)
	a, _ := sharedStore(b, rs.Addr(), "a")
	bn, _ := sharedStore(b, rs.Addr(), "b")
	time.Sleep(200 * time.Millisecond)
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		aor := fmt.Sprintf("v%d@example.com", i)
		start := time.Now()
		a.Update(aor, func([]Binding) ([]Binding, error) {
			return []Binding{{AOR: aor, Contact: "sip:" + aor, Expires: time.Now().Add(time.Hour)}}, nil
		})
		for len(bn.Lookup(aor)) == 0 {
			if time.Since(start) > 5*time.Second {
				b.Fatalf("%s not visible on B after 5 s", aor)
			}
			time.Sleep(20 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
