package softswitch_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/config"
)

// Issue 13, items 2 and 4, end to end: phones behind NAT as the switch
// sees them. A natUA is a phone whose Contact and Via name a LAN address
// (192.168.1.x) while its packets come from a loopback socket, which is
// what the switch sees of a phone behind a masquerading router.

// inbound is a message a natUA received and where from.
type inbound struct {
	req  *siplib.Request
	res  *siplib.Response
	from string
}

// natUA is a SIP phone on one UDP socket, answering the switch's OPTIONS
// pings while answerPings is set.
type natUA struct {
	t           *testing.T
	user        string
	conn        *net.UDPConn
	sw          *net.UDPAddr
	contact     string // Contact URI
	via         string // Via sent-by
	answerPings atomic.Bool
	msgs        chan inbound // everything but OPTIONS
	n           atomic.Int64

	mu    sync.Mutex
	pings []ping // OPTIONS received
}

type ping struct {
	at             time.Time
	from, callID   string
	branch, ruri   string
	fromURI, cseqM string
}

// newNATUA opens the phone's socket; lan is the address it believes it
// has ("" for a phone not behind NAT: its socket's address).
func newNATUA(t *testing.T, user, switchAddr, lan string) *natUA {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	to, err := net.ResolveUDPAddr("udp", switchAddr)
	if err != nil {
		t.Fatal(err)
	}
	u := &natUA{t: t, user: user, conn: c, sw: to, msgs: make(chan inbound, 64)}
	u.via = c.LocalAddr().String()
	if lan != "" {
		u.via = lan
	}
	u.contact = "sip:" + user + "@" + u.via
	u.answerPings.Store(true)
	done := make(chan struct{})
	go u.read(done)
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return u
}

func (u *natUA) read(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 65535)
	for {
		n, from, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := siplib.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *siplib.Request:
			if m.Method == siplib.OPTIONS {
				branch, _ := m.Via().Params.Get("branch")
				u.mu.Lock()
				u.pings = append(u.pings, ping{at: time.Now(), from: from.String(), callID: m.CallID().Value(), branch: branch,
					ruri: m.Recipient.String(), fromURI: m.From().Address.String(), cseqM: string(m.CSeq().MethodName)})
				u.mu.Unlock()
				if u.answerPings.Load() {
					// Some phones answer an OPTIONS for them with 405 or
					// 404: any answer counts.
					u.replyTo(m, from, 405, "Method Not Allowed")
				}
				continue
			}
			select {
			case u.msgs <- inbound{req: m, from: from.String()}:
			default:
			}
		case *siplib.Response:
			select {
			case u.msgs <- inbound{res: m, from: from.String()}:
			default:
			}
		}
	}
}

func (u *natUA) pinged() []ping {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]ping(nil), u.pings...)
}

func (u *natUA) send(msg string) {
	u.t.Helper()
	if _, err := u.conn.WriteToUDP([]byte(msg), u.sw); err != nil {
		u.t.Fatal(err)
	}
}

// request builds a request from this phone.
func (u *natUA) request(method, ruri, to, callID string, cseq int, extra ...string) string {
	n := u.n.Add(1)
	lines := []string{
		method + " " + ruri + " SIP/2.0",
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bKnat%d.%d;rport", u.via, time.Now().UnixNano(), n),
		"From: <sip:" + u.user + "@voxvisor.local>;tag=" + u.user + "tag",
		"To: " + to, "Call-ID: " + callID,
		fmt.Sprintf("CSeq: %d %s", cseq, method), "Max-Forwards: 70",
		"Contact: <" + u.contact + ">",
	}
	lines = append(lines, extra...)
	return strings.Join(append(lines, "Content-Length: 0", "", ""), "\r\n")
}

// next returns the next message matching ok, or nil after d.
func (u *natUA) next(d time.Duration, ok func(inbound) bool) *inbound {
	u.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-u.msgs:
			if ok(m) {
				return &m
			}
		case <-deadline:
			return nil
		}
	}
}

