// Package siptest helps test SIP handlers without sockets, as httptest
// does for HTTP: it parses requests from text and records the responses a
// handler sends on a fake server transaction.
package siptest

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
)

// Request parses raw (lines joined with \n or \r\n) into a pipeline
// request from source over transport, with a Recorder as its transaction.
func Request(raw, source, transport string) (*sip.Request, *Recorder, error) {
	raw = strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n")
	if !strings.HasSuffix(raw, "\r\n\r\n") {
		raw = strings.TrimRight(raw, "\r\n") + "\r\n\r\n"
	}
	msg, err := siplib.ParseMessage([]byte(raw))
	if err != nil {
		return nil, nil, err
	}
	req, ok := msg.(*siplib.Request)
	if !ok {
		return nil, nil, fmt.Errorf("not a request")
	}
	req.SetSource(source)
	req.SetTransport(strings.ToUpper(transport))
	rec := &Recorder{done: make(chan struct{})}
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return nil, nil, err
	}
	return &sip.Request{Request: req, Tx: rec, Source: ap, Transport: transport}, rec, nil
}

// Recorder is a siplib.ServerTransaction that keeps what was sent on it.
type Recorder struct {
	mu        sync.Mutex
	responses []*siplib.Response
	done      chan struct{}
	once      sync.Once
	onCancel  siplib.FnTxCancel
}

var _ siplib.ServerTransaction = (*Recorder)(nil)

// Respond records res.
func (r *Recorder) Respond(res *siplib.Response) error {
	r.mu.Lock()
	r.responses = append(r.responses, res)
	r.mu.Unlock()
	return nil
}

// Responses returns every response sent so far.
func (r *Recorder) Responses() []*siplib.Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*siplib.Response(nil), r.responses...)
}

// Last returns the last response sent, or nil.
func (r *Recorder) Last() *siplib.Response {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.responses) == 0 {
		return nil
	}
	return r.responses[len(r.responses)-1]
}

// Acks implements siplib.ServerTransaction.
func (r *Recorder) Acks() <-chan *siplib.Request { return nil }

// OnCancel implements siplib.ServerTransaction.
func (r *Recorder) OnCancel(f siplib.FnTxCancel) bool {
	r.mu.Lock()
	r.onCancel = f
	r.mu.Unlock()
	return true
}

// Cancel is the caller's CANCEL arriving for the transaction: what
// OnCancel registered is called. It reports whether anything was.
func (r *Recorder) Cancel() bool {
	r.mu.Lock()
	f := r.onCancel
	r.mu.Unlock()
	if f == nil {
		return false
	}
	f(nil)
	return true
}

// Terminate implements siplib.Transaction.
func (r *Recorder) Terminate() { r.once.Do(func() { close(r.done) }) }

// OnTerminate implements siplib.Transaction.
func (r *Recorder) OnTerminate(siplib.FnTxTerminate) bool { return true }

// Done implements siplib.Transaction.
func (r *Recorder) Done() <-chan struct{} { return r.done }

// Err implements siplib.Transaction.
func (r *Recorder) Err() error { return nil }
