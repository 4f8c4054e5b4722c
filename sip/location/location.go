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
	"errors"
	"fmt"
	"slices"
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
	Transport string    `json:"transport"` // udp, tcp or tls
	Expires   time.Time `json:"expires"`
	CallID    string    `json:"call_id"`
	CSeq      uint32    `json:"cseq"`
	UserAgent string    `json:"user_agent,omitempty"`
	Q         float64   `json:"q,omitempty"`

	// NAT says the contact is behind NAT, as the registrar judged from
	// its REGISTER: it is reached only at Source, and over UDP the
	// switch keeps the way open with pings.
	NAT bool `json:"nat,omitempty"`
	// Local is the switch's own socket (ip:port) the REGISTER arrived
	// on; requests to the contact over UDP leave from it.
	Local string `json:"local,omitempty"`
	// Path is the REGISTER's Path (RFC 3327), first hop first: requests
	// to the contact go to the first hop with the whole Path as Route.
	Path []string `json:"path,omitempty"`
	// Outbound says the contact is reached over its flow only (RFC 5626:
	// ;ob or reg-id): never at its Contact address.
	Outbound bool `json:"ob,omitempty"`
	// Node is the cluster node that received the REGISTER and so holds
	// the contact's flow (a shared store sets it); empty on one node.
	Node string `json:"node,omitempty"`
	// Hop is that node's way in for the contact: a Route URI of the node
	// with a token (signed by it) naming the flow. The other nodes send
	// requests for the contact to it, with Hop on top of the Route set.
	Hop string `json:"hop,omitempty"`
}

// Backend persists bindings: bbolt on one node, Redis for a cluster.
type Backend interface {
	// Put replaces the bindings of each AOR in one commit; an empty slice
	// deletes the AOR.
	Put(changes map[string][]Binding) error
	// All returns every stored AOR's bindings.
	All() (map[string][]Binding, error)
	Close() error
}

// Store is the in-memory location service with write-through persistence.
// Safe for concurrent use.
//
// Writes are group-committed: Update changes memory under the lock, queues
// the AOR's new state and waits, outside the lock, for the writer
// goroutine to commit everything queued in one transaction. So a slow disk
// delays the REGISTERs waiting on it, never the lookups or other AORs.
type Store struct {
	backend Backend // set once; may be nil (memory only)
	now     func() time.Time
	kick    chan struct{} // wakes the writer
	stop    chan struct{}
	done    chan struct{}

	mu      sync.Mutex
	byAOR   map[string][]Binding // guarded by mu; never holds expired entries after a sweep
	pending map[string][]Binding // guarded by mu; queued for the next commit
	waiters []chan error         // guarded by mu; told when that commit is done
	closed  bool                 // guarded by mu
}

// New returns a store over backend (nil for memory only), loading what the
// backend holds and dropping what has expired.
func New(backend Backend) (*Store, error) {
	s := &Store{backend: backend, now: time.Now, byAOR: map[string][]Binding{}, pending: map[string][]Binding{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if backend == nil {
		close(s.done)
		return s, nil
	}
	all, err := backend.All()
	if errors.Is(err, ErrUnavailable) {
		all, err = nil, nil // start empty: Run reloads when the store answers
	}
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
			s.pending[aor] = live
		}
	}
	if len(s.pending) > 0 {
		if err := backend.Put(s.pending); err != nil {
			return nil, fmt.Errorf("drop expired bindings: %w", err)
		}
		s.pending = map[string][]Binding{}
	}
	go s.writer()
	return s, nil
}

// writer commits what Update and Sweep queue, in batches, until Close.
func (s *Store) writer() {
	defer close(s.done)
	for {
		select {
		case <-s.kick:
		case <-s.stop:
			s.flush()
			return
		}
		s.flush()
	}
}

func (s *Store) flush() {
	s.mu.Lock()
	batch, waiters := s.pending, s.waiters
	s.pending, s.waiters = map[string][]Binding{}, nil
	s.mu.Unlock()
	if len(batch) == 0 && len(waiters) == 0 {
		return
	}
	err := s.backend.Put(batch)
	for _, w := range waiters {
		w <- err
	}
}

