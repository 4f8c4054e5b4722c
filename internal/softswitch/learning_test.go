package softswitch_test

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/media"
)

// SSRCs the test's own RTP senders use.
const (
	ssrcCallee   = 0x0000b0b0
	ssrcStranger = 0x00057a57
)

// rtpSink is a phone's RTP/RTCP port pair that counts the RTP it
// receives by SSRC and by source.
type rtpSink struct {
	rtp, rtcp *net.UDPConn
	wg        sync.WaitGroup

	mu     sync.Mutex
	bySSRC map[uint32]int         // guarded by mu
	from   map[netip.AddrPort]int // guarded by mu
}

func newRTPSink(t *testing.T) *rtpSink {
	t.Helper()
	a, b := listenPair(t)
	s := &rtpSink{rtp: a, rtcp: b, bySSRC: map[uint32]int{}, from: map[netip.AddrPort]int{}}
	s.wg.Add(2)
	go s.read(a, true)
	go s.read(b, false)
	t.Cleanup(func() {
		a.Close()
		b.Close()
		s.wg.Wait()
	})
	return s
}

func (s *rtpSink) read(c *net.UDPConn, count bool) {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if !count || n < 12 {
			continue
		}
		s.mu.Lock()
		s.bySSRC[uint32(buf[8])<<24|uint32(buf[9])<<16|uint32(buf[10])<<8|uint32(buf[11])]++
		s.from[from]++
		s.mu.Unlock()
	}
}

func (s *rtpSink) port() int { return s.rtp.LocalAddr().(*net.UDPAddr).Port }

// counts returns a copy of the counts.
func (s *rtpSink) counts() (map[uint32]int, map[netip.AddrPort]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, b := map[uint32]int{}, map[netip.AddrPort]int{}
	for k, v := range s.bySSRC {
		a[k] = v
	}
	for k, v := range s.from {
		b[k] = v
	}
	return a, b
}

