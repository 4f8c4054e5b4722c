package proxy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/dialog"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

// The forwarding state machine (forking, failover, CANCEL, Timer C) over
// scripted client transactions: each destination is a callee whose
// behaviour the test writes, no sockets.

// fakeTx is a scripted client transaction.
type fakeTx struct {
	req  *siplib.Request
	res  chan *siplib.Response
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

func newFakeTx(req *siplib.Request) *fakeTx {
	return &fakeTx{req: req, res: make(chan *siplib.Response, 8), done: make(chan struct{})}
}

func (f *fakeTx) Responses() <-chan *siplib.Response        { return f.res }
func (f *fakeTx) OnRetransmission(siplib.FnTxResponse) bool { return true }
func (f *fakeTx) OnTerminate(siplib.FnTxTerminate) bool     { return true }
func (f *fakeTx) Done() <-chan struct{}                     { return f.done }
func (f *fakeTx) Terminate()                                { f.end(nil) }
func (f *fakeTx) Err() error                                { f.mu.Lock(); defer f.mu.Unlock(); return f.err }
func (f *fakeTx) end(err error) {
	f.once.Do(func() { f.mu.Lock(); f.err = err; f.mu.Unlock(); close(f.done) })
}
func (f *fakeTx) respond(code int) { f.res <- fakeResponse(f.req, code) }
func fakeResponse(req *siplib.Request, code int) *siplib.Response {
	res := siplib.NewResponseFromRequest(req, code, fmt.Sprint("status ", code), nil)
	if code > 100 && !res.To().Params.Has("tag") {
		res.To().Params.Add("tag", "callee")
	}
	return res
}

// callee is one destination's side of a call.
type callee struct {
	inv       *fakeTx
	cancelled chan struct{}
}

// fakeClient hands out scripted transactions: each destination's INVITE
// runs its behaviour; a CANCEL is answered 200 at once and tells the
// callee.
type fakeClient struct {
	mu       sync.Mutex
	behave   map[string]func(*callee)
	callees  map[string]*callee
	invited  []string
	cancels  []string
	requests []*siplib.Request
}

func (c *fakeClient) Request(_ context.Context, req *siplib.Request) (siplib.ClientTransaction, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dest := req.Destination()
	tx := newFakeTx(req)
	c.requests = append(c.requests, req)
	switch req.Method {
	case siplib.CANCEL:
		c.cancels = append(c.cancels, dest)
		if ce := c.callees[dest]; ce != nil {
			close(ce.cancelled)
		}
		tx.respond(200)
	case siplib.INVITE:
		c.invited = append(c.invited, dest)
		ce := &callee{inv: tx, cancelled: make(chan struct{})}
		c.callees[dest] = ce
		if b := c.behave[dest]; b != nil {
			go b(ce)
		}
	}
	return tx, nil
}

// Behaviours.
func answer(after time.Duration) func(*callee) {
	return func(c *callee) {
		c.inv.respond(180)
		select {
		case <-time.After(after):
			c.inv.respond(200)
		case <-c.cancelled:
			c.inv.respond(487)
		}
	}
}

func refuse(code int) func(*callee) { return func(c *callee) { c.inv.respond(code) } }

// ring rings until cancelled, then answers 487 — or, with answerAnyway,
// 200 (the answer crossing the CANCEL on the wire).
func ring(answerAnyway bool) func(*callee) {
	return func(c *callee) {
		c.inv.respond(180)
		<-c.cancelled
		if answerAnyway {
			c.inv.respond(200)
			return
		}
		c.inv.respond(487)
	}
}

// vanish: the transaction times out with nothing heard (Timer B).
func vanish(c *callee) { c.inv.end(siplib.ErrTransactionTimeout) }

// silent says nothing until terminated (Timer C cuts it).
func silent(*callee) {}

// fakeEgress is a trunk: its channels and what was prepared on it.
type fakeEgress struct {
	name     string
	mu       sync.Mutex
	held     int
	acquired int
	full     bool
}

func (e *fakeEgress) Name() string { return e.name }
func (e *fakeEgress) Acquire() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.full {
		return false
	}
	e.held++
	e.acquired++
	return true
}
func (e *fakeEgress) Release() { e.mu.Lock(); e.held--; e.mu.Unlock() }
func (e *fakeEgress) Prepare(out *siplib.Request) {
	out.AppendHeader(siplib.NewHeader("X-Trunk", e.name))
}
func (e *fakeEgress) Authorize(*siplib.Response, string, string) (string, string, bool) {
	return "", "", false
}

