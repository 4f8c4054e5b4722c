// Package registrar handles REGISTER (RFC 3261 §10.3): it authenticates
// the user, applies the expiry rules and updates the location service,
// answering with every current binding. Each binding records how the
// contact is reached: whether it is behind NAT (judged from the Contact,
// the Via and the source), the switch's socket it registered to, its
// Path (RFC 3327) and whether it asked for its flow only (RFC 5626 ;ob).
// It routes nothing and sends nothing (sip/keepalive pings NATed contacts).
package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/auth"
	"github.com/voxvisor/voxvisor/sip/location"
)

// Rules are the registrar's expiry and contact limits.
type Rules struct {
	MinExpires     int // a shorter non-zero expiry gets 423 with Min-Expires
	MaxExpires     int // a longer one is cut to this
	DefaultExpires int // when the REGISTER names none
	MaxContacts    int // more bindings per AOR: 503
}

// Registrar is the REGISTER handler.
type Registrar struct {
	auth    *auth.Authenticator // set once
	store   *location.Store     // set once
	isLocal func(host string) bool
	domain  string
	log     *slog.Logger
	now     func() time.Time

	localAddr func(transport string, source netip.AddrPort) string // set once before serving; may be nil
	hop       func(location.Binding) string                        // set once before serving; nil off a cluster

	rules  atomic.Pointer[Rules]
	policy atomic.Pointer[ContactPolicy]
	nat    atomic.Pointer[NAT]

	// Registered counts successful REGISTER transactions.
	Registered atomic.Uint64
}

var _ sip.Handler = (*Registrar)(nil)

// New returns a registrar. isLocal reports whether a host names this
// server (its domain or one of its addresses).
func New(rules Rules, domain string, isLocal func(string) bool, a *auth.Authenticator, s *location.Store, log *slog.Logger) *Registrar {
	g := &Registrar{auth: a, store: s, isLocal: isLocal, domain: domain, log: log, now: time.Now}
	g.SetRules(rules)
	g.SetNAT(NAT{})
	return g
}

// SetRules replaces the expiry and contact limits (reload).
func (g *Registrar) SetRules(r Rules) { g.rules.Store(&r) }

// Middleware sends REGISTER to the registrar and everything else on.
func (g *Registrar) Middleware(next sip.Handler) sip.Handler {
	return sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
		if r.Method == siplib.REGISTER {
			return g.ServeSIP(ctx, r)
		}
		return next.ServeSIP(ctx, r)
	})
}

// Errors for the log; the client gets the status.
var (
	errCSeqOrder = errors.New("CSeq not higher than the stored binding's for the same Call-ID")
)

