package sdp

import (
	"math"
	"net/netip"
	"strconv"
	"strings"

	psdp "github.com/pion/sdp/v3"
)

// Direction values (RFC 4566 §6).
const (
	SendRecv = "sendrecv"
	SendOnly = "sendonly"
	RecvOnly = "recvonly"
	Inactive = "inactive"
)

// Stream is one m-line as its sender describes it: where it wants to
// receive RTP and RTCP, or UDPTL.
type Stream struct {
	Media     string     // audio, video, image, ...
	Port      int        // RTP (or UDPTL) port; 0 when the stream is rejected
	Addr      netip.Addr // c= address (media level, else session level)
	RTCPPort  int        // a=rtcp port, else Port+1; 0 for UDPTL (no RTCP)
	RTCPAddr  netip.Addr // a=rtcp address, else Addr; unset for UDPTL
	Mux       bool       // a=rtcp-mux; never for UDPTL
	Direction string     // sendrecv, sendonly, recvonly, inactive
	ClockRate int        // of the first format, 8000 when unknown
	Proto     string     // RTP/AVP, RTP/SAVP, udptl, ... as written
}

// UDPTL reports whether the stream is T.38 fax over UDPTL (m=image ...
// udptl t38, the transport in any case): the relay forwards its
// datagrams as they are, with no RTCP, and no codec policy applies.
func (s Stream) UDPTL() bool { return isUDPTL(s.Proto) }

// Secure reports whether the stream is SRTP (RTP/SAVP, RTP/SAVPF, or
// DTLS-SRTP's UDP/TLS/RTP/SAVP[F]): the relay passes it untouched and
// the SDP keeps its profile and a=crypto or a=fingerprint lines.
func (s Stream) Secure() bool { return strings.Contains(s.Proto, "SAVP") }

// Held reports whether this side put the stream on hold: sendonly,
// inactive, or the legacy c=0.0.0.0 (RFC 2543).
func (s Stream) Held() bool {
	return s.Direction == SendOnly || s.Direction == Inactive || (s.Addr.IsValid() && s.Addr.IsUnspecified())
}

// Streams describes every m-line of d.
func Streams(d *psdp.SessionDescription) []Stream {
	out := make([]Stream, len(d.MediaDescriptions))
	sessionDir := direction(d.Attributes, SendRecv)
	for i, m := range d.MediaDescriptions {
		s := Stream{Media: m.MediaName.Media, Port: m.MediaName.Port.Value, Proto: strings.Join(m.MediaName.Protos, "/")}
		ci := m.ConnectionInformation
		if ci == nil {
			ci = d.ConnectionInformation
		}
		if ci != nil && ci.Address != nil {
			s.Addr, _ = netip.ParseAddr(ci.Address.Address)
		}
		s.Direction = direction(m.Attributes, sessionDir)
		s.ClockRate = 8000
		if s.UDPTL() {
			out[i] = s // no RTCP, no rtcp-mux, no payload types
			continue
		}
		s.RTCPPort, s.RTCPAddr = s.Port+1, s.Addr
		for _, a := range m.Attributes {
			switch a.Key {
			case "rtcp":
				f := strings.Fields(a.Value)
				if len(f) > 0 {
					if p, err := strconv.Atoi(f[0]); err == nil {
						s.RTCPPort = p
					}
				}
				if len(f) == 4 {
					if ad, err := netip.ParseAddr(f[3]); err == nil {
						s.RTCPAddr = ad
					}
				}
			case "rtcp-mux":
				s.Mux = true
			}
		}
		if s.Mux {
			s.RTCPPort = s.Port
		}
		if len(m.MediaName.Formats) > 0 {
			if c := clockRate(m, m.MediaName.Formats[0]); c > 0 {
				s.ClockRate = c
			}
		}
		out[i] = s
	}
	return out
}

func direction(as []psdp.Attribute, def string) string {
	for _, a := range as {
		switch a.Key {
		case SendRecv, SendOnly, RecvOnly, Inactive:
			return a.Key
		}
	}
	return def
}

func clockRate(m *psdp.MediaDescription, pt string) int {
	for _, a := range m.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		f, rest, _ := strings.Cut(a.Value, " ")
		if f != pt {
			continue
		}
		parts := strings.Split(rest, "/")
		if len(parts) >= 2 {
			n, _ := strconv.Atoi(parts[1])
			return n
		}
	}
	if n, err := strconv.Atoi(pt); err == nil {
		if sc, ok := staticCodecs[n]; ok {
			return sc.rate
		}
	}
	return 0
}

