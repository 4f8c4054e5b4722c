// Package proxy is the stateful SIP proxy core (RFC 3261 §16): it decides
// where a request goes (in-dialog along the route set, to a local user's
// registered contacts, or nowhere) and forwards it on sipgo client
// transactions, forking INVITEs to every contact, cancelling the losers
// and choosing the best final response.
//
// It does not authenticate (sip/auth does) or touch message bodies.
package proxy

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/auth"
	"github.com/voxvisor/voxvisor/sip/dialog"
	"github.com/voxvisor/voxvisor/sip/location"
)

// Config holds the proxy's tunables.
type Config struct {
	// RingTimeout is Timer C: an INVITE with no final answer by then is
	// cancelled and answered 408.
	RingTimeout time.Duration
	// Secret signs the flow tokens in our Record-Route entries, so only
	// dialogs this switch set up can be continued through it. Keep it
	// across restarts (and share it in a cluster) or in-dialog requests
	// of calls set up before are refused. Empty: a random one.
	Secret []byte
	// Node is this switch's cluster node name ("" on its own): a binding
	// another node holds the flow of is reached through that node.
	Node string
	// NodeAlive says whether a node of the cluster is alive; a binding
	// whose node is not is tried directly (its phone may be reachable,
	// and will register on a live node soon). Nil: all are.
	NodeAlive func(node string) bool
}

// Transactions starts client transactions: sipgo's transaction layer,
// or a scripted one in tests of the forwarding state machine.
type Transactions interface {
	Request(ctx context.Context, req *siplib.Request) (siplib.ClientTransaction, error)
}

type txlTransactions struct{ txl *siplib.TransactionLayer }

func (t txlTransactions) Request(ctx context.Context, req *siplib.Request) (siplib.ClientTransaction, error) {
	tx, err := t.txl.Request(ctx, req)
	if err != nil {
		return nil, err
	}
	return tx, nil
}

// Proxy routes and forwards requests. Safe for concurrent use.
type Proxy struct {
	txl    *siplib.TransactionLayer // set once; nil in tests
	client Transactions             // set once: txl's, or a test's
	self   *sip.Self
	loc    *location.Store
	auth   *auth.Authenticator
	cfg    Config
	log    *slog.Logger
	flows  *flowKey // signs our Record-Route flow tokens with cfg.Secret
	hops   *flowKey // signs the hop tokens other nodes reach our flows with

	hooks   []Hook                  // set once before serving
	routing atomic.Pointer[Routing] // replaced on reload; nil: local users only
	dialogs *dialog.Table           // set once before serving

	// Counters for metrics.
	Forwarded atomic.Uint64 // requests forwarded statefully
	Stateless atomic.Uint64 // ACKs and 2xx retransmissions forwarded statelessly
	Refused   atomic.Uint64 // in-dialog requests matching no dialog of ours
}

var _ sip.Handler = (*Proxy)(nil)

// New returns a proxy sending through txl.
func New(txl *siplib.TransactionLayer, self *sip.Self, loc *location.Store, a *auth.Authenticator, cfg Config, log *slog.Logger) *Proxy {
	if len(cfg.Secret) == 0 {
		cfg.Secret = make([]byte, 32)
		rand.Read(cfg.Secret)
	}
	p := &Proxy{txl: txl, self: self, loc: loc, auth: a, cfg: cfg, log: log, flows: newFlowKey(cfg.Secret), hops: newFlowKey(hopSecret(cfg.Secret)), dialogs: dialog.New(dialog.Options{}, log)}
	if txl != nil {
		p.client = txlTransactions{txl}
	}
	return p
}

// SetDialogs sets the dialog table the proxy begins, follows and ends
// calls in. Call before serving.
func (p *Proxy) SetDialogs(t *dialog.Table) { p.dialogs = t }

// target is one place to send a request.
type target struct {
	uri       siplib.Uri // new Request-URI (zero: keep)
	dest      string     // ip:port or host:port
	transport string     // udp, tcp or tls
	egress    Egress     // the trunk it leaves through, or nil
	flow      bool       // a registered contact, reached where it registered from
	// local is the UDP socket to send from: the one the contact
	// registered to, so its router lets the request in (zero: the
	// transport's first listener).
	local netip.AddrPort
	// route is the Route set to put on the request, first hop first: the
	// Path a contact registered with (RFC 3327); dest is its first entry.
	route []siplib.Uri
}

// routeHeaders returns t's Route set as headers, in order, for the top
// of the request sent to t.
func (t target) routeHeaders() []siplib.Header {
	hs := make([]siplib.Header, 0, len(t.route))
	for _, u := range t.route {
		hs = append(hs, &siplib.RouteHeader{Address: *u.Clone()})
	}
	return hs
}

