package anchor

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/guard"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

// streamsBody is an offer or answer from ip with one m=audio line per
// port (0: rejected).
func streamsBody(ip string, ports ...int) string {
	lines := []string{"v=0", "o=- 1 1 IN IP4 " + ip, "s=-", "c=IN IP4 " + ip, "t=0 0"}
	for _, p := range ports {
		lines = append(lines, fmt.Sprintf("m=audio %d RTP/AVP 0", p), "a=rtpmap:0 PCMU/8000")
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

// zeros returns n zero ports after the given ones.
func zeros(n int, ports ...int) []int { return append(ports, make([]int, n)...) }

// invite is an initial INVITE of call id from src carrying body.
func invite(t *testing.T, id, src, body string) (*sip.Request, *siplib.Request) {
	t.Helper()
	raw := strings.Join([]string{
		"INVITE sip:1002@voxvisor.local SIP/2.0",
		"Via: SIP/2.0/UDP " + src + ";branch=z9hG4bK-" + id,
		"From: <sip:anonymous@anonymous.invalid>;tag=a-" + id,
		"To: <sip:1002@voxvisor.local>",
		"Call-ID: " + id,
		"CSeq: 1 INVITE",
		"Contact: <sip:x@" + src + ">",
		"Max-Forwards: 70",
		"Content-Type: application/sdp",
		fmt.Sprintf("Content-Length: %d", len(body)),
		"",
		body,
	}, "\n")
	r, _, err := siptest.Request(raw, src, "udp")
	if err != nil {
		t.Fatal(err)
	}
	return r, r.Request.Clone()
}

func newLimitedAnchor(t *testing.T, pairs, maxStreams int, perSource *guard.Slots) *Anchor {
	t.Helper()
	r, err := media.New(media.Config{Addr: netip.MustParseAddr("127.0.0.1"), PortMin: 15000, PortMax: 15000 + 2*pairs - 1}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := New(r, Options{Mode: Always, MaxStreams: maxStreams}, logging.Discard())
	a.PerSource = perSource
	t.Cleanup(func() {
		for _, s := range r.Sessions() {
			r.Release(s.ID)
		}
	})
	return a
}

func warning(err error) string {
	for _, h := range sip.StatusOf(err).Headers {
		if strings.EqualFold(h.Name(), "Warning") {
			return h.Value()
		}
	}
	return ""
}

// TestRejectedStreamsTakeNoPorts: the attack of issue 12 item 6, an offer
// of one live stream and 24 m=audio 0 lines, takes one stream's two port
// pairs, not 50.
func TestRejectedStreamsTakeNoPorts(t *testing.T) {
	a := newLimitedAnchor(t, 100, 4, nil)
	r, out := invite(t, "c1", "198.51.100.7:5060", streamsBody("198.51.100.7", zeros(24, 4000)...))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	if n := a.relay.Allocator().InUse(); n != 2 {
		t.Fatalf("%d port pairs in use, want 2 (one stream, two legs)", n)
	}
	if got := strings.Count(string(out.Body()), "m=audio 0 "); got != 24 {
		t.Fatalf("%d rejected m-lines forwarded, want 24:\n%s", got, out.Body())
	}
	done(a, r, 487)
	if a.relay.Allocator().InUse() != 0 || a.Calls() != 0 {
		t.Fatal("a cancelled call kept its ports")
	}
}

// TestAnswerRejectsStream: a stream the answer rejects gives its ports
// back when the answer is final, not when an early answer shows it.
func TestAnswerRejectsStream(t *testing.T) {
	a := newLimitedAnchor(t, 100, 4, nil)
	r, out := invite(t, "c1", "198.51.100.7:5060", streamsBody("198.51.100.7", 4000, 4002))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	if n := a.relay.Allocator().InUse(); n != 4 {
		t.Fatalf("%d pairs in use, want 4", n)
	}
	ans := streamsBody("10.0.0.2", 5000, 0)
	early := response(r, 183, ans)
	if err := a.Response(r, early); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(early.Body()), "m=audio 0 ") {
		t.Fatalf("rejected stream given a port in the answer:\n%s", early.Body())
	}
	if n := a.relay.Allocator().InUse(); n != 4 {
		t.Fatalf("an early answer released ports: %d in use", n)
	}
	ok := response(r, 200, ans)
	if err := a.Response(r, ok); err != nil {
		t.Fatal(err)
	}
	done(a, r, 200)
	if n := a.relay.Allocator().InUse(); n != 2 {
		t.Fatalf("%d pairs in use after the final answer, want 2", n)
	}
	sess := a.relay.Get("c1")
	if sess.Stream(0) == nil || sess.Stream(1) != nil {
		t.Fatal("the accepted stream lost its ports or the rejected kept them")
	}
	// An answer that accepts a stream the offer rejected does not get it
	// ports either.
	r2, out2 := invite(t, "c2", "198.51.100.7:5060", streamsBody("198.51.100.7", 0, 4004))
	if err := a.Request(r2, out2); err != nil {
		t.Fatal(err)
	}
	res := response(r2, 200, streamsBody("10.0.0.2", 5002, 5004))
	if err := a.Response(r2, res); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.SplitAfter(string(res.Body()), "m=audio ")[1], "0 ") {
		t.Fatalf("answer to a rejected stream forwarded with a port:\n%s", res.Body())
	}
	if n := a.relay.Allocator().InUse(); n != 4 {
		t.Fatalf("%d pairs in use, want 4 (one stream per call)", n)
	}
}

// TestEarlyAnswerFinalisedBy2xx: an answer in a reliable 183 and a 200
// without SDP: the rejected stream is released at the 200.
func TestEarlyAnswerFinalisedBy2xx(t *testing.T) {
	a := newLimitedAnchor(t, 100, 4, nil)
	r, out := invite(t, "c1", "198.51.100.7:5060", streamsBody("198.51.100.7", 4000, 4002))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	if err := a.Response(r, response(r, 183, streamsBody("10.0.0.2", 5000, 0))); err != nil {
		t.Fatal(err)
	}
	if err := a.Response(r, response(r, 200, "")); err != nil {
		t.Fatal(err)
	}
	if n := a.relay.Allocator().InUse(); n != 2 {
		t.Fatalf("%d pairs in use, want 2", n)
	}
}

// TestMaxStreams: an offer with more live streams than MaxStreams is
// refused with 488 and a Warning before any port is taken; as many is
// fine; port-0 lines do not count.
func TestMaxStreams(t *testing.T) {
	a := newLimitedAnchor(t, 100, 4, nil)
	r, out := invite(t, "c1", "198.51.100.7:5060", streamsBody("198.51.100.7", 4000, 4002, 4004, 4006, 4008))
	err := a.Request(r, out)
	if sip.StatusOf(err).Code != 488 || !strings.Contains(warning(err), "too many media streams: 5 offered, at most 4") {
		t.Fatalf("err %v, Warning %q; want 488 naming the limit", err, warning(err))
	}
	done(a, r, 488)
	if a.relay.Len() != 0 || a.relay.Allocator().InUse() != 0 || a.Calls() != 0 || a.TooManyStreams.Load() != 1 {
		t.Fatalf("refused offer left %d sessions, %d pairs, %d calls (counted %d)", a.relay.Len(), a.relay.Allocator().InUse(), a.Calls(), a.TooManyStreams.Load())
	}
	r, out = invite(t, "c2", "198.51.100.7:5060", streamsBody("198.51.100.7", zeros(20, 4000, 4002, 4004, 4006)...))
	if err := a.Request(r, out); err != nil {
		t.Fatalf("4 streams and 20 rejected: %v", err)
	}
	if n := a.relay.Allocator().InUse(); n != 8 {
		t.Fatalf("%d pairs, want 8", n)
	}
}

// TestMaxStreamsInResponseOffer: an offer in a 200 (late offer) cannot be
// refused: the streams beyond the cap are rejected on the way.
func TestMaxStreamsInResponseOffer(t *testing.T) {
	a := newLimitedAnchor(t, 100, 2, nil)
	r, out := invite(t, "c1", "198.51.100.7:5060", "")
	out.SetBody(nil)
	r.SetBody(nil)
	r.RemoveHeader("Content-Type")
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	res := response(r, 200, streamsBody("10.0.0.2", 5000, 5002, 5004, 5006))
	if err := a.Response(r, res); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(res.Body()), "m=audio 0 "); got != 2 {
		t.Fatalf("%d streams rejected, want 2:\n%s", got, res.Body())
	}
	if n := a.relay.Allocator().InUse(); n != 4 {
		t.Fatalf("%d pairs, want 4", n)
	}
}

