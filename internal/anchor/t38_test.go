package anchor

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

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/sdp"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

// t38Lines are a fax gateway's T.38 attributes; they must reach the other
// side byte for byte.
var t38Lines = []string{"a=T38FaxVersion:0", "a=T38MaxBitRate:14400", "a=T38FaxFillBitRemoval",
	"a=T38FaxRateManagement:transferredTCF", "a=T38FaxMaxBuffer:2000", "a=T38FaxMaxDatagram:400",
	"a=T38FaxUdpEC:t38UDPRedundancy"}

// sdpOf builds a description from ip with the given m-line blocks.
func sdpOf(ip string, version int, blocks ...string) string {
	lines := []string{"v=0", fmt.Sprintf("o=- 7 %d IN IP4 %s", version, ip), "s=-", "c=IN IP4 " + ip, "t=0 0"}
	return strings.Join(append(lines, blocks...), "\r\n") + "\r\n"
}

func audioBlock(port int) string {
	return fmt.Sprintf("m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000", port)
}

func imageBlock(port int, proto string) string {
	return fmt.Sprintf("m=image %d %s t38\r\n", port, proto) + strings.Join(t38Lines, "\r\n")
}

// inDialog is a request inside call id's dialog (set up by invite and
// response) from side A (fromB false) or B, sent from src.
func inDialog(t *testing.T, id, method string, fromB bool, cseq int, src, body string) (*sip.Request, *siplib.Request) {
	t.Helper()
	from, to := "From: <sip:anonymous@anonymous.invalid>;tag=a-"+id, "To: <sip:1002@voxvisor.local>;tag=b"
	if fromB {
		from, to = "From: <sip:1002@voxvisor.local>;tag=b", "To: <sip:anonymous@anonymous.invalid>;tag=a-"+id
	}
	lines := []string{method + " sip:x@" + src + " SIP/2.0", "Via: SIP/2.0/UDP " + src + ";branch=z9hG4bK-" + id + strconv.Itoa(cseq),
		from, to, "Call-ID: " + id, fmt.Sprintf("CSeq: %d %s", cseq, method), "Contact: <sip:x@" + src + ">", "Max-Forwards: 70"}
	raw := strings.Join(lines, "\n")
	if body != "" {
		raw += "\nContent-Type: application/sdp\nContent-Length: " + strconv.Itoa(len(body)) + "\n\n" + body
	} else {
		raw += "\nContent-Length: 0\n\n"
	}
	r, _, err := siptest.Request(raw, src, "udp")
	if err != nil {
		t.Fatal(err)
	}
	return r, r.Request.Clone()
}

var mLine = regexp.MustCompile(`m=(\w+) (\d+) (\S+) `)

// mLines returns each m-line's media, port and transport.
func mLines(b []byte) [][3]string {
	var out [][3]string
	for _, m := range mLine.FindAllStringSubmatch(string(b), -1) {
		out = append(out, [3]string{m[1], m[2], m[3]})
	}
	return out
}

// faxEnd is a fax endpoint's socket on loopback.
type faxEnd struct {
	c    *net.UDPConn
	addr netip.AddrPort
}

func newFaxEnd(t *testing.T, ip string) faxEnd {
	c := udpAt(t, ip)
	return faxEnd{c: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// pass sends pkt from e to the relay at to and wants it at dst, as it
// was, from the relay port from.
func pass(t *testing.T, e faxEnd, to netip.AddrPort, dst faxEnd, from netip.AddrPort, pkt []byte) {
	t.Helper()
	e.c.WriteToUDPAddrPort(pkt, to)
	buf := make([]byte, 2048)
	dst.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := dst.c.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], pkt) || src != from {
		t.Fatalf("%v got %x from %v (%v), want %x from %v", dst.addr, buf[:n], src, err, pkt, from)
	}
}