// final waits for the final response to callID's method.
func (u *natUA) final(callID string, method siplib.RequestMethod, d time.Duration) *siplib.Response {
	u.t.Helper()
	m := u.next(d, func(m inbound) bool {
		return m.res != nil && m.res.StatusCode >= 200 && m.res.CallID().Value() == callID && m.res.CSeq().MethodName == method
	})
	if m == nil {
		return nil
	}
	return m.res
}

// nextRequest waits for a request of method.
func (u *natUA) nextRequest(method siplib.RequestMethod, d time.Duration) *inbound {
	u.t.Helper()
	return u.next(d, func(m inbound) bool { return m.req != nil && m.req.Method == method })
}

// replyTo answers req to from with extra headers, and returns the
// response sent.
func (u *natUA) replyTo(req *siplib.Request, from *net.UDPAddr, code int, reason string, extra ...string) *siplib.Response {
	res := siplib.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range extra {
		name, val, _ := strings.Cut(h, ": ")
		res.AppendHeader(siplib.NewHeader(name, val))
	}
	u.conn.WriteToUDP([]byte(res.String()), from)
	return res
}

// register registers with the demo password, answering the challenge,
// with extra headers; it returns the 200.
func (u *natUA) register(extra ...string) *siplib.Response {
	u.t.Helper()
	callID := "reg-" + u.user + "-" + u.conn.LocalAddr().String()
	to := "<sip:" + u.user + "@voxvisor.local>"
	u.send(u.request("REGISTER", "sip:voxvisor.local", to, callID, 1, append([]string{"Expires: 3600"}, extra...)...))
	res := u.final(callID, siplib.REGISTER, 3*time.Second)
	if code(res) != 401 {
		u.t.Fatalf("REGISTER: %d, want 401", code(res))
	}
	authz := authorize(u.t, res, u.user, "demo"+u.user, "REGISTER", "sip:voxvisor.local")
	u.send(u.request("REGISTER", "sip:voxvisor.local", to, callID, 2, append([]string{"Expires: 3600", authz}, extra...)...))
	res = u.final(callID, siplib.REGISTER, 3*time.Second)
	if code(res) != 200 {
		u.t.Fatalf("REGISTER with credentials: %d", code(res))
	}
	return res
}

// invite calls user from u, answering the proxy challenge, and returns
// the final response and how long it took after the credentials went.
func (u *natUA) invite(user, callID string) (*siplib.Response, time.Duration) {
	u.t.Helper()
	ruri := "sip:" + user + "@voxvisor.local"
	u.send(u.request("INVITE", ruri, "<"+ruri+">", callID, 1))
	res := u.final(callID, siplib.INVITE, 3*time.Second)
	if code(res) != 407 {
		u.t.Fatalf("INVITE: %d, want 407", code(res))
	}
	u.send(ackFor(u, res, ruri, 1))
	authz := authorize(u.t, res, u.user, "demo"+u.user, "INVITE", ruri)
	sent := time.Now()
	u.send(u.request("INVITE", ruri, "<"+ruri+">", callID, 2, authz))
	res = u.final(callID, siplib.INVITE, 10*time.Second)
	return res, time.Since(sent)
}

// ackFor is the ACK of a non-2xx final response (same branch, §17.1.1.3).
func ackFor(u *natUA, res *siplib.Response, ruri string, cseq int) string {
	return strings.Join([]string{
		"ACK " + ruri + " SIP/2.0",
		"Via: " + res.Via().Value(),
		"From: " + res.From().Value(), "To: " + res.To().Value(), "Call-ID: " + res.CallID().Value(),
		fmt.Sprintf("CSeq: %d ACK", cseq), "Max-Forwards: 70", "Content-Length: 0", "", "",
	}, "\r\n")
}

// natSwitch starts a switch pinging every 300 ms and dropping after 1.2 s.
func natSwitch(t *testing.T) *running {
	return start(t, t.TempDir(), func(c *config.Config) {
		c.NAT.PingInterval = 300 * time.Millisecond
		c.NAT.PingTimeout = 1200 * time.Millisecond
	})
}

