package sip

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"

	siplib "github.com/emiago/sipgo/sip"
)

// LoopKey is what a forwarded request's branch carries so the request is
// recognised if it comes back unchanged (RFC 3261 §16.3 step 4, §16.6
// step 8): a hash of the Request-URI as received, the From and To tags,
// the Call-ID, the CSeq number and Proxy-Require. A request that returns
// with another Request-URI is spiralling (legitimate) and gets another
// key; one that returns with the same key has looped.
func LoopKey(r *siplib.Request) string {
	// The fields are appended to one pooled buffer and hashed once (the
	// same bytes a streaming hash saw): no hasher, no formatted CSeq.
	lb := loopBufs.Get().(*loopBuf)
	defer loopBufs.Put(lb)
	lb.b = lb.b[:0]
	r.Recipient.StringWrite(lb)
	b := append(lb.b, 0)
	w := func(s string) {
		b = append(b, s...)
		b = append(b, 0)
	}
	if f := r.From(); f != nil {
		v, _ := f.Params.Get("tag")
		w(v)
	}
	if t := r.To(); t != nil {
		v, _ := t.Params.Get("tag")
		w(v)
	}
	if c := r.CallID(); c != nil {
		w(string(*c))
	}
	if c := r.CSeq(); c != nil {
		b = strconv.AppendUint(b, uint64(c.SeqNo), 10)
		b = append(b, ' ')
		w(string(c.MethodName))
	}
	for _, p := range r.GetHeaders("Proxy-Require") {
		w(p.Value())
	}
	lb.b = b
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// loopBuf is LoopKey's buffer, which a URI can write itself into.
type loopBuf struct{ b []byte }

var loopBufs = sync.Pool{New: func() any { return &loopBuf{b: make([]byte, 0, 512)} }}

func (l *loopBuf) WriteString(s string) (int, error) {
	l.b = append(l.b, s...)
	return len(s), nil
}

// Looped reports whether r carries a Via branch this switch wrote into
// an earlier copy of the same request: it has been here before,
// unchanged. Only Vias whose sent-by is ours count (ours reports it; RFC
// 3261 §16.3 step 4): another switch of a cluster computes the same key
// for the same request, and its Via is a hop, not a loop. Vias are
// matched as text, over every value (a header may carry several), so a
// Via sipgo left unparsed counts too.
func Looped(r *siplib.Request, ours func(host string, port int) bool) bool {
	key := ""
	for _, h := range r.GetHeaders("Via") {
		v := h.Value()
		if !strings.Contains(v, BranchPrefix) {
			continue
		}
		if key == "" {
			key = BranchPrefix + LoopKey(r) + "."
		}
		for one := range strings.SplitSeq(v, ",") {
			if strings.Contains(one, key) && ours(sentBy(one)) {
				return true
			}
		}
	}
	return false
}

// sentBy is the host and port of one Via value ("SIP/2.0/UDP h:p;...");
// port 0 when it names none.
func sentBy(via string) (string, int) {
	_, rest, _ := strings.Cut(strings.TrimSpace(via), " ")
	rest, _, _ = strings.Cut(strings.TrimSpace(rest), ";")
	rest = strings.TrimSpace(rest)
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.HasSuffix(rest, "]") {
		port, err := strconv.Atoi(rest[i+1:])
		if err == nil {
			return rest[:i], port
		}
	}
	return rest, 0
}
