package logging

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"log/syslog"
	"strings"
	"sync"
)

// Facilities by name, for the configuration.
var Facilities = map[string]syslog.Priority{
	"kern": syslog.LOG_KERN, "user": syslog.LOG_USER, "daemon": syslog.LOG_DAEMON,
	"local0": syslog.LOG_LOCAL0, "local1": syslog.LOG_LOCAL1, "local2": syslog.LOG_LOCAL2,
	"local3": syslog.LOG_LOCAL3, "local4": syslog.LOG_LOCAL4, "local5": syslog.LOG_LOCAL5,
	"local6": syslog.LOG_LOCAL6, "local7": syslog.LOG_LOCAL7,
}

// Syslog dials a syslog receiver: network "" for the local socket, or
// "udp"/"tcp" with addr, at facility, with tag.
func Syslog(network, addr, facility, tag string) (*syslog.Writer, error) {
	f, ok := Facilities[strings.ToLower(facility)]
	if !ok {
		return nil, fmt.Errorf("syslog facility %q: use one of kern, user, daemon, local0..local7", facility)
	}
	w, err := syslog.Dial(network, addr, f|syslog.LOG_INFO, tag)
	if err != nil {
		return nil, fmt.Errorf("syslog %s %s: %w", network, addr, err)
	}
	return w, nil
}

// SyslogHandler writes records to a syslog writer, mapping slog levels to
// syslog severities: debug, info, notice (between info and warn),
// warning, err, and crit (above error).
type SyslogHandler struct {
	w     *syslog.Writer
	level slog.Leveler
	mu    *sync.Mutex
	buf   *bytes.Buffer
	text  slog.Handler // formats the message and attributes, without time and level
}

// NewSyslogHandler returns a handler writing to w from level up.
func NewSyslogHandler(w *syslog.Writer, level slog.Leveler) *SyslogHandler {
	h := &SyslogHandler{w: w, level: level, mu: &sync.Mutex{}, buf: &bytes.Buffer{}}
	h.text = slog.NewTextHandler(h.buf, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{} // syslog stamps the time, the priority says the level
			}
			return a
		}})
	return h
}

// Enabled implements slog.Handler.
func (h *SyslogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *SyslogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	if err := h.text.Handle(ctx, r); err != nil {
		return err
	}
	msg := strings.TrimSpace(h.buf.String())
	switch {
	case r.Level < slog.LevelInfo:
		return h.w.Debug(msg)
	case r.Level < slog.LevelInfo+2:
		return h.w.Info(msg)
	case r.Level < slog.LevelWarn:
		return h.w.Notice(msg)
	case r.Level < slog.LevelError:
		return h.w.Warning(msg)
	case r.Level == slog.LevelError:
		return h.w.Err(msg)
	default:
		return h.w.Crit(msg)
	}
}

// WithAttrs implements slog.Handler.
func (h *SyslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.text = h.text.WithAttrs(as)
	return &c
}

// WithGroup implements slog.Handler.
func (h *SyslogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.text = h.text.WithGroup(name)
	return &c
}

// Fanout sends every record to each handler.
func Fanout(hs ...slog.Handler) slog.Handler { return fanout(hs) }

type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	var first error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}