// endings records how dialogs ended.
type endings struct {
	mu sync.Mutex
	m  map[string]dialog.Ending
}

func (e *endings) DialogEnded(d *dialog.Dialog, en dialog.Ending) {
	e.mu.Lock()
	e.m[d.ID] = en
	e.mu.Unlock()
}

// planRouter routes every INVITE with a fixed plan.
type planRouter struct{ plan Plan }

func (p planRouter) Route(*sip.Request) (Plan, bool, error) { return p.plan, true, nil }

func TestForwardingStateMachine(t *testing.T) {
	// testProxy's 1002 has three contacts; an outside caller forks to all.
	const (
		a = "198.51.100.3:4001" // q=1
		b = "198.51.100.2:4000" // q=0.5
		c = "10.0.0.4:5063"     // q=0.1, tls
	)
	t1, t2 := "192.0.2.1:5060", "192.0.2.2:5060"
	for _, tc := range []struct {
		name      string
		behave    map[string]func(*callee)
		serial    bool // route to trunks t1, t2 instead of forking to 1002
		t1Full    bool
		ring      time.Duration // Timer C; 0: a minute
		cancelUp  bool          // the caller CANCELs once ringing is heard
		hangup    bool          // the operator hangs up once ringing is heard
		want      int           // final status upstream
		upstream  []int         // every status sent upstream, in order (nil: not checked)
		cancelled []string      // destinations that got a CANCEL
		invited   []string      // destinations that got the INVITE (nil: not checked)
	}{
		{name: "fork: one answers, the ringing ones are cancelled",
			behave: map[string]func(*callee){a: answer(20 * time.Millisecond), b: ring(false), c: ring(false)},
			want:   200, cancelled: []string{b, c}},
		{name: "fork: a 4xx and a 2xx: the 2xx wins",
			behave: map[string]func(*callee){a: refuse(486), b: answer(30 * time.Millisecond), c: refuse(404)},
			want:   200, upstream: []int{180, 200}},
		{name: "fork: every branch fails: the lowest 4xx, a timeout last",
			behave: map[string]func(*callee){a: refuse(486), b: vanish, c: refuse(404)},
			want:   404},
		{name: "fork: every branch times out: 408",
			behave: map[string]func(*callee){a: vanish, b: vanish, c: vanish},
			want:   408},
		{name: "fork: a 6xx ends the search: the others are cancelled",
			behave: map[string]func(*callee){a: ring(false), b: func(c *callee) { time.Sleep(20 * time.Millisecond); c.inv.respond(603) }, c: ring(false)},
			want:   603, cancelled: []string{a, c}},
		{name: "fork: every 503 becomes 500",
			behave: map[string]func(*callee){a: refuse(503), b: refuse(503), c: refuse(503)},
			want:   500},
		{name: "CANCEL from the caller reaches every branch: 487",
			behave:   map[string]func(*callee){a: ring(false), b: ring(false), c: ring(false)},
			cancelUp: true, want: 487, cancelled: []string{a, b, c}},
		{name: "the operator hangs up a ringing call: every branch cancelled, 487 to the caller",
			behave: map[string]func(*callee){a: ring(false), b: ring(false), c: ring(false)},
			hangup: true, want: 487, cancelled: []string{a, b, c}},
		{name: "failover: the operator hangs up while the trunk rings",
			serial: true, hangup: true, behave: map[string]func(*callee){t1: ring(false), t2: answer(0)},
			want: 487, invited: []string{t1}, cancelled: []string{t1}},
		{name: "CANCEL crossing a 200: the call is answered",
			behave:   map[string]func(*callee){a: ring(true), b: ring(false), c: ring(false)},
			cancelUp: true, want: 200},
		{name: "Timer C: ringing too long is cancelled, 408",
			behave: map[string]func(*callee){a: ring(false), b: silent, c: ring(false)},
			ring:   100 * time.Millisecond, want: 408, cancelled: []string{a, c}},
		{name: "failover: a 503 moves to the next trunk",
			serial: true, behave: map[string]func(*callee){t1: refuse(503), t2: answer(0)},
			want: 200, invited: []string{t1, t2}},
		{name: "failover: a timeout moves to the next trunk",
			serial: true, behave: map[string]func(*callee){t1: vanish, t2: answer(0)},
			want: 200, invited: []string{t1, t2}},
		{name: "failover: a 486 ends the search",
			serial: true, behave: map[string]func(*callee){t1: refuse(486), t2: answer(0)},
			want: 486, invited: []string{t1}},
		{name: "failover: a full trunk is skipped",
			serial: true, t1Full: true, behave: map[string]func(*callee){t1: answer(0), t2: answer(0)},
			want: 200, invited: []string{t2}},
		{name: "failover: the caller's CANCEL stops it",
			serial: true, cancelUp: true, behave: map[string]func(*callee){t1: ring(false), t2: answer(0)},
			want: 487, invited: []string{t1}, cancelled: []string{t1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testProxy(t)
			fc := &fakeClient{behave: tc.behave, callees: map[string]*callee{}}
			p.client = fc
			ends := &endings{m: map[string]dialog.Ending{}}
			p.dialogs.Subscribe(ends)
			p.cfg.RingTimeout = time.Minute
			if tc.ring > 0 {
				p.cfg.RingTimeout = tc.ring
			}
			e1, e2 := &fakeEgress{name: "t1", full: tc.t1Full}, &fakeEgress{name: "t2"}
			if tc.serial {
				u1, u2 := siplib.Uri{Scheme: "sip", User: "+49301", Host: "192.0.2.1", Port: 5060}, siplib.Uri{Scheme: "sip", User: "+49301", Host: "192.0.2.2", Port: 5060}
				p.SetRouting(Routing{Before: planRouter{Plan{Serial: true, Targets: []Target{{URI: u1, Egress: e1}, {URI: u2, Egress: e2}}}}})
			}
			r, rec, err := siptest.Request(invite("sip:1002@voxvisor.local", "sip:alice@elsewhere.example",
				`Proxy-Authorization: Digest username="1001", realm="voxvisor.local", nonce="n", uri="sip:1002@voxvisor.local", response="0123456789abcdef0123456789abcdef"`), "203.0.113.9:5060", "udp")
			if err != nil {
				t.Fatal(err)
			}
			r.User = "1001" // as the auth step leaves it
			if tc.cancelUp || tc.hangup {
				go func() {
					for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
						if res := rec.Last(); res != nil && res.StatusCode == 180 {
							if tc.hangup {
								p.dialogs.Hangup(r.CallID().Value(), dialog.Ending{By: "operator", Reason: "test"})
							} else {
								rec.Cancel()
							}
							return
						}
					}
				}()
			}
			done := make(chan error, 1)
			go func() { done <- p.ServeSIP(context.Background(), r) }()
			var serveErr error
			select {
			case serveErr = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ServeSIP did not return")
			}
			got := 0
			if serveErr != nil {
				got = sip.StatusOf(serveErr).Code
			}
			var statuses []int
			for _, res := range rec.Responses() {
				statuses = append(statuses, res.StatusCode)
				if res.StatusCode >= 200 {
					got = res.StatusCode
				}
			}
			ends.mu.Lock()
			ending, ended := ends.m[r.CallID().Value()]
			ends.mu.Unlock()
			if got == 0 && tc.cancelUp {
				got = ending.Status // the 487 is sipgo's to send, on the CANCEL
			}
			if tc.want >= 300 && (!ended || ending.Status != tc.want) {
				t.Errorf("failed call's dialog: ended %v with status %d, want %d", ended, ending.Status, tc.want)
			}
			if tc.want == 200 && ended {
				t.Errorf("answered call's dialog ended: %+v", ending)
			}
			if got != tc.want {
				t.Errorf("final status upstream %d (all: %v, error %v), want %d", got, statuses, serveErr, tc.want)
			}
			if tc.upstream != nil && !slices.Equal(statuses, tc.upstream) {
				t.Errorf("upstream got %v, want %v", statuses, tc.upstream)
			}
			fc.mu.Lock()
			cancels, invited := slices.Sorted(slices.Values(fc.cancels)), fc.invited
			fc.mu.Unlock()
			if tc.cancelled != nil && !slices.Equal(cancels, slices.Sorted(slices.Values(tc.cancelled))) {
				t.Errorf("CANCEL sent to %v, want %v", cancels, tc.cancelled)
			}
			if tc.invited != nil && !slices.Equal(invited, tc.invited) {
				t.Errorf("INVITE sent to %v, want %v", invited, tc.invited)
			}
			if tc.serial {
				// The answered trunk's channel is held by the dialog; the
				// others were given back.
				heldWant := map[bool]int{true: 1, false: 0}[tc.want == 200]
				if e1.held+e2.held != heldWant {
					t.Errorf("channels held after the call: t1 %d, t2 %d; want %d in all", e1.held, e2.held, heldWant)
				}
				for _, req := range fc.requests {
					if req.Method == siplib.INVITE && req.GetHeader("X-Trunk") == nil {
						t.Errorf("INVITE to %s went out without its trunk's egress step", req.Destination())
					}
				}
				if tc.want == 200 {
					id := r.CallID().Value()
					if d := p.dialogs.Get(id); d == nil || !strings.HasPrefix(d.Trunk(), "t") {
						t.Errorf("dialog of the answered call: %+v", d)
					}
					p.dialogs.End(id, dialog.Ending{By: "caller"})
					if e1.held+e2.held != 0 {
						t.Errorf("the call ended, its trunk channel still held")
					}
				}
			}
			for _, req := range fc.requests {
				if req.GetHeader("Proxy-Authorization") != nil {
					t.Errorf("%s to %s carries the caller's credentials for us", req.Method, req.Destination())
				}
			}
		})
	}
}

