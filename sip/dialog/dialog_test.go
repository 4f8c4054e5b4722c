package dialog

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/guard"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

func invite(t *testing.T, id, src string, extra ...string) *sip.Request {
	t.Helper()
	raw := "INVITE sip:1002@voxvisor.local SIP/2.0\n" +
		"Via: SIP/2.0/UDP " + src + ";branch=z9hG4bK" + id + "\n" +
		"From: \"Alice\" <sip:1001@voxvisor.local>;tag=a-" + id + "\n" +
		"To: <sip:1002@voxvisor.local>\n" +
		"Call-ID: " + id + "\n" +
		"CSeq: 7 INVITE\n" +
		"Contact: <sip:1001@" + src + ">\n" +
		"Max-Forwards: 70\n" + strings.Join(extra, "\n")
	r, _, err := siptest.Request(strings.TrimRight(raw, "\n")+"\nContent-Length: 0\n", src, "udp")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ok200(r *sip.Request, from string, extra ...siplib.Header) *siplib.Response {
	res := siplib.NewResponseFromRequest(r.Request, 200, "OK", nil)
	res.To().Params.Add("tag", "b-"+r.CallID().Value())
	res.AppendHeader(&siplib.ContactHeader{Address: siplib.Uri{Scheme: "sip", User: "1002", Host: "127.0.0.9", Port: 5070}})
	for _, h := range extra {
		res.AppendHeader(h)
	}
	res.SetSource(from)
	res.SetTransport("UDP")
	return res
}

// recorder is an Observer that keeps what it was told, and a Sender that
// keeps the BYEs.
type recorder struct {
	name  string
	order *[]string
	mu    sync.Mutex
	ended map[string]Ending
	byes  []*siplib.Request
	dests []string
}

func newRecorder(name string, order *[]string) *recorder {
	return &recorder{name: name, order: order, ended: map[string]Ending{}}
}

func (r *recorder) DialogEnded(d *Dialog, e Ending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.ended[d.ID]; dup {
		panic("dialog " + d.ID + " ended twice")
	}
	r.ended[d.ID] = e
	if r.order != nil {
		*r.order = append(*r.order, r.name)
	}
}

func (r *recorder) Originate(_ context.Context, req *siplib.Request, dest, transport string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byes = append(r.byes, req)
	r.dests = append(r.dests, transport+":"+dest)
	return 200, nil
}

func newTable(t *testing.T, o Options) (*Table, *recorder) {
	tb := New(o, logging.Discard())
	rec := newRecorder("rec", nil)
	tb.Subscribe(rec)
	tb.SetSender(rec)
	return tb, rec
}

// TestEndsOnceWhateverComesFirst: a BYE, a media timeout, an operator and
// a drain race to end the same call; the observers hear of it once, in
// order, and what it held is given back once, after them.
func TestEndsOnceWhateverComesFirst(t *testing.T) {
	var order []string
	tb := New(Options{}, logging.Discard())
	cdr, media := newRecorder("cdr", &order), newRecorder("media", &order)
	tb.Subscribe(cdr)
	tb.Subscribe(media)
	tb.SetSender(cdr)
	d, fresh, err := tb.Begin(invite(t, "race", "127.0.0.5:5060"))
	if err != nil || !fresh {
		t.Fatal(fresh, err)
	}
	var released atomic.Int32
	d.Hold(func() {
		released.Add(1)
		order = append(order, "channel")
	})
	var wg sync.WaitGroup
	var won atomic.Int32
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ok bool
			if i%2 == 0 {
				ok = tb.End("race", Ending{By: "caller"})
			} else {
				ok = tb.Hangup("race", Ending{By: "system", Reason: "media timeout"})
			}
			if ok {
				won.Add(1)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 || released.Load() != 1 || tb.Len() != 0 {
		t.Fatalf("%d ends took effect, channel released %d times, %d dialogs left; want 1, 1, 0", won.Load(), released.Load(), tb.Len())
	}
	if strings.Join(order, ",") != "cdr,media,channel" {
		t.Fatalf("order %v, want the CDR, then the media, then what the dialog held", order)
	}
	// Held after the end: released at once, not leaked.
	d.Hold(func() { released.Add(1) })
	if released.Load() != 2 {
		t.Fatal("a hold taken after the end was not released")
	}
}

// TestSessionTimerExpiry: a call whose 2xx agreed Session-Expires: 90
// lives while refreshed; when the refreshes stop it gets a BYE each way
// (the callee's CSeq shifted past the proxy's credential retries) and
// ends with the reason.
func TestSessionTimerExpiry(t *testing.T) {
	tb, rec := newTable(t, Options{})
	r := invite(t, "st", "127.0.0.5:5060", "Supported: timer", "Session-Expires: 90")
	d, _, err := tb.Begin(r)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if !d.Answered(ok200(r, "127.0.0.9:5070", siplib.NewHeader("Session-Expires", "90;refresher=uac")), t0) {
		t.Fatal("first 2xx not taken as the answer")
	}
	d.Shift.Store(1) // one retry with credentials downstream
	tb.Expire(t0.Add(80 * time.Second))
	d.Refreshed(ok200(r, "127.0.0.9:5070"), t0.Add(45*time.Second)) // a re-INVITE at SE/2
	tb.Expire(t0.Add(130 * time.Second))
	if tb.Len() != 1 {
		t.Fatal("a refreshed session ended")
	}
	tb.Expire(t0.Add(136 * time.Second))
	if !tb.WaitByes(5*time.Second) || tb.Len() != 0 {
		t.Fatalf("expired session still up (%d dialogs)", tb.Len())
	}
	e := rec.ended["st"]
	if e.By != "system" || e.Reason != "session expired" || tb.Expired.Load() != 1 {
		t.Fatalf("ending %+v, expired %d", e, tb.Expired.Load())
	}
	if len(rec.byes) != 2 {
		t.Fatalf("%d BYEs, want one each way", len(rec.byes))
	}
	for _, b := range rec.byes {
		to, _ := b.To().Params.Get("tag")
		switch to {
		case "a-st": // to the caller, from the callee
			if b.Recipient.Host != "127.0.0.5" || b.CSeq().SeqNo != 1 {
				t.Errorf("BYE to the caller: %s CSeq %d", b.Recipient.String(), b.CSeq().SeqNo)
			}
		case "b-st": // to the callee, from the caller: 7 + 1 shifted + 1
			if b.Recipient.Host != "127.0.0.9" || b.CSeq().SeqNo != 9 {
				t.Errorf("BYE to the callee: %s CSeq %d, want 9", b.Recipient.String(), b.CSeq().SeqNo)
			}
		default:
			t.Errorf("BYE to tag %q", to)
		}
		if !strings.Contains(b.GetHeader("Reason").Value(), "session expired") {
			t.Errorf("BYE without the reason: %s", b.GetHeader("Reason").Value())
		}
	}
}

// TestAgeBounds: an answered call without a session timer ends at
// MaxAge; one never answered at MaxEarly, without BYEs; negative bounds
// are off.
func TestAgeBounds(t *testing.T) {
	tb, rec := newTable(t, Options{MaxAge: time.Hour, MaxEarly: time.Minute})
	r := invite(t, "old", "127.0.0.5:5060")
	d, _, _ := tb.Begin(r)
	t0 := time.Now()
	d.Answered(ok200(r, "127.0.0.9:5070"), t0)
	tb.Begin(invite(t, "ringing", "127.0.0.6:5060"))
	tb.Expire(t0.Add(59 * time.Minute))
	if tb.Len() != 1 || rec.ended["ringing"].Reason != "never answered" {
		t.Fatalf("after 59 min: %d dialogs, ringing ended %+v", tb.Len(), rec.ended["ringing"])
	}
	tb.Expire(t0.Add(61 * time.Minute))
	tb.WaitByes(5 * time.Second)
	if tb.Len() != 0 || rec.ended["old"].Reason != "maximum dialog age" || len(rec.byes) != 2 {
		t.Fatalf("after 61 min: %d dialogs, old ended %+v, %d BYEs", tb.Len(), rec.ended["old"], len(rec.byes))
	}

	off, _ := newTable(t, Options{MaxAge: -1, MaxEarly: -1})
	off.Begin(invite(t, "forever", "127.0.0.5:5060"))
	off.Expire(time.Now().Add(1000 * time.Hour))
	if off.Len() != 1 {
		t.Fatal("a bound turned off ended a dialog")
	}
}

// TestSessionTimerNegotiation: 422 below Min-SE; a Session-Expires put on
// an INVITE without one; a 2xx from a callee without timers completed
// for a caller that has them.
func TestSessionTimerNegotiation(t *testing.T) {
	tb, _ := newTable(t, Options{SessionExpires: 600 * time.Second, MinSE: 120 * time.Second})
	err := tb.Check(invite(t, "short", "127.0.0.5:5060", "Session-Expires: 100").Request)
	se := sip.StatusOf(err)
	if err == nil || se.Code != 422 || len(se.Headers) != 1 || se.Headers[0].Value() != "120" {
		t.Fatalf("Session-Expires under Min-SE: %v, want 422 with Min-SE: 120", err)
	}
	if err := tb.Check(invite(t, "fine", "127.0.0.5:5060", "Session-Expires: 1800").Request); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"0", "-5", "99999999999999999999", "x"} {
		// 0 is too small (422); the rest are not delta-seconds (400).
		err := tb.Check(invite(t, "odd", "127.0.0.5:5060", "Session-Expires: "+bad).Request)
		if want := map[bool]int{true: 422, false: 400}[bad == "0"]; sip.StatusOf(err).Code != want {
			t.Errorf("Session-Expires: %s: %v, want %d", bad, err, want)
		}
		// A 2xx with a value out of range agrees no timer: the age bound applies.
		r := invite(t, "odd-"+bad, "127.0.0.5:5060")
		d, _, _ := tb.Begin(r)
		d.Answered(ok200(r, "127.0.0.9:5070", siplib.NewHeader("Session-Expires", bad)), time.Now())
		if se := d.Info().SessionExpires; se < 0 || bad != "0" && se != 0 {
			t.Errorf("2xx with Session-Expires: %s gave an interval of %s", bad, se)
		}
	}
	r := invite(t, "plain", "127.0.0.5:5060", "Supported: replaces, timer")
	tb.OfferTimer(r.Request)
	if h := r.GetHeader("Session-Expires"); h == nil || h.Value() != "600" {
		t.Fatalf("Session-Expires put: %v", h)
	}
	// The compact form counts the same.
	if err := tb.Check(invite(t, "compact", "127.0.0.5:5060", "x: 2").Request); sip.StatusOf(err).Code != 422 {
		t.Errorf("x: 2: %v, want 422", err)
	}
	// Never below the caller's own Min-SE (§8.1).
	withMin := invite(t, "minse", "127.0.0.5:5060", "Min-SE: 3600")
	tb.OfferTimer(withMin.Request)
	if h := withMin.GetHeader("Session-Expires"); h == nil || h.Value() != "3600" {
		t.Errorf("Session-Expires put with Min-SE: 3600: %v", h)
	}
	res := ok200(r, "127.0.0.9:5070")
	AnswerTimer(r.Request, res)
	if h := res.GetHeader("Session-Expires"); h == nil || h.Value() != "600;refresher=uac" || res.GetHeader("Require") == nil {
		t.Fatalf("2xx not completed for the caller's timer: %v", res)
	}
	d, _, _ := tb.Begin(r)
	d.Answered(res, time.Now())
	if d.Info().SessionExpires != 600*time.Second {
		t.Fatalf("session expires %s, want 600s", d.Info().SessionExpires)
	}
	// A caller without timers: nothing promised on its behalf.
	r2 := invite(t, "old-phone", "127.0.0.5:5060")
	tb.OfferTimer(r2.Request)
	res2 := ok200(r2, "127.0.0.9:5070")
	AnswerTimer(r2.Request, res2)
	if res2.GetHeader("Session-Expires") != nil {
		t.Fatal("a 2xx told a caller without timers to refresh")
	}
}

// TestPerSourceSlots: a source at its limit of dialogs gets 503; the slot
// comes back when a dialog ends; the same Call-ID again takes nothing.
func TestPerSourceSlots(t *testing.T) {
	slots := guard.NewSlots(2)
	tb, _ := newTable(t, Options{PerSource: slots})
	for i := 0; i < 2; i++ {
		if _, fresh, err := tb.Begin(invite(t, fmt.Sprint("c", i), "127.0.0.5:5060")); err != nil || !fresh {
			t.Fatal(fresh, err)
		}
	}
	if _, fresh, err := tb.Begin(invite(t, "c0", "127.0.0.5:5060")); err != nil || fresh {
		t.Fatalf("same Call-ID again: fresh %v, %v", fresh, err)
	}
	if _, _, err := tb.Begin(invite(t, "c2", "127.0.0.5:5060")); sip.StatusOf(err).Code != 503 {
		t.Fatalf("third call from the source: %v, want 503", err)
	}
	if _, _, err := tb.Begin(invite(t, "other", "127.0.0.6:5060")); err != nil {
		t.Fatalf("another source refused: %v", err)
	}
	tb.End("c0", Ending{By: "caller"})
	if n := slots.Held(netip.MustParseAddr("127.0.0.5")); n != 1 {
		t.Fatalf("%d slots held after one ended, want 1", n)
	}
	if _, _, err := tb.Begin(invite(t, "c3", "127.0.0.5:5060")); err != nil {
		t.Fatalf("room again, still refused: %v", err)
	}
}

// lifeRecorder follows every event of a dialog's life.
type lifeRecorder struct {
	name   string
	events *[]string
}

func (l lifeRecorder) DialogStarted(d *Dialog) {
	*l.events = append(*l.events, l.name+" started "+d.ID)
}
func (l lifeRecorder) DialogAnswered(d *Dialog) {
	*l.events = append(*l.events, l.name+" answered "+d.ID)
}
func (l lifeRecorder) DialogRefreshed(d *Dialog) {
	*l.events = append(*l.events, l.name+" refreshed "+d.ID)
}
func (l lifeRecorder) DialogEnded(d *Dialog, e Ending) {
	*l.events = append(*l.events, l.name+" ended "+d.ID+" by "+e.By)
}

// TestLifeEvents: observers hear of a dialog's start, answer, refreshes
// and end, each once, in subscription order; a second 2xx is no second
// answer, and a failed Begin (a source at its limit) starts nothing.
func TestLifeEvents(t *testing.T) {
	var events []string
	tb := New(Options{PerSource: guard.NewSlots(1)}, logging.Discard())
	tb.Subscribe(lifeRecorder{"cdr", &events})
	tb.Subscribe(lifeRecorder{"media", &events})
	r := invite(t, "life", "127.0.0.5:5060")
	d, _, err := tb.Begin(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tb.Begin(invite(t, "refused", "127.0.0.5:5060")); err == nil {
		t.Fatal("a second call over the source's limit was begun")
	}
	tb.Begin(r) // the same INVITE again: nothing new
	d.Answered(ok200(r, "127.0.0.9:5070"), time.Now())
	d.Answered(ok200(r, "127.0.0.9:5070"), time.Now())
	d.Refreshed(ok200(r, "127.0.0.9:5070"), time.Now())
	tb.End("life", Ending{By: "callee"})
	want := []string{"cdr started life", "media started life", "cdr answered life", "media answered life",
		"cdr refreshed life", "media refreshed life", "cdr ended life by callee", "media ended life by callee"}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	if tb.Refreshes.Load() != 1 {
		t.Fatalf("refreshes counted %d, want 1", tb.Refreshes.Load())
	}
}

// TestOneCallPerCallID: an INVITE with the Call-ID of a call in progress
// and another From tag is refused (it would share that call's dialog and
// media); the same INVITE again (a spiral) is the same call. An in-dialog
// request belongs to a dialog only with both its tags.
func TestOneCallPerCallID(t *testing.T) {
	tb, _ := newTable(t, Options{})
	r := invite(t, "shared", "127.0.0.5:5060")
	d, _, err := tb.Begin(r)
	if err != nil {
		t.Fatal(err)
	}
	raw := strings.Replace(r.String(), "tag=a-shared", "tag=intruder", 1)
	other, _, err := siptest.Request(raw, "127.0.0.66:5060", "udp")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tb.Begin(other); sip.StatusOf(err).Code != 400 || tb.Len() != 1 {
		t.Fatalf("a second call on the Call-ID: %v, %d dialogs", err, tb.Len())
	}
	if _, fresh, err := tb.Begin(r); err != nil || fresh {
		t.Fatalf("the same INVITE again: fresh %v, %v", fresh, err)
	}
	d.Answered(ok200(r, "127.0.0.9:5070"), time.Now())
	req := func(from, to string) *siplib.Request {
		m, _, err := siptest.Request("BYE sip:x@127.0.0.9 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.5;branch=z9hG4bKb\n"+
			"From: <sip:a@x>;tag="+from+"\nTo: <sip:b@x>;tag="+to+"\nCall-ID: shared\nCSeq: 9 BYE\nContent-Length: 0\n", "127.0.0.5:5060", "udp")
		if err != nil {
			t.Fatal(err)
		}
		return m.Request
	}
	for _, tc := range []struct {
		from, to string
		side     Side
		ok       bool
	}{
		{"a-shared", "b-shared", Caller, true},
		{"b-shared", "a-shared", Callee, true},
		{"a-shared", "made-up", Caller, false},
		{"intruder", "b-shared", Caller, false},
		{"made-up", "a-shared", Caller, false},
	} {
		if side, ok := d.Match(req(tc.from, tc.to)); ok != tc.ok || ok && side != tc.side {
			t.Errorf("From tag %s To tag %s: %v %v, want %v %v", tc.from, tc.to, side, ok, tc.side, tc.ok)
		}
	}
}

// TestSessionIntervalBounds: the switch ends a session no sooner than
// Min-SE after a refresh, whatever short interval a callee's 2xx named,
// and no later than the age bound, however long an interval was agreed.
func TestSessionIntervalBounds(t *testing.T) {
	tb, _ := newTable(t, Options{MinSE: 90 * time.Second, MaxAge: time.Hour})
	t0 := time.Now()
	for _, tc := range []struct {
		se   string
		ends time.Duration
	}{{"1;refresher=uas", 90 * time.Second}, {"4294967295;refresher=uac", time.Hour}, {"600", 600 * time.Second}} {
		r := invite(t, "se-"+tc.se, "127.0.0.5:5060")
		d, _, _ := tb.Begin(r)
		d.Answered(ok200(r, "127.0.0.9:5070", siplib.NewHeader("Session-Expires", tc.se)), t0)
		if at, why := d.deadline(tb.opts); at.Sub(t0) != tc.ends || why != "session expired" {
			t.Errorf("Session-Expires: %s: ends after %s (%s), want %s", tc.se, at.Sub(t0), why, tc.ends)
		}
	}
}

// TestBYECSeqStaysValid: the BYEs voxvisor sends keep CSeq below 2^31
// (RFC 3261 §8.1.1.5) however high a side's own CSeq went.
func TestBYECSeqStaysValid(t *testing.T) {
	tb, rec := newTable(t, Options{})
	r := invite(t, "cseq", "127.0.0.5:5060")
	d, _, _ := tb.Begin(r)
	d.Answered(ok200(r, "127.0.0.9:5070"), time.Now())
	hi, _, _ := siptest.Request("INFO sip:x@127.0.0.9 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.5;branch=z9hG4bKi\n"+
		"From: <sip:a@x>;tag=a-cseq\nTo: <sip:b@x>;tag=b-cseq\nCall-ID: cseq\nCSeq: 2147483647 INFO\nContent-Length: 0\n", "127.0.0.5:5060", "udp")
	d.Request(hi, Caller)
	d.Shift.Store(3)
	tb.Hangup("cseq", Ending{By: "operator"})
	tb.WaitByes(5 * time.Second)
	for _, b := range rec.byes {
		if n := b.CSeq().SeqNo; n > maxCSeq {
			t.Errorf("BYE with CSeq %d", n)
		}
	}
}

// TestAdoptEndsAnotherSwitchsCall: a dialog's record, as another switch
// of the cluster wrote it, is adopted here and hung up: a BYE to each
// side with the tags, Call-ID and addresses of the call, a CSeq past
// any the side may have used since the record, and the observers told.
func TestAdoptEndsAnotherSwitchsCall(t *testing.T) {
	owner, _ := newTable(t, Options{})
	r := invite(t, "adopt", "127.0.0.5:5060")
	d, _, _ := owner.Begin(r)
	d.Answered(ok200(r, "127.0.0.9:5070"), time.Now())
	var hop siplib.Uri
	siplib.ParseUri("sip:127.0.0.11:5070;lr;vxh=x", &hop)
	d.SetRoute(Callee, []siplib.Uri{hop}) // the callee is behind another node's hop
	rec := d.Record()
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}

	survivor, seen := newTable(t, Options{})
	var back Record
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.Adopt(back); err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.Adopt(back); err == nil {
		t.Error("the same call adopted twice")
	}
	survivor.Hangup("adopt", Ending{By: "system", Reason: "node a lost", Cause: 503})
	survivor.WaitByes(5 * time.Second)
	if e, ok := seen.ended["adopt"]; !ok || e.Reason != "node a lost" {
		t.Fatalf("observers told %+v", seen.ended)
	}
	if len(seen.byes) != 2 {
		t.Fatalf("%d BYEs, want one to each side", len(seen.byes))
	}
	want := map[string]string{"udp:127.0.0.5:5060": "b-adopt>a-adopt", "udp:127.0.0.11:5070": "a-adopt>b-adopt"}
	for i, b := range seen.byes {
		from, _ := b.From().Params.Get("tag")
		to, _ := b.To().Params.Get("tag")
		if want[seen.dests[i]] != from+">"+to || b.CallID().Value() != "adopt" {
			t.Errorf("BYE to %s: From tag %s, To tag %s, Call-ID %s", seen.dests[i], from, to, b.CallID().Value())
		}
		if rt := b.GetHeader("Route"); (seen.dests[i] == "udp:127.0.0.11:5070") != (rt != nil && strings.Contains(rt.Value(), "vxh=x")) {
			t.Errorf("BYE to %s: Route %v", seen.dests[i], rt)
		}
		if b.CSeq().SeqNo <= 7 {
			t.Errorf("BYE to %s with CSeq %d, not past the sides' own", seen.dests[i], b.CSeq().SeqNo)
		}
	}
	if _, err := survivor.Adopt(Record{ID: "ringing"}); err == nil {
		t.Error("an unanswered dialog adopted")
	}
}
