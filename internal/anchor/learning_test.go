package anchor

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/sdp"
)

// runningAnchor is an anchor over a relay whose timeouts are swept every
// 10 ms and end calls through the anchor, as the switch wires them.
func runningAnchor(t *testing.T, cfg media.Config) *Anchor {
	t.Helper()
	cfg.Addr = netip.MustParseAddr("127.0.0.1")
	cfg.PortMin, cfg.PortMax = 16000, 16999
	var a *Anchor
	r, err := media.New(cfg, logging.Discard(), func(id string) { ended(a, id) })
	if err != nil {
		t.Fatal(err)
	}
	a = New(r, Options{Mode: Always}, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, 10*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a
}

// udpAt listens on ip, port 0.
func udpAt(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// relayPort is the m=audio port in an anchored body, at the relay.
func relayPort(t *testing.T, b []byte) netip.AddrPort {
	t.Helper()
	if !strings.Contains(string(b), "c=IN IP4 127.0.0.1") {
		t.Fatalf("body not anchored at the relay:\n%s", b)
	}
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(atoi(port(t, b))))
}

var rtpPkt = []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4}

// TestSignallingSourceLearned: both phones are behind NAT: their SDP names
// addresses the relay never hears from (loopback ones here, so nothing
// sent there before learning leaves the machine), their media comes from
// the IP their SIP came from (the INVITE's source for the caller, the
// 200's for the callee). The anchor tells each leg that IP, so on the
// default learning both sides get audio, and a stranger does not.
func TestSignallingSourceLearned(t *testing.T) {
	a := runningAnchor(t, media.Config{LockAfter: 2})
	r, out := invite(t, "nat", "127.0.0.5:5060", body("127.0.0.55", 4000))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	toB := relayPort(t, out.Body())
	res := response(r, 200, body("127.0.0.66", 5000))
	res.SetSource("127.0.0.6:5060")
	if err := a.Response(r, res); err != nil {
		t.Fatal(err)
	}
	toA := relayPort(t, res.Body())
	done(a, r, 200)

	phoneA, phoneB, stranger := udpAt(t, "127.0.0.5"), udpAt(t, "127.0.0.6"), udpAt(t, "127.0.0.7")
	buf := make([]byte, 1500)
	expect := func(c *net.UDPConn, from netip.AddrPort) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || src != from || n != len(rtpPkt) {
			t.Fatalf("%s: got %d bytes from %v (%v), want RTP from %v", c.LocalAddr(), n, src, err, from)
		}
	}
	stranger.WriteToUDPAddrPort(rtpPkt, toB)
	stranger.WriteToUDPAddrPort(rtpPkt, toA)
	for i := 0; i < 3; i++ {
		phoneB.WriteToUDPAddrPort(rtpPkt, toB) // B first: A's leg has only the LAN address yet
	}
	// Wait until B is learned, then A's media must reach it.
	st := a.relay.Get("nat").Stream(0)
	deadline := time.Now().Add(2 * time.Second)
	for st.Legs[1].Stats().LearnedRank == media.RankNone && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < 2; i++ { // LockAfter
		phoneA.WriteToUDPAddrPort(rtpPkt, toA)
		expect(phoneB, toB)
	}
	phoneB.WriteToUDPAddrPort(rtpPkt, toB)
	expect(phoneA, toA)
	stats := st.Stats()
	for i, s := range stats {
		if s.LearnedRank != media.RankSignalling {
			t.Errorf("leg %d learned %v by %v, want by its signalling address", i, s.Learned, s.LearnedRank)
		}
		if s.Rejected != 1 {
			t.Errorf("leg %d rejected %d packets, want the stranger's 1", i, s.Rejected)
		}
	}
	if stats[0].Learned != phoneA.LocalAddr().(*net.UDPAddr).AddrPort() || stats[1].Learned != phoneB.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("learned %v and %v", stats[0].Learned, stats[1].Learned)
	}
	a.Release("nat")
}

// TestRingingOutlastsMediaTimeout: a call that rings longer than the
// media timeout keeps its relay, its 200 OK reaches the caller anchored,
// and only then does the media timeout run (from the answer).
func TestRingingOutlastsMediaTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	a := runningAnchor(t, media.Config{Timeout: timeout})
	r, out := invite(t, "slow", "127.0.0.5:5060", body("127.0.0.5", 4000))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	ringing := response(r, 180, "")
	if err := a.Response(r, ringing); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * timeout)
	sess := a.relay.Get("slow")
	if !a.Has("slow") || sess == nil {
		t.Fatal("a ringing call lost its media to the media timeout")
	}
	if !sess.AnsweredAt().IsZero() {
		t.Fatal("a 180 counted as the answer")
	}
	ok := response(r, 200, body("127.0.0.6", 5000))
	if err := a.Response(r, ok); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ok.Body()), "m=audio 5000 ") {
		t.Fatalf("the 200 OK reached the caller with the callee's own SDP:\n%s", ok.Body())
	}
	relayPort(t, ok.Body())
	answered := sess.AnsweredAt()
	if answered.IsZero() {
		t.Fatal("the 200 OK did not tell the relay the call was answered")
	}
	done(a, r, 200)
	// No RTP: the call ends, but not before the timeout has run from the
	// answer.
	deadline := time.Now().Add(3 * time.Second)
	for a.Has("slow") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if a.Has("slow") {
		t.Fatal("an answered call without media never timed out")
	}
	if since := time.Since(answered); since < timeout {
		t.Fatalf("timed out %v after the answer, before the timeout of %v", since, timeout)
	}
}

// TestLateOfferAnswered: with the offer in the 200 (no SDP in the
// INVITE) the session is made at the answer and starts answered; an
// early answer in a 183 is not the call's answer.
func TestLateOfferAnswered(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{})
	r, out := request(t, "INVITE", "", "a", 1, "")
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	if err := a.Response(r, response(r, 200, body("10.0.0.2", 5000))); err != nil {
		t.Fatal(err)
	}
	if a.relay.Get("call-1").AnsweredAt().IsZero() {
		t.Fatal("a late offer's session does not know the call is answered")
	}
	a.Release("call-1")

	r, out = request(t, "INVITE", "", "a", 2, body("10.0.0.1", 4000))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	if err := a.Response(r, response(r, 183, body("10.0.0.2", 5000))); err != nil {
		t.Fatal(err)
	}
	if !a.relay.Get("call-1").AnsweredAt().IsZero() {
		t.Fatal("early media counted as the answer")
	}
	a.Release("call-1")
}