type static struct {
	name string
	rate int
}

// staticCodecs are the RTP/AVP static payload types (RFC 3551 table 4/5).
var staticCodecs = map[int]static{
	0: {"pcmu", 8000}, 3: {"gsm", 8000}, 4: {"g723", 8000}, 5: {"dvi4", 8000}, 6: {"dvi4", 16000},
	7: {"lpc", 8000}, 8: {"pcma", 8000}, 9: {"g722", 8000}, 10: {"l16", 44100}, 11: {"l16", 44100},
	12: {"qcelp", 8000}, 13: {"cn", 8000}, 14: {"mpa", 90000}, 15: {"g728", 8000}, 18: {"g729", 8000},
	25: {"celb", 90000}, 26: {"jpeg", 90000}, 28: {"nv", 90000}, 31: {"h261", 90000}, 32: {"mpv", 90000},
	33: {"mp2t", 90000}, 34: {"h263", 90000},
}

// codecName returns the lower-case encoding name of payload type pt in m.
func codecName(m *psdp.MediaDescription, pt string) string {
	for _, a := range m.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		f, rest, _ := strings.Cut(a.Value, " ")
		if f == pt {
			name, _, _ := strings.Cut(rest, "/")
			return strings.ToLower(name)
		}
	}
	if n, err := strconv.Atoi(pt); err == nil {
		return staticCodecs[n].name
	}
	return ""
}

// Policy is the codec policy applied to every rewritten description's
// RTP streams (a UDPTL stream has no codecs: its format is t38).
type Policy struct {
	// Allow lists the encoding names allowed (case-insensitive, e.g.
	// "PCMU", "PCMA", "G722", "opus", "VP8"). Empty allows everything.
	// telephone-event (RFC 4733) is always kept alongside an allowed codec.
	Allow []string
}

func (p Policy) allows(name string) bool {
	if len(p.Allow) == 0 || name == "telephone-event" {
		return true
	}
	for _, a := range p.Allow {
		if strings.EqualFold(a, name) {
			return true
		}
	}
	return false
}

// Endpoint is where the relay receives one stream for this description's
// reader.
type Endpoint struct {
	Addr     netip.Addr
	RTPPort  int // even; a UDPTL stream's port
	RTCPPort int // RTPPort+1, or RTPPort when Mux; not written for UDPTL
	Mux      bool
}

// Origin keeps one leg's o= line stable: the same session id, and a
// version bumped only when the description changes (RFC 3264 §8).
type Origin struct {
	set      bool
	id, ver  uint64
	username string
	last     string // the previous body without o=, to detect change
}

