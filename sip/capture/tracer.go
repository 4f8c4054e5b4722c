package capture

import (
	"sync"

	siplib "github.com/emiago/sipgo/sip"
)

// sipgo traces messages through one process-wide tracer; mux hands each
// message to every attached one (the rings of the switches in this
// process, and log.trace_sip's writer).
var mux struct {
	once  sync.Once
	mu    sync.RWMutex
	sinks map[*siplib.SIPTracer]siplib.SIPTracer
}

type muxTracer struct{}

func (muxTracer) SIPTraceRead(transport, laddr, raddr string, msg []byte) {
	mux.mu.RLock()
	defer mux.mu.RUnlock()
	for _, t := range mux.sinks {
		t.SIPTraceRead(transport, laddr, raddr, msg)
	}
}

func (muxTracer) SIPTraceWrite(transport, laddr, raddr string, msg []byte) {
	mux.mu.RLock()
	defer mux.mu.RUnlock()
	for _, t := range mux.sinks {
		t.SIPTraceWrite(transport, laddr, raddr, msg)
	}
}

// Attach has t see every SIP message sipgo reads and writes in this
// process until detach is called. Call it before any sipgo transport
// runs: the first call turns sipgo's tracing on, which its transports
// read unguarded.
func Attach(t siplib.SIPTracer) (detach func()) {
	mux.once.Do(func() {
		mux.sinks = map[*siplib.SIPTracer]siplib.SIPTracer{}
		siplib.SIPDebugTracer(muxTracer{})
		siplib.SIPDebug = true
	})
	key := &t
	mux.mu.Lock()
	mux.sinks[key] = t
	mux.mu.Unlock()
	return func() {
		mux.mu.Lock()
		delete(mux.sinks, key)
		mux.mu.Unlock()
	}
}

// SIPTraceRead records a received message.
func (r *Ring) SIPTraceRead(transport, laddr, raddr string, msg []byte) {
	r.Record(false, transport, laddr, raddr, msg)
}

// SIPTraceWrite records a sent message.
func (r *Ring) SIPTraceWrite(transport, laddr, raddr string, msg []byte) {
	r.Record(true, transport, laddr, raddr, msg)
}
