package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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
//
// A flow token is signed with the switch's secret over the dialog's
// Call-ID, so only a dialog this switch record-routed can be continued
// through it, and only towards the addresses it was set up with: a
// forged or copied token sends nothing anywhere.
const flowParam = "vxf"

type flowToken struct {
	transport string
	addr      netip.AddrPort
}

func (f flowToken) plain() string {
	return f.transport + "~" + strings.ReplaceAll(f.addr.String(), ":", "~")
}

// sign returns the token as written into Record-Route: the flow and a
// MAC binding it to callID under key.
func (f flowToken) sign(key []byte, callID string) string {
	p := f.plain()
	return p + "~" + flowMAC(key, callID, p)
}

// flowMAC is 96 bits of HMAC-SHA256 over the Call-ID and the flow.
func flowMAC(key []byte, callID, plain string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(callID))
	m.Write([]byte{0})
	m.Write([]byte(plain))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:12])
}

// verifyFlow parses a signed token and checks its MAC for callID. ok is
// false for anything forged, copied from another dialog or malformed.
func verifyFlow(key []byte, callID, s string) (*flowToken, bool) {
	i := strings.LastIndex(s, "~")
	if i < 0 {
		return nil, false
	}
	plain, mac := s[:i], s[i+1:]
	if !hmac.Equal([]byte(mac), []byte(flowMAC(key, callID, plain))) {
		return nil, false
	}
	return parseFlow(plain)
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
// flow, signed for callID; a sips: one when the request is sips:
// (RFC 5630 §4.1), so the dialog's in-dialog requests stay on TLS.
func (p *Proxy) recordRoute(l sip.Listener, flow flowToken, callID string, secure bool) *siplib.RecordRouteHeader {
	u := siplib.Uri{Scheme: "sip", Host: l.Host, Port: l.Port, UriParams: siplib.NewParams()}
	switch {
	case secure && l.Transport == "tls":
		u.Scheme = "sips"
	case l.Transport != "udp":
		u.UriParams.Add("transport", l.Transport)
	}
	u.UriParams.Add("lr", "")
	u.UriParams.Add(flowParam, flow.sign(p.cfg.Secret, callID))
	return &siplib.RecordRouteHeader{Address: u}
}

// popOwnRoutes removes the Route entries at the top that point at us and
// returns the flow of the last one (the side the request is heading to).
// popped says whether any entry was ours; forged is true when one of
// them carried a flow token this switch did not sign for this Call-ID.
func (p *Proxy) popOwnRoutes(r *siplib.Request) (flow *flowToken, popped, forged bool) {
	callID := ""
	if h := r.CallID(); h != nil {
		callID = h.Value()
	}
	for {
		h := r.Route()
		if h == nil || !p.self.IsMe(h.Address) {
			return flow, popped, forged
		}
		if v, ok := h.Address.UriParams.Get(flowParam); ok {
			if f, ok := verifyFlow(p.cfg.Secret, callID, v); ok {
				flow = f
			} else {
				forged = true
			}
		}
		r.RemoveHeader("Route")
		popped = true
	}
}
