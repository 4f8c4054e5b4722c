package server

import (
	"bytes"
	"sync"
	"time"
)

// ackOrder keeps an in-dialog request from overtaking the ACK its sender
// sent just before it. sipgo hands every message to its own goroutine, so
// a phone's ACK and the BYE (or re-INVITE) right behind it can reach the
// pipeline in either order, and a callee that gets the BYE first aborts
// the call. The UDP screen sees datagrams in arrival order: it notes each
// ACK by Call-ID; the ACK's pipeline run clears it; a request of the same
// dialog waits (briefly) until it is cleared.
//
// ACKs that sipgo absorbs itself (those for non-2xx answers) are never
// cleared by the pipeline: they expire after ackHold, and a request behind
// one waits at most ackWait.
type ackOrder struct {
	mu      sync.Mutex
	pending map[string]*ackMark // guarded by mu; by Call-ID
	adds    int                 // guarded by mu; adds since the last sweep
}

type ackMark struct {
	n     int           // ACKs seen and not yet through the pipeline
	since time.Time     // the newest of them
	done  chan struct{} // closed when n drops to 0
}

const (
	ackWait = 200 * time.Millisecond // longest a request waits for an ACK ahead of it
	ackHold = 2 * time.Second        // marks older than this are forgotten
)

// seen notes a datagram, in arrival order: an ACK marks its dialog.
func (o *ackOrder) seen(data []byte) {
	if !bytes.HasPrefix(data, []byte("ACK ")) {
		return
	}
	id := callIDOf(data)
	if id == "" {
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pending == nil {
		o.pending = map[string]*ackMark{}
	}
	if o.adds++; o.adds >= 1024 {
		o.adds = 0
		for k, m := range o.pending {
			if now.Sub(m.since) > ackHold {
				o.release(k, m)
			}
		}
	}
	m := o.pending[id]
	if m == nil || now.Sub(m.since) > ackHold {
		if m != nil {
			o.release(id, m)
		}
		m = &ackMark{done: make(chan struct{})}
		o.pending[id] = m
	}
	m.n++
	m.since = now
}

// release forgets a mark and frees its waiters. Holds mu.
func (o *ackOrder) release(id string, m *ackMark) {
	close(m.done)
	delete(o.pending, id)
}

// through says an ACK of dialog id has been through the pipeline.
func (o *ackOrder) through(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if m := o.pending[id]; m != nil {
		if m.n--; m.n <= 0 {
			o.release(id, m)
		}
	}
}

// wait holds a request of dialog id until the ACKs seen before it are
// through, for at most ackWait.
func (o *ackOrder) wait(id string) {
	o.mu.Lock()
	m := o.pending[id]
	o.mu.Unlock()
	if m == nil {
		return
	}
	t := time.NewTimer(ackWait)
	defer t.Stop()
	select {
	case <-m.done:
	case <-t.C:
	}
}

// callIDOf returns the Call-ID of a raw message, or "".
func callIDOf(data []byte) string {
	head, _, _ := bytes.Cut(data, doubleCRLF)
	id := ""
	eachHeader(head, func(kind int, val, _ []byte) bool {
		if kind == hCallID {
			id = string(bytes.TrimSpace(val))
			return false
		}
		return true
	})
	return id
}
