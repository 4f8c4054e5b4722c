// Package dialog is the one table of the calls the switch is party to:
// every INVITE dialog the proxy forwards, from its first INVITE to its
// end, with what it holds (a trunk channel, a source's call slot) and
// what is known of its two parties to hang it up.
//
// Every way a call ends comes to Table.End, once: a BYE from either side,
// a CANCEL or a failed INVITE, a media timeout, an operator's hang-up,
// the end of a drain, an expired session timer or dialog age, and node
// shutdown. The first End of a call wins; the others find nothing. It
// then tells the observers, in the order they subscribed (the CDR writer
// first, while the media statistics are there, then the media anchor),
// and gives back what the dialog held.
//
// Dialogs cannot outlive their calls: a dialog with an RFC 4028 session
// timer ends when no refresh (a 2xx to a re-INVITE or UPDATE) came within
// its Session-Expires; one without ends at Options.MaxAge. Either way
// both sides get a BYE and the CDR says why.
package dialog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/guard"
)

// Defaults of Options.
const (
	// DefaultSessionExpires is the Session-Expires put on INVITEs that
	// carry none, so the phones refresh (Kamailio's sst_interval).
	DefaultSessionExpires = 1800 * time.Second
	// MinSE is the smallest Session-Expires RFC 4028 allows (§4).
	MinSE = 90 * time.Second
	// DefaultMaxAge bounds the dialogs without a session timer
	// (Kamailio's dialog default_timeout).
	DefaultMaxAge = 12 * time.Hour
	// DefaultMaxEarly bounds a dialog never answered nor failed: the
	// proxy's ring timeout ends those first; this catches the rest.
	DefaultMaxEarly = 10 * time.Minute
)

// Options configure a table. Zero values take the defaults; negative
// durations turn a bound off.
type Options struct {
	// SessionExpires is put on an INVITE that has no Session-Expires
	// (RFC 4028 §8.1); a 2xx without one then gets it back for a caller
	// that supports timers (refresher=uac, §8.2).
	SessionExpires time.Duration
	// MinSE: an INVITE asking for less gets 422 with this Min-SE.
	MinSE time.Duration
	// MaxAge ends an answered dialog without a session timer this long
	// after its answer.
	MaxAge time.Duration
	// MaxEarly ends a dialog still unanswered this long after its INVITE.
	MaxEarly time.Duration
	// PerSource bounds the dialogs one source has at once (nil: none);
	// its trusted sources (carriers) are bounded by trunk channels.
	PerSource *guard.Slots
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		switch {
		case *d == 0:
			*d = v
		case *d < 0:
			*d = 0
		}
	}
	def(&o.SessionExpires, DefaultSessionExpires)
	def(&o.MinSE, MinSE)
	def(&o.MaxAge, DefaultMaxAge)
	def(&o.MaxEarly, DefaultMaxEarly)
	if o.SessionExpires > 0 && o.SessionExpires < o.MinSE {
		o.SessionExpires = o.MinSE
	}
	return o
}

// Side is one party of a dialog.
type Side int

// Sides.
const (
	Caller Side = 0
	Callee Side = 1
)

func (s Side) String() string {
	if s == Caller {
		return "caller"
	}
	return "callee"
}

// Party is what is known of one side, to send it a BYE.
type Party struct {
	Tag       string
	Contact   *siplib.Uri
	Addr      string // the flow its messages come from (ip:port)
	Transport string // udp, tcp, tls
	CSeq      uint32 // the highest CSeq it has sent
	NameAddr  string // its From/To value without the tag
	// Route is the route set towards it past this switch, first hop
	// first (proxies that record-routed on its side, another node's hop):
	// a BYE of the switch's goes to the first hop with it as Route.
	Route []siplib.Uri
}

// SetRoute sets the route set towards side s (see Party.Route).
func (d *Dialog) SetRoute(s Side, route []siplib.Uri) {
	d.mu.Lock()
	d.parties[s].Route = route
	d.mu.Unlock()
}