// Rewrite points every accepted stream of d at eps[i] (eps has one entry
// per m-line; rejected streams, port 0, stay rejected, and a stream whose
// endpoint has no RTP port is rejected: port 0), applies policy to its
// RTP streams, and writes o= through origin. A UDPTL stream gets the
// relay's c= and port and no a=rtcp or a=rtcp-mux; its other attributes
// (a=T38Fax...) stay as they were. It returns the new body.
func Rewrite(d *psdp.SessionDescription, eps []Endpoint, policy Policy, origin *Origin) ([]byte, error) {
	if len(eps) != len(d.MediaDescriptions) {
		return nil, ErrStreams
	}
	var relayAddr netip.Addr
	for i, m := range d.MediaDescriptions {
		ep := eps[i]
		if ep.Addr.IsValid() {
			relayAddr = ep.Addr
		}
		if m.MediaName.Port.Value == 0 || ep.RTPPort == 0 {
			// Rejected: port 0, and a media-level c= names the relay too,
			// never the far end.
			m.MediaName.Port = psdp.RangedPort{Value: 0}
			if m.ConnectionInformation != nil && ep.Addr.IsValid() {
				m.ConnectionInformation = connection(ep.Addr, ep.Addr.String())
			}
			continue
		}
		udptl := isUDPTL(strings.Join(m.MediaName.Protos, "/"))
		if !udptl {
			if err := filterCodecs(m, policy); err != nil {
				return nil, err
			}
		}
		held := false
		ci := m.ConnectionInformation
		if ci == nil {
			ci = d.ConnectionInformation
		}
		if ci != nil && ci.Address != nil && (ci.Address.Address == "0.0.0.0" || ci.Address.Address == "::") {
			held = true
		}
		m.MediaName.Port = psdp.RangedPort{Value: ep.RTPPort}
		addr := ep.Addr.String()
		if held {
			addr = "0.0.0.0"
		}
		m.ConnectionInformation = connection(ep.Addr, addr)
		attrs := m.Attributes[:0:0]
		for _, a := range m.Attributes {
			if a.Key == "rtcp" || a.Key == "rtcp-mux" || iceAttr[a.Key] {
				continue
			}
			attrs = append(attrs, a)
		}
		switch {
		case udptl: // UDPTL has no RTCP
		case ep.Mux:
			attrs = append(attrs, psdp.NewPropertyAttribute("rtcp-mux"))
		default:
			attrs = append(attrs, psdp.NewAttribute("rtcp", strconv.Itoa(ep.RTCPPort)))
		}
		m.Attributes = attrs
	}
	sattrs := d.Attributes[:0:0]
	for _, a := range d.Attributes {
		if !iceAttr[a.Key] {
			sattrs = append(sattrs, a)
		}
	}
	d.Attributes = sattrs
	if d.ConnectionInformation != nil && relayAddr.IsValid() {
		a := relayAddr.String()
		if d.ConnectionInformation.Address != nil && d.ConnectionInformation.Address.Address == "0.0.0.0" {
			a = "0.0.0.0"
		}
		d.ConnectionInformation = connection(relayAddr, a)
	}
	if relayAddr.IsValid() {
		d.Origin.NetworkType, d.Origin.AddressType = "IN", addrType(relayAddr)
		d.Origin.UnicastAddress = relayAddr.String()
	}
	return origin.apply(d)
}

// iceAttr are the ICE attributes (RFC 8839): candidates name the far
// end's own addresses, which the relay replaces, so they are removed.
var iceAttr = map[string]bool{"candidate": true, "ice-ufrag": true, "ice-pwd": true, "ice-options": true,
	"ice-lite": true, "end-of-candidates": true, "remote-candidates": true, "ice-mismatch": true}

func (o *Origin) apply(d *psdp.SessionDescription) ([]byte, error) {
	if !o.set {
		o.set = true
		o.id = d.Origin.SessionID & math.MaxInt64
		o.ver = d.Origin.SessionVersion & (math.MaxInt64 >> 1)
		o.username = d.Origin.Username
	}
	d.Origin.SessionID, d.Origin.Username = o.id, o.username
	d.Origin.SessionVersion = 0
	probe, err := d.Marshal()
	if err != nil {
		return nil, err
	}
	if o.last != "" && o.last != string(probe) {
		if o.ver < math.MaxInt64 {
			o.ver++
		}
	}
	o.last = string(probe)
	d.Origin.SessionVersion = o.ver
	return d.Marshal()
}

func connection(relay netip.Addr, addr string) *psdp.ConnectionInformation {
	return &psdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType(relay), Address: &psdp.Address{Address: addr}}
}

func addrType(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "IP4"
	}
	return "IP6"
}

// filterCodecs drops formats the policy does not allow, with their
// rtpmap, fmtp and rtcp-fb lines. It fails when only telephone-event (or
// nothing) would remain.
func filterCodecs(m *psdp.MediaDescription, p Policy) error {
	if len(p.Allow) == 0 {
		return nil
	}
	keep := map[string]bool{}
	var formats []string
	real := 0
	for _, f := range m.MediaName.Formats {
		name := codecName(m, f)
		if p.allows(name) {
			keep[f] = true
			formats = append(formats, f)
			if name != "telephone-event" {
				real++
			}
		}
	}
	if real == 0 {
		return ErrNoCodec
	}
	m.MediaName.Formats = formats
	attrs := m.Attributes[:0:0]
	for _, a := range m.Attributes {
		switch a.Key {
		case "rtpmap", "fmtp", "rtcp-fb":
			pt, _, _ := strings.Cut(a.Value, " ")
			if !keep[pt] && pt != "*" {
				continue
			}
		}
		attrs = append(attrs, a)
	}
	m.Attributes = attrs
	return nil
}
