// Package sip is voxvisor's SIP core: the request pipeline that every
// inbound request runs through, and the types its handlers share.
//
// A pipeline is a chain of small Handlers (sanity → registrar → auth →
// route → forward), each with one job, in the manner of http.Handler.
// Sub-packages provide the handlers (registrar, proxy), the location
// service, digest authentication and the server that binds sipgo's
// transports to the pipeline. This package neither parses SDP nor moves
// RTP.
package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	siplib "github.com/emiago/sipgo/sip"
)

// BranchPrefix starts the Via branch of every request this server
// forwards or originates, so stray responses to them can be recognised.
const BranchPrefix = siplib.RFC3261BranchMagicCookie + "vx"

// Request is one inbound request with its server transaction and what the
// pipeline has learnt about it so far.
type Request struct {
	*siplib.Request
	Tx siplib.ServerTransaction // nil for ACK and stateless requests

	// Source is the address the request came from, Transport "udp", "tcp" or "tls".
	Source    netip.AddrPort
	Transport string

	// User is the authenticated local user, set by the auth handler.
	User string

	// Set by routing, for CDRs: the call's direction (local, inbound,
	// outbound, transit), the trunk it came in or went out on, and the
	// number as normalised by the dial plan.
	Direction string
	Trunk     string
	Dialed    string
	// Codecs is the trunk's codec policy for this call; empty: the global one.
	Codecs []string
	// Hop says the request came from another node of the cluster over a
	// signed internal hop, to a contact whose flow this node holds.
	Hop bool

	loopKey string // LoopKey, computed once
}

// LoopKey is the request's loop key as received (see LoopKey), computed
// on first use. Call it before the Request-URI is changed.
func (r *Request) LoopKey() string {
	if r.loopKey == "" {
		r.loopKey = LoopKey(r.Request)
	}
	return r.loopKey
}

// Handler handles a request. It either responds itself (through Respond)
// and returns nil, or returns an error; a *StatusError's code is then sent
// to the caller, any other error becomes 500.
type Handler interface {
	ServeSIP(ctx context.Context, r *Request) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) error

// ServeSIP calls f.
func (f HandlerFunc) ServeSIP(ctx context.Context, r *Request) error { return f(ctx, r) }

// Middleware wraps a handler with one step of the pipeline.
type Middleware func(next Handler) Handler

// Chain builds a pipeline: Chain(a, b)(h) runs a, then b, then h.
func Chain(ms ...Middleware) Middleware {
	return func(h Handler) Handler {
		for i := len(ms) - 1; i >= 0; i-- {
			h = ms[i](h)
		}
		return h
	}
}

// StatusError is a failure that maps to a SIP final response.
type StatusError struct {
	Code   int
	Reason string
	// Headers are added to the response (Min-Expires, WWW-Authenticate, ...).
	Headers []siplib.Header
	Err     error // the cause, for the log; never sent
}

func (e *StatusError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Code, e.Reason, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Reason)
}

func (e *StatusError) Unwrap() error { return e.Err }

// Status returns a *StatusError with code and reason.
func Status(code int, reason string, hdrs ...siplib.Header) *StatusError {
	return &StatusError{Code: code, Reason: reason, Headers: hdrs}
}

// StatusOf returns the SIP status for err: its own for a *StatusError,
// 500 otherwise.
func StatusOf(err error) *StatusError {
	var se *StatusError
	if errors.As(err, &se) {
		return se
	}
	return &StatusError{Code: 500, Reason: "Server Internal Error", Err: err}
}

// Respond sends a final or provisional response built from r.
func (r *Request) Respond(code int, reason string, body []byte, hdrs ...siplib.Header) error {
	res := siplib.NewResponseFromRequest(r.Request, code, reason, body)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	return r.RespondWith(res)
}

// RespondWith sends res on the request's transaction.
func (r *Request) RespondWith(res *siplib.Response) error {
	if r.Tx == nil {
		return errors.New("no transaction to respond on (ACK?)")
	}
	return r.Tx.Respond(res)
}
