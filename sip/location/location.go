// Package location is the registrar's location service: the bindings of
// each address-of-record, kept in memory and written through to an
// embedded bbolt file so that a restart keeps them.
//
// It stores and expires bindings; the rules for changing them (RFC 3261
// §10.3) belong to the registrar.
package location

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Binding is one contact of an address-of-record.
type Binding struct {
	AOR       string    `json:"aor"`       // user@domain
	Contact   string    `json:"contact"`   // the Contact URI as registered
	Source    string    `json:"source"`    // ip:port the REGISTER came from (RFC 3581)
	Transport string    `json:"transport"` // udp or tcp
	Expires   time.Time `json:"expires"`
	CallID    string    `json:"call_id"`
	CSeq      uint32    `json:"cseq"`
	UserAgent string    `json:"user_agent,omitempty"`
	Q         float64   `json:"q,omitempty"`
}

// Backend persists bindings; bbolt here, a shared store (Redis) later.
type Backend interface {
	// Put replaces the bindings of aor; an empty slice deletes it.
	Put(aor string, bs []Binding) error
	// All returns every stored AOR's bindings.
	All() (map[string][]Binding, error)
	Close() error
}

// Store is the in-memory location service with write-through persistence.
// Safe for concurrent use.
type Store struct {
	backend Backend // set once; may be nil (memory only)
	now     func() time.Time

	mu    sync.Mutex
	byAOR map[string][]Binding // guarded by mu; never holds expired entries after a sweep
}

// New returns a store over backend (nil for memory only), loading what the
// backend holds and dropping what has expired.
func New(backend Backend) (*Store, error) {
	s := &Store{backend: backend, now: time.Now, byAOR: map[string][]Binding{}}
	if backend == nil {
		return s, nil
	}
	all, err := backend.All()
	if err != nil {
		return nil, fmt.Errorf("load bindings: %w", err)
	}
	now := s.now()
	for aor, bs := range all {
		live := live(bs, now)
		if len(live) > 0 {
			s.byAOR[aor] = live
		}
		if len(live) != len(bs) {
			if err := backend.Put(aor, live); err != nil {
				return nil, fmt.Errorf("drop expired bindings of %s: %w", aor, err)
			}
		}
	}
	return s, nil
}

func live(bs []Binding, now time.Time) []Binding {
	out := bs[:0:0]
	for _, b := range bs {
		if b.Expires.After(now) {
			out = append(out, b)
		}
	}
	return out
}

// Lookup returns the unexpired bindings of aor, highest q first.
func (s *Store) Lookup(aor string) []Binding {
	s.mu.Lock()
	bs := live(s.byAOR[aor], s.now())
	s.mu.Unlock()
	sort.SliceStable(bs, func(i, j int) bool { return bs[i].Q > bs[j].Q })
	return bs
}

// Update changes aor's bindings atomically: fn gets the current unexpired
// bindings and returns the new set, or an error to change nothing. The new
// set is persisted before Update returns.
func (s *Store) Update(aor string, fn func(cur []Binding) ([]Binding, error)) ([]Binding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := live(s.byAOR[aor], s.now())
	next, err := fn(cur)
	if err != nil {
		return cur, err
	}
	if s.backend != nil {
		if err := s.backend.Put(aor, next); err != nil {
			return cur, fmt.Errorf("persist bindings of %s: %w", aor, err)
		}
	}
	if len(next) == 0 {
		delete(s.byAOR, aor)
	} else {
		s.byAOR[aor] = next
	}
	return next, nil
}

// Count returns the number of AORs and bindings held.
func (s *Store) Count() (aors, bindings int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, bs := range s.byAOR {
		bindings += len(bs)
	}
	return len(s.byAOR), bindings
}

// Sweep removes expired bindings now and returns how many it removed.
func (s *Store) Sweep() int {
	now := s.now()
	type change struct {
		aor string
		bs  []Binding
	}
	var changes []change
	removed := 0
	s.mu.Lock()
	for aor, bs := range s.byAOR {
		l := live(bs, now)
		if len(l) == len(bs) {
			continue
		}
		removed += len(bs) - len(l)
		changes = append(changes, change{aor, l})
		if len(l) == 0 {
			delete(s.byAOR, aor)
		} else {
			s.byAOR[aor] = l
		}
	}
	s.mu.Unlock()
	if s.backend != nil {
		for _, c := range changes {
			s.backend.Put(c.aor, c.bs) // best effort: expired entries are dropped again on load
		}
	}
	return removed
}

// Run sweeps expired bindings every interval until ctx ends.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Close closes the backend.
func (s *Store) Close() error {
	if s.backend == nil {
		return nil
	}
	return s.backend.Close()
}

// Bolt is a Backend on a bbolt file.
type Bolt struct {
	db *bolt.DB
}

var bucket = []byte("bindings")

// OpenBolt opens (creating) the bbolt file at path.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open location store %s: %w (is another voxvisor using it?)", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("init location store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Put implements Backend. Concurrent puts are batched into one commit.
func (b *Bolt) Put(aor string, bs []Binding) error {
	var val []byte
	if len(bs) > 0 {
		var err error
		if val, err = json.Marshal(bs); err != nil {
			return err
		}
	}
	return b.db.Batch(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if val == nil {
			return bk.Delete([]byte(aor))
		}
		return bk.Put([]byte(aor), val)
	})
}

// All implements Backend.
func (b *Bolt) All() (map[string][]Binding, error) {
	out := map[string][]Binding{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var bs []Binding
			if err := json.Unmarshal(v, &bs); err != nil {
				return fmt.Errorf("binding %q: %w", k, err)
			}
			out[string(k)] = bs
			return nil
		})
	})
	return out, err
}

// Close implements Backend.
func (b *Bolt) Close() error { return b.db.Close() }
