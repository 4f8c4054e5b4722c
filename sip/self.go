package sip

import (
	"net/netip"
	"strings"

	siplib "github.com/emiago/sipgo/sip"
)

// Listener is one bound SIP socket as peers should address it.
type Listener struct {
	Transport string         // "udp", "tcp" or "tls"
	Bound     netip.AddrPort // the socket's real address
	Host      string         // advertised host for Via and Record-Route
	Port      int            // advertised port
}

// Self knows which names and addresses are this server: its domain and
// every listener. Set once at start; safe for concurrent reads.
type Self struct {
	Domain    string
	Listeners []Listener
	hosts     map[string]bool
	ports     map[int]bool
}

// NewSelf returns a Self for domain and the bound listeners.
func NewSelf(domain string, ls []Listener) *Self {
	s := &Self{Domain: domain, Listeners: ls, hosts: map[string]bool{strings.ToLower(domain): true}, ports: map[int]bool{}}
	for _, l := range ls {
		s.hosts[strings.ToLower(l.Host)] = true
		s.hosts[l.Bound.Addr().String()] = true
		s.ports[l.Port] = true
		s.ports[int(l.Bound.Port())] = true
		if l.Bound.Addr().IsUnspecified() || l.Bound.Addr().IsLoopback() {
			s.hosts["127.0.0.1"] = true
			s.hosts["localhost"] = true
			s.hosts["::1"] = true
		}
	}
	return s
}

// IsLocal reports whether host names this server (domain or address).
func (s *Self) IsLocal(host string) bool {
	host = strings.ToLower(strings.Trim(host, "[]"))
	return s.hosts[host]
}

// IsMe reports whether u addresses this server itself (host and port),
// as a Route or Record-Route entry we inserted does.
func (s *Self) IsMe(u siplib.Uri) bool {
	if !s.IsLocal(u.Host) {
		return false
	}
	if u.Port == 0 {
		return s.ports[5060] || s.ports[5061]
	}
	return s.ports[u.Port]
}

// SentByMe reports whether a Via's sent-by (host, port; 0 for none)
// names this server.
func (s *Self) SentByMe(host string, port int) bool {
	return s.IsMe(siplib.Uri{Host: host, Port: port})
}

// Listener returns the listener for transport, preferring the first.
func (s *Self) Listener(transport string) (Listener, bool) {
	for _, l := range s.Listeners {
		if l.Transport == transport {
			return l, true
		}
	}
	return Listener{}, false
}

// ListenerAt returns the listener of transport bound to addr.
func (s *Self) ListenerAt(transport string, addr netip.AddrPort) (Listener, bool) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	for _, l := range s.Listeners {
		if l.Transport == transport && netip.AddrPortFrom(l.Bound.Addr().Unmap(), l.Bound.Port()) == addr {
			return l, true
		}
	}
	return Listener{}, false
}

// ListenerNamed returns the listener of transport that a URI of ours
// with host and port (0: the default 5060) addresses: by its advertised
// host and port, or by its bound address.
func (s *Self) ListenerNamed(transport, host string, port int) (Listener, bool) {
	if port == 0 {
		port = 5060
	}
	for _, l := range s.Listeners {
		if l.Transport != transport {
			continue
		}
		if (strings.EqualFold(l.Host, host) && l.Port == port) || (l.Bound.Addr().String() == strings.Trim(host, "[]") && int(l.Bound.Port()) == port) {
			return l, true
		}
	}
	return Listener{}, false
}

// DefaultTransport is the transport a URI asks for: its transport
// parameter, else tls for sips: (RFC 3261 §26.2.2), else udp.
func DefaultTransport(u siplib.Uri) string {
	if v, ok := u.UriParams.Get("transport"); ok && v != "" {
		return strings.ToLower(v)
	}
	if u.IsEncrypted() {
		return "tls"
	}
	return "udp"
}

// DefaultPort is the port for a URI without one: 5061 over TLS, else 5060.
func DefaultPort(u siplib.Uri) int {
	if u.Port != 0 {
		return u.Port
	}
	if DefaultTransport(u) == "tls" {
		return 5061
	}
	return 5060
}