// call is one request's routing state: the routing it is routed with
// (one snapshot per request, so a reload in the middle changes nothing
// under it), its dialog once begun, and what routing took for it (a trunk
// channel) until a dialog holds it.
type call struct {
	rt    Routing
	dlg   *dialog.Dialog // an initial INVITE's dialog, once begun here
	holds []func()
}

// hold keeps release for the call: its dialog releases it when the call
// ends; before there is one, the request does when it fails.
func (c *call) hold(release func()) {
	if c.dlg != nil {
		c.dlg.Hold(release)
		return
	}
	c.holds = append(c.holds, release)
}

// release gives back what routing took, for a request that got no dialog.
func (c *call) release() {
	for _, f := range c.holds {
		f()
	}
	c.holds = nil
}

// ServeSIP routes r and forwards it.
func (p *Proxy) ServeSIP(ctx context.Context, r *sip.Request) error {
	if r.Method == siplib.CANCEL {
		// sipgo answers a CANCEL that matches a live INVITE itself; one that
		// reaches us matches nothing.
		return sip.Status(481, "Call/Transaction Does Not Exist")
	}
	fwd := r.Request.Clone()
	fwd.SetBody(r.Body())
	sip.MarkReceived(fwd.Via(), r.Source)
	if r.User != "" {
		p.auth.StripCredentials(fwd) // ours, not the next hop's business
	}
	flow, _, forged := p.popOwnRoutes(fwd)
	c := &call{rt: p.currentRouting()}
	defer c.release()

	var targets []target
	serial := false
	switch {
	case flow != nil && flow.hop && !forged && !hasToTag(r.Request):
		// Another node of the cluster sends a call to a contact whose
		// flow we hold: it goes to the flow, nothing else. That node
		// authenticated, routed, anchored and owns the call (dialog,
		// CDR); we only record-route, so in-dialog requests pass here.
		r.Hop = true
		targets = []target{{dest: flow.addr.String(), transport: flow.transport, flow: true, local: flow.local}}
	case hasToTag(r.Request):
		t, err := p.routeInDialog(r, flow, forged)
		if err != nil {
			return err
		}
		if d, side := p.dialogOf(r); d != nil {
			d.Request(r, side)
			if side == dialog.Caller {
				fwd.CSeq().SeqNo += d.Shift.Load()
				if (d.Direction == "outbound" || d.Direction == "transit") && c.rt.Egress != nil {
					// Towards the carrier: its challenges are answered
					// with the trunk's credentials. Never towards a phone.
					t.egress = c.rt.Egress(d.Trunk())
				}
			}
		}
		targets = []target{t}
	default:
		ts, ser, err := p.routeInitial(r, fwd, c)
		if err != nil {
			return err
		}
		targets, serial = ts, ser
		if r.Method == siplib.INVITE {
			if err := p.begin(r, fwd, c); err != nil {
				return err
			}
		}
	}
	if err := p.hookRequest(r, fwd); err != nil {
		p.end(r, c, sip.StatusOf(err).Code)
		// Hooks that took something for the request let it go.
		p.hookDone(r, sip.StatusOf(err).Code)
		return err
	}
	if r.Method == siplib.ACK {
		return p.forwardStateless(r, fwd, targets[0])
	}
	if r.Method == siplib.BYE {
		// The call is over when a side says so, not when (or whether) the
		// other side answers: its CDR ends now, its media and channel go.
		p.end(r, c, 0)
	}
	var status int
	var err error
	if serial {
		status, err = p.forwardSerial(ctx, r, fwd, targets, c)
	} else {
		status, _, err = p.forward(ctx, r, fwd, targets, true, c)
	}
	if err != nil {
		status = sip.StatusOf(err).Code
	}
	if r.Method != siplib.BYE {
		p.end(r, c, status)
	}
	p.hookDone(r, status)
	return err
}

// begin starts the dialog of an initial INVITE, which then holds what
// routing took for it, and offers a session timer downstream.
func (p *Proxy) begin(r *sip.Request, fwd *siplib.Request, c *call) error {
	if err := p.dialogs.Check(r.Request); err != nil {
		return err
	}
	d, fresh, err := p.dialogs.Begin(r)
	if err != nil {
		return err
	}
	if !fresh {
		return nil // a spiral or a racing INVITE: the first one owns the dialog
	}
	c.dlg = d
	// The proxies on the caller's side that record-routed: the route set
	// towards the caller, in order (RFC 3261 §12.1.1).
	var route []siplib.Uri
	for _, h := range r.GetHeaders("Record-Route") {
		if rr, ok := h.(*siplib.RecordRouteHeader); ok {
			route = append(route, *rr.Address.Clone())
		}
	}
	if len(route) > 0 {
		d.SetRoute(dialog.Caller, route)
	}
	for _, f := range c.holds {
		d.Hold(f)
	}
	c.holds = nil
	p.dialogs.OfferTimer(fwd)
	return nil
}

