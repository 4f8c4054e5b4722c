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
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/auth"
	"github.com/voxvisor/voxvisor/sip/location"
)

// Config holds the proxy's tunables.
type Config struct {
	// RingTimeout is Timer C: an INVITE with no final answer by then is
	// cancelled and answered 408.
	RingTimeout time.Duration
}

// Proxy routes and forwards requests. Safe for concurrent use.
type Proxy struct {
	txl  *siplib.TransactionLayer // set once
	self *sip.Self
	loc  *location.Store
	auth *auth.Authenticator
	cfg  Config
	log  *slog.Logger

	media Media // set once before serving; may be nil

	// Counters for metrics.
	Forwarded atomic.Uint64 // requests forwarded statefully
	Stateless atomic.Uint64 // ACKs and 2xx retransmissions forwarded statelessly
}

var _ sip.Handler = (*Proxy)(nil)

// New returns a proxy sending through txl.
func New(txl *siplib.TransactionLayer, self *sip.Self, loc *location.Store, a *auth.Authenticator, cfg Config, log *slog.Logger) *Proxy {
	return &Proxy{txl: txl, self: self, loc: loc, auth: a, cfg: cfg, log: log}
}

// target is one place to send a request.
type target struct {
	uri       siplib.Uri // new Request-URI (zero: keep)
	dest      string     // ip:port or host:port
	transport string     // udp or tcp
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
	flow, _ := p.popOwnRoutes(fwd)

	var targets []target
	switch {
	case hasToTag(r.Request):
		t, err := p.routeInDialog(fwd, flow)
		if err != nil {
			return err
		}
		targets = []target{t}
	default:
		ts, err := p.routeInitial(r, fwd)
		if err != nil {
			return err
		}
		targets = ts
	}
	if p.media != nil {
		if err := p.media.Request(r, fwd); err != nil {
			return err
		}
	}
	if r.Method == siplib.ACK {
		return p.forwardStateless(r, fwd, targets[0])
	}
	status, err := p.forward(ctx, r, fwd, targets)
	if p.media != nil {
		if err != nil {
			status = sip.StatusOf(err).Code
		}
		p.media.Done(r, status)
	}
	return err
}

// routeInDialog follows the route set: the next Route entry, or the
// Request-URI, or the flow our own Record-Route remembered.
func (p *Proxy) routeInDialog(fwd *siplib.Request, flow *flowToken) (target, error) {
	if h := fwd.Route(); h != nil {
		return uriTarget(h.Address), nil
	}
	if flow != nil {
		return target{dest: flow.addr.String(), transport: flow.transport}, nil
	}
	if p.self.IsMe(fwd.Recipient) {
		return target{}, sip.Status(404, "Not Found")
	}
	return uriTarget(fwd.Recipient), nil
}

// routeInitial finds targets for a request outside a dialog: a local
// user's contacts. Calls from local users must authenticate first.
func (p *Proxy) routeInitial(r *sip.Request, fwd *siplib.Request) ([]target, error) {
	if r.Method == siplib.ACK {
		return nil, errDrop
	}
	from := r.From()
	if from != nil && p.self.IsLocal(from.Address.Host) && p.auth.Known(from.Address.User) && r.User == "" {
		user, err := p.auth.Check(r.Request, from.Address.User, true)
		if err != nil {
			return nil, err
		}
		r.User = user
		p.auth.StripCredentials(fwd)
	}
	ruri := r.Recipient
	if !p.self.IsLocal(ruri.Host) {
		// Not our domain: only trunks (the gateway) may take this later.
		return nil, sip.Status(403, "Relaying Denied")
	}
	if ruri.User == "" {
		if r.Method == siplib.OPTIONS {
			return nil, errSelf
		}
		return nil, sip.Status(404, "Not Found")
	}
	if !p.auth.Known(ruri.User) {
		return nil, sip.Status(404, "Not Found")
	}
	binds := p.loc.Lookup(ruri.User + "@" + p.self.Domain)
	if len(binds) == 0 {
		return nil, sip.Status(480, "Temporarily Unavailable")
	}
	ts := make([]target, 0, len(binds))
	for _, b := range binds {
		var u siplib.Uri
		if err := siplib.ParseUri(b.Contact, &u); err != nil {
			continue
		}
		t := target{uri: u, dest: b.Source, transport: b.Transport}
		if b.Transport != "udp" && !p.hasConn(b.Transport, b.Source) {
			// The connection the contact registered over is gone: a
			// stream contact is then reached at its Contact address.
			t.dest = uriTarget(u).dest
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return nil, sip.Status(480, "Temporarily Unavailable")
	}
	return ts, nil
}

// Sentinels the server turns into actions rather than responses.
var (
	errDrop = &sip.StatusError{Code: 0, Reason: "drop"}
	errSelf = &sip.StatusError{Code: 0, Reason: "self"}
)

// IsDrop reports whether err asks the server to drop the request silently.
func IsDrop(err error) bool { return err == errDrop }

// IsSelf reports whether err says the request is for this server itself.
func IsSelf(err error) bool { return err == errSelf }

// hasConn reports whether sipgo holds a live connection to addr.
func (p *Proxy) hasConn(transport, addr string) bool {
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
	tp := "udp"
	if v, ok := u.UriParams.Get("transport"); ok && v != "" {
		tp = strings.ToLower(v)
	}
	port := u.Port
	if port == 0 {
		port = 5060
	}
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
