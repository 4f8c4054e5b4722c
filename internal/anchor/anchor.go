// Package anchor is the glue that anchors a call's media: the proxy hands
// it each message that may carry SDP; it asks media for relay ports,
// tells each relay leg where its side wants media, and has sdp rewrite
// the body to point at the relay. Only streams both sides accept hold
// relay ports, and it bounds the streams one offer (Options.MaxStreams)
// and one source's calls (PerSource) may anchor. It tells each leg the IP
// its side's SIP comes from (so a NATed phone's media can be learned
// there) and tells the session when the call is answered (the media
// timeout runs from then). A call's end is not its business: the dialog
// table (sip/dialog) ends calls, and tells the anchor, an observer, to
// release their media.
//
// A stream's kind follows its m-line: RTP, or T.38 fax over UDPTL
// (m=image ... udptl t38), whose legs forward datagrams without RTCP. A
// re-INVITE that turns m=audio into m=image at the same index (the usual
// switch to fax) keeps the stream's ports and turns its legs to UDPTL
// from the offer on, so the first fax datagrams after the 2xx are not
// lost; one that rejects audio (port 0) and adds an image line gives the
// image stream ports of its own and releases the audio's at the final
// answer. Back to audio the same ways. A failed re-INVITE (T.38 refused
// with 488, the usual fallback to fax over G.711) puts every leg back to
// the last agreed kind and addresses.
//
// It is the only place where SIP, SDP and RTP meet, and it holds no
// protocol logic of its own beyond offer/answer bookkeeping.
package anchor

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/sdp"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/dialog"
	"github.com/voxvisor/voxvisor/sip/guard"
	"github.com/voxvisor/voxvisor/sip/proxy"
)

// Mode says which calls are anchored.
type Mode string

// Modes.
const (
	Always Mode = "always"
	Never  Mode = "never"
	NAT    Mode = "nat" // only calls whose caller is behind NAT
)

// DefaultMaxStreams is how many streams with a port one offer may have
// when Options.MaxStreams is 0.
const DefaultMaxStreams = 4

// Options configure an anchor.
type Options struct {
	Mode   Mode
	Policy sdp.Policy // the codecs allowed; a trunk's own list replaces it for its calls
	// MaxStreams is how many streams with a port (m= lines not rejected)
	// one offer may have: an offer in a request with more is refused with
	// 488 before any port is taken; in a response (which cannot be
	// refused) the streams beyond it are rejected (port 0). 0:
	// DefaultMaxStreams.
	MaxStreams int
}

// Anchor implements proxy.Hook. Safe for concurrent use.
type Anchor struct {
	relay      *media.Relay // set once
	policy     sdp.Policy   // set once
	mode       Mode         // set once
	maxStreams int          // set once
	log        *slog.Logger

	// PerSource, when set before serving, bounds the relay port pairs the
	// calls of one source (the caller's address) hold at once; a call that
	// would go over gets 503. Trusted sources are exempt (guard's Streams).
	PerSource *guard.Slots

	// Counters for metrics: offers refused for more streams than
	// MaxStreams (488), and for want of relay ports (503).
	TooManyStreams atomic.Uint64
	PoolExhausted  atomic.Uint64

	exhausted atomic.Bool // the pool refused the last call (logged once)

	// Lock order: a call's mu, then the anchor's. The anchor's mu guards
	// the table only and is never held while a call's is taken, or while
	// relay ports are bound: calls are anchored side by side.
	mu    sync.Mutex
	calls map[string]*call // guarded by mu; by Call-ID
}

var (
	_ proxy.Hook      = (*Anchor)(nil)
	_ dialog.Observer = (*Anchor)(nil)
)

// New returns an anchor over relay.
func New(relay *media.Relay, opts Options, log *slog.Logger) *Anchor {
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	return &Anchor{relay: relay, mode: opts.Mode, policy: opts.Policy, maxStreams: opts.MaxStreams, log: log, calls: map[string]*call{}}
}

// side is who sent a message: the caller (A) or the callee (B).
type side int

const (
	sideA side = 0
	sideB side = 1
)

