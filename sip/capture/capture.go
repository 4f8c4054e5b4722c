// Package capture keeps the SIP messages of recent calls in memory, a
// bounded ring per call, so that an operator can see a call's ladder (or
// open it in Wireshark or sngrep) after the fact, as Homer would show
// it. A call is recorded from its INVITE: every message with that
// Call-ID, sent or received, until the call ring is full. Credentials are
// redacted before a message is kept.
package capture

import (
	"bytes"
	"regexp"
	"slices"
	"strconv"
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

// MaxBytes bounds the messages kept, all calls together: the oldest
// calls go first (those no dialog began before those one did).
const MaxBytes = 64 << 20

// maxCallID bounds a Call-ID taken as a key; a longer one is not kept.
const maxCallID = 256

type call struct {
	id      string
	msgs    []Message
	dropped int
	last    time.Time
	bytes   int
	kept    bool // a dialog began for it (Keep)
}

// Ring is the calls' messages. Safe for concurrent use; a nil Ring keeps
// nothing.
//
// A call is recorded from its INVITE as tentative; Keep (the dialog
// table, when the INVITE was accepted and routed) makes it kept. Each
// kind is bounded by Options.Calls, and tentative calls go first when
// MaxBytes is reached, so INVITEs that go nowhere (a flood, a scan)
// cannot push accepted calls out.
type Ring struct {
	opts Options
	now  func() time.Time

	mu        sync.Mutex
	calls     map[string]*call // guarded by mu
	tentative []*call          // guarded by mu; oldest first
	kept      []*call          // guarded by mu; oldest first
	bytes     int              // guarded by mu
	expired   time.Time        // guarded by mu; the last expiry sweep
}

// New returns a ring bounded by o.
func New(o Options) *Ring {
	return &Ring{opts: o, now: time.Now, calls: map[string]*call{}}
}

// Record keeps the messages in data (one datagram, or what one read of a
// stream gave: several messages, or a part of one) that belong to a
// recorded call or start one (an INVITE outside any). It takes no
// reference to data.
func (r *Ring) Record(sent bool, transport, laddr, raddr string, data []byte) {
	if r == nil || r.opts.Calls <= 0 {
		return
	}
	for _, msg := range split(data) {
		r.record(sent, transport, laddr, raddr, msg)
	}
}

// split cuts a stream read into its messages by Content-Length, past
// keep-alive CRLFs; a message the read ends within is the last piece.
func split(data []byte) [][]byte {
	var out [][]byte
	for len(out) < 16 {
		data = bytes.TrimLeft(data, "\r\n")
		if len(data) == 0 {
			break
		}
		end := bytes.Index(data, []byte("\r\n\r\n"))
		if end < 0 {
			out = append(out, data)
			break
		}
		n := end + 4
		if cl, err := strconv.Atoi(header(data[:end+2], "content-length", "l")); err == nil && cl > 0 {
			n = min(n+cl, len(data))
		}
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

func (r *Ring) record(sent bool, transport, laddr, raddr string, msg []byte) {
	id := header(msg, "call-id", "i")
	if id == "" || len(id) > maxCallID {
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
		for len(r.tentative) >= r.opts.Calls {
			r.drop(r.tentative[0])
		}
		c = &call{id: id}
		r.calls[id] = c
		r.tentative = append(r.tentative, c)
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
	cseq := strings.Join(strings.Fields(header([]byte(text), "cseq", "")), " ")
	if len(cseq) > 64 {
		cseq = ""
	}
	m := Message{Time: now, Sent: sent, Transport: strings.ToLower(transport), Local: laddr, Remote: raddr, First: first, Raw: text, cseq: cseq}
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
	size := len(text) + len(first) + len(laddr) + len(raddr) + 128
	c.bytes += size
	r.bytes += size
	for r.bytes > MaxBytes {
		oldest := r.tentative
		if len(oldest) == 0 || oldest[0] == c {
			oldest = r.kept
		}
		if len(oldest) == 0 || oldest[0] == c {
			break
		}
		r.drop(oldest[0])
	}
}

// Keep marks the call as accepted (its dialog began): it is no longer
// among the first to go.
func (r *Ring) Keep(callID string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls[callID]
	if c == nil || c.kept {
		return
	}
	r.tentative = slices.DeleteFunc(r.tentative, func(x *call) bool { return x == c })
	c.kept = true
	r.kept = append(r.kept, c)
	for len(r.kept) > r.opts.Calls {
		r.drop(r.kept[0])
	}
}

// drop forgets c; under mu.
func (r *Ring) drop(c *call) {
	delete(r.calls, c.id)
	r.bytes -= c.bytes
	list := &r.tentative
	if c.kept {
		list = &r.kept
	}
	if len(*list) > 0 && (*list)[0] == c { // the oldest: most drops
		(*list)[0] = nil
		*list = (*list)[1:]
		return
	}
	*list = slices.DeleteFunc(*list, func(x *call) bool { return x == c })
}

// expire forgets the calls past their retention, at most once a second;
// under mu.
func (r *Ring) expire(now time.Time) {
	if r.opts.Retention <= 0 || now.Sub(r.expired) < time.Second {
		return
	}
	r.expired = now
	for _, list := range [][]*call{r.tentative, r.kept} {
		for _, c := range slices.Clone(list) {
			if now.Sub(c.last) > r.opts.Retention {
				r.drop(c)
			}
		}
	}
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

// credential matches a digest parameter that proves the password
// (response, cnonce), wherever it stands: the backstop of Redact.
var credential = regexp.MustCompile(`(?i)\b(response|cnonce)(\s*=\s*)("[^"]*"?|[^,\s"]*)`)

// Redact replaces the credentials of Authorization and
// Proxy-Authorization headers (all but the username and realm, folded
// continuation lines too) with "[redacted]", and any response= or
// cnonce= value left anywhere (a body, a header cut by a read) with
// "[redacted]".
func Redact(msg string) string {
	if !hasFold(msg, "authorization") && !hasFold(msg, "response") && !hasFold(msg, "cnonce") {
		return msg // most messages: no copy, no split
	}
	lines := strings.Split(msg, "\r\n")
	started, inAuth := false, false
	for i, l := range lines {
		if l == "" {
			if started {
				break // the body
			}
			continue // keep-alive CRLFs before the message
		}
		started = true
		if l[0] == ' ' || l[0] == '\t' { // a folded continuation line
			if inAuth {
				lines[i] = "\x00"
			}
			continue
		}
		inAuth = false
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "authorization", "proxy-authorization":
		default:
			continue
		}
		inAuth = true
		value = strings.TrimSpace(value)
		scheme, params := value, ""
		if j := strings.IndexAny(value, " \t"); j >= 0 {
			scheme, params = value[:j], value[j+1:]
		}
		if strings.ContainsRune(scheme, '=') {
			scheme, params = "", value
		}
		// The whole header, continuation lines included, for its params.
		for k := i + 1; k < len(lines) && lines[k] != "" && (lines[k][0] == ' ' || lines[k][0] == '\t'); k++ {
			params += " " + strings.TrimSpace(lines[k])
		}
		var kept []string
		for _, p := range splitParams(params) {
			k, _, _ := strings.Cut(p, "=")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "username", "realm":
				kept = append(kept, strings.TrimSpace(p))
			}
		}
		lines[i] = strings.TrimSpace(name + ": " + scheme + " " + strings.Join(append(kept, "[redacted]"), ", "))
	}
	lines = slices.DeleteFunc(lines, func(l string) bool { return l == "\x00" })
	return credential.ReplaceAllString(strings.Join(lines, "\r\n"), `${1}${2}"[redacted]"`)
}

// hasFold reports whether s contains sub (lower case ASCII) in any case,
// without allocating.
func hasFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for ; j < len(sub); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == len(sub) {
			return true
		}
	}
	return false
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
