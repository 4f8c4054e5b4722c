// Package logging builds voxvisor's slog loggers: the main log, the SIP
// message trace (a separate sink, so it can be routed on its own) and the
// quiet, redacting logger handed to sipgo. It is not for metrics.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
)

// New returns a logger writing to w at level in format ("text" or "json").
func New(w io.Writer, level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: ParseLevel(level)}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// ParseLevel maps a config level name to a slog level (default info).
func ParseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Discard is a logger that writes nothing.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// secretAttrs are attribute keys whose values may hold credentials or whole
// SIP messages (with Authorization headers); they never reach a log line.
var secretAttrs = map[string]bool{
	"data": true, "msg": true, "req": true, "res": true, "request": true,
	"response": true, "authorization": true, "password": true, "ha1": true,
	"invite_request": true, "invite_response": true, "cancel_request": true,
}

// Counter is incremented for every record a LibraryHandler sees whose
// message matches, e.g. sipgo's "failed to parse".
type Counter struct {
	Match string
	N     atomic.Uint64
}

// Library wraps next for a third-party library (sipgo): it passes only
// records at or above min, drops attributes that may hold secrets or raw
// messages, and counts records whose message contains a counter's Match.
func Library(next *slog.Logger, min slog.Level, counters ...*Counter) *slog.Logger {
	return slog.New(&libHandler{next: next.Handler(), min: min, counters: counters})
}

type libHandler struct {
	next     slog.Handler
	min      slog.Level
	counters []*Counter
}

func (h *libHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.next.Enabled(ctx, l)
}

func (h *libHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, c := range h.counters {
		if strings.Contains(r.Message, c.Match) {
			c.N.Add(1)
		}
	}
	if r.Level < h.min {
		return nil
	}
	clean := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if secretAttrs[strings.ToLower(a.Key)] {
			clean.AddAttrs(slog.String(a.Key, "[redacted]"))
		} else {
			clean.AddAttrs(a)
		}
		return true
	})
	return h.next.Handle(ctx, clean)
}

func (h *libHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		if !secretAttrs[strings.ToLower(a.Key)] {
			kept = append(kept, a)
		}
	}
	return &libHandler{next: h.next.WithAttrs(kept), min: h.min, counters: h.counters}
}

func (h *libHandler) WithGroup(name string) slog.Handler {
	return &libHandler{next: h.next.WithGroup(name), min: h.min, counters: h.counters}
}

// Tracer writes whole SIP messages to its own sink. It is separate from the
// log on purpose: traces hold credentials and are switched on only to debug.
type Tracer struct {
	w io.Writer
}

// NewTracer returns a tracer writing to w, or nil (tracing off) when w is nil.
func NewTracer(w io.Writer) *Tracer {
	if w == nil {
		return nil
	}
	return &Tracer{w: w}
}

// SIPTraceRead implements sipgo's SIPTracer.
func (t *Tracer) SIPTraceRead(transport, laddr, raddr string, msg []byte) {
	fmt.Fprintf(t.w, "--- recv %s %s <- %s\n%s\n", transport, laddr, raddr, msg)
}

// SIPTraceWrite implements sipgo's SIPTracer.
func (t *Tracer) SIPTraceWrite(transport, laddr, raddr string, msg []byte) {
	fmt.Fprintf(t.w, "--- send %s %s -> %s\n%s\n", transport, laddr, raddr, msg)
}