// call is one anchored call's offer/answer state. Its fields are guarded
// by its mu.
type call struct {
	mu       sync.Mutex
	gone     bool // dropped from the anchor: a late message finds nothing
	id       string
	anchored bool
	policy   sdp.Policy    // the trunk's codecs, else the global policy
	origins  [2]sdp.Origin // o= of the SDP delivered to A ([0]) and to B ([1])
	pending  bool          // an offer awaits its answer
	offerer  side
	offered  []sdp.Stream // the pending offer's streams (port 0: no relay ports)
	answer   []sdp.Stream // the pending offer's answer, once one came (maybe early)
	accepted []bool       // by m-line: the last answer accepted the stream
	// agreed is, by side, what its SDP said in the last offer/answer made
	// final: a failed re-INVITE puts the legs back to it.
	agreed [2][]sdp.Stream
	early  bool      // the pending offer has an early (18x) answer
	tags   [2]string // each side's tag: which side sent a message
	up     bool      // a 2xx answered the initial INVITE

	src   netip.Addr // the caller's source address, charged for the ports
	pairs int        // relay port pairs charged to src (PerSource)
	// sig is the IP each side's SIP messages last came from (a request's
	// source, a response's): the relay learns a NATed side's media there.
	sig [2]netip.Addr

	// The last body processed per side, so a retransmission (or an answer
	// repeated in 18x and 200) gets the same rewrite and is not taken for
	// a new offer.
	lastIn  [2]string
	lastOut [2][]byte
}

// Request implements proxy.Hook.
func (a *Anchor) Request(r *sip.Request, out *siplib.Request) error {
	id := callID(r.Request)
	from := tag(r.From().Params)
	a.mu.Lock()
	c := a.calls[id]
	if c == nil {
		if r.Method != siplib.INVITE || tag(r.To().Params) != "" {
			a.mu.Unlock()
			return nil // not a call we anchor
		}
		c = &call{id: id, anchored: a.shouldAnchor(r), policy: a.policy, src: r.Source.Addr().Unmap()}
		if len(r.Codecs) > 0 {
			c.policy = sdp.Policy{Allow: r.Codecs}
		}
		c.tags[sideA] = from
		a.calls[id] = c
	}
	a.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return nil
	}
	s := sideA
	if from != c.tags[sideA] {
		s = sideB
	}
	if r.Source.IsValid() {
		c.sig[s] = r.Source.Addr().Unmap()
	}
	if !c.anchored || !isSDP(r.Request) {
		return nil
	}
	body, err := a.handle(c, s, r.Body(), true, true)
	if err != nil {
		if c.tags[sideB] == "" && !c.up {
			a.drop(c)
		}
		return err
	}
	out.SetBody(body)
	return nil
}

// Response implements proxy.Hook. r is the request the response answers;
// the response comes from the other side than r's sender.
func (a *Anchor) Response(r *sip.Request, res *siplib.Response) error {
	c := a.lock(callID(r.Request))
	if c == nil {
		return nil
	}
	defer c.mu.Unlock()
	s := sideB
	if tag(r.From().Params) != c.tags[sideA] {
		s = sideA
	}
	if src, err := netip.ParseAddrPort(res.Source()); err == nil {
		c.sig[s] = src.Addr().Unmap()
	}
	if r.Method == siplib.INVITE && res.StatusCode >= 200 && res.StatusCode < 300 && !c.up && s == sideB {
		c.up = true
		c.tags[sideB] = tag(res.To().Params)
		if sess := a.relay.Get(c.id); sess != nil {
			sess.SetAnswered() // the media timeout runs from now
		}
	}
	if !c.anchored || (res.StatusCode >= 300) || res.StatusCode < 180 {
		return nil
	}
	if !isSDP(res) {
		if r.Method == siplib.INVITE && res.StatusCode < 300 && res.StatusCode >= 200 && c.pending && c.early && c.offerer != s {
			// The answer came early (a reliable 18x); the 2xx makes it final.
			a.conclude(c)
		}
		return nil
	}
	body, err := a.handle(c, s, res.Body(), res.StatusCode >= 200, false)
	if err != nil {
		return err
	}
	res.SetBody(body)
	return nil
}

// Done implements proxy.Hook: a failed re-INVITE puts the media back as
// it was. (The end of a call comes through DialogEnded.)
func (a *Anchor) Done(r *sip.Request, status int) {
	c := a.lock(callID(r.Request))
	if c == nil {
		return
	}
	defer c.mu.Unlock()
	switch {
	case r.Method == siplib.INVITE && status >= 300 && c.up && c.pending:
		// A failed re-INVITE: the old session stands, streams its offer
		// added give their ports back, and the legs its offer changed (an
		// address, audio to T.38) are as they were.
		c.pending = false
		if c.anchored {
			a.settle(c)
			a.restore(c)
		}
	}
}