// TestBYEEndsOnlyItsDialog: a BYE ends the dialog whose two tags it
// carries, and nothing else — a BYE with a made-up tag (which the far end
// refuses with 481) leaves the call, its CDR and its media alone; the
// caller's BYE to a call still ringing cancels the INVITE as a CANCEL
// would.
func TestBYEEndsOnlyItsDialog(t *testing.T) {
	p := testProxy(t)
	ends := &endings{m: map[string]dialog.Ending{}}
	p.dialogs.Subscribe(ends)
	bye := func(callID, from, to string) *sip.Request {
		r, _, err := siptest.Request("BYE sip:1002@10.0.0.2:5062 SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbye\n"+
			"From: <sip:1001@voxvisor.local>;tag="+from+"\nTo: <sip:1002@voxvisor.local>;tag="+to+"\nCall-ID: "+callID+
			"\nCSeq: 5 BYE\nMax-Forwards: 70\nContent-Length: 0\n", "10.0.0.1:5060", "udp")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	begin := func(callID string) (*dialog.Dialog, *sip.Request) {
		r, _, err := siptest.Request(strings.Replace(invite("sip:1002@voxvisor.local", "sip:1001@voxvisor.local"), "Call-ID: c1", "Call-ID: "+callID, 1), "10.0.0.1:5060", "udp")
		if err != nil {
			t.Fatal(err)
		}
		d, _, err := p.dialogs.Begin(r)
		if err != nil {
			t.Fatal(err)
		}
		return d, r
	}
	up, inv := begin("up")
	res := fakeResponse(inv.Request, 200)
	up.Answered(res, time.Now())
	callee, _ := res.To().Params.Get("tag")
	p.end(bye("up", "1", "made-up"), &call{}, 0)
	p.end(bye("up", "intruder", callee), &call{}, 0)
	if p.dialogs.Get("up") == nil {
		t.Fatal("a BYE with a made-up tag ended the call")
	}
	p.end(bye("up", callee, "1"), &call{}, 0)
	if e, ok := ends.m["up"]; p.dialogs.Get("up") != nil || !ok || e.By != "callee" {
		t.Fatalf("the callee's BYE: dialog left %v, ending %+v", p.dialogs.Get("up") != nil, e)
	}

	ringing, _ := begin("ringing")
	cancelled := false
	ringing.OnEarlyEnd(func() { cancelled = true })
	p.end(bye("ringing", "1", "early"), &call{}, 0)
	if e := ends.m["ringing"]; !cancelled || e.Status != 487 || e.By != "caller" {
		t.Fatalf("the caller's BYE while ringing: INVITE cancelled %v, ending %+v", cancelled, e)
	}
}