// end ends r's dialog when r ends it: a BYE (before it is forwarded), or
// an initial INVITE that failed (status: its final status; 487 when
// cancelled).
func (p *Proxy) end(r *sip.Request, c *call, status int) {
	switch {
	case r.Method == siplib.BYE:
		d, side := p.dialogOf(r)
		switch {
		case d == nil:
			// Not a dialog of ours (another call's tags, made up ones):
			// it ends nothing here; the far end says what it thinks.
		case d.IsAnswered():
			p.dialogs.End(d.ID, dialog.Ending{By: side.String()})
		default:
			// The caller gives up an early dialog: as a CANCEL would, the
			// INVITE is cancelled everywhere and answered 487.
			p.dialogs.Hangup(d.ID, dialog.Ending{By: side.String()})
		}
	case c.dlg != nil:
		c.dlg.SetTrunk(r.Trunk)
		if status < 200 || status >= 300 {
			p.dialogs.End(c.dlg.ID, dialog.Ending{Status: status})
		}
	}
}

// dialogOf is the dialog in-dialog request r belongs to, and who sent it;
// nil when none does (its tags are not a dialog's of ours).
func (p *Proxy) dialogOf(r *sip.Request) (*dialog.Dialog, dialog.Side) {
	d := p.dialogs.Get(r.CallID().Value())
	if d == nil {
		return nil, dialog.Caller
	}
	side, ok := d.Match(r.Request)
	if !ok {
		return nil, side
	}
	return d, side
}

// routeInDialog sends an in-dialog request along its dialog: to the flow
// our own Record-Route entry remembered, signed for this Call-ID. A
// request with a To-tag that carries no such entry is not part of a
// dialog this switch set up, and goes nowhere (481; 403 when the entry
// was forged): a To-tag is no ticket to a carrier. The Route entries
// after ours stay in the request for the next hop.
func (p *Proxy) routeInDialog(r *sip.Request, flow *flowToken, forged bool) (target, error) {
	switch {
	case forged:
		p.Refused.Add(1)
		p.log.Warn("in-dialog request with a forged route refused", "method", string(r.Method), "source", r.Source.String())
		return target{}, sip.Status(403, "Forbidden")
	case flow == nil:
		p.Refused.Add(1)
		if r.Method == siplib.ACK {
			return target{}, errDrop
		}
		return target{}, sip.Status(481, "Call/Transaction Does Not Exist")
	}
	return target{dest: flow.addr.String(), transport: flow.transport}, nil
}

// routeInitial finds targets for a request outside a dialog: an inbound
// carrier's DID, a local user's contacts, or, for authenticated local
// users, the dial plan's trunks. serial says the targets are tried one
// after another (trunk failover) rather than in parallel (forking).
func (p *Proxy) routeInitial(r *sip.Request, fwd *siplib.Request, c *call) ([]target, bool, error) {
	if r.Method == siplib.ACK {
		return nil, false, errDrop
	}
	if c.rt.Before != nil {
		if plan, ok, err := c.rt.Before.Route(r); ok {
			if err != nil {
				return nil, false, err
			}
			return p.expand(plan, c)
		}
	}
	// Who the caller is (r.User) the auth step before the proxy said.
	ruri := r.Recipient
	if ruri.User == "" && p.self.IsLocal(ruri.Host) {
		if r.Method == siplib.OPTIONS {
			return nil, false, errSelf
		}
		return nil, false, sip.Status(404, "Not Found")
	}
	if p.self.IsLocal(ruri.Host) && p.auth.Known(ruri.User) {
		r.Direction = "local"
		ts, err := p.locate(ruri.User, ruri.IsEncrypted())
		return ts, false, err
	}
	if p.self.IsLocal(ruri.Host) && r.User == "" && (c.rt.After == nil || r.Method != siplib.INVITE) {
		// An anonymous caller gets the same answer for a user that does
		// not exist as for one that is not registered: no enumeration.
		return nil, false, sip.Status(480, "Temporarily Unavailable")
	}
	if c.rt.After != nil {
		if plan, ok, err := c.rt.After.Route(r); ok {
			if err != nil {
				return nil, false, err
			}
			return p.expand(plan, c)
		}
	}
	if !p.self.IsLocal(ruri.Host) || c.rt.After != nil {
		// Not a local user, and not an authenticated caller: no relay.
		return nil, false, sip.Status(403, "Relaying Denied")
	}
	return nil, false, sip.Status(404, "Not Found")
}