func rtpWithSSRC(ssrc uint32, seq uint16) []byte {
	p := make([]byte, 172)
	p[0], p[1] = 0x80, 8 // v2, PCMA
	p[2], p[3] = byte(seq>>8), byte(seq)
	ts := uint32(seq) * 160
	p[4], p[5], p[6], p[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
	p[8], p[9], p[10], p[11] = byte(ssrc>>24), byte(ssrc>>16), byte(ssrc>>8), byte(ssrc)
	return p
}

// waitLeg polls a leg's statistics until ok, for up to d.
func waitLeg(l *media.Leg, d time.Duration, ok func(media.LegStats) bool) (media.LegStats, bool) {
	deadline := time.Now().Add(d)
	for {
		s := l.Stats()
		if ok(s) {
			return s, true
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNATedCallerGetsAudioOnDefaults: on the embedded default config, a
// caller whose SDP names a LAN address (10.77.0.9) but whose RTP comes
// from 127.0.0.1, where its SIP comes from, is learned by its signalling
// address and gets audio both ways: every packet of its pcap reaches the
// callee, and what the callee sends reaches the caller (SIPp echoes it
// back through the relay). A stranger at 127.0.0.77 spraying RTP and RTCP
// at all four relay ports before and after the lock gets nothing
// forwarded and is counted; the caller's own IP from another port after
// the lock is refused as a re-latch. The metrics say so.
func TestNATedCallerGetsAudioOnDefaults(t *testing.T) {
	const pcapPackets = 236 // /usr/share/sip-tester/g711a.pcap
	const spray = 20        // packets per relay port per round
	sw := start(t, t.TempDir(), nil)
	if sw.Config.Media.Learning != config.LearningHeuristic {
		t.Fatalf("default media.learning is %q", sw.Config.Media.Learning)
	}
	callee := newRTPSink(t)
	calleePort, callerPort, callerMedia := freePort(t), freePort(t), mediaPorts(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_timeout.xml", calleePort, "udp", "-key", "rtp_port", strconv.Itoa(callee.port()))

	stranger, neighbour := udpOn(t, "127.0.0.77", 0), udpOn(t, "127.0.0.1", 0)

	// The attacker and the callee's media, on their own goroutine while
	// the call runs; it reports what went wrong when it is waited for.
	type seen struct {
		problems       []string
		legA, legB     media.LegStats
		sprayedLocked  bool
		sprayedEarlyOK bool
	}
	result := make(chan seen, 1)
	go func() {
		var s seen
		defer func() { result <- s }()
		fail := func(f string, args ...any) { s.problems = append(s.problems, fmt.Sprintf(f, args...)) }
		var st *media.Stream
		for deadline := time.Now().Add(10 * time.Second); st == nil && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if ss := sw.Relay.Sessions(); len(ss) == 1 {
				st = ss[0].Stream(0) // nil for a moment while the session opens
			}
		}
		if st == nil {
			fail("no relay session with a stream appeared")
			return
		}
		lo := netip.MustParseAddr("127.0.0.1")
		ports := []netip.AddrPort{}
		for _, l := range st.Legs {
			ports = append(ports, netip.AddrPortFrom(lo, uint16(l.Port())), netip.AddrPortFrom(lo, uint16(l.Port()+1)))
		}
		sprayAll := func() {
			for i := 0; i < spray; i++ {
				for _, p := range ports {
					stranger.WriteToUDPAddrPort(rtpWithSSRC(ssrcStranger, uint16(i)), p)
				}
			}
		}
		// Round 1: nothing is learned yet (the caller waits 500 ms after
		// its ACK before its first packet).
		sprayAll()
		if _, ok := waitLeg(st.Legs[0], 2*time.Second, func(ls media.LegStats) bool { return ls.Rejected >= 2*spray }); !ok {
			fail("round 1 of the stranger's packets not all rejected at the caller's leg")
		}
		s.sprayedEarlyOK = st.Legs[0].Stats().LearnedRank == media.RankNone && st.Legs[1].Stats().LearnedRank == media.RankNone
		// The caller's pcap starts: its leg locks.
		if _, ok := waitLeg(st.Legs[0], 5*time.Second, func(ls media.LegStats) bool { return ls.LearnedRank != media.RankNone }); !ok {
			fail("the caller's leg never learned a source")
			return
		}
		// The callee talks (from its SDP address exactly) while the pcap
		// plays; SIPp echoes it back through the caller's leg.
		relayB := netip.AddrPortFrom(lo, uint16(st.Legs[1].Port()))
		for i := 0; i < 50; i++ {
			callee.rtp.WriteToUDPAddrPort(rtpWithSSRC(ssrcCallee, uint16(i)), relayB)
			time.Sleep(20 * time.Millisecond)
		}
		if _, ok := waitLeg(st.Legs[1], 2*time.Second, func(ls media.LegStats) bool { return ls.LearnedRank != media.RankNone }); !ok {
			fail("the callee's leg never learned a source")
			return
		}
		// Round 2, both legs locked; and the caller's IP from another port.
		sprayAll()
		for i := 0; i < 5; i++ {
			neighbour.WriteToUDPAddrPort(rtpWithSSRC(ssrcStranger, uint16(i)), ports[0])
		}
		s.sprayedLocked = true
		waitLeg(st.Legs[0], 2*time.Second, func(ls media.LegStats) bool { return ls.Rejected >= 4*spray+5 })
		waitLeg(st.Legs[1], 2*time.Second, func(ls media.LegStats) bool { return ls.Rejected >= 4*spray })
		s.legA, s.legB = st.Legs[0].Stats(), st.Legs[1].Stats()
	}()

	trace := <-sippGo(t, sw.udp, "uac_nat_media.xml", callerPort, "udp", "-s", "1002", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-key", "lan_ip", "10.77.0.9", "-mi", "127.0.0.1", "-mp", strconv.Itoa(callerMedia), "-rtp_echo")
	calleeTrace := wait()
	s := <-result
	for _, p := range s.problems {
		t.Error(p)
	}
	if !strings.Contains(calleeTrace, "c=IN IP4 127.0.0.1") || strings.Contains(calleeTrace, "10.77.0.9") {
		t.Errorf("the callee did not get an anchored offer:\n%s", calleeTrace)
	}
	if !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Fatalf("the caller's call did not complete:\n%s", trace)
	}
	if !s.sprayedEarlyOK {
		t.Error("round 1 of the stranger's spray came after a leg was locked: the test did not try the learning window")
	}
	if !s.sprayedLocked {
		t.Error("round 2 of the stranger's spray never ran")
	}

	bySSRC, from := callee.counts()
	if bySSRC[ssrcStranger] != 0 {
		t.Errorf("the stranger's RTP reached the callee: %d packets", bySSRC[ssrcStranger])
	}
	pcap := 0
	for ssrc, n := range bySSRC {
		if ssrc != ssrcStranger && ssrc != ssrcCallee {
			pcap += n
		}
	}
	if pcap != pcapPackets {
		t.Errorf("the callee got %d packets of the caller's pcap, want all %d (by SSRC: %v; caller leg %+v, callee leg %+v)", pcap, pcapPackets, bySSRC, s.legA, s.legB)
	}
	if bySSRC[ssrcCallee] < 40 {
		t.Errorf("the callee got %d of its 50 packets back from the caller's echo, want them through both legs (caller got no audio?)", bySSRC[ssrcCallee])
	}
	if len(from) != 1 {
		t.Errorf("the callee's RTP came from %v, want only the relay's leg", from)
	}

	callerRTP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(callerMedia))
	if s.legA.Learned != callerRTP || s.legA.LearnedRank != media.RankSignalling {
		t.Errorf("the caller's leg learned %v by %v, want %v by its signalling address", s.legA.Learned, s.legA.LearnedRank, callerRTP)
	}
	calleeRTP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(callee.port()))
	if s.legB.Learned != calleeRTP || s.legB.LearnedRank != media.RankSDPAddress {
		t.Errorf("the callee's leg learned %v by %v, want %v by its SDP address", s.legB.Learned, s.legB.LearnedRank, calleeRTP)
	}

	ls := sw.Relay.LearningStats()
	if ls.RejectedLearning < 4*spray || ls.RejectedLocked < 4*spray+5 || ls.RelatchRefused < 1 {
		t.Errorf("learning counters %+v: want >= %d rejected while learning, >= %d after the lock, >= 1 re-latch refused", ls, 4*spray, 4*spray+5)
	}
	code, body := sw.api(t, "GET", "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for name, min := range map[string]float64{
		`voxvisor_media_sources_learned_total{rank="signalling"}`:  1,
		`voxvisor_media_sources_learned_total{rank="sdp_address"}`: 1,
		`voxvisor_media_packets_rejected_total{phase="learning"}`:  4 * spray,
		`voxvisor_media_packets_rejected_total{phase="locked"}`:    4*spray + 5,
		`voxvisor_media_relatch_refused_total`:                     1,
	} {
		if got := metric(body, name); got < min {
			t.Errorf("%s = %v, want >= %v", name, got, min)
		}
	}
	if got := metric(body, `voxvisor_media_sources_learned_total{rank="any"}`); got != 0 {
		t.Errorf("a source was learned as any on the default config: %v", got)
	}
	sw.expectNoMedia(t)
}

var mAudioPort = regexp.MustCompile(`m=audio (\d+) `)

// TestRingingLongerThanMediaTimeout: with media.timeout 1s, a callee that
// rings 3 s before answering keeps the call's relay: the 200 OK reaches
// the caller anchored (the relay's port, not the callee's), nobody gets a
// media-timeout BYE while it rings, and the CDR says 200, answered, with
// a duration.
func TestRingingLongerThanMediaTimeout(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) { c.Media.Timeout = time.Second })
	calleePort, calleeMedia := freePort(t), mediaPorts(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_slow.xml", calleePort, "udp", "-mi", "127.0.0.1", "-mp", strconv.Itoa(calleeMedia))
	trace := sipp(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001",
		"-mi", "127.0.0.1", "-mp", strconv.Itoa(mediaPorts(t)))
	calleeTrace := wait()

	var answer string
	for _, msg := range strings.Split(trace, "SIP/2.0 200 OK")[1:] {
		if strings.Contains(msg, "m=audio") {
			answer = msg
			break
		}
	}
	m := mAudioPort.FindStringSubmatch(answer)
	if m == nil {
		t.Fatalf("no 200 OK with SDP reached the caller:\n%s", trace)
	}
	if p, _ := strconv.Atoi(m[1]); p == calleeMedia || p < 20000 || p > 29999 || p%2 != 0 {
		t.Errorf("the 200 OK reached the caller with m=audio %d, want the relay's even port in 20000-29999 (the callee's own is %d)", p, calleeMedia)
	}
	for who, tr := range map[string]string{"caller": trace, "callee": calleeTrace} {
		if strings.Contains(tr, "media timeout") {
			t.Errorf("the %s got a media-timeout BYE:\n%s", who, tr)
		}
	}
	cdrs := readCDRs(t, sw, 1)
	c := cdrs[len(cdrs)-1]
	if c.Status != 200 || c.Answer == nil || c.DurationSec <= 0 || c.HangupBy != "caller" {
		t.Fatalf("CDR: status %d, answer %v, duration %vs, hung up by %q; want 200, answered, > 0, caller", c.Status, c.Answer, c.DurationSec, c.HangupBy)
	}
	if rang := c.Answer.Sub(c.Start); rang < 2500*time.Millisecond {
		t.Errorf("the call rang %v, want about 3 s (longer than media.timeout)", rang)
	}
	sw.expectNoMedia(t)
}
