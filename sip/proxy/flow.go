package proxy

import (
	"fmt"
	"net/netip"
	"strings"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
)

// flowParam is the Record-Route parameter that remembers the flow (the
// transport and address) a dialog's side reached us on, so in-dialog
// requests go back over the same NAT binding or TCP connection (the idea
// of RFC 5626 flow tokens).
const flowParam = "vxf"

type flowToken struct {
	transport string
	addr      netip.AddrPort
}

func (f flowToken) String() string {
	return f.transport + "~" + strings.ReplaceAll(f.addr.String(), ":", "~")
}

func parseFlow(s string) (*flowToken, bool) {
	tp, rest, ok := strings.Cut(s, "~")
	if !ok || (tp != "udp" && tp != "tcp" && tp != "tls") {
		return nil, false
	}
	i := strings.LastIndex(rest, "~")
	if i < 0 {
		return nil, false
	}
	ap, err := netip.ParseAddrPort(fmt.Sprintf("%s:%s", hostForm(strings.ReplaceAll(rest[:i], "~", ":")), rest[i+1:]))
	if err != nil {
		return nil, false
	}
	return &flowToken{transport: tp, addr: ap}, true
}

func hostForm(h string) string {
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}

// recordRoute returns our Record-Route URI for listener l remembering
// flow; a sips: one when the request is sips: (RFC 5630 §4.1), so the
// dialog's in-dialog requests stay on TLS.
func recordRoute(l sip.Listener, flow flowToken, secure bool) *siplib.RecordRouteHeader {
	u := siplib.Uri{Scheme: "sip", Host: l.Host, Port: l.Port, UriParams: siplib.NewParams()}
	switch {
	case secure && l.Transport == "tls":
		u.Scheme = "sips"
	case l.Transport != "udp":
		u.UriParams.Add("transport", l.Transport)
	}
	u.UriParams.Add("lr", "")
	u.UriParams.Add(flowParam, flow.String())
	return &siplib.RecordRouteHeader{Address: u}
}

// popOwnRoutes removes the Route entries at the top that point at us and
// returns the flow of the last one (the side the request is heading to).
func (p *Proxy) popOwnRoutes(r *siplib.Request) (*flowToken, bool) {
	var flow *flowToken
	popped := false
	for {
		h := r.Route()
		if h == nil || !p.self.IsMe(h.Address) {
			return flow, popped
		}
		if v, ok := h.Address.UriParams.Get(flowParam); ok {
			if f, ok := parseFlow(v); ok {
				flow = f
			}
		}
		r.RemoveHeader("Route")
		popped = true
	}
}