// Ending says how a call ended.
type Ending struct {
	// By is who ended it: caller, callee, or system (voxvisor: a timeout,
	// an expiry, a shutdown) or operator.
	By string
	// Status is the final status of a call that was never answered
	// (CDR); ignored for an answered one.
	Status int
	// Reason says why voxvisor ended it ("media timeout", "session
	// expired"); empty for a BYE or a failed INVITE.
	Reason string
	// Cause is the Reason header's SIP cause on the BYEs voxvisor sends.
	Cause int
}

// Observer is told of every dialog that ends, once.
type Observer interface {
	DialogEnded(d *Dialog, e Ending)
}

// An Observer may also follow a dialog's life by implementing these; it
// is told in subscription order, outside any lock of the table's.
type (
	// StartObserver is told of each dialog begun (an initial INVITE
	// routed and accepted).
	StartObserver interface{ DialogStarted(d *Dialog) }
	// AnswerObserver is told when a dialog is answered (its first 2xx).
	AnswerObserver interface{ DialogAnswered(d *Dialog) }
	// RefreshObserver is told of each session refresh (a 2xx to a
	// re-INVITE or UPDATE).
	RefreshObserver interface{ DialogRefreshed(d *Dialog) }
)

// Sender sends a request the switch originates (proxy.Originate).
type Sender interface {
	Originate(ctx context.Context, req *siplib.Request, dest, transport string) (int, error)
}

// Dialog is one call. Its exported fields are set when it begins and then
// only read.
type Dialog struct {
	ID        string
	Source    netip.Addr // the caller's address
	From      string     // user@host of the caller
	Dialed    string     // what the caller dialled (normalised for trunk calls)
	Direction string     // local, inbound, outbound, transit
	Created   time.Time

	// Shift is how many CSeqs the proxy added on the caller's side
	// downstream (credential retries to a carrier).
	Shift atomic.Uint32

	table *Table // set once, at Begin

	mu        sync.Mutex
	trunk     string
	parties   [2]Party
	status    int
	answered  time.Time
	refreshed time.Time     // the answer, or the last session refresh
	expires   time.Duration // negotiated Session-Expires; 0: none
	holds     []func()
	earlyEnd  func() // cancels the INVITE while it rings; nil once answered
	ended     bool
}

// Info is a copy of a dialog's state, for CDRs and the admin API.
type Info struct {
	ID, From, Dialed, Direction, Trunk string
	Created, Answered                  time.Time // Answered zero: not answered
	Status                             int
	SessionExpires                     time.Duration
}

func (d *Dialog) callerTag() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.parties[Caller].Tag
}

// Info returns a copy of d's state.
func (d *Dialog) Info() Info {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Info{ID: d.ID, From: d.From, Dialed: d.Dialed, Direction: d.Direction, Trunk: d.trunk,
		Created: d.Created, Answered: d.answered, Status: d.status, SessionExpires: d.expires}
}

// SetTrunk records the trunk the call went through.
func (d *Dialog) SetTrunk(name string) {
	if name == "" {
		return
	}
	d.mu.Lock()
	d.trunk = name
	d.mu.Unlock()
}

// Trunk is the trunk the call went through, or "".
func (d *Dialog) Trunk() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.trunk
}

// Hold gives the dialog something to release when it ends (a trunk
// channel, a slot). On a dialog already ended it is released at once.
func (d *Dialog) Hold(release func()) {
	d.mu.Lock()
	if d.ended {
		d.mu.Unlock()
		release()
		return
	}
	d.holds = append(d.holds, release)
	d.mu.Unlock()
}

// OnEarlyEnd sets what Hangup calls to end the dialog while it still
// rings (the proxy cancels the INVITE's branches and answers the caller
// 487). The last one set counts (failover tries one target at a time).
func (d *Dialog) OnEarlyEnd(f func()) {
	d.mu.Lock()
	d.earlyEnd = f
	d.mu.Unlock()
}