// lock returns call id locked, or nil when there is none.
func (a *Anchor) lock(id string) *call {
	a.mu.Lock()
	c := a.calls[id]
	a.mu.Unlock()
	if c == nil {
		return nil
	}
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return nil
	}
	return c
}

// drop forgets c and frees its media. c.mu is held.
func (a *Anchor) drop(c *call) {
	c.gone = true
	a.mu.Lock()
	if a.calls[c.id] == c {
		delete(a.calls, c.id)
	}
	a.mu.Unlock()
	a.relay.Release(c.id)
	a.give(c, c.pairs)
}

// DialogEnded implements dialog.Observer: the call's media is released.
func (a *Anchor) DialogEnded(d *dialog.Dialog, _ dialog.Ending) { a.Release(d.ID) }

// Release forgets call id and frees its media.
func (a *Anchor) Release(id string) {
	c := a.lock(id)
	if c == nil {
		a.relay.Release(id) // a session without a call (there should be none)
		return
	}
	defer c.mu.Unlock()
	a.drop(c)
}

// Has reports whether call id is tracked here.
func (a *Anchor) Has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[id] != nil
}

// Calls returns the number of calls tracked.
func (a *Anchor) Calls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

// handle processes one SDP body from side s: an offer when none is
// pending, else the answer to the pending one. It returns the body to
// deliver to the other side. final says an answer is final (a 2xx, an
// ACK) rather than early; inRequest that an offer can be refused.
//
// Only streams both sides accept hold relay ports: an offer's streams
// with port 0 get none, and when a final answer arrives the streams it
// rejected (or the offer removed) give theirs back.
func (a *Anchor) handle(c *call, s side, raw []byte, final, inRequest bool) ([]byte, error) {
	answer := c.pending && c.offerer != s
	if c.lastIn[s] == string(raw) && c.lastOut[s] != nil {
		if final && answer {
			a.conclude(c)
		}
		return c.lastOut[s], nil
	}
	d, err := sdp.Parse(raw)
	if err != nil {
		return nil, &sip.StatusError{Code: 400, Reason: "Bad SDP", Err: err}
	}
	streams := sdp.Streams(d)
	want := make([]bool, len(streams))
	if answer {
		for i, st := range streams {
			want[i] = st.Port != 0 && i < len(c.offered) && c.offered[i].Port != 0
		}
	} else {
		n := 0
		for _, st := range streams {
			if st.Port != 0 {
				n++
			}
		}
		if n > a.maxStreams && inRequest {
			a.TooManyStreams.Add(1)
			return nil, &sip.StatusError{Code: 488, Reason: "Not Acceptable Here",
				Err: fmt.Errorf("%d media streams offered, media.max_streams is %d", n, a.maxStreams),
				Headers: []siplib.Header{siplib.NewHeader("Warning",
					fmt.Sprintf(`399 voxvisor "too many media streams: %d offered, at most %d"`, n, a.maxStreams))}}
		}
		n = 0
		for i, st := range streams {
			if st.Port == 0 {
				continue
			}
			if n++; n > a.maxStreams {
				streams[i].Port = 0 // rejected here: the answer cannot use it
				continue
			}
			want[i] = true
		}
	}
	sess, fresh, err := a.open(c, want)
	if err != nil {
		return nil, err
	}
	other := 1 - s
	eps := make([]sdp.Endpoint, len(streams))
	for i, st := range streams {
		eps[i] = sdp.Endpoint{Addr: a.relay.Addr()} // no port: rejected
		stream := sess.Stream(i)
		if !want[i] || stream == nil {
			continue
		}
		mine, theirs := stream.Legs[s], stream.Legs[other]
		stream.Legs[sideA].SetSignalling(c.sig[sideA])
		stream.Legs[sideB].SetSignalling(c.sig[sideB])
		mux := st.Mux
		if answer {
			// The offerer muxes only if the answer accepted it.
			o := c.offered[i]
			offLeg := stream.Legs[c.offerer]
			offLeg.SetRemote(addrPort(o.Addr, o.Port), rtcpAddr(o, st.Mux), o.Mux && st.Mux, o.Held())
		}
		mine.SetRemote(addrPort(st.Addr, st.Port), rtcpAddr(st, mux), mux, st.Held())
		mine.SetClockRate(st.ClockRate)
		mine.SetSecure(st.Secure())
		// The m-line's kind is both legs': from the offer on, so the
		// answerer's first datagrams after its 2xx pass.
		stream.Legs[sideA].SetUDPTL(st.UDPTL())
		stream.Legs[sideB].SetUDPTL(st.UDPTL())
		p := theirs.Port()
		eps[i] = sdp.Endpoint{Addr: a.relay.Addr(), RTPPort: p, RTCPPort: p + 1, Mux: mux}
		if mux {
			eps[i].RTCPPort = p
		}
	}
	body, err := sdp.Rewrite(d, eps, c.policy, &c.origins[other])
	if err != nil {
		for _, i := range fresh {
			if sess.Drop(i) {
				a.give(c, 2)
			}
		}
		if errors.Is(err, sdp.ErrNoCodec) {
			return nil, &sip.StatusError{Code: 488, Reason: "Not Acceptable Here", Err: err,
				Headers: []siplib.Header{siplib.NewHeader("Warning", `304 voxvisor "no allowed codec"`)}}
		}
		return nil, &sip.StatusError{Code: 500, Reason: "SDP Rewrite Failed", Err: err}
	}
	if answer {
		c.accepted, c.early, c.answer = want, !final, streams
		if final {
			a.conclude(c)
		}
	} else {
		c.pending, c.offerer, c.offered, c.answer, c.early = true, s, streams, nil, false
	}
	c.lastIn[s], c.lastOut[s] = string(raw), body
	return body, nil
}

