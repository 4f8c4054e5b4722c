// Package capture keeps the SIP messages of recent calls in memory, a
// bounded ring per call, so that an operator can see a call's ladder (or
// open it in Wireshark or sngrep) after the fact, as Homer would show
// it. A call is recorded from its INVITE: every message with that
// Call-ID, sent or received, until the call ring is full. Credentials are
// redacted before a message is kept.
package capture

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"time"
)

// Message is one SIP message as it crossed a listener.
type Message struct {
	Time      time.Time `json:"time"`
	Sent      bool      `json:"sent"` // by voxvisor; false: received
	Transport string    `json:"transport"`
	Local     string    `json:"local"`
	Remote    string    `json:"remote"`
	First     string    `json:"first_line"`
	Raw       string    `json:"raw"` // credentials redacted, cut at MaxMessage bytes

	cseq string // the CSeq header, "2 INVITE"
}

// response reports whether the message is a response.
func (m *Message) response() bool { return strings.HasPrefix(m.First, "SIP/2.0 ") }

// answers reports whether received message m is a consequence of sent
// message s: a response to s, or the ACK of s (a final response to an
// INVITE), from the address s went to.
func (m *Message) answers(s *Message) bool {
	if m.Sent || m.Remote != s.Remote || m.cseq == "" {
		return false
	}
	if !s.response() {
		return m.response() && m.cseq == s.cseq
	}
	n, method, _ := strings.Cut(s.cseq, " ")
	return method == "INVITE" && m.cseq == n+" ACK"
}

// reorderWindow is how far back a sent message is placed before the
// answers to it that were recorded first: sipgo traces a message after
// its write returns, so on a fast path the answer's trace can win.
const reorderWindow = 200 * time.Millisecond

// Options bound what a Ring keeps.
type Options struct {
	Calls     int           // calls kept; the oldest goes first. 0: none
	Messages  int           // messages kept per call; later ones are dropped and counted
	Retention time.Duration // a call is forgotten this long after its last message
}

// MaxMessage is the most of one message kept (bodies beyond are cut).
const MaxMessage = 8 << 10

type call struct {
	id      string
	msgs    []Message
	dropped int
	last    time.Time
}

// Ring is the calls' messages. Safe for concurrent use; a nil Ring keeps
// nothing.
type Ring struct {
	opts Options
	now  func() time.Time

	mu    sync.Mutex
	calls map[string]*call // guarded by mu
	order []*call          // guarded by mu; oldest first
}

// New returns a ring bounded by o.
func New(o Options) *Ring {
	return &Ring{opts: o, now: time.Now, calls: map[string]*call{}}
}

// Record keeps msg if it belongs to a recorded call or starts one (an
// INVITE outside any). It takes no reference to msg.
func (r *Ring) Record(sent bool, transport, laddr, raddr string, msg []byte) {
	if r == nil || r.opts.Calls <= 0 {
		return
	}
	id := header(msg, "call-id", "i")
	if id == "" {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls[id]
	if c == nil {
		if !bytes.HasPrefix(msg, []byte("INVITE ")) {
			return
		}
		r.expire(now)
		for len(r.order) >= r.opts.Calls {
			delete(r.calls, r.order[0].id)
			r.order = r.order[1:]
		}
		c = &call{id: id}
		r.calls[id] = c
		r.order = append(r.order, c)
	}
	c.last = now
	if len(c.msgs) >= r.opts.Messages {
		c.dropped++
		return
	}
	raw := msg
	if len(raw) > MaxMessage {
		raw = raw[:MaxMessage]
	}
	text := Redact(string(raw))
	first, _, _ := strings.Cut(text, "\r\n")
	m := Message{Time: now, Sent: sent, Transport: strings.ToLower(transport), Local: laddr, Remote: raddr, First: first, Raw: text,
		cseq: strings.Join(strings.Fields(header(msg, "cseq", "")), " ")}
	at := len(c.msgs)
	if sent {
		for i := len(c.msgs) - 1; i >= 0 && now.Sub(c.msgs[i].Time) < reorderWindow; i-- {
			if c.msgs[i].answers(&m) {
				at = i
			}
		}
	}
	if at < len(c.msgs) {
		m.Time = c.msgs[at].Time
	}
	c.msgs = slices.Insert(c.msgs, at, m)
}

// expire forgets the calls past their retention; under mu.
func (r *Ring) expire(now time.Time) {
	if r.opts.Retention <= 0 {
		return
	}
	keep := r.order[:0]
	for _, c := range r.order {
		if now.Sub(c.last) > r.opts.Retention {
			delete(r.calls, c.id)
			continue
		}
		keep = append(keep, c)
	}
	clear(r.order[len(keep):])
	r.order = keep
}

// Ladder returns the call's messages in the order they crossed, and how
// many more were dropped; ok is false for a call not (or no longer) kept.
func (r *Ring) Ladder(callID string) (msgs []Message, dropped int, ok bool) {
	if r == nil {
		return nil, 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.now())
	c := r.calls[callID]
	if c == nil {
		return nil, 0, false
	}
	return append([]Message(nil), c.msgs...), c.dropped, true
}

// Len is the number of calls kept.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// header returns the value of the first header named long or short
// (compact form) in msg's header section, trimmed; "" if none.
func header(msg []byte, long, short string) string {
	head := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		head = msg[:i]
	}
	for len(head) > 0 {
		line := head
		if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
			line, head = head[:i], head[i+2:]
		} else {
			head = nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		n := string(bytes.TrimSpace(name))
		if strings.EqualFold(n, long) || strings.EqualFold(n, short) {
			return string(bytes.TrimSpace(value))
		}
	}
	return ""
}

// Redact replaces the credentials of Authorization and
// Proxy-Authorization headers (all but the username and realm) with
// "[redacted]".
func Redact(msg string) string {
	if !strings.Contains(strings.ToLower(msg), "authorization") {
		return msg
	}
	lines := strings.Split(msg, "\r\n")
	for i, l := range lines {
		if l == "" {
			break // the body
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "authorization", "proxy-authorization":
		default:
			continue
		}
		scheme, params, _ := strings.Cut(strings.TrimSpace(value), " ")
		var kept []string
		for _, p := range splitParams(params) {
			k, _, _ := strings.Cut(p, "=")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "username", "realm":
				kept = append(kept, strings.TrimSpace(p))
			}
		}
		lines[i] = name + ": " + scheme + " " + strings.Join(append(kept, "[redacted]"), ", ")
	}
	return strings.Join(lines, "\r\n")
}

// splitParams splits a digest parameter list at the commas outside
// quotes.
func splitParams(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