// locate returns the contacts of local user. A sips: request reaches only
// contacts registered over TLS: it must be TLS on every hop (RFC 5630).
//
// A contact is reached over the flow it registered on: over UDP at the
// address its REGISTER came from (received/rport), from the socket it
// registered to; over TCP or TLS on its connection. When that connection
// is gone, a contact behind NAT or one that asked for its flow only
// (RFC 5626 ;ob) is not dialled at its Contact address, which cannot be
// reached from here: it is left out (430 Flow Failed when only such
// contacts remain). A contact registered through an edge proxy is
// reached through its Path (RFC 3327).
func (p *Proxy) locate(user string, secure bool) ([]target, error) {
	binds := p.loc.Lookup(user + "@" + p.self.Domain)
	if len(binds) == 0 {
		return nil, sip.Status(480, "Temporarily Unavailable")
	}
	ts := make([]target, 0, len(binds))
	flowFailed := false
	for _, b := range binds {
		var u siplib.Uri
		if err := siplib.ParseUri(b.Contact, &u); err != nil {
			continue
		}
		if secure && b.Transport != "tls" {
			continue
		}
		path := b.Path
		if b.Hop != "" && b.Node != "" && b.Node != p.cfg.Node && (p.cfg.NodeAlive == nil || p.cfg.NodeAlive(b.Node)) {
			// Its flow (NAT pinhole, connection) is another node's:
			// through that node, the only one the phone's router lets in.
			path = append([]string{b.Hop}, b.Path...)
		}
		if len(path) > 0 {
			t, ok := pathTarget(path)
			if !ok || (secure && t.transport != "tls") {
				continue
			}
			t.uri = u
			ts = append(ts, t)
			continue
		}
		t := target{uri: u, dest: b.Source, transport: b.Transport, flow: true}
		switch {
		case b.Transport == "udp":
			if l, err := netip.ParseAddrPort(b.Local); err == nil {
				t.local = netip.AddrPortFrom(l.Addr().Unmap(), l.Port())
			}
		case !p.hasConn(b.Transport, b.Source):
			if b.NAT || b.Outbound {
				flowFailed = flowFailed || b.Outbound
				continue
			}
			// The connection the contact registered over is gone: a
			// stream contact is then reached at its Contact address.
			t.dest = uriTarget(u).dest
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		if flowFailed {
			return nil, sip.Status(430, "Flow Failed")
		}
		if secure {
			return nil, &sip.StatusError{Code: 480, Reason: "Temporarily Unavailable",
				Headers: []siplib.Header{siplib.NewHeader("Warning", `399 voxvisor "no contact registered over TLS for a sips: request"`)}}
		}
		return nil, sip.Status(480, "Temporarily Unavailable")
	}
	return ts, nil
}

// pathTarget is the target of a Path: its first hop, with the whole Path
// as Route set. ok is false for a Path that does not parse (stored by an
// older version, or edited by hand).
func pathTarget(path []string) (target, bool) {
	route := make([]siplib.Uri, 0, len(path))
	for _, s := range path {
		var u siplib.Uri
		if err := siplib.ParseUri(s, &u); err != nil {
			return target{}, false
		}
		route = append(route, u)
	}
	t := uriTarget(route[0])
	t.route = route
	return t, true
}

// Sentinels the server turns into actions rather than responses.
var (
	errDrop = &sip.StatusError{Code: 0, Reason: "drop"}
	errSelf = &sip.StatusError{Code: 0, Reason: "self"}
)

// Drop returns the error that asks the server to drop a request silently.
func Drop() error { return errDrop }

// IsSelf reports whether err says the request is for this server itself.
func IsSelf(err error) bool { return err == errSelf }

// hasConn reports whether sipgo holds a live connection to addr.
func (p *Proxy) hasConn(transport, addr string) bool {
	if p.txl == nil {
		return false
	}
	pool := p.txl.Transport().Pool(transport)
	if pool == nil {
		return false
	}
	c := pool.Get(addr)
	if c == nil {
		return false
	}
	c.TryClose()
	return true
}

func uriTarget(u siplib.Uri) target {
	tp, port := sip.DefaultTransport(u), sip.DefaultPort(u)
	host := u.Host
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return target{dest: netip.AddrPortFrom(a, uint16(port)).String(), transport: tp}
	}
	return target{dest: fmt.Sprintf("%s:%d", host, port), transport: tp}
}

func hasToTag(r *siplib.Request) bool {
	to := r.To()
	if to == nil {
		return false
	}
	_, ok := to.Params.Get("tag")
	return ok
}

// Collector exports the proxy's counters.
func (p *Proxy) Collector() prometheus.Collector {
	var m metrics.Set
	m.Counter("sip_forwarded_total", "Requests forwarded statefully (transactions created).", func() float64 { return float64(p.Forwarded.Load()) })
	m.Counter("sip_stateless_total", "ACKs and 2xx retransmissions forwarded statelessly.", func() float64 { return float64(p.Stateless.Load()) })
	m.Counter("sip_indialog_refused_total", "Requests with a To-tag that carried no Record-Route of ours signed for their Call-ID (481), or a forged one (403).", func() float64 { return float64(p.Refused.Load()) })
	return &m
}
