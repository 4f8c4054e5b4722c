package proxy

import (
	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
)

// Router finds where an initial request goes, in the proxy's terms: an
// ordered plan of targets. The local registrar lookup is the proxy's own
// router; a carrier's DIDs and the dial plan are the gateway's.
type Router interface {
	// Route returns r's plan. ok is false when r is not this router's to
	// route (the proxy goes on); with ok, an error is r's answer. A router
	// may note what it decided on r (Direction, Trunk, Dialed, Codecs).
	Route(r *sip.Request) (plan Plan, ok bool, err error)
}

// Plan is where a request goes: every target at once (forking), or one
// after another (Serial: failover).
type Plan struct {
	Targets []Target
	Serial  bool
	// Holds are given back when the call ends, or when the request fails
	// before a call begins: what routing took for it (a trunk channel).
	Holds []func()
}

// Target is one place a plan sends the request.
type Target struct {
	// URI is the new Request-URI; the request goes where it says.
	URI siplib.Uri
	// User, instead of URI: a local user, reached at its registered
	// contacts (over the flows they registered on).
	User string
	// Egress is the trunk the request leaves through, or nil.
	Egress Egress
}

// Egress is the step a request takes on its way out through a trunk.
type Egress interface {
	// Name names the trunk (CDRs, dialogs).
	Name() string
	// Acquire takes a channel for one attempt; false: the trunk is full
	// and the target is skipped. Release gives it back.
	Acquire() bool
	Release()
	// Prepare applies the trunk's rules to the request going out
	// (caller-ID).
	Prepare(out *siplib.Request)
	// Authorize answers the next hop's 401/407 res to a request (method,
	// uri) with the trunk's credentials: the header to add, and its
	// value. ok is false when it has none that fit.
	Authorize(res *siplib.Response, method, uri string) (header, value string, ok bool)
}

// Routing is the routing the proxy is given, swapped whole on reload: a
// request is routed with the one it started with.
type Routing struct {
	// Before is asked ahead of the local users (a carrier's DIDs, known
	// by its source).
	Before Router
	// After is asked for a request that is not for a local user (the
	// dial plan, for authenticated callers). With one set, a request the
	// routers leave is refused as a relay (403).
	After Router
	// Egress finds a trunk by name, for in-dialog requests towards it.
	Egress func(name string) Egress
}

// SetRouting installs (or, on reload, replaces) the routing beyond the
// local users.
func (p *Proxy) SetRouting(rt Routing) { p.routing.Store(&rt) }

func (p *Proxy) currentRouting() Routing {
	if rt := p.routing.Load(); rt != nil {
		return *rt
	}
	return Routing{}
}

// expand turns a plan into targets: a local user becomes its contacts.
// The plan's holds pass to the call.
func (p *Proxy) expand(plan Plan, c *call) ([]target, bool, error) {
	for _, h := range plan.Holds {
		c.hold(h)
	}
	var ts []target
	for _, pt := range plan.Targets {
		if pt.User != "" {
			local, err := p.locate(pt.User, false)
			if err != nil {
				if len(plan.Targets) == 1 {
					return nil, false, err
				}
				continue
			}
			ts = append(ts, local...)
			continue
		}
		t := uriTarget(pt.URI)
		t.uri, t.egress = pt.URI, pt.Egress
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return nil, false, sip.Status(480, "Temporarily Unavailable")
	}
	return ts, plan.Serial, nil
}
