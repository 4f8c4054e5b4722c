package server

import (
	"sync/atomic"
	"time"
)

// workers runs the pipeline on goroutines that outlive one request.
// sipgo starts a goroutine per message; the pipeline below it (guard,
// sanity, auth, routing, the proxy's transactions) needs a stack several
// times the 8 KB a new goroutine starts with, and growing it — copying
// the stack twice per request — was an eighth of the switch's CPU under
// load. A request handed to a worker that has run one before finds its
// stack grown. Workers are not a limit: when none is idle a new one
// starts (the limits on requests in progress are the guard's), and one
// idle for workerIdle ends.
type workers struct {
	jobs chan func()
	idle atomic.Int64 // workers waiting for a job
	n    atomic.Int64 // workers running
}

const workerIdle = 10 * time.Second

func newWorkers() *workers { return &workers{jobs: make(chan func())} }

// do runs f on an idle worker, or on a new one.
func (w *workers) do(f func()) {
	if w.idle.Load() > 0 {
		select {
		case w.jobs <- f:
			return
		default:
		}
	}
	w.n.Add(1)
	go w.loop(f)
}

func (w *workers) loop(f func()) {
	defer w.n.Add(-1)
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		f()
		f = nil
		t.Reset(workerIdle)
		w.idle.Add(1)
		select {
		case f = <-w.jobs:
			w.idle.Add(-1)
		case <-t.C:
			w.idle.Add(-1)
			return
		}
	}
}
