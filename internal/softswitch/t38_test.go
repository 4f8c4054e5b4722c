package softswitch_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/media"
)

// faxT38Lines are the T.38 attributes both SIPp scenarios send: each side
// must get them byte for byte.
var faxT38Lines = []string{"a=T38FaxVersion:0", "a=T38MaxBitRate:14400", "a=T38FaxFillBitRemoval",
	"a=T38FaxRateManagement:transferredTCF", "a=T38FaxMaxBuffer:2000", "a=T38FaxMaxDatagram:400",
	"a=T38FaxUdpEC:t38UDPRedundancy"}

var mImage = regexp.MustCompile(`m=image (\d+) udptl t38`)

// udptlDatagram is a T.38 UDPTL packet (T.38 Annex D): sequence number,
// a primary IFP packet (a t30-indicator, then data), no redundancy.
// Nothing in it is RTP.
func udptlDatagram(seq uint16, from byte) []byte {
	return []byte{byte(seq >> 8), byte(seq), 4, 0x06, 0xd0, from, byte(seq), 0x00}
}

// receivedWith returns the SIP messages SIPp's trace says it received
// that contain substr.
func receivedWith(trace, substr string) []string {
	var out []string
	for _, m := range strings.Split(trace, "-----------------------------------------------") {
		if strings.Contains(m, "message received") && strings.Contains(m, substr) {
			out = append(out, m)
		}
	}
	return out
}