// checkT38Body: an anchored T.38 description: the image line on the relay
// with its transport as written, the T.38 lines byte for byte, no a=rtcp.
func checkT38Body(t *testing.T, b []byte, relayPort int, proto string) {
	t.Helper()
	s := string(b)
	if want := fmt.Sprintf("m=image %d %s t38\r\nc=IN IP4 127.0.0.1\r\n", relayPort, proto); !strings.Contains(s, want) {
		t.Errorf("want %q in\n%s", want, s)
	}
	for _, l := range t38Lines {
		if !strings.Contains(s, l+"\r\n") {
			t.Errorf("lost or changed %q:\n%s", l, s)
		}
	}
	if strings.Contains(s, "a=rtcp") {
		t.Errorf("a=rtcp on a UDPTL stream:\n%s", s)
	}
}

// TestReInviteAudioToT38AndBack: an answered audio call; the callee's fax
// gateway sends the usual re-INVITE replacing m=audio with m=image ...
// udptl t38 on another port. The stream keeps its relay ports (no new
// pair is taken), both legs turn to UDPTL, each side is told the relay
// port it had, with the T.38 lines as written and no a=rtcp; fax
// datagrams (not RTP) pass both ways to the new UDPTL ports; the odd
// ports carry nothing. The caller's re-INVITE back to audio turns the
// legs back: RTP and RTCP pass again. The BYE releases everything.
func TestReInviteAudioToT38AndBack(t *testing.T) {
	a := runningAnchor(t, media.Config{})
	a.policy = sdp.Policy{Allow: []string{"PCMU"}} // the audio policy never refuses T.38
	audioA, audioB := newFaxEnd(t, "127.0.0.1"), newFaxEnd(t, "127.0.0.1")
	r, out := invite(t, "fax", "127.0.0.1:5060", sdpOf("127.0.0.1", 1, audioBlock(int(audioA.addr.Port()))))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	toB := relayPort(t, out.Body())
	ok := response(r, 200, sdpOf("127.0.0.1", 1, audioBlock(int(audioB.addr.Port()))))
	if err := a.Response(r, ok); err != nil {
		t.Fatal(err)
	}
	toA := relayPort(t, ok.Body())
	done(a, r, 200)
	rtp := []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4}
	pass(t, audioA, toA, audioB, toB, rtp)

	// The callee's gateway hears CED: re-INVITE to T.38.
	faxA, faxB := newFaxEnd(t, "127.0.0.1"), newFaxEnd(t, "127.0.0.1")
	re, reOut := inDialog(t, "fax", "INVITE", true, 2, "127.0.0.1:5062", sdpOf("127.0.0.1", 2, imageBlock(int(faxB.addr.Port()), "udptl")))
	if err := a.Request(re, reOut); err != nil {
		t.Fatalf("T.38 re-INVITE refused: %v", err)
	}
	checkT38Body(t, reOut.Body(), int(toA.Port()), "udptl")
	st := a.relay.Get("fax").Stream(0)
	if !st.Legs[0].Stats().UDPTL || !st.Legs[1].Stats().UDPTL {
		t.Fatal("the legs did not turn to UDPTL with the offer")
	}
	ans := response(re, 200, sdpOf("127.0.0.1", 2, imageBlock(int(faxA.addr.Port()), "udptl")))
	ans.SetSource("127.0.0.1:5060")
	if err := a.Response(re, ans); err != nil {
		t.Fatal(err)
	}
	checkT38Body(t, ans.Body(), int(toB.Port()), "udptl")
	done(a, re, 200)
	if n := a.relay.Allocator().InUse(); n != 2 {
		t.Fatalf("%d port pairs in use after the switch to T.38, want the audio's 2", n)
	}
	for i := uint16(0); i < 5; i++ {
		pass(t, faxB, toB, faxA, toA, []byte{0, byte(i), 3, 0x06, 0xd0, 0x01, 0})     // B's gateway: UDPTL, seq i
		pass(t, faxA, toA, faxB, toB, []byte{0, byte(i), 2, 0x80 | byte(i), 0x01, 0}) // A's answers
	}
	faxA.c.WriteToUDPAddrPort([]byte{0, 9, 1, 1, 0}, netip.AddrPortFrom(toA.Addr(), toA.Port()+1))
	faxB.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := faxB.c.ReadFromUDPAddrPort(make([]byte, 100)); err == nil {
		t.Fatalf("a datagram to the odd port was relayed (%d bytes)", n)
	}
	legs := st.Stats()
	if legs[0].Packets != 5+1 || legs[1].Packets != 5+0 || legs[1].Sent != 6 || legs[0].Dropped != 1 {
		t.Errorf("leg stats after the fax: %+v / %+v", legs[0], legs[1])
	}

	// The fax is done: the caller re-INVITEs back to audio.
	back, backOut := inDialog(t, "fax", "INVITE", false, 3, "127.0.0.1:5060", sdpOf("127.0.0.1", 3, audioBlock(int(audioA.addr.Port()))))
	if err := a.Request(back, backOut); err != nil {
		t.Fatal(err)
	}
	if ml := mLines(backOut.Body()); len(ml) != 1 || ml[0] != [3]string{"audio", strconv.Itoa(int(toB.Port())), "RTP/AVP"} ||
		!strings.Contains(string(backOut.Body()), fmt.Sprintf("a=rtcp:%d", toB.Port()+1)) {
		t.Fatalf("back to audio offered as:\n%s", backOut.Body())
	}
	bans := response(back, 200, sdpOf("127.0.0.1", 3, audioBlock(int(audioB.addr.Port()))))
	bans.SetSource("127.0.0.1:5062")
	if err := a.Response(back, bans); err != nil {
		t.Fatal(err)
	}
	done(a, back, 200)
	if legs := st.Stats(); legs[0].UDPTL || legs[1].UDPTL {
		t.Fatal("the legs stayed UDPTL after the re-INVITE back to audio")
	}
	pass(t, audioB, toB, audioA, toA, rtp)
	pass(t, audioA, toA, audioB, toB, rtp)

	bye, byeOut := inDialog(t, "fax", "BYE", false, 4, "127.0.0.1:5060", "")
	a.Request(bye, byeOut)
	done(a, bye, 200)
	if a.relay.Len() != 0 || a.relay.Allocator().InUse() != 0 || a.Calls() != 0 {
		t.Fatal("BYE left media behind")
	}
}