// Match says whether in-dialog request r belongs to d, and which party
// sent it: its From and To tags must be the dialog's two tags, one way
// or the other (while the call rings only the caller's is known, and only
// the caller may send). Another dialog's request that shares the Call-ID,
// or one with a tag made up, is not d's.
func (d *Dialog) Match(r *siplib.Request) (Side, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	from, to := tagOf(r.From().Params), tagOf(r.To().Params)
	a, b := d.parties[Caller].Tag, d.parties[Callee].Tag
	switch {
	case from == a && (b == "" || to == b):
		return Caller, true
	case b != "" && from == b && to == a:
		return Callee, true
	}
	return Caller, false
}

// IsAnswered reports whether the call was answered.
func (d *Dialog) IsAnswered() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.answered.IsZero()
}

// Ended reports whether d has ended.
func (d *Dialog) Ended() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ended
}

// Request notes an in-dialog request r from its sender s (see Match):
// its CSeq.
func (d *Dialog) Request(r *sip.Request, s Side) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := &d.parties[s]
	if cs := r.CSeq(); cs != nil && cs.SeqNo > p.CSeq {
		p.CSeq = cs.SeqNo
	}
}

// Answered notes the 2xx that answered the INVITE: the callee party and
// the session timer it agreed. It reports false when the dialog was
// already answered (another branch's 2xx, a retransmission).
func (d *Dialog) Answered(res *siplib.Response, now time.Time) bool {
	if !d.answer(res, now) {
		return false
	}
	for _, o := range d.table.observers {
		if a, ok := o.(AnswerObserver); ok {
			a.DialogAnswered(d)
		}
	}
	return true
}

func (d *Dialog) answer(res *siplib.Response, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.answered.IsZero() || d.ended {
		return false
	}
	d.answered, d.refreshed, d.status = now, now, res.StatusCode
	d.earlyEnd = nil
	b := &d.parties[Callee]
	b.Tag = tagOf(res.To().Params)
	b.NameAddr = nameAddr(res.To().Address, res.To().DisplayName)
	if ct := res.Contact(); ct != nil {
		b.Contact = ct.Address.Clone()
	}
	b.Addr, b.Transport = res.Source(), strings.ToLower(res.Transport())
	d.expires = sessionExpires(res)
	return true
}

// Refreshed notes a 2xx to an in-dialog INVITE or UPDATE: a session
// refresh (RFC 4028 §10) that also renews the timer's interval.
func (d *Dialog) Refreshed(res *siplib.Response, now time.Time) {
	d.mu.Lock()
	d.refreshed = now
	if se := sessionExpires(res); se > 0 {
		d.expires = se
	}
	d.mu.Unlock()
	d.table.Refreshes.Add(1)
	for _, o := range d.table.observers {
		if r, ok := o.(RefreshObserver); ok {
			r.DialogRefreshed(d)
		}
	}
}

// deadline is when d ends unless refreshed, and why; zero: none.
func (d *Dialog) deadline(o Options) (time.Time, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.answered.IsZero():
		if o.MaxEarly > 0 {
			return d.Created.Add(o.MaxEarly), "never answered"
		}
	case d.expires > 0:
		// A callee's interval below Min-SE is not taken at its word, nor
		// one beyond the age bound: the refreshes must come within it.
		se := max(d.expires, o.MinSE)
		if o.MaxAge > 0 {
			se = min(se, o.MaxAge)
		}
		return d.refreshed.Add(se), "session expired"
	case o.MaxAge > 0:
		return d.answered.Add(o.MaxAge), "maximum dialog age"
	}
	return time.Time{}, ""
}

// Table holds the dialogs. Safe for concurrent use.
type Table struct {
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	sender Sender // set once, before serving

	observers []Observer // set before serving

	// Counters for metrics.
	Begun     atomic.Uint64 // dialogs begun
	Ended     atomic.Uint64 // dialogs ended (each once)
	Expired   atomic.Uint64 // ended by a session timer or an age bound
	Refreshes atomic.Uint64 // session refreshes seen

	byes sync.WaitGroup // BYEs of Hangup awaiting their answers

	mu      sync.Mutex
	dialogs map[string]*Dialog // guarded by mu; by Call-ID
}

