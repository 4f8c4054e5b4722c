// Package sdp will hold SDP offer/answer handling on pion/sdp/v3: tolerant
// parsing, rewriting for media anchoring, codec policy and hold detection.
// It opens no sockets. Not yet implemented: see issue 3 (media anchoring).
package sdp