// TestStreamsPerSource: one source's calls hold at most PerSource.Max
// pairs; over it a call gets 503 with Retry-After, another source does
// not; every ending gives the pairs back.
func TestStreamsPerSource(t *testing.T) {
	g := guard.New(guard.Config{Streams: 4})
	g.SetTrusted([]netip.Prefix{netip.MustParsePrefix("203.0.113.5/32")})
	a := newLimitedAnchor(t, 100, 4, g.Streams)
	src := netip.MustParseAddr("198.51.100.7")
	r1, out := invite(t, "c1", "198.51.100.7:5060", streamsBody("198.51.100.7", 4000, 4002))
	if err := a.Request(r1, out); err != nil {
		t.Fatal(err)
	}
	r2, out := invite(t, "c2", "198.51.100.7:5062", streamsBody("198.51.100.7", 4004))
	err := a.Request(r2, out)
	se := sip.StatusOf(err)
	if se.Code != 503 || !strings.Contains(warning(err), "too many media streams from this source") {
		t.Fatalf("err %v, want 503 with a Warning", err)
	}
	retry := false
	for _, h := range se.Headers {
		retry = retry || h.Name() == "Retry-After"
	}
	if !retry {
		t.Fatal("503 without Retry-After")
	}
	done(a, r2, 503)
	if a.relay.Get("c2") != nil || g.Streams.Held(src) != 4 || g.Streams.Blocks.Load() != 1 {
		t.Fatalf("refused call: session %v, held %d, blocks %d", a.relay.Get("c2"), g.Streams.Held(src), g.Streams.Blocks.Load())
	}
	// Other sources go on, a trusted one beyond the limit.
	r3, out := invite(t, "c3", "198.51.100.8:5060", streamsBody("198.51.100.8", 4000))
	if err := a.Request(r3, out); err != nil {
		t.Fatalf("another source refused: %v", err)
	}
	r4, out := invite(t, "c4", "203.0.113.5:5060", streamsBody("203.0.113.5", 4000, 4002, 4004))
	if err := a.Request(r4, out); err != nil {
		t.Fatalf("a trusted source refused: %v", err)
	}
	// A rejected stream in the final answer gives back its pairs.
	if err := a.Response(r1, response(r1, 200, streamsBody("10.0.0.2", 5000, 0))); err != nil {
		t.Fatal(err)
	}
	done(a, r1, 200)
	if g.Streams.Held(src) != 2 {
		t.Fatalf("held %d after the answer rejected a stream, want 2", g.Streams.Held(src))
	}
	r5, out := invite(t, "c5", "198.51.100.7:5064", streamsBody("198.51.100.7", 4006))
	if err := a.Request(r5, out); err != nil {
		t.Fatalf("room again, still refused: %v", err)
	}
	// Endings: a failure, a media timeout, a BYE, an operator's release.
	done(a, r5, 486)
	ended(a, "c1")
	done(a, r3, 480)
	a.Release("c4")
	for _, ip := range []string{"198.51.100.7", "198.51.100.8", "203.0.113.5"} {
		if n := g.Streams.Held(netip.MustParseAddr(ip)); n != 0 {
			t.Errorf("%s still holds %d pairs", ip, n)
		}
	}
	if a.relay.Allocator().InUse() != 0 || a.Calls() != 0 {
		t.Fatalf("left: %d pairs, %d calls", a.relay.Allocator().InUse(), a.Calls())
	}
}

