package server

import (
	"bytes"
	"net"
	"strconv"

	siplib "github.com/emiago/sipgo/sip"
)

// screen runs on every datagram (and TCP read) before sipgo parses it. A
// UDP datagram (request or response) from a blocked source is dropped; a
// CRLF keep-alive is answered (see keepAlive) and goes no further; one that is too large,
// has too many headers or lacks what a request needs is answered 400 when
// a response can be formed and dropped otherwise; either way it is counted
// and the listener keeps serving (returning an empty slice, never an
// error, which would stop it). It allocates nothing for a good message.
func (s *Server) screen(p siplib.TransportReadProps, data []byte) ([]byte, error) {
	if p.Transport != "UDP" {
		return data, nil
	}
	if s.guard != nil {
		// Responses count too: a source flooding responses is as much a
		// flood as one sending requests.
		if ua, ok := p.RemoteAddr.(*net.UDPAddr); ok {
			src := ua.AddrPort().Addr().Unmap()
			if ok, blocked := s.guard.Allow(src); !ok {
				if blocked {
					s.log.Warn("source blocked for flooding", "source", src.String(), "transport", "udp")
				}
				return nil, nil
			}
		}
	}
	if onlyCRLF(data) {
		s.keepAlive(p, data)
		return nil, nil
	}
	if reason := s.check(data); reason != "" {
		if s.reject(p, data, reason) {
			s.Stats.Rejected.Add(1)
		} else {
			s.Stats.Dropped.Add(1)
		}
		return nil, nil
	}
	s.acks.seen(data)
	return data, nil
}

var (
	crlf       = []byte("\r\n")
	doubleCRLF = []byte("\r\n\r\n")
	sipVer     = []byte("SIP/2.0")
)

// keepAlive answers a UDP datagram of CRLFs: "\r\n\r\n", the ping of
// RFC 5626 §4.4.1, gets the single "\r\n" pong (phones send it over UDP
// too, to keep their NAT binding open, and some wait for the pong);
// anything else made of CRLFs is ignored. Neither is parsed or counted
// as malformed.
func (s *Server) keepAlive(p siplib.TransportReadProps, data []byte) {
	if bytes.Equal(data, doubleCRLF) {
		s.writeUDP(p, crlf)
	}
}

// Headers the screen looks at, as bits.
const (
	hVia = 1 << iota
	hFrom
	hTo
	hCallID
	hCSeq
	hContentLength
	hMaxForwards

	hRequired = hVia | hFrom | hTo | hCallID | hCSeq
)

// headerKind names a header by its full or compact name, case-insensitively.
func headerKind(name []byte) int {
	name = bytes.TrimSpace(name)
	if len(name) == 1 {
		switch name[0] | 0x20 {
		case 'v':
			return hVia
		case 'f':
			return hFrom
		case 't':
			return hTo
		case 'i':
			return hCallID
		case 'l':
			return hContentLength
		}
		return 0
	}
	for _, k := range headerNames {
		if len(name) == len(k.name) && bytes.EqualFold(name, k.name) {
			return k.kind
		}
	}
	return 0
}

var headerNames = []struct {
	name []byte
	kind int
}{{[]byte("via"), hVia}, {[]byte("from"), hFrom}, {[]byte("to"), hTo}, {[]byte("call-id"), hCallID},
	{[]byte("cseq"), hCSeq}, {[]byte("content-length"), hContentLength}, {[]byte("max-forwards"), hMaxForwards}}

// eachHeader calls fn for each header line of head (after the start
// line), skipping folded continuations, until fn returns false.
// malformed reports a line that is not a header.
func eachHeader(head []byte, fn func(kind int, val, line []byte) bool) (malformed bool) {
	_, rest, _ := bytes.Cut(head, crlf)
	for len(rest) > 0 {
		line, next, _ := bytes.Cut(rest, crlf)
		rest = next
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return true
		}
		if !fn(headerKind(name), val, line) {
			return false
		}
	}
	return false
}

// check returns why data is not an acceptable SIP message, or "".
func (s *Server) check(data []byte) string {
	if len(data) > s.cfg.MaxMessageSize {
		return "Message Too Large"
	}
	head, body, ok := bytes.Cut(data, []byte("\r\n\r\n"))
	if !ok {
		// sipgo accepts a bare LF framing from some peers; leave it to parse.
		return ""
	}
	start, _, _ := bytes.Cut(head, crlf)
	isResponse := bytes.HasPrefix(start, sipVer)
	if !isResponse {
		method, rest, ok1 := bytes.Cut(start, []byte(" "))
		uri, ver, ok2 := bytes.Cut(rest, []byte(" "))
		if !ok1 || !ok2 || !bytes.Equal(ver, sipVer) || len(method) == 0 || len(uri) == 0 {
			return "Bad Request Line"
		}
	}
	if bytes.Count(head, crlf) > s.cfg.MaxHeaders {
		return "Too Many Headers"
	}
	seen, reason := 0, ""
	if eachHeader(head, func(kind int, val, _ []byte) bool {
		seen |= kind
		switch kind {
		case hContentLength:
			cl, err := strconv.Atoi(string(bytes.TrimSpace(val)))
			if err != nil || cl < 0 {
				reason = "Bad Content-Length"
			} else if cl > len(body) {
				reason = "Content-Length Beyond Datagram"
			}
		case hCSeq:
			num, _, _ := bytes.Cut(bytes.TrimSpace(val), []byte(" "))
			if _, err := strconv.ParseUint(string(num), 10, 32); err != nil {
				reason = "Bad CSeq"
			}
		case hMaxForwards:
			if _, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 10, 8); err != nil {
				reason = "Bad Max-Forwards"
			}
		}
		return reason == ""
	}) {
		return "Malformed Header"
	}
	if reason != "" {
		return reason
	}
	if !isResponse && seen&hRequired != hRequired {
		return "Missing Mandatory Header"
	}
	return ""
}

// reject answers a malformed UDP request with 400 built from its raw
// headers, when it has the headers a response needs. Responses and
// requests too broken to answer are dropped.
func (s *Server) reject(p siplib.TransportReadProps, data []byte, reason string) bool {
	if bytes.HasPrefix(data, sipVer) || bytes.HasPrefix(data, []byte("ACK ")) {
		return false
	}
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	var out bytes.Buffer
	out.WriteString("SIP/2.0 400 " + reason + "\r\n")
	have := 0
	eachHeader(head, func(kind int, _, line []byte) bool {
		if kind&hRequired != 0 {
			out.Write(line)
			out.WriteString("\r\n")
			have |= kind
		}
		return true
	})
	if have&(hVia|hCSeq) != hVia|hCSeq {
		return false
	}
	out.WriteString("Server: voxvisor\r\nContent-Length: 0\r\n\r\n")
	return s.writeUDP(p, out.Bytes())
}

// writeUDP sends b back to where a datagram came from, from the socket
// it came to.
func (s *Server) writeUDP(p siplib.TransportReadProps, b []byte) bool {
	for _, c := range s.udp {
		if c.LocalAddr().String() == p.LocalAddr.String() {
			_, err := c.WriteTo(b, p.RemoteAddr)
			return err == nil
		}
	}
	if len(s.udp) > 0 {
		_, err := s.udp[0].WriteTo(b, p.RemoteAddr)
		return err == nil
	}
	return false
}