// New returns an empty table.
func New(opts Options, log *slog.Logger) *Table {
	return &Table{opts: opts.withDefaults(), log: log, now: time.Now, dialogs: map[string]*Dialog{}}
}

// Options returns the table's options, defaults applied.
func (t *Table) Options() Options { return t.opts }

// Subscribe adds an observer. Observers are told in the order they
// subscribed. Call before serving.
func (t *Table) Subscribe(o Observer) { t.observers = append(t.observers, o) }

// SetSender sets what sends the BYEs of Hangup. Call before serving.
func (t *Table) SetSender(s Sender) { t.sender = s }

// Check refuses an initial INVITE whose Session-Expires is below Min-SE
// with 422 (RFC 4028 §8.1), before anything is taken for it.
func (t *Table) Check(r *siplib.Request) error {
	h := r.GetHeader("Session-Expires")
	if h == nil {
		h = r.GetHeader("x")
	}
	se, ok := headerSeconds(h)
	if h != nil && !ok {
		return sip.Status(400, "Bad Session-Expires")
	}
	if ok && t.opts.MinSE > 0 && se < t.opts.MinSE {
		return sip.Status(422, "Session Interval Too Small",
			siplib.NewHeader("Min-SE", strconv.Itoa(int(t.opts.MinSE/time.Second))))
	}
	return nil
}

// Begin starts the dialog of an initial INVITE r, which its caller sent
// from r.Source. ok is false, and d the dialog, when one with r's Call-ID
// exists (a spiral, a second INVITE racing the first): nothing new is
// taken. A source at its limit of dialogs gets 503.
func (t *Table) Begin(r *sip.Request) (d *Dialog, ok bool, err error) {
	d, ok, err = t.begin(r)
	if ok {
		for _, o := range t.observers {
			if s, ok := o.(StartObserver); ok {
				s.DialogStarted(d)
			}
		}
	}
	return d, ok, err
}

func (t *Table) begin(r *sip.Request) (d *Dialog, ok bool, err error) {
	id := r.CallID().Value()
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.dialogs[id]; d != nil {
		if d.callerTag() != tagOf(r.From().Params) {
			// A new call must have a new Call-ID (RFC 3261 §8.1.1.4):
			// this one is another call's, and would share its media.
			return nil, false, &sip.StatusError{Code: 400, Reason: "Call-ID In Use",
				Err: fmt.Errorf("INVITE with the Call-ID of call %s and another From tag", id)}
		}
		return d, false, nil // a spiral, or the same INVITE again
	}
	src := r.Source.Addr()
	d = &Dialog{ID: id, Source: src, Direction: r.Direction, Dialed: r.Dialed, Created: t.now(), table: t}
	if d.Direction == "" {
		d.Direction = "local"
	}
	if d.Dialed == "" {
		d.Dialed = r.Recipient.User
	}
	from := r.From()
	d.From = from.Address.User + "@" + from.Address.Host
	d.trunk = r.Trunk
	a := &d.parties[Caller]
	a.Tag, a.NameAddr = tagOf(from.Params), nameAddr(from.Address, from.DisplayName)
	a.Addr, a.Transport = r.Source.String(), r.Transport
	if ct := r.Contact(); ct != nil {
		a.Contact = ct.Address.Clone()
	}
	if cs := r.CSeq(); cs != nil {
		a.CSeq = cs.SeqNo
	}
	if src.IsValid() && t.opts.PerSource != nil {
		ok, first := t.opts.PerSource.Take(src)
		if !ok {
			if first {
				t.log.Warn("source at its limit of calls in progress", "source", src.String(), "limit", t.opts.PerSource.Max)
			}
			return nil, false, &sip.StatusError{Code: 503, Reason: "Too Many Calls From Source",
				Headers: []siplib.Header{siplib.NewHeader("Retry-After", "30")}}
		}
		slots := t.opts.PerSource
		d.holds = append(d.holds, func() { slots.Give(src) })
	}
	t.dialogs[id] = d
	t.Begun.Add(1)
	return d, true, nil
}

