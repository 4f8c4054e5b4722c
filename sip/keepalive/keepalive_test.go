package keepalive

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/voxvisor/voxvisor/sip/location"
)

// fakeSender answers the pings of contacts marked alive after a round
// trip of rtt; the others' pings wait for their deadline, as a ping
// into a closed NAT does.
type fakeSender struct {
	rtt   time.Duration
	mu    sync.Mutex
	alive map[string]bool
	pings map[string][]time.Time // by contact
	last  map[string]string      // source of the last ping, by contact
}

func newFakeSender() *fakeSender {
	return &fakeSender{rtt: 20 * time.Millisecond, alive: map[string]bool{}, pings: map[string][]time.Time{}, last: map[string]string{}}
}

func (f *fakeSender) Ping(ctx context.Context, b location.Binding) error {
	f.mu.Lock()
	f.pings[b.Contact] = append(f.pings[b.Contact], time.Now())
	f.last[b.Contact] = b.Source
	alive := f.alive[b.Contact]
	f.mu.Unlock()
	if alive {
		select {
		case <-time.After(f.rtt):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeSender) set(contact string, alive bool) {
	f.mu.Lock()
	f.alive[contact] = alive
	f.mu.Unlock()
}

func (f *fakeSender) sent(contact string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.pings[contact]...)
}

func (f *fakeSender) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, ps := range f.pings {
		n += len(ps)
	}
	return n
}

// bind registers one binding in s for an hour.
func bind(t *testing.T, s *location.Store, b location.Binding) {
	t.Helper()
	if b.AOR == "" {
		b.AOR = "1001@d"
	}
	if b.Expires.IsZero() {
		b.Expires = time.Now().Add(time.Hour)
	}
	if b.CallID == "" {
		b.CallID = "reg-" + b.Contact
	}
	_, err := s.Update(b.AOR, func(cur []location.Binding) ([]location.Binding, error) {
		for i, c := range cur {
			if c.Contact == b.Contact {
				cur[i] = b
				return cur, nil
			}
		}
		return append(cur, b), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func natted(i int) location.Binding {
	return location.Binding{Contact: fmt.Sprintf("sip:1001@192.168.1.%d:5060", i), Source: fmt.Sprintf("203.0.113.%d:40000", i),
		Transport: "udp", NAT: true, CSeq: 1}
}

// harness runs a pinger in the bubble until the returned stop is called.
type harness struct {
	store *location.Store
	send  *fakeSender
	p     *Pinger
	log   *bytes.Buffer
	stop  func()
}

func start(t *testing.T, opts Options) *harness {
	t.Helper()
	store, err := location.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{store: store, send: newFakeSender(), log: &bytes.Buffer{}}
	h.p = New(store, h.send, opts, slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.p.Run(ctx)
	}()
	h.stop = func() {
		cancel()
		<-done
	}
	return h
}

// TestPingsSpreadAndEvery: each NATed UDP contact is pinged once per
// interval, the contacts at different moments across the interval rather
// than all at once; contacts not NATed, over TCP or behind a Path are
// never pinged.
func TestPingsSpreadAndEvery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 15 * time.Second
		h := start(t, Options{Interval: interval, Timeout: 60 * time.Second})
		defer h.stop()
		const n = 40
		for i := 1; i <= n; i++ {
			b := natted(i)
			h.send.set(b.Contact, true)
			bind(t, h.store, b)
		}
		bind(t, h.store, location.Binding{Contact: "sip:1001@198.51.100.7:5060", Source: "198.51.100.7:5060", Transport: "udp"})
		bind(t, h.store, location.Binding{Contact: "sip:1001@10.0.0.9:5060;transport=tcp", Source: "203.0.113.99:51000", Transport: "tcp", NAT: true})
		bind(t, h.store, location.Binding{Contact: "sip:1001@10.0.0.8:5060", Source: "198.51.100.20:5060", Transport: "udp", NAT: true, Path: []string{"sip:edge.example.net;lr"}})

		start := time.Now()
		time.Sleep(4*interval + interval/2)
		synctest.Wait()
		var firsts []time.Duration
		for i := 1; i <= n; i++ {
			ps := h.send.sent(natted(i).Contact)
			if len(ps) < 4 || len(ps) > 5 {
				t.Fatalf("contact %d pinged %d times in 4.5 intervals, want 4 or 5", i, len(ps))
			}
			for j := 1; j < len(ps); j++ {
				if d := ps[j].Sub(ps[j-1]); d < interval-time.Second || d > interval+time.Second {
					t.Fatalf("contact %d: pings %s apart, want about %s", i, d, interval)
				}
			}
			firsts = append(firsts, ps[0].Sub(start))
		}
		// Spread: no second of the interval holds more than a quarter of
		// the first pings, and they reach into its second half.
		perSecond := map[time.Duration]int{}
		late := 0
		for _, f := range firsts {
			perSecond[f.Truncate(time.Second)]++
			if f > interval/2 {
				late++
			}
		}
		for s, c := range perSecond {
			if c > n/4 {
				t.Fatalf("%d of %d first pings in second %s: not spread", c, n, s)
			}
		}
		if late == 0 {
			t.Fatal("no first ping in the second half of the interval: not spread")
		}
		if got := h.send.total(); got > 5*n {
			t.Fatalf("%d pings sent, only the %d NATed UDP contacts should be pinged", got, n)
		}
		if h.p.Stats.Pinged.Load() != n || h.p.Stats.Dropped.Load() != 0 || h.p.Stats.Failed.Load() != 0 {
			t.Fatalf("stats: pinged %d dropped %d failed %d", h.p.Stats.Pinged.Load(), h.p.Stats.Dropped.Load(), h.p.Stats.Failed.Load())
		}
		if s, a := h.p.Stats.Sent.Load(), h.p.Stats.Answered.Load(); s != uint64(h.send.total()) || a < s-n || a > s {
			t.Fatalf("sent %d answered %d, %d pings seen", s, a, h.send.total())
		}
	})
}

