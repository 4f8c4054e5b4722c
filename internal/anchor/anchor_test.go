package anchor

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/sdp"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/dialog"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

// done is what the switch does when r's transaction is over: the hook's
// Done, and, when r ends the call (a BYE, a failed initial INVITE), the
// dialog table's news of its end.
func done(a *Anchor, r *sip.Request, status int) {
	a.Done(r, status)
	initial := r.Method == siplib.INVITE && !r.To().Params.Has("tag")
	if r.Method == siplib.BYE || initial && status >= 300 {
		ended(a, r.CallID().Value())
	}
}

// ended is the dialog table telling the anchor call id is over (a media
// timeout, an operator, a BYE).
func ended(a *Anchor, id string) { a.DialogEnded(&dialog.Dialog{ID: id}, dialog.Ending{}) }

func newAnchor(t *testing.T, mode Mode, policy sdp.Policy) *Anchor {
	t.Helper()
	r, err := media.New(media.Config{Addr: netip.MustParseAddr("127.0.0.1"), PortMin: 14000, PortMax: 14999}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return New(r, Options{Mode: mode, Policy: policy}, logging.Discard())
}

func body(ip string, port int, extra ...string) string {
	return strings.Join(append([]string{"v=0", "o=- 1 1 IN IP4 " + ip, "s=-", "c=IN IP4 " + ip, "t=0 0",
		fmt.Sprintf("m=audio %d RTP/AVP 0 8 101", port), "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000"}, extra...), "\r\n") + "\r\n"
}

func request(t *testing.T, method, toTag, fromTag string, cseq int, sdpBody string) (*sip.Request, *siplib.Request) {
	t.Helper()
	lines := []string{
		method + " sip:1002@voxvisor.local SIP/2.0",
		"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK" + fmt.Sprint(cseq),
		"From: <sip:1001@voxvisor.local>;tag=" + fromTag,
		"To: <sip:1002@voxvisor.local>" + toTag,
		"Call-ID: call-1",
		fmt.Sprintf("CSeq: %d %s", cseq, method),
		"Contact: <sip:1001@10.0.0.1:5060>",
		"Max-Forwards: 70",
	}
	if fromTag == "b" {
		lines[2], lines[3] = "From: <sip:1002@voxvisor.local>;tag=b", "To: <sip:1001@voxvisor.local>;tag=a"
	}
	raw := strings.Join(lines, "\n")
	if sdpBody != "" {
		raw += "\nContent-Type: application/sdp\nContent-Length: " + fmt.Sprint(len(sdpBody)) + "\n\n" + sdpBody
	} else {
		raw += "\nContent-Length: 0\n\n"
	}
	r, _, err := siptest.Request(raw, "10.0.0.1:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	return r, r.Request.Clone()
}

func response(r *sip.Request, code int, sdpBody string) *siplib.Response {
	res := siplib.NewResponseFromRequest(r.Request, code, "OK", nil)
	if to := res.To(); to != nil && !to.Params.Has("tag") {
		to.Params.Add("tag", "b")
	}
	res.SetSource("10.0.0.2:5060")
	if sdpBody != "" {
		res.AppendHeader(siplib.NewHeader("Content-Type", "application/sdp"))
		res.SetBody([]byte(sdpBody))
	}
	return res
}

func port(t *testing.T, b []byte) string {
	t.Helper()
	for _, l := range strings.Split(string(b), "\r\n") {
		if strings.HasPrefix(l, "m=audio ") {
			return strings.Fields(l)[1]
		}
	}
	t.Fatalf("no m=audio in %s", b)
	return ""
}

func TestOfferAnswerRewritten(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{})
	r, out := request(t, "INVITE", "", "a", 1, body("10.0.0.1", 4000, "a=rtcp-mux"))
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out.Body()), "c=IN IP4 127.0.0.1") || !strings.Contains(string(out.Body()), "a=rtcp-mux") {
		t.Fatalf("offer not anchored (or mux not offered on):\n%s", out.Body())
	}
	bPort := port(t, out.Body())
	res := response(r, 200, body("10.0.0.2", 5000)) // the answer declines mux
	if err := a.Response(r, res); err != nil {
		t.Fatal(err)
	}
	aPort := port(t, res.Body())
	if aPort == bPort {
		t.Fatal("both sides were given the same relay port")
	}
	if strings.Contains(string(res.Body()), "rtcp-mux") {
		t.Fatalf("mux answered though the callee declined it:\n%s", res.Body())
	}
	if !strings.Contains(string(res.Body()), fmt.Sprintf("a=rtcp:%d", atoi(aPort)+1)) {
		t.Fatalf("answer lacks a=rtcp on the odd port:\n%s", res.Body())
	}
	done(a, r, 200)
	if a.relay.Len() != 1 {
		t.Fatal("an answered call lost its media")
	}
	bye, byeOut := request(t, "BYE", ";tag=b", "a", 2, "")
	a.Request(bye, byeOut)
	done(a, bye, 200)
	if a.relay.Len() != 0 || a.Calls() != 0 || a.relay.Allocator().InUse() != 0 {
		t.Fatal("BYE did not release the media")
	}
}

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}