// ServeSIP implements sip.Handler for REGISTER.
func (g *Registrar) ServeSIP(ctx context.Context, r *sip.Request) error {
	rules, nat := *g.rules.Load(), *g.nat.Load()
	if !g.isLocal(r.Recipient.Host) {
		return sip.Status(404, "Domain Not Served")
	}
	to := r.To()
	if to == nil || to.Address.User == "" {
		return sip.Status(400, "Missing AOR in To")
	}
	if !g.isLocal(to.Address.Host) {
		return sip.Status(404, "Domain Not Served")
	}
	user := to.Address.User
	// Unknown AORs are challenged and refused exactly as known ones with
	// a wrong password: the answers tell no one which users exist.
	if _, err := g.auth.Check(r.Request, user, false); err != nil {
		return err
	}
	r.User = user
	aor := user + "@" + g.domain

	contacts := r.GetHeaders("Contact")
	defExp := -1
	if h := r.GetHeader("Expires"); h != nil {
		v, err := strconv.Atoi(strings.TrimSpace(h.Value()))
		if err != nil || v < 0 {
			return sip.Status(400, "Bad Expires")
		}
		defExp = v
	}
	callID := ""
	if h := r.CallID(); h != nil {
		callID = h.Value()
	}
	cseq := uint32(0)
	if h := r.CSeq(); h != nil {
		cseq = h.SeqNo
	}
	ua := ""
	if h := r.GetHeader("User-Agent"); h != nil {
		ua = h.Value()
	}
	now := g.now()
	// Behind an edge proxy (Path, RFC 3327) the source is that proxy: the
	// contact is reached through it, and its NAT is that proxy's business.
	path, err := paths(r.Request)
	if err != nil {
		return &sip.StatusError{Code: 400, Reason: "Bad Path", Err: err}
	}
	var via *siplib.ViaHeader
	if len(path) == 0 {
		via = r.Via()
	}

	type change struct {
		uri       string
		expires   int
		q         float64
		nat, ob   bool
		natReason string
	}
	var changes []change
	wildcard := false
	for _, h := range contacts {
		c, ok := h.(*siplib.ContactHeader)
		if !ok {
			return sip.Status(400, "Bad Contact")
		}
		if c.Address.Wildcard {
			wildcard = true
			continue
		}
		exp := defExp
		if v, ok := c.Params.Get("expires"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return sip.Status(400, "Bad Contact expires")
			}
			exp = n
		}
		if exp < 0 {
			exp = rules.DefaultExpires
		}
		if exp > 0 && exp < rules.MinExpires {
			return sip.Status(423, "Interval Too Brief", siplib.NewHeader("Min-Expires", strconv.Itoa(rules.MinExpires)))
		}
		if exp > rules.MaxExpires {
			exp = rules.MaxExpires
		}
		natted, why := false, ""
		if len(path) == 0 {
			natted, why = behindNAT(c.Address, via, r.Source, r.Transport)
		}
		if natted && nat.MaxExpires > 0 && exp > nat.MaxExpires {
			exp = nat.MaxExpires
		}
		q := 0.0
		if v, ok := c.Params.Get("q"); ok {
			q, _ = strconv.ParseFloat(v, 64)
		}
		if exp > 0 {
			// Requests to the contact go to its first Path hop, if any:
			// that is what must not point at us or a carrier.
			dest := c.Address
			if len(path) > 0 {
				var hop siplib.Uri
				siplib.ParseUri(path[0], &hop) // parsed once already
				dest = hop
			}
			if err := g.contactAllowed(dest, r.Source); err != nil {
				g.log.Warn("registration refused", "aor", user+"@"+g.domain, "contact", c.Address.String(), "path", strings.Join(path, ","), "source", r.Source.String(), "reason", err)
				return &sip.StatusError{Code: 403, Reason: "Contact Not Allowed", Err: err,
					Headers: []siplib.Header{siplib.NewHeader("Warning", `399 voxvisor "`+err.Error()+`"`)}}
			}
		}
		changes = append(changes, change{uri: c.Address.String(), expires: exp, q: q, nat: natted, ob: isOutbound(c), natReason: why})
	}
	if wildcard && (len(contacts) != 1 || defExp != 0) {
		// RFC 3261 §10.3 step 6.
		return sip.Status(400, "Wildcard Contact Needs Expires 0 Alone")
	}

	source, local := r.Source.String(), ""
	if g.localAddr != nil && r.Transport == "udp" {
		local = g.localAddr(r.Transport, r.Source)
	}
	binds, err := g.store.Update(aor, func(cur []location.Binding) ([]location.Binding, error) {
		if wildcard {
			for _, b := range cur {
				if b.CallID == callID && cseq <= b.CSeq {
					return nil, errCSeqOrder
				}
			}
			return nil, nil
		}
		next := append([]location.Binding(nil), cur...)
		for _, ch := range changes {
			idx := -1
			for i, b := range next {
				if sameContact(b.Contact, ch.uri) {
					idx = i
					break
				}
			}
			if idx >= 0 && next[idx].CallID == callID && cseq <= next[idx].CSeq {
				return nil, errCSeqOrder
			}
			if ch.expires == 0 {
				if idx >= 0 {
					next = append(next[:idx], next[idx+1:]...)
				}
				continue
			}
			b := location.Binding{
				AOR: aor, Contact: ch.uri, Source: source, Transport: r.Transport,
				Expires: now.Add(time.Duration(ch.expires) * time.Second),
				CallID:  callID, CSeq: cseq, UserAgent: ua, Q: ch.q,
				NAT: ch.nat, Local: local, Path: path, Outbound: ch.ob,
			}
			if g.hop != nil {
				b.Hop = g.hop(b)
			}
			if idx >= 0 {
				next[idx] = b
			} else {
				next = append(next, b)
			}
		}
		if len(next) > rules.MaxContacts {
			return nil, errTooMany
		}
		return next, nil
	})
	switch {
	case errors.Is(err, errCSeqOrder):
		return &sip.StatusError{Code: 500, Reason: "Stale CSeq", Err: err, Headers: []siplib.Header{siplib.NewHeader("Retry-After", "1")}}
	case errors.Is(err, errTooMany):
		return &sip.StatusError{Code: 503, Reason: "Too Many Registered Contacts", Err: err}
	case err != nil:
		return &sip.StatusError{Code: 500, Reason: "Location Store Failed", Err: err}
	}

	res := siplib.NewResponseFromRequest(r.Request, 200, "OK", nil)
	for _, b := range binds {
		left := int(b.Expires.Sub(now).Round(time.Second) / time.Second)
		res.AppendHeader(siplib.NewHeader("Contact", fmt.Sprintf("<%s>;expires=%d", b.Contact, left)))
	}
	res.AppendHeader(siplib.NewHeader("Date", now.UTC().Format(http.TimeFormat)))
	if len(path) > 0 {
		// RFC 3327 §5.3: the Path stored is returned to a UA that knows
		// Path (as Kamailio's path_mode 1 does).
		res.AppendHeader(siplib.NewHeader("Supported", "path"))
		if supports(r.Request, "path") {
			for _, p := range path {
				res.AppendHeader(siplib.NewHeader("Path", "<"+p+">"))
			}
		}
	}
	g.Registered.Add(1)
	if len(changes) > 0 || wildcard {
		g.log.Debug("registered", "aor", aor, "bindings", len(binds), "source", source, "transport", r.Transport)
		for _, ch := range changes {
			if ch.nat && ch.expires > 0 {
				g.log.Debug("contact behind NAT", "aor", aor, "contact", ch.uri, "source", source, "reason", ch.natReason, "expires", ch.expires)
			}
		}
	}
	return r.RespondWith(res)
}