// TestReInviteT38AddsImageStream: the other usual form, m=audio 0 and an
// added m=image (UDPTL in capitals here): the image stream gets a pair of
// its own and the audio's is released at the final answer; back to
// audio the same way round; every pair is charged and given back.
func TestReInviteT38AddsImageStream(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{Allow: []string{"PCMA"}})
	r, out := request(t, "INVITE", "", "a", 1, body("10.0.0.1", 4000))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	a.Response(r, response(r, 200, body("10.0.0.2", 5000)))
	done(a, r, 200)
	sess := a.relay.Get("call-1")

	re, reOut := request(t, "INVITE", ";tag=b", "a", 2, sdpOf("10.0.0.1", 2, "m=audio 0 RTP/AVP 8", imageBlock(4002, "UDPTL")))
	if err := a.Request(re, reOut); err != nil {
		t.Fatalf("T.38 re-INVITE refused: %v", err)
	}
	image := sess.Stream(1)
	if image == nil || a.relay.Allocator().InUse() != 4 {
		t.Fatalf("the image stream has no ports: %d pairs in use", a.relay.Allocator().InUse())
	}
	if ml := mLines(reOut.Body()); len(ml) != 2 || ml[0][1] != "0" {
		t.Fatalf("offer forwarded as:\n%s", reOut.Body())
	}
	checkT38Body(t, reOut.Body(), image.Legs[1].Port(), "UDPTL")
	ans := response(re, 200, sdpOf("10.0.0.2", 2, "m=audio 0 RTP/AVP 8", imageBlock(5002, "udptl")))
	if err := a.Response(re, ans); err != nil {
		t.Fatal(err)
	}
	checkT38Body(t, ans.Body(), image.Legs[0].Port(), "udptl")
	done(a, re, 200)
	if a.relay.Allocator().InUse() != 2 || sess.Stream(0) != nil || sess.Stream(1) != image {
		t.Fatalf("after the answer: %d pairs, audio %v; want only the image stream", a.relay.Allocator().InUse(), sess.Stream(0))
	}
	if s := image.Stats(); !s[0].UDPTL || !s[1].UDPTL {
		t.Fatal("the image stream's legs are not UDPTL")
	}

	back, backOut := request(t, "INVITE", ";tag=b", "a", 3, sdpOf("10.0.0.1", 3, "m=audio 4000 RTP/AVP 8", "m=image 0 UDPTL t38"))
	if err := a.Request(back, backOut); err != nil {
		t.Fatal(err)
	}
	a.Response(back, response(back, 200, sdpOf("10.0.0.2", 3, "m=audio 5000 RTP/AVP 8", "m=image 0 udptl t38")))
	done(a, back, 200)
	if a.relay.Allocator().InUse() != 2 || sess.Stream(1) != nil || sess.Stream(0) == nil {
		t.Fatalf("back to audio: %d pairs; want only a new audio stream", a.relay.Allocator().InUse())
	}
	if s := sess.Stream(0).Stats(); s[0].UDPTL || s[1].UDPTL {
		t.Fatal("the new audio stream is UDPTL")
	}
	a.Release("call-1")
	if a.relay.Allocator().InUse() != 0 {
		t.Fatal("ports left")
	}
}

