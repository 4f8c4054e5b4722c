package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"hash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/location"
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
	hop       bool // from a hop token (hopParam), not a Record-Route entry
	// local is, for a UDP hop, the socket of ours its Route entry named:
	// the one the contact registered to, which its NAT lets in.
	local netip.AddrPort
}

// hopParam is the Route parameter of a cluster's internal hop: a node
// that holds a contact's flow writes, into the contact's binding, a URI
// of its own with a token naming the flow (Binding.Hop); another node
// calling the contact sends the request there with that URI on top of
// the Route set, and the holding node sends it down the flow. The token
// is signed with a key only the holding node has (derived from its
// secret, apart from the flow tokens' key), over the flow alone: it is
// never shown to phones (popped before the request goes on) and leads
// only to that flow.
const hopParam = "vxh"

// hopSecret derives the hop tokens' key from the node's secret.
func hopSecret(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("voxvisor cluster hop token"))
	return m.Sum(nil)
}

// HopURI is the Route URI other nodes of a cluster reach b's flow
// through: this node's listener the flow came in on (UDP for UDP flows,
// the stream's own transport otherwise), with a token naming the flow.
func (p *Proxy) HopURI(b location.Binding) string {
	src, err := netip.ParseAddrPort(b.Source)
	if err != nil {
		return ""
	}
	l, ok := p.self.Listener(b.Transport)
	if b.Transport == "udp" {
		if local, err := netip.ParseAddrPort(b.Local); err == nil {
			if at, found := p.self.ListenerAt("udp", local); found {
				l, ok = at, true
			}
		}
	}
	if !ok {
		return ""
	}
	f := flowToken{transport: b.Transport, addr: netip.AddrPortFrom(src.Addr().Unmap(), src.Port())}
	// Valid while the binding is: a refresh writes a new one.
	plain := f.plain() + "~" + strconv.FormatInt(b.Expires.Unix(), 10)
	u := siplib.Uri{Scheme: "sip", Host: l.Host, Port: l.Port, UriParams: siplib.NewParams()}
	if l.Transport != "udp" {
		u.UriParams.Add("transport", l.Transport)
	}
	u.UriParams.Add("lr", "")
	u.UriParams.Add(hopParam, plain+"~"+p.hops.mac("", plain))
	return u.String()
}

// verifyHop checks a hop token (flow~expiry~mac) and returns its flow;
// ok is false for a forged, malformed or expired one.
func verifyHop(key *flowKey, s string, now time.Time) (*flowToken, bool) {
	plain, ok := key.open("", s)
	j := strings.LastIndex(plain, "~")
	if !ok || j < 0 {
		return nil, false
	}
	exp, err := strconv.ParseInt(plain[j+1:], 10, 64)
	if err != nil || now.Unix() >= exp {
		return nil, false
	}
	f, ok := parseFlow(plain[:j])
	if ok {
		f.hop = true
	}
	return f, ok
}

// IsHop reports whether r's top Route is a hop token of ours: a request
// another node of the cluster routes to a flow this node holds, which
// that node has authenticated.
//
// It must agree with what routing does with the request: the hop entry
// is the only Route entry of ours, so it is the one routing follows.
func (p *Proxy) IsHop(r *siplib.Request) bool {
	hs := r.GetHeaders("Route")
	if len(hs) == 0 {
		return false
	}
	h, ok := hs[0].(*siplib.RouteHeader)
	if !ok || !p.self.IsMe(h.Address) {
		return false
	}
	v, ok := h.Address.UriParams.Get(hopParam)
	if !ok {
		return false
	}
	if _, ok := verifyHop(p.hops, v, time.Now()); !ok {
		return false
	}
	if len(hs) > 1 {
		if next, ok := hs[1].(*siplib.RouteHeader); !ok || p.self.IsMe(next.Address) {
			return false
		}
	}
	return true
}

func (f flowToken) plain() string {
	return f.transport + "~" + strings.ReplaceAll(f.addr.String(), ":", "~")
}

// sign returns the token as written into Record-Route: the flow and a
// MAC binding it to callID under key.
func (f flowToken) sign(key *flowKey, callID string) string {
	p := f.plain()
	return p + "~" + key.mac(callID, p)
}

// flowKey signs and checks flow tokens: 96 bits of HMAC-SHA256 over the
// Call-ID and the flow under the switch's secret. The hash states are
// pooled: a new pair per token was a tenth of what a call allocated.
type flowKey struct{ macs sync.Pool }

type flowMAC struct {
	h        hash.Hash
	buf, sum []byte
}

func newFlowKey(secret []byte) *flowKey {
	k := &flowKey{}
	k.macs.New = func() any { return &flowMAC{h: hmac.New(sha256.New, secret)} }
	return k
}

func (k *flowKey) mac(callID, plain string) string {
	m := k.macs.Get().(*flowMAC)
	defer k.macs.Put(m)
	m.h.Reset()
	m.buf = append(append(append(m.buf[:0], callID...), 0), plain...)
	m.h.Write(m.buf)
	m.sum = m.h.Sum(m.sum[:0])
	return base64.RawURLEncoding.EncodeToString(m.sum[:12])
}

// open returns the plain part of a token signed for callID (plain~mac);
// ok is false when the MAC is not ours.
func (k *flowKey) open(callID, s string) (string, bool) {
	i := strings.LastIndex(s, "~")
	if i < 0 {
		return "", false
	}
	plain, mac := s[:i], s[i+1:]
	return plain, subtle.ConstantTimeCompare([]byte(mac), []byte(k.mac(callID, plain))) == 1
}

// verifyFlow parses a signed token and checks its MAC for callID. ok is
// false for anything forged, copied from another dialog or malformed.
func verifyFlow(key *flowKey, callID, s string) (*flowToken, bool) {
	plain, ok := key.open(callID, s)
	if !ok {
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
	u.UriParams.Add(flowParam, flow.sign(p.flows, callID))
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
	hop := false
	for {
		h := r.Route()
		if h == nil || !p.self.IsMe(h.Address) {
			return flow, popped, forged
		}
		if hop {
			forged = true // a hop is the only entry of ours (see IsHop)
		}
		if v, ok := h.Address.UriParams.Get(flowParam); ok {
			if f, ok := verifyFlow(p.flows, callID, v); ok {
				flow = f
			} else {
				forged = true
			}
		}
		if v, ok := h.Address.UriParams.Get(hopParam); ok {
			if f, ok := verifyHop(p.hops, v, time.Now()); ok && !popped {
				if l, ok := p.self.ListenerNamed("udp", h.Address.Host, h.Address.Port); ok && f.transport == "udp" {
					f.local = l.Bound
				}
				flow, hop = f, true
			} else {
				forged = true
			}
		}
		r.RemoveHeader("Route")
		popped = true
	}
}