// TestNATedPhoneKeptAlive: a phone registering from an address other
// than its Contact is marked NATed and gets an OPTIONS every interval,
// each with its own Call-ID and branch, at the address it registered
// from and from the socket it registered to; while it answers (405 will
// do) it stays registered. When it goes silent, its binding is removed
// within the timeout (not before) and a call to it gets 480 at once;
// the metrics count it all. A phone not behind NAT is never pinged.
func TestNATedPhoneKeptAlive(t *testing.T) {
	sw := natSwitch(t)
	const interval, timeout = 300 * time.Millisecond, 1200 * time.Millisecond
	phone := newNATUA(t, "1002", sw.udp, "192.168.1.20:5060")
	public := newNATUA(t, "1003", sw.udp, "")
	caller := newNATUA(t, "1001", sw.udp, "")
	phone.register()
	public.register()
	bs := sw.Store.Lookup("1002@voxvisor.local")
	if len(bs) != 1 || !bs[0].NAT || bs[0].Source != phone.conn.LocalAddr().String() || bs[0].Local != sw.udp {
		t.Fatalf("binding %+v: want NATed, from %s, to socket %s", bs, phone.conn.LocalAddr(), sw.udp)
	}
	if bs := sw.Store.Lookup("1003@voxvisor.local"); len(bs) != 1 || bs[0].NAT {
		t.Fatalf("a phone not behind NAT marked NATed: %+v", bs)
	}
	if code, body := sw.api(t, "GET", "/api/v1/registrations"); code != 200 || strings.Count(body, `"nat": true`) != 1 {
		t.Fatalf("admin API: %d %s", code, body)
	}

	time.Sleep(5*interval + interval/2)
	ps := phone.pinged()
	if len(ps) < 4 || len(ps) > 7 {
		t.Fatalf("%d pings in %s, want one every %s", len(ps), 5*interval+interval/2, interval)
	}
	seen := map[string]bool{}
	for i, p := range ps {
		if p.from != sw.udp || p.ruri != phone.contact || p.cseqM != "OPTIONS" || !strings.Contains(p.fromURI, "voxvisor.local") {
			t.Fatalf("ping %d: from %s to %s (%s, From %s); want from %s to the Contact %s", i, p.from, p.ruri, p.cseqM, p.fromURI, sw.udp, phone.contact)
		}
		if seen[p.callID] || seen[p.branch] {
			t.Fatalf("ping %d reuses a Call-ID or branch: %+v", i, p)
		}
		seen[p.callID], seen[p.branch] = true, true
		if i > 0 {
			if d := p.at.Sub(ps[i-1].at); d < interval*2/3 || d > interval*2 {
				t.Fatalf("pings %d and %d %s apart, want about %s", i-1, i, d, interval)
			}
		}
	}
	if n := len(public.pinged()); n != 0 {
		t.Fatalf("the phone not behind NAT got %d pings", n)
	}
	if len(sw.Store.Lookup("1002@voxvisor.local")) != 1 {
		t.Fatal("an answering phone was removed")
	}
	_, body := sw.api(t, "GET", "/metrics")
	if sent, answered := metric(body, "voxvisor_nat_pings_sent_total"), metric(body, "voxvisor_nat_pings_answered_total"); sent < 4 || answered < sent-1 ||
		metric(body, "voxvisor_nat_bindings_pinged") != 1 || metric(body, "voxvisor_nat_bindings_dropped_total") != 0 {
		t.Fatalf("metrics while answering: sent %v answered %v pinged %v dropped %v", sent, answered,
			metric(body, "voxvisor_nat_bindings_pinged"), metric(body, "voxvisor_nat_bindings_dropped_total"))
	}

	// The router forgets the phone: pings no longer get through.
	phone.answerPings.Store(false)
	lastAnswered := time.Now()
	if ps := phone.pinged(); len(ps) > 0 {
		lastAnswered = ps[len(ps)-1].at
	}
	var gone time.Duration
	for deadline := time.Now().Add(timeout + 4*interval); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if len(sw.Store.Lookup("1002@voxvisor.local")) == 0 {
			gone = time.Since(lastAnswered)
			break
		}
	}
	if gone == 0 {
		t.Fatalf("silent NATed contact still registered %s after its last answer (timeout %s)", time.Since(lastAnswered), timeout)
	}
	if gone < timeout-interval/2 {
		t.Fatalf("removed %s after its last answer, before the %s timeout", gone, timeout)
	}
	res, took := caller.invite("1002", "call-to-gone")
	if code(res) != 480 || took > time.Second {
		t.Fatalf("call to the removed phone: %d after %s, want 480 at once", code(res), took)
	}
	if m := phone.nextRequest(siplib.INVITE, 100*time.Millisecond); m != nil {
		t.Fatal("the INVITE reached the removed phone")
	}
	_, body = sw.api(t, "GET", "/metrics")
	if metric(body, "voxvisor_nat_bindings_dropped_total") != 1 || metric(body, "voxvisor_nat_pings_failed_total") < 2 || metric(body, "voxvisor_nat_bindings_pinged") != 0 {
		t.Fatalf("metrics after the drop: dropped %v failed %v pinged %v", metric(body, "voxvisor_nat_bindings_dropped_total"),
			metric(body, "voxvisor_nat_pings_failed_total"), metric(body, "voxvisor_nat_bindings_pinged"))
	}
	if len(sw.Store.Lookup("1003@voxvisor.local")) != 1 {
		t.Fatal("the phone not behind NAT was removed")
	}
}

