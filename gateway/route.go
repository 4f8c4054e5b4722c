package gateway

import (
	"sync"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/digest"
	"github.com/voxvisor/voxvisor/sip/proxy"
)

// Routing is the gateway as the proxy routes with it: a carrier's DIDs
// are asked before the local users, the dial plan after them (for
// authenticated callers), and each trunk is the egress step of the
// requests that leave through it. A nil Gateway routes nothing.
func (g *Gateway) Routing() proxy.Routing {
	if g == nil {
		return proxy.Routing{}
	}
	return proxy.Routing{
		Before: didRouter{g},
		After:  dialPlanRouter{g},
		Egress: func(name string) proxy.Egress {
			if t := g.Trunk(name); t != nil {
				return egress{t}
			}
			return nil
		},
	}
}

// didRouter routes an INVITE from a carrier (known by its source) by its
// DID: to a local user, a URI (the trunk's media endpoint), or, for a
// transit trunk, out through another trunk. The call holds one of the
// carrier trunk's channels (a transit call one of the outgoing trunk's).
type didRouter struct{ g *Gateway }

func (d didRouter) Route(r *sip.Request) (proxy.Plan, bool, error) {
	if r.Method != siplib.INVITE {
		return proxy.Plan{}, false, nil
	}
	t := d.g.Identify(r.Source.Addr())
	if t == nil {
		return proxy.Plan{}, false, nil
	}
	r.Direction, r.Trunk, r.Dialed, r.Codecs = "inbound", t.Name, r.Recipient.User, t.Codecs
	if !t.Acquire() {
		r.Trunk = ""
		return proxy.Plan{}, true, &sip.StatusError{Code: 503, Reason: "Channel Limit Reached", Headers: []siplib.Header{siplib.NewHeader("Retry-After", "10")}}
	}
	release := sync.OnceFunc(t.Release)
	dest, err := t.Route(r.Recipient.User)
	if err != nil {
		release()
		return proxy.Plan{}, true, &sip.StatusError{Code: 404, Reason: "Unknown DID", Err: err}
	}
	switch {
	case dest.User != "":
		return proxy.Plan{Targets: []proxy.Target{{User: dest.User}}, Holds: []func(){release}}, true, nil
	case dest.URI != "":
		var u siplib.Uri
		if err := siplib.ParseUri(dest.URI, &u); err != nil {
			release()
			return proxy.Plan{}, true, &sip.StatusError{Code: 500, Reason: "Bad DID Destination", Err: err}
		}
		return proxy.Plan{Targets: []proxy.Target{{URI: u}}, Holds: []func(){release}}, true, nil
	}
	release()
	r.Trunk = ""
	if !t.Transit {
		return proxy.Plan{}, true, sip.Status(403, "Transit Not Allowed")
	}
	next := d.g.Trunk(dest.Trunk)
	if next == nil {
		return proxy.Plan{}, true, sip.Status(404, "Unknown Trunk")
	}
	return d.g.outbound(r, r.Recipient.User, []*Trunk{next}, "transit"), true, nil
}

// dialPlanRouter sends an authenticated caller's INVITE out through the
// dial plan's trunks, one peer after another.
type dialPlanRouter struct{ g *Gateway }

func (d dialPlanRouter) Route(r *sip.Request) (proxy.Plan, bool, error) {
	if r.Method != siplib.INVITE || r.User == "" {
		return proxy.Plan{}, false, nil
	}
	number, trunks, err := d.g.Outbound(r.Recipient.User)
	if err != nil {
		return proxy.Plan{}, true, &sip.StatusError{Code: 404, Reason: "No Route", Err: err}
	}
	return d.g.outbound(r, number, trunks, "outbound"), true, nil
}

// outbound is the plan that tries each trunk's peers in order with the
// normalised number, past the peers health checks found down; when every
// peer is down, all are tried (a check can be wrong; a call may not be).
func (g *Gateway) outbound(r *sip.Request, number string, trunks []*Trunk, dir string) proxy.Plan {
	r.Direction, r.Dialed = dir, number
	for _, t := range trunks {
		if len(t.Codecs) > 0 {
			// The first trunk's policy rules the offer; failover trunks
			// are expected to take the same codecs.
			r.Codecs = t.Codecs
			break
		}
	}
	plan := proxy.Plan{Serial: true}
	var down []proxy.Target
	for _, t := range trunks {
		for _, peer := range t.Peers {
			u := siplib.Uri{Scheme: "sip", User: number, Host: peer.Host, Port: peer.Port, UriParams: siplib.NewParams()}
			if peer.Transport != "udp" {
				u.UriParams.Add("transport", peer.Transport)
			}
			target := proxy.Target{URI: u, Egress: egress{t}}
			if g.health.Down(t.Name, peer) {
				down = append(down, target)
				continue
			}
			plan.Targets = append(plan.Targets, target)
		}
	}
	if len(plan.Targets) == 0 {
		plan.Targets = down
	}
	return plan
}

// egress is a trunk as the proxy's egress step: its channels, its
// caller-ID rules and its credentials for the carrier's challenges.
type egress struct{ t *Trunk }

func (e egress) Name() string  { return e.t.Name }
func (e egress) Acquire() bool { return e.t.Acquire() }
func (e egress) Release()      { e.t.Release() }

// Prepare applies the trunk's caller-ID rules to an outgoing INVITE.
func (e egress) Prepare(out *siplib.Request) {
	if u := e.t.CallerID.FromUser; u != "" {
		if from := out.From(); from != nil {
			from.Address.User = u
		}
	}
	if pai := e.t.CallerID.PAI; pai != "" {
		out.RemoveHeader("P-Asserted-Identity")
		out.AppendHeader(siplib.NewHeader("P-Asserted-Identity", "<"+pai+">"))
	}
}

// Authorize answers a carrier's 401/407 with the trunk's credentials,
// for a challenge in the trunk's realm (any realm when none is set).
func (e egress) Authorize(res *siplib.Response, method, uri string) (string, string, bool) {
	c := e.t.Credentials
	if c == nil {
		return "", "", false
	}
	hdr, authHdr := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		hdr, authHdr = "Proxy-Authenticate", "Proxy-Authorization"
	}
	for _, h := range res.GetHeaders(hdr) {
		ch, err := digest.ParseChallenge(h.Value())
		if err != nil || (c.Realm != "" && ch.Realm != c.Realm) {
			continue
		}
		if v, err := digest.Authorize(ch, c.Username, c.Password, method, uri); err == nil {
			return authHdr, v, true
		}
	}
	return "", "", false
}
