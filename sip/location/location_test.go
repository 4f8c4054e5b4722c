package location

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestStorePersistsAndExpires(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loc.db")
	be, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(be)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	_, err = s.Update("1001@d", func(cur []Binding) ([]Binding, error) {
		return append(cur,
			Binding{AOR: "1001@d", Contact: "sip:1001@1.2.3.4", Expires: now.Add(time.Hour), Q: 0.5},
			Binding{AOR: "1001@d", Contact: "sip:1001@5.6.7.8", Expires: now.Add(time.Hour), Q: 1},
			Binding{AOR: "1001@d", Contact: "sip:1001@9.9.9.9", Expires: now.Add(time.Second)},
		), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Lookup("1001@d"); len(got) != 3 || got[0].Contact != "sip:1001@5.6.7.8" {
		t.Fatalf("lookup = %+v", got)
	}
	s.Close()

	// Reopen later: the short binding has expired and is not loaded.
	be, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := New(be)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	s2.now = func() time.Time { return now.Add(2 * time.Second) }
	if got := s2.Lookup("1001@d"); len(got) != 2 {
		t.Fatalf("after restart lookup = %d bindings, want 2", len(got))
	}
	s2.now = func() time.Time { return now.Add(2 * time.Hour) }
	if n := s2.Sweep(); n != 3 && n != 2 {
		t.Fatalf("sweep removed %d", n)
	}
	if a, b := s2.Count(); a != 0 || b != 0 {
		t.Fatalf("count after sweep = %d/%d", a, b)
	}
}

// TestConcurrentUpdatesAreCommitted: many REGISTERs at once are group
// committed and all survive a reopen.
func TestConcurrentUpdatesAreCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loc.db")
	be, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := New(be)
	exp := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			aor := fmt.Sprintf("u%d@d", i)
			if _, err := s.Update(aor, func([]Binding) ([]Binding, error) {
				return []Binding{{AOR: aor, Contact: "sip:x@1.2.3.4", Expires: exp}}, nil
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s.Close()
	be, _ = OpenBolt(path)
	s2, _ := New(be)
	defer s2.Close()
	if a, b := s2.Count(); a != 200 || b != 200 {
		t.Fatalf("after reopen: %d AORs, %d bindings; want 200", a, b)
	}
}
