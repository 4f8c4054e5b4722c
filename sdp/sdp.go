// Package sdp is voxvisor's SDP offer/answer handling on pion/sdp/v3:
// tolerant parsing of what real phones send, reading each stream's
// addresses, and rewriting a description so media flows through the
// relay (c=, m= port, a=rtcp, rtcp-mux), with codec policy, hold
// detection and a stable o= line.
//
// Besides RTP streams it carries T.38 fax (m=image <port> udptl t38,
// RFC 3362 and ITU-T T.38 Annex D): pion/sdp knows neither the image
// media nor the udptl transport, so Parse stands in for them while pion
// parses and puts the original text back. A UDPTL stream is rewritten to
// the relay like RTP but gets no a=rtcp (UDPTL has no RTCP) and no codec
// policy (its format is t38, not a payload type); its a=T38Fax*
// attributes pass byte for byte.
//
// It opens no sockets and allocates no ports: the caller (the anchoring
// glue) asks media for ports and hands them in.
package sdp

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	psdp "github.com/pion/sdp/v3"
)

// Errors.
var (
	// ErrNoCodec means codec policy removed every codec of a stream: the
	// caller should answer 488 Not Acceptable Here.
	ErrNoCodec = errors.New("sdp: no allowed codec left")
	// ErrMalformed wraps a description that cannot be parsed even after
	// normalisation.
	ErrMalformed = errors.New("sdp: malformed description")
	// ErrStreams means an answer has a different number of m-lines than
	// the offer it answers.
	ErrStreams = errors.New("sdp: answer and offer have different m-lines")
)

// Parse normalises raw and parses it. m-lines whose media or transport
// pion/sdp does not know but the relay carries (m=image, udptl in any
// case) are parsed with stand-ins and come back as written.
func Parse(raw []byte) (*psdp.SessionDescription, error) {
	norm, kept := standIn(Normalize(raw))
	var d psdp.SessionDescription
	if err := d.Unmarshal(norm); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for i, m := range d.MediaDescriptions {
		if i < len(kept) && kept[i].media != "" {
			m.MediaName.Media = kept[i].media
			m.MediaName.Protos = strings.Split(kept[i].proto, "/")
		}
	}
	return &d, nil
}

// pionMedia and pionProtos are the media and transport tokens pion/sdp
// accepts on an m-line (its IANA lists, case-sensitive).
var (
	pionMedia  = map[string]bool{"audio": true, "video": true, "text": true, "application": true, "message": true}
	pionProtos = map[string]bool{"UDP": true, "RTP": true, "AVP": true, "SAVP": true, "SAVPF": true, "TLS": true,
		"DTLS": true, "SCTP": true, "AVPF": true, "TCP": true, "MSRP": true, "BFCP": true, "UDT": true,
		"IX": true, "MRCPv2": true, "FEC": true}
)

// original is an m-line's media and transport as written, when pion
// parsed it under stand-ins.
type original struct{ media, proto string }

// standIn replaces, on every m-line pion/sdp would refuse only for its
// media (image, ...) or for a UDPTL transport, those two fields with ones
// it accepts (application, UDP). kept has one entry per m-line, empty
// where nothing was replaced. Other transports pion refuses stay, and
// the description stays refused.
func standIn(norm []byte) ([]byte, []original) {
	var kept []original
	changed := false
	lines := bytes.SplitAfter(norm, []byte("\r\n"))
	for i, l := range lines {
		if !bytes.HasPrefix(l, []byte("m=")) {
			continue
		}
		kept = append(kept, original{})
		f := strings.Fields(string(l[2:]))
		if len(f) < 3 {
			continue
		}
		media, proto := f[0], f[2]
		udptl := isUDPTL(proto)
		protoOK := true
		for _, p := range strings.Split(proto, "/") {
			protoOK = protoOK && pionProtos[p]
		}
		if pionMedia[media] && protoOK || !protoOK && !udptl {
			continue
		}
		f[0] = "application"
		if udptl {
			f[2] = "UDP"
		}
		kept[len(kept)-1] = original{media: media, proto: proto}
		lines[i] = []byte("m=" + strings.Join(f, " ") + "\r\n")
		changed = true
	}
	if !changed {
		return norm, kept
	}
	return bytes.Join(lines, nil), kept
}

// isUDPTL reports whether an m-line's transport is UDPTL (T.38 fax):
// udptl, UDPTL, or a layering ending in it (UDP/TLS/UDPTL, RFC 7345).
func isUDPTL(proto string) bool {
	i := strings.LastIndexByte(proto, '/')
	return strings.EqualFold(proto[i+1:], "udptl")
}

// session-level line order (RFC 4566 §5); t= and r= share a rank so that
// their pairs keep their relative order.
var sessionRank = map[byte]int{'v': 0, 'o': 1, 's': 2, 'i': 3, 'u': 4, 'e': 5, 'p': 6, 'c': 7, 'b': 8, 't': 9, 'r': 9, 'z': 10, 'k': 11, 'a': 12}

// media-level line order after m=.
var mediaRank = map[byte]int{'i': 1, 'c': 2, 'b': 3, 'k': 4, 'a': 5}

// Normalize reorders lines into RFC 4566 order (which pion/sdp insists on
// and real phones do not always follow), drops blank and unknown lines,
// supplies a missing s= or t=, and ends every line with CRLF.
func Normalize(raw []byte) []byte {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	var session [][]byte
	var media [][][]byte
	for _, l := range bytes.Split(raw, []byte("\n")) {
		l = bytes.TrimRight(l, " \t\r")
		if len(l) < 2 || l[1] != '=' {
			continue
		}
		if l[0] == 'm' {
			media = append(media, [][]byte{l})
			continue
		}
		if len(media) == 0 {
			if _, ok := sessionRank[l[0]]; ok {
				session = append(session, l)
			}
			continue
		}
		if _, ok := mediaRank[l[0]]; ok {
			media[len(media)-1] = append(media[len(media)-1], l)
		}
	}
	sort.SliceStable(session, func(i, j int) bool { return sessionRank[session[i][0]] < sessionRank[session[j][0]] })
	has := func(c byte) bool {
		for _, l := range session {
			if l[0] == c {
				return true
			}
		}
		return false
	}
	if !has('s') {
		session = insertAt(session, []byte("s=-"), func(c byte) bool { return sessionRank[c] > 2 })
	}
	if !has('t') {
		session = insertAt(session, []byte("t=0 0"), func(c byte) bool { return sessionRank[c] > 9 })
	}
	var out bytes.Buffer
	for _, l := range session {
		out.Write(l)
		out.WriteString("\r\n")
	}
	for _, m := range media {
		rest := m[1:]
		sort.SliceStable(rest, func(i, j int) bool { return mediaRank[rest[i][0]] < mediaRank[rest[j][0]] })
		for _, l := range m {
			out.Write(l)
			out.WriteString("\r\n")
		}
	}
	return out.Bytes()
}

// insertAt inserts line before the first line whose type satisfies after.
func insertAt(lines [][]byte, line []byte, after func(byte) bool) [][]byte {
	for i, l := range lines {
		if after(l[0]) {
			return append(lines[:i], append([][]byte{line}, lines[i:]...)...)
		}
	}
	return append(lines, line)
}