// open gives the call's streams in want relay ports, charging the new
// pairs to the caller's source first. fresh are the streams that got
// ports now.
func (a *Anchor) open(c *call, want []bool) (sess *media.Session, fresh []int, err error) {
	old := a.relay.Get(c.id)
	for i, w := range want {
		if w && (old == nil || old.Stream(i) == nil) {
			fresh = append(fresh, i)
		}
	}
	if err := a.take(c, 2*len(fresh)); err != nil {
		return nil, nil, err
	}
	sess, err = a.relay.Open(c.id, want)
	if err != nil {
		a.give(c, 2*len(fresh))
		if errors.Is(err, media.ErrPoolExhausted) {
			a.PoolExhausted.Add(1)
			reason := err.Error()
			var pe *media.PoolError
			if errors.As(err, &pe) {
				reason = pe.Reason()
			}
			if a.exhausted.CompareAndSwap(false, true) {
				a.log.Warn("media port pool exhausted: calls get 503 until ports are free", "call", c.id, "why", reason)
			}
			return nil, nil, &sip.StatusError{Code: 503, Reason: "Media Ports Exhausted", Err: err,
				Headers: []siplib.Header{siplib.NewHeader("Retry-After", "5"),
					siplib.NewHeader("Warning", `399 voxvisor "media ports exhausted: `+quotable(reason)+`"`)}}
		}
		return nil, nil, &sip.StatusError{Code: 500, Reason: "Media Relay Failed", Err: err}
	}
	if c.up {
		sess.SetAnswered() // a late offer: the session starts with the 2xx
	}
	if len(fresh) > 0 && a.exhausted.CompareAndSwap(true, false) {
		a.log.Info("media port pool has room again", "call", c.id)
	}
	return sess, fresh, nil
}

// take charges n port pairs to the call's source.
func (a *Anchor) take(c *call, n int) error {
	if n == 0 {
		return nil
	}
	if ok, first := a.PerSource.TakeN(c.src, n); !ok {
		if first {
			a.log.Warn("source at its limit of media streams: its calls get 503 until some end",
				"source", c.src.String(), "limit_pairs", a.PerSource.Max, "held_pairs", a.PerSource.Held(c.src), "call", c.id)
		}
		return &sip.StatusError{Code: 503, Reason: "Too Many Media Streams",
			Err: fmt.Errorf("source %s holds %d relay port pairs, limits.streams is %d", c.src, a.PerSource.Held(c.src), a.PerSource.Max),
			Headers: []siplib.Header{siplib.NewHeader("Retry-After", "10"),
				siplib.NewHeader("Warning", `399 voxvisor "too many media streams from this source"`)}}
	}
	c.pairs += n
	return nil
}