// TestSilentContactRemoved: a contact that stops answering is removed
// after the timeout (not before, and within one more interval), logged
// once and counted once; one that answers stays.
func TestSilentContactRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval, timeout = 15 * time.Second, 60 * time.Second
		h := start(t, Options{Interval: interval, Timeout: timeout})
		defer h.stop()
		live, dead := natted(1), natted(2)
		h.send.set(live.Contact, true)
		h.send.set(dead.Contact, true)
		bind(t, h.store, live)
		bind(t, h.store, dead)
		time.Sleep(2 * interval)
		synctest.Wait()
		h.send.set(dead.Contact, false)
		silentFrom := h.send.sent(dead.Contact)
		lastAnswer := silentFrom[len(silentFrom)-1].Add(h.send.rtt)
		for time.Since(lastAnswer) < timeout-time.Second {
			time.Sleep(time.Second)
			synctest.Wait()
			if len(h.store.Lookup("1001@d")) != 2 {
				t.Fatalf("removed %s after the last answer, before the %s timeout", time.Since(lastAnswer), timeout)
			}
		}
		time.Sleep(interval + 2*time.Second)
		synctest.Wait()
		bs := h.store.Lookup("1001@d")
		if len(bs) != 1 || bs[0].Contact != live.Contact {
			t.Fatalf("bindings %d after %s of silence, want only the live one", len(bs), time.Since(lastAnswer))
		}
		time.Sleep(5 * interval)
		synctest.Wait()
		if d := h.p.Stats.Dropped.Load(); d != 1 {
			t.Fatalf("dropped = %d, want 1", d)
		}
		if f := h.p.Stats.Failed.Load(); f < 3 {
			t.Fatalf("failed = %d, want the unanswered pings counted", f)
		}
		if c := bytes.Count(h.log.Bytes(), []byte("NATed contact removed")); c != 1 {
			t.Fatalf("logged %d times, want once:\n%s", c, h.log)
		}
		if len(h.store.Lookup("1001@d")) != 1 {
			t.Fatal("the live contact went too")
		}
	})
}

