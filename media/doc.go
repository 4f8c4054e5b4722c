// Package media will hold the RTP/RTCP relay: the even/odd port allocator,
// relay sessions and legs, latching and RTCP statistics. It knows no SIP.
// Not yet implemented: see issue 3 (media anchoring).
package media