// TestNATSymmetricSignalling: a call to a NATed phone reaches it at the
// address and port its REGISTER came from, from the socket it registered
// to, with its LAN Contact as Request-URI; its 200 OK names its LAN
// Contact, and the dialog still works both ways: the caller's in-dialog
// request reaches the phone over its flow, and the phone's BYE reaches
// the caller.
func TestNATSymmetricSignalling(t *testing.T) {
	sw := natSwitch(t)
	phone := newNATUA(t, "1002", sw.udp, "192.168.1.20:5060")
	caller := newNATUA(t, "1001", sw.udp, "")
	phone.register()

	ruri := "sip:1002@voxvisor.local"
	caller.send(caller.request("INVITE", ruri, "<"+ruri+">", "nat-call", 1))
	res := caller.final("nat-call", siplib.INVITE, 3*time.Second)
	if code(res) != 407 {
		t.Fatalf("INVITE: %d", code(res))
	}
	caller.send(ackFor(caller, res, ruri, 1))
	caller.send(caller.request("INVITE", ruri, "<"+ruri+">", "nat-call", 2, authorize(t, res, "1001", "demo1001", "INVITE", ruri)))

	in := phone.nextRequest(siplib.INVITE, 3*time.Second)
	if in == nil {
		t.Fatal("the INVITE never reached the NATed phone's address")
	}
	if in.from != sw.udp || in.req.Recipient.String() != phone.contact {
		t.Fatalf("INVITE from %s to %s; want from %s (the socket it registered to) to %s", in.from, in.req.Recipient.String(), sw.udp, phone.contact)
	}
	from, _ := net.ResolveUDPAddr("udp", in.from)
	answer := phone.replyTo(in.req, from, 200, "OK", "Contact: <"+phone.contact+">")
	ok := caller.final("nat-call", siplib.INVITE, 3*time.Second)
	if code(ok) != 200 {
		t.Fatalf("caller got %d, want 200", code(ok))
	}
	// The caller's route set is the Record-Route reversed (RFC 3261
	// §12.1.2); its remote target the phone's LAN Contact, which only the
	// switch's flow token can reach.
	var routes []string
	rrs := ok.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		routes = append(routes, "Route: "+rrs[i].Value())
	}
	target := ok.GetHeader("Contact").(*siplib.ContactHeader).Address.String()
	if target != phone.contact {
		t.Fatalf("200 OK Contact %s, want the phone's own %s (no rewriting)", target, phone.contact)
	}
	toTagged := ok.To().Value()
	inDialog := func(method string, cseq int) string {
		msg := caller.request(method, target, toTagged, "nat-call", cseq, routes...)
		return msg
	}
	caller.send(inDialog("ACK", 2))
	if m := phone.nextRequest(siplib.ACK, 3*time.Second); m == nil || m.from != sw.udp {
		t.Fatalf("ACK did not reach the phone over its flow: %+v", m)
	}
	caller.send(inDialog("INFO", 3))
	info := phone.nextRequest(siplib.INFO, 3*time.Second)
	if info == nil || info.from != sw.udp {
		t.Fatalf("in-dialog INFO did not reach the phone over its flow: %+v", info)
	}
	phone.replyTo(info.req, from, 200, "OK")
	if code(caller.final("nat-call", siplib.INFO, 3*time.Second)) != 200 {
		t.Fatal("INFO not answered")
	}

	// The phone hangs up along its route set (the INVITE's Record-Route
	// in order, §12.1.1), to the caller's Contact.
	var back []string
	for _, h := range in.req.GetHeaders("Record-Route") {
		back = append(back, "Route: "+h.Value())
	}
	bye := strings.Join([]string{
		"BYE " + caller.contact + " SIP/2.0",
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bKnatbye%d;rport", phone.via, time.Now().UnixNano()),
		"From: " + answer.To().Value(), "To: " + in.req.From().Value(), "Call-ID: nat-call", "CSeq: 1 BYE", "Max-Forwards: 70",
	}, "\r\n")
	phone.send(bye + "\r\n" + strings.Join(back, "\r\n") + "\r\nContent-Length: 0\r\n\r\n")
	got := caller.nextRequest(siplib.BYE, 3*time.Second)
	if got == nil {
		t.Fatal("the NATed phone's BYE never reached the caller")
	}
	cf, _ := net.ResolveUDPAddr("udp", got.from)
	caller.replyTo(got.req, cf, 200, "OK")
	if code(phone.final("nat-call", siplib.BYE, 3*time.Second)) != 200 {
		t.Fatal("the phone's BYE was not answered")
	}
}