// TestRegisterCountsAsAlive: a phone that ignores OPTIONS but registers
// again within the timeout is kept; one that registers from a new
// address is pinged there from then on.
func TestRegisterCountsAsAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval, timeout = 15 * time.Second, 60 * time.Second
		h := start(t, Options{Interval: interval, Timeout: timeout})
		defer h.stop()
		b := natted(1)
		bind(t, h.store, b)
		for i := 0; i < 8; i++ {
			time.Sleep(40 * time.Second)
			b.CSeq++
			bind(t, h.store, b)
		}
		synctest.Wait()
		if len(h.store.Lookup("1001@d")) != 1 || h.p.Stats.Dropped.Load() != 0 {
			t.Fatal("a contact that keeps registering was removed")
		}
		b.Source, b.CSeq = "203.0.113.200:41000", b.CSeq+1
		bind(t, h.store, b)
		time.Sleep(2 * interval)
		synctest.Wait()
		h.send.mu.Lock()
		last := h.send.last[b.Contact]
		h.send.mu.Unlock()
		if last != b.Source {
			t.Fatalf("pinged at %s after the contact moved to %s", last, b.Source)
		}
	})
}

// TestDropSparesRefreshed: a contact that registered again between the
// last round and its removal stays.
func TestDropSparesRefreshed(t *testing.T) {
	store, _ := location.New(nil)
	b := natted(1)
	b.AOR, b.CallID, b.Expires = "1001@d", "reg-1", time.Now().Add(time.Hour)
	bind(t, store, b)
	var log bytes.Buffer
	p := New(store, newFakeSender(), Options{Interval: time.Second, Timeout: 4 * time.Second}, slog.New(slog.NewTextHandler(&log, nil)))
	refreshed := b
	refreshed.CSeq++
	bind(t, store, refreshed)
	p.drop(key{b.AOR, b.Contact}, b, time.Minute)
	if len(store.Lookup(b.AOR)) != 1 || p.Stats.Dropped.Load() != 0 {
		t.Fatal("a refreshed binding was removed")
	}
	p.drop(key{b.AOR, b.Contact}, refreshed, time.Minute)
	if len(store.Lookup(b.AOR)) != 0 || p.Stats.Dropped.Load() != 1 {
		t.Fatal("the silent binding was not removed")
	}
}

// TestRunStops: Run returns when its context ends, with pings still
// waiting for answers; with no interval it sends nothing.
func TestRunStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Interval: time.Second, Timeout: 5 * time.Second})
		for i := 1; i <= 5; i++ {
			bind(t, h.store, natted(i)) // never answer
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if h.send.total() == 0 {
			t.Fatal("nothing pinged")
		}
		h.stop() // synctest fails the test if a goroutine is left behind
		if h.p.Stats.Pinged.Load() != 0 {
			t.Fatal("gauge not reset")
		}

		off := start(t, Options{})
		bind(t, off.store, natted(1))
		time.Sleep(time.Minute)
		off.stop()
		if off.send.total() != 0 {
			t.Fatal("pinged with pings off")
		}
	})
}

// TestNoRemovalWithoutTimeout: with Timeout 0 silent contacts are pinged
// but kept.
func TestNoRemovalWithoutTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Interval: 15 * time.Second})
		defer h.stop()
		bind(t, h.store, natted(1))
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if len(h.store.Lookup("1001@d")) != 1 || len(h.send.sent(natted(1).Contact)) < 35 {
			t.Fatalf("bindings %d, pings %d", len(h.store.Lookup("1001@d")), len(h.send.sent(natted(1).Contact)))
		}
	})
}

// TestOnlyOwnFlowsPinged: in a cluster each node pings only the contacts
// whose REGISTER it received (their NAT pinhole is its), not every
// contact it knows from the shared store.
func TestOnlyOwnFlowsPinged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := start(t, Options{Interval: 15 * time.Second, Timeout: 60 * time.Second, Node: "a"})
		defer h.stop()
		mine, theirs, old := natted(1), natted(2), natted(3)
		mine.Node, theirs.Node = "a", "b" // old: written before the cluster
		for _, b := range []location.Binding{mine, theirs, old} {
			h.send.set(b.Contact, true)
			bind(t, h.store, b)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if len(h.send.sent(mine.Contact)) == 0 || len(h.send.sent(old.Contact)) == 0 {
			t.Fatal("this node's contacts were not pinged")
		}
		if n := len(h.send.sent(theirs.Contact)); n != 0 {
			t.Fatalf("another node's contact was pinged %d times", n)
		}
	})
}