// A late offer: no SDP in the INVITE, the offer in the 200, the answer in
// the ACK.
func TestLateOffer(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{})
	r, out := request(t, "INVITE", "", "a", 1, "")
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	res := response(r, 200, body("10.0.0.2", 5000))
	if err := a.Response(r, res); err != nil {
		t.Fatal(err)
	}
	offerToA := port(t, res.Body())
	ack, ackOut := request(t, "ACK", ";tag=b", "a", 1, body("10.0.0.1", 4000))
	if err := a.Request(ack, ackOut); err != nil {
		t.Fatal(err)
	}
	answerToB := port(t, ackOut.Body())
	if offerToA == answerToB || !strings.Contains(string(ackOut.Body()), "127.0.0.1") {
		t.Fatalf("late-offer answer not anchored: offer port %s, answer port %s\n%s", offerToA, answerToB, ackOut.Body())
	}
	sess := a.relay.Get("call-1")
	st := sess.Stream(0)
	// What A is told to send to is the leg facing A, and so for B.
	if fmt.Sprint(st.Legs[0].Port()) != offerToA || fmt.Sprint(st.Legs[1].Port()) != answerToB {
		t.Fatalf("legs %d/%d do not match the SDP ports %s/%s", st.Legs[0].Port(), st.Legs[1].Port(), answerToB, offerToA)
	}
	a.Release("call-1")
}

func TestCodecPolicy488(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{Allow: []string{"G729"}})
	r, out := request(t, "INVITE", "", "a", 1, body("10.0.0.1", 4000))
	err := a.Request(r, out)
	if err == nil || sip.StatusOf(err).Code != 488 {
		t.Fatalf("err = %v, want 488", err)
	}
	if a.relay.Len() != 0 || a.Calls() != 0 {
		t.Fatal("a rejected offer left media behind")
	}
}

func TestNeverAnchors(t *testing.T) {
	a := newAnchor(t, Never, sdp.Policy{})
	b := body("10.0.0.1", 4000)
	r, out := request(t, "INVITE", "", "a", 1, b)
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	if string(out.Body()) != b || a.relay.Len() != 0 {
		t.Fatal("anchor: never rewrote the offer")
	}
	done(a, r, 486)
	if a.Calls() != 0 {
		t.Fatal("failed call not forgotten")
	}
}

func TestNATModeAnchorsOnlyNATedCallers(t *testing.T) {
	a := newAnchor(t, NAT, sdp.Policy{})
	// Source 10.0.0.1 matches Contact and SDP: not behind NAT.
	r, out := request(t, "INVITE", "", "a", 1, body("10.0.0.1", 4000))
	a.Request(r, out)
	if a.relay.Len() != 0 {
		t.Fatal("a caller not behind NAT was anchored")
	}
	done(a, r, 486)
	// The SDP names a private address the packets do not come from.
	r, out = request(t, "INVITE", "", "a2", 2, body("192.168.1.5", 4000))
	a.Request(r, out)
	if a.relay.Len() != 1 {
		t.Fatal("a caller behind NAT was not anchored")
	}
	done(a, r, 486)
	if a.relay.Len() != 0 {
		t.Fatal("failed call kept its media")
	}
}

func TestTrunkCodecPolicy(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{})
	r, out := request(t, "INVITE", "", "a", 1, body("10.0.0.1", 4000))
	r.Codecs = []string{"PCMA"}
	if err := a.Request(r, out); err != nil {
		t.Fatal(err)
	}
	b := string(out.Body())
	if !strings.Contains(b, "RTP/AVP 8 101") || strings.Contains(b, "PCMU") {
		t.Fatalf("trunk codecs not applied:\n%s", b)
	}
	a.Release("call-1")
}

// TestCallsSideBySide: many calls offered, answered and ended at once,
// some released twice or before their answer (a media timeout racing a
// BYE): per-call locks keep each call's state whole (run with -race), and
// nothing is left behind.
func TestCallsSideBySide(t *testing.T) {
	a := newAnchor(t, Always, sdp.Policy{})
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint("par-", i)
			r, out := invite(t, id, "127.0.0.7:5060", body("127.0.0.7", 4000+2*i))
			if err := a.Request(r, out); err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			if i%4 == 0 {
				ended(a, id) // gone before its answer
			}
			if err := a.Response(r, response(r, 200, body("127.0.0.8", 5000+2*i))); err != nil {
				t.Errorf("%s answer: %v", id, err)
			}
			done(a, r, 200)
			go ended(a, id) // a media timeout ...
			ended(a, id)    // ... racing the BYE
		}()
	}
	wg.Wait()
	waitEmpty := time.Now().Add(5 * time.Second)
	for (a.Calls() != 0 || a.relay.Len() != 0) && time.Now().Before(waitEmpty) {
		time.Sleep(10 * time.Millisecond)
	}
	if a.Calls() != 0 || a.relay.Len() != 0 || a.relay.Allocator().InUse() != 0 {
		t.Fatalf("left: %d calls, %d sessions, %d pairs", a.Calls(), a.relay.Len(), a.relay.Allocator().InUse())
	}
}