// TestUDPCRLFKeepAliveEndToEnd: a phone's "\r\n\r\n" to the switch's UDP
// port gets "\r\n" back and counts as nothing malformed.
func TestUDPCRLFKeepAliveEndToEnd(t *testing.T) {
	sw := natSwitch(t)
	c, err := net.Dial("udp", sw.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := 0; i < 3; i++ {
		c.Write([]byte("\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "\r\n" {
			t.Fatalf("ping %d: %q, %v; want \"\\r\\n\"", i, buf[:n], err)
		}
	}
	_, body := sw.api(t, "GET", "/metrics")
	if metric(body, "voxvisor_sip_malformed_dropped_total") != 0 || metric(body, "voxvisor_sip_parse_errors_total") != 0 {
		t.Fatalf("keep-alives counted as malformed:\n%s", grepLines(body, "malformed"))
	}
}

// TestPathRouting: a REGISTER through an edge proxy (Path) is answered
// Supported: path, is not judged NATed, is not pinged, and a call to it
// goes to the first Path hop with the Path as Route set and the phone's
// Contact as Request-URI.
func TestPathRouting(t *testing.T) {
	sw := natSwitch(t)
	edge := udpOn(t, "127.0.0.1", 0)
	hop := fmt.Sprintf("sip:127.0.0.1:%d;lr", edge.LocalAddr().(*net.UDPAddr).Port)
	phone := newNATUA(t, "1002", sw.udp, "192.168.1.20:5060")
	caller := newNATUA(t, "1001", sw.udp, "")
	reg := phone.register("Path: <"+hop+">", "Supported: path")
	if h := reg.GetHeader("Supported"); h == nil || !strings.Contains(h.Value(), "path") {
		t.Fatalf("200 to a REGISTER with Path: Supported %v", h)
	}
	if p := reg.GetHeader("Path"); p == nil || p.Value() != "<"+hop+">" {
		t.Fatalf("200 to a REGISTER with Path: Path %v", p)
	}
	if bs := sw.Store.Lookup("1002@voxvisor.local"); len(bs) != 1 || bs[0].NAT || len(bs[0].Path) != 1 {
		t.Fatalf("binding %+v", bs)
	}

	got := make(chan *siplib.Request, 1)
	go readRequests(edge, func(req *siplib.Request, from *net.UDPAddr) {
		if req.Method == siplib.INVITE {
			res := siplib.NewResponseFromRequest(req, 486, "Busy Here", nil)
			edge.WriteToUDP([]byte(res.String()), from)
			select {
			case got <- req:
			default:
			}
		}
	})
	res, _ := caller.invite("1002", "call-via-path")
	if code(res) != 486 {
		t.Fatalf("call through the Path hop: %d, want the hop's 486", code(res))
	}
	var req *siplib.Request
	select {
	case req = <-got:
	case <-time.After(time.Second):
		t.Fatal("the INVITE never reached the Path hop")
	}
	if req.Recipient.String() != phone.contact {
		t.Fatalf("Request-URI %s, want the phone's Contact %s", req.Recipient.String(), phone.contact)
	}
	if m := phone.nextRequest(siplib.INVITE, 200*time.Millisecond); m != nil {
		t.Fatal("the INVITE went to the phone directly, around the Path")
	}
	if n := len(phone.pinged()); n != 0 {
		t.Fatalf("a contact behind a Path got %d pings", n)
	}
	if r := req.Route(); r == nil || r.Address.String() != hop {
		t.Fatalf("Route %v, want the Path %s", r, hop)
	}
}

// TestNATedPhoneOnSecondListener: with two UDP listeners, a NATed phone
// registered to the second gets its pings and its calls from the second:
// its router lets in only what comes from where it sent its REGISTER.
func TestNATedPhoneOnSecondListener(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.NAT.PingInterval = 300 * time.Millisecond
		c.NAT.PingTimeout = 1200 * time.Millisecond
		c.SIP.Listen = []config.Listener{
			{Transport: "udp", Address: "127.0.0.1:0"},
			{Transport: "udp", Address: "127.0.0.1:0"},
			{Transport: "tcp", Address: "127.0.0.1:0"},
		}
	})
	first, _ := sw.Self.Listener("udp")
	if first.Bound.String() == sw.udp {
		t.Fatal("test setup: r.udp should be the second UDP listener")
	}
	phone := newNATUA(t, "1002", sw.udp, "192.168.1.20:5060")
	caller := newNATUA(t, "1001", sw.udp, "")
	phone.register()
	if bs := sw.Store.Lookup("1002@voxvisor.local"); len(bs) != 1 || bs[0].Local != sw.udp {
		t.Fatalf("binding %+v: want the second listener %s as its socket", bs, sw.udp)
	}
	time.Sleep(700 * time.Millisecond)
	ps := phone.pinged()
	if len(ps) == 0 {
		t.Fatal("no pings")
	}
	for _, p := range ps {
		if p.from != sw.udp {
			t.Fatalf("ping from %s, want from %s (the socket it registered to), not %s", p.from, sw.udp, first.Bound)
		}
	}
	// The phone answers on its own goroutine; the test's goroutine calls.
	invited := make(chan string, 1)
	go func() {
		in := phone.nextRequest(siplib.INVITE, 5*time.Second)
		if in == nil {
			invited <- ""
			return
		}
		from, _ := net.ResolveUDPAddr("udp", in.from)
		phone.replyTo(in.req, from, 486, "Busy Here")
		invited <- in.from
	}()
	res, _ := caller.invite("1002", "second-listener")
	switch from := <-invited; {
	case from == "":
		t.Fatal("the INVITE never reached the phone")
	case from != sw.udp:
		t.Fatalf("INVITE from %s, want from %s (the socket it registered to)", from, sw.udp)
	}
	if code(res) != 486 {
		t.Fatalf("caller got %d, want the phone's 486", code(res))
	}
}