// TestReInviteT38Refused: the callee refuses T.38 (488, the usual
// fallback to fax over G.711): the legs are RTP again and the offerer's
// leg sends to its audio address again, so audio and RTCP flow as before.
func TestReInviteT38Refused(t *testing.T) {
	a := runningAnchor(t, media.Config{})
	audioA, audioB := newFaxEnd(t, "127.0.0.1"), newFaxEnd(t, "127.0.0.1")
	r, out := invite(t, "g711", "127.0.0.1:5060", sdpOf("127.0.0.1", 1, audioBlock(int(audioA.addr.Port()))))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	toB := relayPort(t, out.Body())
	ok := response(r, 200, sdpOf("127.0.0.1", 1, audioBlock(int(audioB.addr.Port()))))
	a.Response(r, ok)
	toA := relayPort(t, ok.Body())
	done(a, r, 200)

	faxA := newFaxEnd(t, "127.0.0.1") // where the caller would have taken T.38
	re, reOut := inDialog(t, "g711", "INVITE", false, 2, "127.0.0.1:5060", sdpOf("127.0.0.1", 2, imageBlock(int(faxA.addr.Port()), "udptl")))
	if err := a.Request(re, reOut); err != nil {
		t.Fatal(err)
	}
	done(a, re, 488)
	st := a.relay.Get("g711").Stream(0)
	if s := st.Stats(); s[0].UDPTL || s[1].UDPTL {
		t.Fatal("a refused T.38 re-INVITE left the legs UDPTL")
	}
	rtp := []byte{0x80, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4}
	pass(t, audioB, toB, audioA, toA, rtp) // to A's audio port, not the offered T.38 one
	pass(t, audioA, toA, audioB, toB, rtp)
	if s := st.Stats(); s[0].Packets != 1 || s[1].Packets != 1 {
		t.Errorf("RTP not counted as RTP after the refusal: %+v / %+v", s[0], s[1])
	}
	a.Release("g711")
}

// TestT38InitialOfferUnderPolicy: a fax server that calls with T.38 at
// once (m=image only) is anchored under a PCMU-only policy, not refused
// with 488; an audio offer with no allowed codec still is.
func TestT38InitialOfferUnderPolicy(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{Allow: []string{"PCMU"}})
	r, out := request(t, "INVITE", "", "a", 1, sdpOf("10.0.0.1", 1, imageBlock(4000, "udptl")))
	if err := a.Request(r, out); err != nil {
		t.Fatalf("T.38 offer refused: %v", err)
	}
	st := a.relay.Get("call-1").Stream(0)
	checkT38Body(t, out.Body(), st.Legs[1].Port(), "udptl")
	if s := st.Stats(); !s[0].UDPTL || !s[1].UDPTL {
		t.Fatal("legs not UDPTL")
	}
	a.Release("call-1")
	r, out = request(t, "INVITE", "", "a", 2, sdpOf("10.0.0.1", 1, "m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000"))
	if err := a.Request(r, out); sip.StatusOf(err).Code != 488 {
		t.Fatalf("G.729 only under PCMU policy: %v, want 488", err)
	}
}