// queue records aor's new state for the writer. Called with mu held.
func (s *Store) queue(aor string, bs []Binding, wait bool) chan error {
	if s.backend == nil || s.closed {
		return nil
	}
	s.pending[aor] = bs
	var ch chan error
	if wait {
		ch = make(chan error, 1)
		s.waiters = append(s.waiters, ch)
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return ch
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
// set is committed to the backend before Update returns.
func (s *Store) Update(aor string, fn func(cur []Binding) ([]Binding, error)) ([]Binding, error) {
	s.mu.Lock()
	cur := live(s.byAOR[aor], s.now())
	next, err := fn(cur)
	if err != nil {
		s.mu.Unlock()
		return cur, err
	}
	if sh, ok := s.backend.(Shared); ok {
		// Written here: this node holds the new bindings' flows.
		for i := range next {
			if next[i].Node == "" {
				next[i].Node = sh.Node()
			}
		}
	}
	if len(next) == 0 {
		delete(s.byAOR, aor)
	} else {
		s.byAOR[aor] = next
	}
	done := s.queue(aor, next, true)
	s.mu.Unlock()
	if done != nil {
		if err := <-done; err != nil {
			return next, fmt.Errorf("persist bindings of %s: %w", aor, err)
		}
	}
	return next, nil
}

// All returns every unexpired binding, by AOR.
func (s *Store) All() map[string][]Binding {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make(map[string][]Binding, len(s.byAOR))
	for aor, bs := range s.byAOR {
		if l := live(bs, now); len(l) > 0 {
			out[aor] = l
		}
	}
	return out
}

// Remove deletes aor's binding for contact (every binding when contact is
// empty) and reports how many went.
func (s *Store) Remove(aor, contact string) (int, error) {
	removed := 0
	_, err := s.Update(aor, func(cur []Binding) ([]Binding, error) {
		var keep []Binding
		for _, b := range cur {
			if contact == "" || b.Contact == contact {
				removed++
				continue
			}
			keep = append(keep, b)
		}
		return keep, nil
	})
	return removed, err
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
	removed := 0
	s.mu.Lock()
	for aor, bs := range s.byAOR {
		l := live(bs, now)
		if len(l) == len(bs) {
			continue
		}
		removed += len(bs) - len(l)
		if len(l) == 0 {
			delete(s.byAOR, aor)
		} else {
			s.byAOR[aor] = l
		}
		// A shared store expires keys itself, and another node may have
		// refreshed what looks expired here: only this node's own
		// bindings are written away. Best effort: expired entries are
		// dropped again on load.
		if s.owns(bs, now) {
			s.queue(aor, l, false)
		}
	}
	s.mu.Unlock()
	return removed
}

// Shared is a Backend other nodes write too (Redis): Watch tells the
// store their changes.
type Shared interface {
	Backend
	Node() string
	Watch(ctx context.Context, apply func(aor string, bs []Binding), reload func(all map[string][]Binding))
}

// owns reports whether the expired bindings of bs are this node's to
// write away: always on one node.
func (s *Store) owns(bs []Binding, now time.Time) bool {
	sh, ok := s.backend.(Shared)
	if !ok {
		return true
	}
	for _, b := range bs {
		if !b.Expires.After(now) && b.Node != "" && b.Node != sh.Node() {
			return false
		}
	}
	return true
}

// Apply sets aor's bindings as another node wrote them (nothing is
// written back).
func (s *Store) Apply(aor string, bs []Binding) {
	l := live(bs, s.now())
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, mine := s.pending[aor]; mine {
		return // this node's newer write is on its way
	}
	if len(l) == 0 {
		delete(s.byAOR, aor)
	} else {
		s.byAOR[aor] = l
	}
}

// reload makes memory what the shared store holds, but for this node's
// writes not yet in it, and writes again this node's own live bindings
// that the store lost (a Redis restarted without persistence).
func (s *Store) reload(all map[string][]Binding) {
	self := ""
	if sh, ok := s.backend.(Shared); ok {
		self = sh.Node()
	}
	for aor, bs := range s.All() {
		if _, ok := all[aor]; ok {
			continue
		}
		if slices.ContainsFunc(bs, func(b Binding) bool { return b.Node == self || b.Node == "" }) {
			s.mu.Lock()
			s.queue(aor, bs, false)
			s.mu.Unlock()
			continue
		}
		all[aor] = nil
	}
	for aor, bs := range all {
		s.Apply(aor, bs)
	}
}

// Run sweeps expired bindings every interval until ctx ends; over a
// shared backend it also applies the other nodes' changes.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	if sh, ok := s.backend.(Shared); ok {
		go sh.Watch(ctx, s.Apply, s.reload)
	}
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

// Close commits what is queued and closes the backend.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.backend == nil {
		return nil
	}
	close(s.stop)
	<-s.done
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

// Put implements Backend: one transaction, one fsync, for every change.
func (b *Bolt) Put(changes map[string][]Binding) error {
	vals := make(map[string][]byte, len(changes))
	for aor, bs := range changes {
		if len(bs) == 0 {
			vals[aor] = nil
			continue
		}
		v, err := json.Marshal(bs)
		if err != nil {
			return err
		}
		vals[aor] = v
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		for aor, v := range vals {
			var err error
			if v == nil {
				err = bk.Delete([]byte(aor))
			} else {
				err = bk.Put([]byte(aor), v)
			}
			if err != nil {
				return err
			}
		}
		return nil
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