// TestT38ReInviteThroughRelay: a call 1001 → 1002 (both SIPp) is set up
// with audio; the caller re-INVITEs to T.38 (m=image ... udptl t38 on a
// port the test's socket owns, standing in for its fax gateway's UDPTL),
// the callee accepts with T.38 on a socket of the test's too. Each side
// is told the relay's port for the image stream with the T.38 lines byte
// for byte and no a=rtcp, the stream keeps its relay ports, and fax
// datagrams (not RTP) sent both ways through the relay reach the far
// side as sent, from the relay port that side was told; the relay counts
// them. The re-INVITE back to audio turns the stream back to RTP, and
// the BYE releases every port.
func TestT38ReInviteThroughRelay(t *testing.T) {
	const datagrams = 20
	sw := start(t, t.TempDir(), nil)
	faxA, faxB := udpOn(t, "127.0.0.1", 0), udpOn(t, "127.0.0.1", 0)
	portOf := func(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }

	calleePort, callerPort := freePort(t), freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_t38.xml", calleePort, "udp",
		"-key", "rtp_port", strconv.Itoa(mediaPorts(t)), "-key", "fax_port", strconv.Itoa(portOf(faxB)))

	// The fax gateways, while the caller pauses after the switch to T.38.
	type seen struct {
		problems       []string
		legA, legB     int // the relay ports facing the caller and the callee
		stats          [2]media.LegStats
		portsDuringFax int
		backToAudio    bool
	}
	result := make(chan seen, 1)
	go func() {
		var s seen
		defer func() { result <- s }()
		fail := func(f string, args ...any) { s.problems = append(s.problems, fmt.Sprintf(f, args...)) }
		var st *media.Stream
		deadline := time.Now().Add(15 * time.Second)
		for ; time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if ss := sw.Relay.Sessions(); len(ss) == 1 {
				if st = ss[0].Stream(0); st != nil {
					if l := st.Stats(); l[0].UDPTL && l[1].UDPTL {
						break
					}
				}
			}
		}
		if st == nil || !st.Stats()[0].UDPTL {
			fail("the call's stream never turned to UDPTL")
			return
		}
		s.legA, s.legB = st.Legs[0].Port(), st.Legs[1].Port()
		lo := netip.MustParseAddr("127.0.0.1")
		toA, toB := netip.AddrPortFrom(lo, uint16(s.legA)), netip.AddrPortFrom(lo, uint16(s.legB))
		buf := make([]byte, 2048)
		// read returns the next datagram at c, or nil after d.
		read := func(c *net.UDPConn, d time.Duration) ([]byte, netip.AddrPort) {
			c.SetReadDeadline(time.Now().Add(d))
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return nil, netip.AddrPort{}
			}
			return buf[:n], from
		}
		// Like a gateway's repeated preamble, the caller's side sends
		// until the callee's side hears it: the 200 to the re-INVITE may
		// still be on its way through the switch.
		heard := false
		for i := 0; i < 60 && !heard; i++ {
			faxA.WriteToUDPAddrPort(udptlDatagram(0, 0xa0), toA)
			got, _ := read(faxB, 50*time.Millisecond)
			heard = got != nil
		}
		if !heard {
			fail("no UDPTL preamble from the caller's side reached the callee's")
			return
		}
		for got, _ := read(faxB, 50*time.Millisecond); got != nil; got, _ = read(faxB, 50*time.Millisecond) {
			// drain repeated preambles
		}
		for i := uint16(1); i <= datagrams; i++ {
			for _, dir := range []struct {
				from, to *net.UDPConn
				relay    netip.AddrPort // where the sender sends
				back     netip.AddrPort // the relay port the receiver was told
				tag      byte
			}{{faxA, faxB, toA, toB, 0xa0}, {faxB, faxA, toB, toA, 0xb0}} {
				pkt := udptlDatagram(i, dir.tag)
				dir.from.WriteToUDPAddrPort(pkt, dir.relay)
				got, from := read(dir.to, 2*time.Second)
				if !bytes.Equal(got, pkt) || from != dir.back {
					fail("datagram %d (%x): got %x from %v, want it as sent from %v", i, dir.tag, got, from, dir.back)
					return
				}
			}
		}
		s.stats = st.Stats()
		s.portsDuringFax = sw.Relay.Allocator().InUse()
		// The caller's re-INVITE back to audio, then its BYE 1.5 s later.
		for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if l := st.Stats(); !l[0].UDPTL && !l[1].UDPTL {
				s.backToAudio = true
				break
			}
		}
	}()

	trace := sipp(t, sw.udp, "uac_t38.xml", callerPort, "udp", "-s", "1002", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-mp", strconv.Itoa(mediaPorts(t)), "-key", "fax_port", strconv.Itoa(portOf(faxA)))
	calleeTrace := wait()
	s := <-result
	for _, p := range s.problems {
		t.Error(p)
	}
	if t.Failed() {
		t.FailNow()
	}

	// What each side was told: the relay's port of the leg facing it, the
	// T.38 lines as sent, no a=rtcp, nothing of the other side's address.
	for _, side := range []struct {
		who, trace string
		port, far  int
	}{{"caller", trace, s.legA, portOf(faxB)}, {"callee", calleeTrace, s.legB, portOf(faxA)}} {
		msgs := receivedWith(side.trace, "m=image")
		if len(msgs) == 0 {
			t.Errorf("the %s never received a T.38 description:\n%s", side.who, side.trace)
			continue
		}
		m := mImage.FindStringSubmatch(msgs[0])
		if m == nil || m[1] != strconv.Itoa(side.port) {
			t.Errorf("the %s was told m=image %v, want the relay port %d:\n%s", side.who, m, side.port, msgs[0])
		}
		for _, l := range faxT38Lines {
			if !strings.Contains(msgs[0], l+"\n") && !strings.Contains(msgs[0], l+"\r\n") {
				t.Errorf("the %s got %q changed or not at all:\n%s", side.who, l, msgs[0])
			}
		}
		if strings.Contains(msgs[0], "a=rtcp") || strings.Contains(msgs[0], " "+strconv.Itoa(side.far)+" udptl") {
			t.Errorf("the %s's T.38 description has a=rtcp or the far side's port %d:\n%s", side.who, side.far, msgs[0])
		}
	}
	if s.legA%2 != 0 || s.legB%2 != 0 {
		t.Errorf("UDPTL relay ports %d/%d not even", s.legA, s.legB)
	}
	if s.portsDuringFax != 2 {
		t.Errorf("%d port pairs in use during the fax, want the audio stream's 2 (one per leg)", s.portsDuringFax)
	}
	for i, l := range s.stats {
		if !l.UDPTL || l.Packets < datagrams || l.Lost != 0 || l.Rejected != 0 {
			t.Errorf("leg %d during the fax: %+v; want UDPTL, at least %d packets, none lost or rejected", i, l, datagrams)
		}
	}
	if s.stats[1].Sent < datagrams+1 || s.stats[0].Sent != datagrams {
		t.Errorf("sent: to the caller %d, to the callee %d; want %d and more than %d", s.stats[0].Sent, s.stats[1].Sent, datagrams, datagrams)
	}
	if !s.backToAudio {
		t.Error("the re-INVITE back to audio did not turn the stream back to RTP")
	}
	if n := len(receivedWith(calleeTrace, "INVITE sip:")); n != 3 {
		t.Errorf("the callee got %d INVITEs, want 3 (call, T.38, audio)", n)
	}
	sw.expectNoMedia(t)
}
