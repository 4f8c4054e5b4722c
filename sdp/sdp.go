// Package sdp is voxvisor's SDP offer/answer handling on pion/sdp/v3:
// tolerant parsing of what real phones send, reading each stream's
// addresses, and rewriting a description so media flows through the
// relay (c=, m= port, a=rtcp, rtcp-mux), with codec policy, hold
// detection and a stable o= line.
//
// It opens no sockets and allocates no ports: the caller (the anchoring
// glue) asks media for ports and hands them in.
package sdp

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

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

// Parse normalises raw and parses it.
func Parse(raw []byte) (*psdp.SessionDescription, error) {
	var d psdp.SessionDescription
	if err := d.Unmarshal(Normalize(raw)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &d, nil
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