// tcpPhone reads SIP messages from a TCP connection to the switch.
type tcpPhone struct {
	c net.Conn
	r *bufio.Reader
}

// read returns the next message (nil on error or after d).
func (p *tcpPhone) read(d time.Duration) siplib.Message {
	p.c.SetReadDeadline(time.Now().Add(d))
	var head strings.Builder
	length := 0
	for {
		line, err := p.r.ReadString('\n')
		if err != nil {
			return nil
		}
		if head.Len() == 0 && strings.TrimSpace(line) == "" {
			continue // a keep-alive pong
		}
		head.WriteString(line)
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(p.r, body); err != nil {
		return nil
	}
	m, err := siplib.ParseMessage(append([]byte(head.String()), body...))
	if err != nil {
		return nil
	}
	return m
}

// TestOutboundFlowOnly: a phone registered over TCP with ;ob (RFC 5626)
// is called over its connection while it is up; once it is gone the
// switch does not dial its Contact address but answers 430 Flow Failed.
func TestOutboundFlowOnly(t *testing.T) {
	sw := natSwitch(t)
	caller := newNATUA(t, "1001", sw.udp, "")
	c, err := net.Dial("tcp", sw.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	phone := &tcpPhone{c: c, r: bufio.NewReader(c)}
	// Its Contact is a port nothing listens on: a dial there would fail
	// with 503 (or time out), not 430.
	contact := fmt.Sprintf("sip:1002@127.0.0.1:%d;transport=tcp;ob", freePort(t))
	reg := func(cseq int, authz ...string) *siplib.Response {
		msg := strings.Join(append([]string{
			"REGISTER sip:voxvisor.local SIP/2.0",
			fmt.Sprintf("Via: SIP/2.0/TCP %s;branch=z9hG4bKob%d", c.LocalAddr(), cseq),
			"From: <sip:1002@voxvisor.local>;tag=ob", "To: <sip:1002@voxvisor.local>", "Call-ID: ob-reg",
			fmt.Sprintf("CSeq: %d REGISTER", cseq), "Max-Forwards: 70", "Contact: <" + contact + ">;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"",
			"Supported: outbound, path", "Expires: 600",
		}, authz...), "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
		c.Write([]byte(msg))
		res, _ := phone.read(3 * time.Second).(*siplib.Response)
		return res
	}
	res := reg(1)
	if code(res) != 401 {
		t.Fatalf("REGISTER: %d", code(res))
	}
	if res = reg(2, authorize(t, res, "1002", "demo1002", "REGISTER", "sip:voxvisor.local")); code(res) != 200 {
		t.Fatalf("REGISTER with credentials: %d", code(res))
	}
	if bs := sw.Store.Lookup("1002@voxvisor.local"); len(bs) != 1 || !bs[0].Outbound || bs[0].Transport != "tcp" {
		t.Fatalf("binding %+v", bs)
	}

	// Up: the call comes over the connection.
	invited := make(chan bool, 1)
	go func() {
		m, _ := phone.read(5 * time.Second).(*siplib.Request)
		if m == nil || m.Method != siplib.INVITE {
			invited <- false
			return
		}
		res := siplib.NewResponseFromRequest(m, 486, "Busy Here", nil)
		c.Write([]byte(res.String()))
		invited <- true
	}()
	res, _ = caller.invite("1002", "ob-up")
	if reached := <-invited; !reached || code(res) != 486 {
		t.Fatalf("call over the flow: reached the phone %v, caller got %d; want the phone's 486", reached, code(res))
	}

	// Gone: 430, at once.
	c.Close()
	time.Sleep(300 * time.Millisecond) // sipgo notices the close
	res, took := caller.invite("1002", "ob-gone")
	if code(res) != 430 || took > time.Second {
		t.Fatalf("call after the flow is gone: %d after %s, want 430 Flow Failed at once", code(res), took)
	}
}