// TestReInviteAddsAndFails: a re-INVITE adding a stream takes its ports
// (charged to the caller); when it fails the added stream gives them
// back and the old one stands.
func TestReInviteAddsAndFails(t *testing.T) {
	g := guard.New(guard.Config{Streams: 100})
	a := newLimitedAnchor(t, 100, 4, g.Streams)
	r, out := request(t, "INVITE", "", "a", 1, streamsBody("10.0.0.1", 4000))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	a.Response(r, response(r, 200, streamsBody("10.0.0.2", 5000)))
	done(a, r, 200)
	re, reOut := request(t, "INVITE", ";tag=b", "a", 2, streamsBody("10.0.0.1", 4000, 4002))
	if err := a.Request(re, reOut); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("10.0.0.1")
	if a.relay.Allocator().InUse() != 4 || g.Streams.Held(src) != 4 {
		t.Fatalf("re-INVITE: %d pairs, %d held", a.relay.Allocator().InUse(), g.Streams.Held(src))
	}
	done(a, re, 488)
	if a.relay.Allocator().InUse() != 2 || g.Streams.Held(src) != 2 || a.relay.Get("call-1").Stream(0) == nil {
		t.Fatalf("failed re-INVITE: %d pairs, %d held; want the old stream only", a.relay.Allocator().InUse(), g.Streams.Held(src))
	}
	a.Release("call-1")
	if g.Streams.Held(src) != 0 {
		t.Fatal("pairs left charged")
	}
}

// TestPoolExhaustedSaysWhy: the 503 for an exhausted pool says how many
// pairs are in use and in quarantine.
func TestPoolExhaustedSaysWhy(t *testing.T) {
	a := newLimitedAnchor(t, 2, 4, nil)
	r, out := invite(t, "c1", "198.51.100.7:5060", streamsBody("198.51.100.7", 4000))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	r2, out := invite(t, "c2", "198.51.100.8:5060", streamsBody("198.51.100.8", 4000))
	err := a.Request(r2, out)
	if sip.StatusOf(err).Code != 503 || !errors.Is(err, media.ErrPoolExhausted) ||
		!strings.Contains(warning(err), "2 of 2 port pairs in use, 0 in quarantine") || a.PoolExhausted.Load() != 1 {
		t.Fatalf("err %v, Warning %q", err, warning(err))
	}
}