// Get returns the dialog of Call-ID id, or nil.
func (t *Table) Get(id string) *Dialog {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dialogs[id]
}

// Len is the number of dialogs.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.dialogs)
}

// Dialogs returns the dialogs, oldest first.
func (t *Table) Dialogs() []*Dialog {
	out := t.snapshot()
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// snapshot is the dialogs in no order (the expiry sweep needs none).
func (t *Table) snapshot() []*Dialog {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Dialog, 0, len(t.dialogs))
	for _, d := range t.dialogs {
		out = append(out, d)
	}
	return out
}

// End ends dialog id: the observers are told, in order, then what it held
// is given back. It reports whether it ended the dialog (false: there was
// none, or another End came first).
func (t *Table) End(id string, e Ending) bool {
	d := t.remove(id)
	if d == nil {
		return false
	}
	t.finish(d, e)
	return true
}

func (t *Table) remove(id string) *Dialog {
	t.mu.Lock()
	d := t.dialogs[id]
	delete(t.dialogs, id)
	t.mu.Unlock()
	if d == nil {
		return nil
	}
	d.mu.Lock()
	d.ended = true
	d.mu.Unlock()
	return d
}

func (t *Table) finish(d *Dialog, e Ending) {
	t.Ended.Add(1)
	d.mu.Lock()
	if d.answered.IsZero() && e.Status != 0 {
		d.status = e.Status
	}
	holds := d.holds
	d.holds = nil
	d.mu.Unlock()
	for _, o := range t.observers {
		o.DialogEnded(d, e)
	}
	for _, release := range holds {
		release()
	}
}

// Hangup ends dialog id from voxvisor's side: a BYE to each side of an
// answered call saying why (its Reason header carries e.Cause and
// e.Reason); a call still ringing is cancelled instead (its branches get
// CANCEL, the caller 487; see OnEarlyEnd). Either way it ends as End
// does. It reports whether the dialog existed. The BYEs go out in the
// background; Hangup does not wait for their answers.
func (t *Table) Hangup(id string, e Ending) bool {
	d := t.remove(id)
	if d == nil {
		return false
	}
	byes, dests := d.byes(e)
	d.mu.Lock()
	early := d.earlyEnd
	if d.answered.IsZero() && e.Status == 0 {
		e.Status = 487 // ended while it rang
	}
	d.mu.Unlock()
	t.finish(d, e)
	if early != nil {
		early()
	}
	if t.sender == nil {
		return true
	}
	for i, b := range byes {
		if b == nil {
			continue
		}
		t.byes.Add(1)
		go func() {
			defer t.byes.Done()
			code, err := t.sender.Originate(context.Background(), b, dests[i].Addr, dests[i].Transport)
			t.log.Info("call ended by voxvisor: BYE sent", "call", id, "why", e.Reason, "to", Side(i).String(), "status", code, "error", err)
		}()
	}
	return true
}

// byes builds the BYEs that tell each side of an answered d the call is
// over, each as if the other side sent it.
func (d *Dialog) byes(e Ending) ([2]*siplib.Request, [2]Party) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out [2]*siplib.Request
	if d.answered.IsZero() {
		return out, d.parties
	}
	cause := e.Cause
	if cause == 0 {
		cause = 200
	}
	for to := Caller; to <= Callee; to++ {
		dst, src := &d.parties[to], &d.parties[1-to]
		if dst.Contact == nil || dst.Addr == "" {
			continue
		}
		req := siplib.NewRequest(siplib.BYE, *dst.Contact.Clone())
		for _, u := range dst.Route {
			req.AppendHeader(&siplib.RouteHeader{Address: *u.Clone()})
		}
		req.AppendHeader(siplib.NewHeader("From", src.NameAddr+";tag="+src.Tag))
		req.AppendHeader(siplib.NewHeader("To", dst.NameAddr+";tag="+dst.Tag))
		cid := siplib.CallIDHeader(d.ID)
		req.AppendHeader(&cid)
		if src.CSeq < maxCSeq {
			src.CSeq++
		}
		seq := src.CSeq
		if to == Callee {
			seq = min(seq+d.Shift.Load(), maxCSeq) // the callee has seen the caller's CSeqs shifted
		}
		req.AppendHeader(&siplib.CSeqHeader{SeqNo: seq, MethodName: siplib.BYE})
		req.AppendHeader(siplib.NewHeader("Reason", fmt.Sprintf("SIP;cause=%d;text=%q", cause, e.Reason)))
		req.SetBody(nil)
		out[to] = req
	}
	dests := d.parties
	for i, p := range dests {
		if len(p.Route) > 0 {
			// Through the first hop: the side's address is behind it.
			u := p.Route[0]
			port := u.Port
			if port == 0 {
				port = 5060
			}
			dests[i].Addr = net.JoinHostPort(u.Host, strconv.Itoa(port))
			dests[i].Transport = "udp"
			if tp, ok := u.UriParams.Get("transport"); ok && tp != "" {
				dests[i].Transport = strings.ToLower(tp)
			}
		}
	}
	return out, dests
}