var errTooMany = errors.New("more contacts than registrar.max_contacts")

// ContactPolicy says where a registered contact may point, so a
// registration cannot turn the switch against itself (a loop) or make it
// call a carrier or any third party on an attacker's behalf.
type ContactPolicy struct {
	// IsMe reports whether a URI addresses this switch (host and port).
	IsMe func(siplib.Uri) bool
	// Refused are networks no contact or registering source may be in:
	// the trunks' inbound networks.
	Refused []netip.Prefix
	// Peers are the trunks' peer addresses: no contact may point at one,
	// and no REGISTER may come from one.
	Peers []netip.AddrPort
	// Allowed, when not empty, are the only networks contacts (given as
	// addresses; names are then refused) and registering sources may be in.
	Allowed []netip.Prefix
}

// SetContactPolicy replaces the contact policy (start-up and reload).
func (g *Registrar) SetContactPolicy(p ContactPolicy) { g.policy.Store(&p) }

// contactAllowed checks a contact to be bound, registered from source.
func (g *Registrar) contactAllowed(u siplib.Uri, source netip.AddrPort) error {
	p := g.policy.Load()
	if p == nil {
		return nil
	}
	if p.IsMe != nil && p.IsMe(u) {
		return errors.New("contact points at this switch")
	}
	if strings.EqualFold(u.Host, g.domain) {
		return errors.New("contact points at this switch's domain")
	}
	host, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	isAddr := err == nil
	if isAddr {
		host = host.Unmap()
		if host.IsUnspecified() || host.IsMulticast() {
			return errors.New("contact address is unspecified or multicast")
		}
	}
	src := source.Addr().Unmap()
	for _, n := range p.Refused {
		if (isAddr && n.Contains(host)) || n.Contains(src) {
			return errors.New("contact or source is in a trunk's inbound networks")
		}
	}
	for _, peer := range p.Peers {
		if (isAddr && peer == netip.AddrPortFrom(host, uint16(sip.DefaultPort(u)))) || peer == netip.AddrPortFrom(src, source.Port()) {
			return errors.New("contact or source is a trunk peer")
		}
	}
	if len(p.Allowed) == 0 {
		return nil
	}
	if !isAddr {
		return errors.New("contact must be an address in registrar.contact_networks")
	}
	if !inAny(p.Allowed, host) || !inAny(p.Allowed, src) {
		return errors.New("contact or source outside registrar.contact_networks")
	}
	return nil
}

func inAny(ns []netip.Prefix, a netip.Addr) bool {
	for _, n := range ns {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// sameContact compares contact URIs as RFC 3261 §19.1.4 roughly does:
// scheme, user, host and port; parameters are ignored.
func sameContact(a, b string) bool {
	if a == b {
		return true
	}
	var ua, ub siplib.Uri
	if siplib.ParseUri(a, &ua) != nil || siplib.ParseUri(b, &ub) != nil {
		return false
	}
	return strings.EqualFold(ua.Scheme, ub.Scheme) && ua.User == ub.User &&
		strings.EqualFold(ua.Host, ub.Host) && ua.Port == ub.Port
}

// Collector exports the registrar's counter and the location store's
// size.
func (g *Registrar) Collector() prometheus.Collector {
	var m metrics.Set
	m.Gauge("registrations", "Registered contacts (bindings).", func() float64 { _, b := g.store.Count(); return float64(b) })
	m.Gauge("registered_aors", "Addresses-of-record with at least one binding.", func() float64 { a, _ := g.store.Count(); return float64(a) })
	m.Counter("register_requests_total", "REGISTER requests accepted.", func() float64 { return float64(g.Registered.Load()) })
	return &m
}
