package registrar

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/location"
)

// NAT is how the registrar treats contacts behind NAT.
type NAT struct {
	// MaxExpires caps the expiry, in seconds, granted to a NATed contact,
	// so that it registers again before its router forgets the way in.
	// 0: no cap beyond the registrar's own.
	MaxExpires int
}

// SetNAT replaces the NAT rules (start-up and reload).
func (g *Registrar) SetNAT(n NAT) { g.nat.Store(&n) }

// SetLocalAddr tells the registrar how to find the switch's own socket
// a request from source arrived on (sipgo does not say), so a contact's
// UDP requests can leave from the socket it registered to. Call before
// serving; without it bindings name no socket.
func (g *Registrar) SetLocalAddr(f func(transport string, source netip.AddrPort) string) {
	g.localAddr = f
}

// SetHop sets how a binding gets its cluster hop (Binding.Hop), the way
// other nodes reach the flow this node holds. Set once before serving;
// unset on a switch of its own.
func (g *Registrar) SetHop(f func(location.Binding) string) {
	g.hop = f
}

// privateNets are the addresses a router keeps behind it: RFC 1918,
// RFC 6598 (carrier-grade NAT), link-local, and IPv6 unique local
// (RFC 4193) and link-local.
var privateNets = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
}

func isPrivate(a netip.Addr) bool { return inAny(privateNets, a.Unmap()) }

// behindNAT reports whether a contact registered from source over
// transport sits behind NAT, and why, the way Kamailio's nat_uac_test
// looks at a request:
//
//   - the Contact's address is not where the REGISTER came from (over
//     UDP the port too: a stream's source port is the phone's own choice);
//   - the top Via's sent-by is not where it came from, or the Via carries
//     received/rport values that differ from it;
//   - the Contact or Via address is private (RFC 1918, RFC 6598, ULA)
//     while the source is public (the first two rules already catch it;
//     named apart for the log).
//
// A Contact or Via with a host name instead of an address proves nothing
// either way and is not counted.
func behindNAT(contact siplib.Uri, via *siplib.ViaHeader, source netip.AddrPort, transport string) (bool, string) {
	src := source.Addr().Unmap()
	udp := transport == "udp"
	if a, err := netip.ParseAddr(strings.Trim(contact.Host, "[]")); err == nil {
		a = a.Unmap()
		switch {
		case isPrivate(a) && !isPrivate(src):
			return true, "private contact address"
		case a != src:
			return true, "contact address is not the source"
		case udp && sip.DefaultPort(contact) != int(source.Port()):
			return true, "contact port is not the source port"
		}
	}
	if via == nil {
		return false, ""
	}
	if a, err := netip.ParseAddr(strings.Trim(via.Host, "[]")); err == nil {
		a = a.Unmap()
		port := via.Port
		if port == 0 {
			port = 5060
			if strings.EqualFold(via.Transport, "TLS") {
				port = 5061
			}
		}
		switch {
		case isPrivate(a) && !isPrivate(src):
			return true, "private Via address"
		case a != src:
			return true, "Via address is not the source"
		case udp && port != int(source.Port()):
			return true, "Via port is not the source port"
		}
	}
	if v, ok := via.Params.Get("received"); ok && v != "" {
		if a, err := netip.ParseAddr(strings.Trim(v, "[]")); err != nil || a.Unmap() != src {
			return true, "Via received is not the source"
		}
	}
	if v, ok := via.Params.Get("rport"); ok && v != "" && udp {
		if n, err := strconv.Atoi(v); err != nil || n != int(source.Port()) {
			return true, "Via rport is not the source port"
		}
	}
	return false, ""
}

// isOutbound reports whether a contact asks to be reached over the flow
// it registered on only (RFC 5626: ;ob in its URI, or a reg-id).
func isOutbound(c *siplib.ContactHeader) bool {
	return c.Address.UriParams.Has("ob") || c.Params.Has("reg-id")
}

// maxPath bounds the Path entries a binding keeps.
const maxPath = 8

var errBadPath = errors.New("a Path entry is not a SIP URI")

// paths returns the URIs of the request's Path headers (RFC 3327), in
// order, as written (without the angle brackets).
func paths(r *siplib.Request) ([]string, error) {
	var out []string
	for _, h := range r.GetHeaders("Path") {
		for _, e := range splitList(h.Value()) {
			s := strings.TrimSpace(e)
			if i := strings.IndexByte(s, '<'); i >= 0 {
				j := strings.IndexByte(s[i:], '>')
				if j < 0 {
					return nil, errBadPath
				}
				s = s[i+1 : i+j]
			}
			var u siplib.Uri
			if err := siplib.ParseUri(s, &u); err != nil || (u.Scheme != "sip" && u.Scheme != "sips") || u.Host == "" {
				return nil, errBadPath
			}
			out = append(out, s)
			if len(out) > maxPath {
				return nil, errors.New("more than 8 Path entries")
			}
		}
	}
	return out, nil
}

// splitList splits a header value at the commas outside <> and quotes.
func splitList(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' && (i == 0 || v[i-1] != '\\'):
			quoted = !quoted
		case quoted:
		case c == '<':
			depth++
		case c == '>':
			depth--
		case c == ',' && depth == 0:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	if strings.TrimSpace(v[start:]) != "" {
		out = append(out, v[start:])
	}
	return out
}

// supports reports whether the request lists option tag in Supported.
func supports(r *siplib.Request, tag string) bool {
	for _, h := range r.GetHeaders("Supported") {
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return true
			}
		}
	}
	for _, h := range r.GetHeaders("k") { // compact form
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return true
			}
		}
	}
	return false
}
