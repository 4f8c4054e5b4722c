package server

import (
	"bytes"
	"net"
	"strconv"

	siplib "github.com/emiago/sipgo/sip"
)

// screen runs on every datagram (and TCP read) before sipgo parses it. A
// UDP datagram that is too large, has too many headers or lacks what a
// request needs is answered 400 when a response can be formed and dropped
// otherwise; either way it is counted and the listener keeps serving
// (returning an empty slice, never an error, which would stop it).
func (s *Server) screen(p siplib.TransportReadProps, data []byte) ([]byte, error) {
	if p.Transport != "UDP" {
		return data, nil
	}
	if s.guard != nil && !bytes.HasPrefix(data, sipVer) {
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
	if reason := s.check(data); reason != "" {
		if s.reject(p, data, reason) {
			s.Stats.Rejected.Add(1)
		} else {
			s.Stats.Dropped.Add(1)
		}
		return nil, nil
	}
	return data, nil
}

var (
	crlf     = []byte("\r\n")
	sipVer   = []byte("SIP/2.0")
	required = [][]byte{[]byte("via"), []byte("from"), []byte("to"), []byte("call-id"), []byte("cseq")}
	compact  = map[string]string{"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length", "m": "contact"}
)

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
	lines := bytes.Split(head, crlf)
	start := lines[0]
	isResponse := bytes.HasPrefix(start, sipVer)
	if !isResponse {
		parts := bytes.Split(start, []byte(" "))
		if len(parts) != 3 || !bytes.Equal(parts[2], sipVer) || len(parts[0]) == 0 || len(parts[1]) == 0 {
			return "Bad Request Line"
		}
	}
	if len(lines)-1 > s.cfg.MaxHeaders {
		return "Too Many Headers"
	}
	seen := 0
	for _, l := range lines[1:] {
		if len(l) == 0 || l[0] == ' ' || l[0] == '\t' {
			continue // folded continuation
		}
		name, val, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			return "Malformed Header"
		}
		n := string(bytes.ToLower(bytes.TrimSpace(name)))
		if full, ok := compact[n]; ok {
			n = full
		}
		for i, r := range required {
			if n == string(r) {
				seen |= 1 << i
			}
		}
		switch n {
		case "content-length":
			cl, err := strconv.Atoi(string(bytes.TrimSpace(val)))
			if err != nil || cl < 0 {
				return "Bad Content-Length"
			}
			if cl > len(body) {
				return "Content-Length Beyond Datagram"
			}
		case "cseq":
			num, _, _ := bytes.Cut(bytes.TrimSpace(val), []byte(" "))
			if _, err := strconv.ParseUint(string(num), 10, 32); err != nil {
				return "Bad CSeq"
			}
		case "max-forwards":
			if _, err := strconv.ParseUint(string(bytes.TrimSpace(val)), 10, 8); err != nil {
				return "Bad Max-Forwards"
			}
		}
	}
	if !isResponse && seen != 1<<len(required)-1 {
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
	lines := bytes.Split(head, crlf)
	var out bytes.Buffer
	out.WriteString("SIP/2.0 400 " + reason + "\r\n")
	have := 0
	for _, l := range lines[1:] {
		name, _, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		n := string(bytes.ToLower(bytes.TrimSpace(name)))
		if full, ok := compact[n]; ok {
			n = full
		}
		switch n {
		case "via", "from", "to", "call-id", "cseq":
			out.Write(l)
			out.WriteString("\r\n")
			if n == "via" {
				have |= 1
			}
			if n == "cseq" {
				have |= 2
			}
		}
	}
	if have != 3 {
		return false
	}
	out.WriteString("Server: voxvisor\r\nContent-Length: 0\r\n\r\n")
	for _, c := range s.udp {
		if c.LocalAddr().String() == p.LocalAddr.String() {
			_, err := c.WriteTo(out.Bytes(), p.RemoteAddr)
			return err == nil
		}
	}
	if len(s.udp) > 0 {
		_, err := s.udp[0].(net.PacketConn).WriteTo(out.Bytes(), p.RemoteAddr)
		return err == nil
	}
	return false
}