// give returns n of the call's port pairs to its source.
func (a *Anchor) give(c *call, n int) {
	if n <= 0 {
		return
	}
	a.PerSource.GiveN(c.src, n)
	c.pairs -= n
}

// conclude makes the pending offer and its answer final: they are what
// a failed re-INVITE returns to, and streams the answer did not accept
// give their ports back.
func (a *Anchor) conclude(c *call) {
	c.pending = false
	c.agreed[c.offerer], c.agreed[1-c.offerer] = c.offered, c.answer
	a.settle(c)
}

// restore puts every leg of the call's streams back to what the last
// final offer/answer said: its side's addresses and the stream's kind
// (RTP or UDPTL), after a re-INVITE that changed them failed.
func (a *Anchor) restore(c *call) {
	sess := a.relay.Get(c.id)
	if sess == nil {
		return
	}
	for _, st := range sess.Streams() {
		i := st.Index
		if i >= len(c.agreed[sideA]) || i >= len(c.agreed[sideB]) {
			continue
		}
		mux := c.agreed[sideA][i].Mux && c.agreed[sideB][i].Mux
		for s, leg := range st.Legs {
			ag := c.agreed[s][i]
			leg.SetRemote(addrPort(ag.Addr, ag.Port), rtcpAddr(ag, mux), mux, ag.Held())
			leg.SetUDPTL(ag.UDPTL())
		}
	}
}

// settle releases, once an answer is final, the ports of every stream the
// answer did not accept: rejected by it, or removed by the offer.
func (a *Anchor) settle(c *call) {
	sess := a.relay.Get(c.id)
	if sess == nil {
		return
	}
	for _, st := range sess.Streams() {
		if st.Index < len(c.accepted) && c.accepted[st.Index] {
			continue
		}
		if sess.Drop(st.Index) {
			a.give(c, 2)
		}
	}
}

// quotable makes s fit in a Warning header's quoted text.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' || r == 0x7f {
			return '\''
		}
		return r
	}, s)
}

func rtcpAddr(s sdp.Stream, mux bool) netip.AddrPort {
	if mux {
		return addrPort(s.Addr, s.Port)
	}
	return addrPort(s.RTCPAddr, s.RTCPPort)
}

func addrPort(a netip.Addr, port int) netip.AddrPort {
	if !a.IsValid() || port <= 0 || port > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

// shouldAnchor applies the mode to a new call.
func (a *Anchor) shouldAnchor(r *sip.Request) bool {
	switch a.mode {
	case Never:
		return false
	case NAT:
		return behindNAT(r)
	}
	return true
}

// behindNAT reports whether the caller's packets come from another
// address than its Contact or its SDP names.
func behindNAT(r *sip.Request) bool {
	src := r.Source.Addr().String()
	if ct := r.Contact(); ct != nil && ct.Address.Host != src {
		return true
	}
	if isSDP(r.Request) {
		if d, err := sdp.Parse(r.Body()); err == nil {
			for _, st := range sdp.Streams(d) {
				if st.Addr.IsValid() && !st.Addr.IsUnspecified() && st.Addr.String() != src {
					return true
				}
			}
		}
	}
	return false
}

func callID(r *siplib.Request) string {
	if h := r.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

func tag(p siplib.HeaderParams) string {
	v, _ := p.Get("tag")
	return v
}

func isSDP(m interface {
	Body() []byte
	ContentType() *siplib.ContentTypeHeader
}) bool {
	if len(m.Body()) == 0 {
		return false
	}
	ct := m.ContentType()
	return ct == nil || strings.HasPrefix(strings.ToLower(ct.Value()), "application/sdp")
}

// Collector exports the anchor's refusals.
func (a *Anchor) Collector() prometheus.Collector {
	var m metrics.Set
	for reason, n := range map[string]*atomic.Uint64{"max_streams": &a.TooManyStreams, "pool_exhausted": &a.PoolExhausted} {
		m.Counter("media_offers_refused_total", "Offers refused: more streams than media.max_streams (488), or no relay ports left (503).",
			func() float64 { return float64(n.Load()) }, "reason", reason)
	}
	return &m
}