// maxCSeq is the largest CSeq RFC 3261 allows (§8.1.1.5: below 2^31).
const maxCSeq = 1<<31 - 1

// Run ends expired dialogs every interval until ctx ends.
func (t *Table) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Expire(t.now())
		}
	}
}

// Expire ends the dialogs whose deadline has passed at now: answered ones
// get a BYE each way.
func (t *Table) Expire(now time.Time) {
	for _, d := range t.snapshot() {
		at, why := d.deadline(t.opts)
		if at.IsZero() || now.Before(at) {
			continue
		}
		t.Expired.Add(1)
		t.log.Info("dialog expired", "call", d.ID, "why", why)
		t.Hangup(d.ID, Ending{By: "system", Status: 408, Reason: why, Cause: 408})
	}
}

// WaitByes waits, up to timeout, for the BYEs Hangup sent to be
// answered (or to time out); it reports whether they all were.
func (t *Table) WaitByes(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		t.byes.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// EndAll ends every dialog (a drain's end, node shutdown); with bye,
// answered ones get a BYE each way.
func (t *Table) EndAll(e Ending, bye bool) {
	for _, d := range t.Dialogs() {
		if bye {
			t.Hangup(d.ID, e)
		} else {
			t.End(d.ID, e)
		}
	}
}

// sessionExpires reads a Session-Expires (or its compact form x) header.
func sessionExpires(m interface{ GetHeader(string) siplib.Header }) time.Duration {
	h := m.GetHeader("Session-Expires")
	if h == nil {
		h = m.GetHeader("x")
	}
	d, _ := headerSeconds(h)
	return d
}

// headerSeconds reads the delta-seconds at the head of h's value.
func headerSeconds(h siplib.Header) (time.Duration, bool) {
	if h == nil {
		return 0, false
	}
	v, _, _ := strings.Cut(h.Value(), ";")
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0, false
	}
	return time.Duration(n) * time.Second, true // at most 2^32-1 s: no overflow
}

func tagOf(p siplib.HeaderParams) string {
	v, _ := p.Get("tag")
	return v
}

func nameAddr(u siplib.Uri, display string) string {
	s := "<" + u.String() + ">"
	if display != "" {
		s = `"` + display + `" ` + s
	}
	return s
}

// Collector exports the table's size and counters.
func (t *Table) Collector() prometheus.Collector {
	var m metrics.Set
	m.Gauge("calls_active", "Calls in progress (ringing or answered).", func() float64 { return float64(t.Len()) })
	m.Counter("dialogs_refreshed_total", "Session refreshes (RFC 4028: a 2xx to a re-INVITE or UPDATE) seen on calls in progress.", func() float64 { return float64(t.Refreshes.Load()) })
	m.Counter("dialogs_expired_total", "Calls ended by voxvisor because their session timer ran out without a refresh, or they reached dialog.max_age (a BYE each way).", func() float64 { return float64(t.Expired.Load()) })
	return &m
}
