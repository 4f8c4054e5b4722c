package gateway

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/guard"
)

// Calls follows each call the proxy forwards, to write its CDR when it
// ends and to give its trunk channel back. It is a proxy hook.
type Calls struct {
	g     atomic.Pointer[Gateway]
	cdr   *CDRWriter                   // may be nil: no CDRs
	media func(callID string) []Stream // the relay's statistics; may be nil
	log   *slog.Logger
	now   func() time.Time

	// OnEnd, when set before serving, sees every finished call (metrics).
	OnEnd func(CDR)
	// PerSource, when set before serving, bounds the calls one source
	// has in progress. Carriers are among its exempt (trusted) sources:
	// their calls are bounded by the trunks' channels.
	PerSource *guard.Slots

	mu    sync.Mutex
	calls map[string]*tracked // guarded by mu; by Call-ID
}

type tracked struct {
	cdr       CDR
	callerTag string
	trunk     *Trunk     // holds a channel while answered
	src       netip.Addr // holds one of PerSource's slots when valid
}

// NewCalls returns a call tracker writing to cdr.
func NewCalls(g *Gateway, cdr *CDRWriter, media func(string) []Stream, log *slog.Logger) *Calls {
	c := &Calls{cdr: cdr, media: media, log: log, now: time.Now, calls: map[string]*tracked{}}
	c.g.Store(g)
	return c
}

// SetGateway replaces the gateway on reload.
func (c *Calls) SetGateway(g *Gateway) { c.g.Store(g) }

// Request starts a record for each new INVITE.
func (c *Calls) Request(r *sip.Request, _ *siplib.Request) error {
	if r.Method != siplib.INVITE || hasTag(r.To()) {
		return nil
	}
	id := r.CallID().Value()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.calls[id]; ok {
		return nil
	}
	var src netip.Addr
	if r.Source.IsValid() {
		ok, first := c.PerSource.Take(r.Source.Addr())
		if !ok {
			if first {
				c.log.Warn("source at its limit of calls in progress", "source", r.Source.Addr().String(), "limit", c.PerSource.Max)
			}
			return &sip.StatusError{Code: 503, Reason: "Too Many Calls From Source",
				Headers: []siplib.Header{siplib.NewHeader("Retry-After", "30")}}
		}
		src = r.Source.Addr()
	}
	to := r.Dialed
	if to == "" {
		to = r.Recipient.User
	}
	dir := r.Direction
	if dir == "" {
		dir = "local"
	}
	tag, _ := r.From().Params.Get("tag")
	c.calls[id] = &tracked{callerTag: tag, src: src, cdr: CDR{CallID: id, From: r.From().Address.User + "@" + r.From().Address.Host,
		To: to, Direction: dir, Trunk: r.Trunk, Start: c.now()}}
	return nil
}

// Response notes the answer time.
func (c *Calls) Response(r *sip.Request, res *siplib.Response) error {
	if r.Method != siplib.INVITE || res.StatusCode < 200 || res.StatusCode >= 300 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.calls[r.CallID().Value()]; t != nil && t.cdr.Answer == nil {
		now := c.now()
		t.cdr.Answer = &now
	}
	return nil
}

// Done writes the CDR of a failed call, or of an answered one at its BYE.
func (c *Calls) Done(r *sip.Request, status int) {
	id := r.CallID().Value()
	c.mu.Lock()
	t := c.calls[id]
	if t == nil {
		c.mu.Unlock()
		return
	}
	switch {
	case r.Method == siplib.INVITE && !hasTag(r.To()):
		t.cdr.Status, t.cdr.Reason = status, reason(status)
		if r.Trunk != "" {
			t.cdr.Trunk = r.Trunk
		}
		if status >= 200 && status < 300 {
			t.trunk = c.g.Load().Trunk(r.Trunk)
			c.mu.Unlock()
			return
		}
		delete(c.calls, id)
		c.mu.Unlock()
		c.finish(t, "")
	case r.Method == siplib.BYE:
		delete(c.calls, id)
		c.mu.Unlock()
		by := "callee"
		if tag, _ := r.From().Params.Get("tag"); tag == t.callerTag {
			by = "caller"
		}
		c.finish(t, by)
	default:
		c.mu.Unlock()
	}
}

// End closes call id for a reason outside SIP (a media timeout): by is
// who hung up, "system" there.
func (c *Calls) End(id, by string) {
	c.mu.Lock()
	t := c.calls[id]
	delete(c.calls, id)
	c.mu.Unlock()
	if t != nil {
		c.finish(t, by)
	}
}

func (c *Calls) finish(t *tracked, by string) {
	t.cdr.End = c.now()
	t.cdr.HangupBy = by
	if t.cdr.Answer != nil {
		t.cdr.DurationSec = t.cdr.End.Sub(*t.cdr.Answer).Seconds()
	}
	if c.media != nil {
		t.cdr.Media = c.media(t.cdr.CallID)
	}
	if t.trunk != nil {
		t.trunk.Release()
	}
	if t.src.IsValid() {
		c.PerSource.Give(t.src)
	}
	if c.OnEnd != nil {
		c.OnEnd(t.cdr)
	}
	if c.cdr == nil {
		return
	}
	if err := c.cdr.Write(t.cdr); err != nil {
		c.log.Error("CDR not written", "call", t.cdr.CallID, "error", err)
	}
}

// Snapshot returns the calls in progress, as their CDRs so far, with the
// relay's statistics now.
func (c *Calls) Snapshot() []CDR {
	c.mu.Lock()
	out := make([]CDR, 0, len(c.calls))
	for _, t := range c.calls {
		out = append(out, t.cdr)
	}
	c.mu.Unlock()
	if c.media != nil {
		for i := range out {
			out[i].Media = c.media(out[i].CallID)
		}
	}
	return out
}

// Active returns the number of calls being followed.
func (c *Calls) Active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

func hasTag(h *siplib.ToHeader) bool {
	if h == nil {
		return false
	}
	_, ok := h.Params.Get("tag")
	return ok
}

// reason is the standard reason phrase of a final status.
func reason(code int) string {
	switch code {
	case 200:
		return "OK"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 603:
		return "Decline"
	}
	switch code / 100 {
	case 2:
		return "Success"
	case 4:
		return "Client Error"
	case 5:
		return "Server Error"
	case 6:
		return "Global Failure"
	}
	return ""
}
