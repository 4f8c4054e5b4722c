package softswitch_test

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
)

// poolUA is a bare SIP endpoint over UDP for the hostile tests: it sends
// what it is told and reads what comes back, with no transaction layer.
type poolUA struct {
	t *testing.T
	c *net.UDPConn
}

func newPoolUA(t *testing.T, ip string, port int) *poolUA {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &poolUA{t: t, c: c}
}

func (u *poolUA) addr() netip.AddrPort { return u.c.LocalAddr().(*net.UDPAddr).AddrPort() }

func (u *poolUA) send(to netip.AddrPort, msg string) {
	u.t.Helper()
	if _, err := u.c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		u.t.Fatal(err)
	}
}

// response reads until a response to callID with a status >= min arrives.
func (u *poolUA) response(callID string, min int) (int, string) {
	u.t.Helper()
	buf := make([]byte, 8192)
	deadline := time.Now().Add(5 * time.Second)
	for {
		u.c.SetReadDeadline(deadline)
		n, _, err := u.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			u.t.Fatalf("no response >= %d to %s: %v", min, callID, err)
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "SIP/2.0 ") || poolHeader(msg, "Call-ID") != callID {
			continue
		}
		code, _ := strconv.Atoi(msg[8:11])
		if code >= min {
			return code, msg
		}
	}
}

// poolHeader returns the first value of header name in msg.
func poolHeader(msg, name string) string {
	if vs := poolHeaders(msg, name); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func poolHeaders(msg, name string) []string {
	var out []string
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// poolCallee answers every INVITE 180 Ringing and never more; a CANCEL
// gets 200 and its INVITE 487. It counts the INVITEs that reach it.
type poolCallee struct {
	*poolUA
	mu      sync.Mutex
	invites map[string]string // by Call-ID: the INVITE
	done    chan struct{}
}

func newPoolCallee(t *testing.T, port int) *poolCallee {
	rc := &poolCallee{poolUA: newPoolUA(t, "127.0.0.1", port), invites: map[string]string{}, done: make(chan struct{})}
	go rc.serve()
	t.Cleanup(func() { rc.c.Close(); <-rc.done })
	return rc
}

func (rc *poolCallee) serve() {
	defer close(rc.done)
	buf := make([]byte, 8192)
	for {
		n, from, err := rc.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		id := poolHeader(msg, "Call-ID")
		switch {
		case strings.HasPrefix(msg, "INVITE "):
			rc.mu.Lock()
			rc.invites[id] = msg
			rc.mu.Unlock()
			rc.c.WriteToUDPAddrPort([]byte(poolReply(msg, 180, "Ringing", ";tag=callee")), from)
		case strings.HasPrefix(msg, "CANCEL "):
			rc.c.WriteToUDPAddrPort([]byte(poolReply(msg, 200, "OK", "")), from)
			rc.mu.Lock()
			inv := rc.invites[id]
			rc.mu.Unlock()
			if inv != "" {
				rc.c.WriteToUDPAddrPort([]byte(poolReply(inv, 487, "Request Terminated", ";tag=callee")), from)
			}
		}
	}
}

func (rc *poolCallee) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.invites)
}

// poolReply builds a response to req, adding toTag to its To header.
func poolReply(req string, code int, reason, toTag string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, v := range poolHeaders(req, "Via") {
		b.WriteString("Via: " + v + "\r\n")
	}
	b.WriteString("From: " + poolHeader(req, "From") + "\r\n")
	b.WriteString("To: " + poolHeader(req, "To") + toTag + "\r\n")
	b.WriteString("Call-ID: " + poolHeader(req, "Call-ID") + "\r\n")
	b.WriteString("CSeq: " + poolHeader(req, "CSeq") + "\r\n")
	b.WriteString("Contact: <sip:1003@127.0.0.1>\r\nContent-Length: 0\r\n\r\n")
	return b.String()
}

// poolAttack is one INVITE of the anonymous caller: live streams with a
// port, rejected ones with port 0.
type poolAttack struct {
	id, branch, ruri, from, to string
	via                        netip.AddrPort
}

func newPoolAttack(n int, ua *poolUA, sw *running) *poolAttack {
	return &poolAttack{id: fmt.Sprintf("pool-attack-%d", n), branch: fmt.Sprintf("z9hG4bK-pool-%d", n),
		ruri: "sip:1003@" + sw.udp, from: "<sip:anonymous@anonymous.invalid>;tag=anon" + strconv.Itoa(n),
		to: "<sip:1003@" + sw.udp + ">", via: ua.addr()}
}

func (a *poolAttack) invite(live, rejected int) string {
	ip := a.via.Addr().String()
	sdp := []string{"v=0", "o=- 1 1 IN IP4 " + ip, "s=-", "c=IN IP4 " + ip, "t=0 0"}
	for i := 0; i < live; i++ {
		sdp = append(sdp, fmt.Sprintf("m=audio %d RTP/AVP 0", 40000+2*i))
	}
	for i := 0; i < rejected; i++ {
		sdp = append(sdp, "m=audio 0 RTP/AVP 0")
	}
	body := strings.Join(sdp, "\r\n") + "\r\n"
	return a.request("INVITE", 1, "Content-Type: application/sdp\r\n", body)
}

func (a *poolAttack) request(method string, cseq int, extra, body string) string {
	return fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s;rport\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\n"+
		"CSeq: %d %s\r\nContact: <sip:anonymous@%s>\r\nMax-Forwards: 70\r\n%sContent-Length: %d\r\n\r\n%s",
		method, a.ruri, a.via, a.branch, a.from, a.to, a.id, cseq, method, a.via, extra, len(body), body)
}

// ack acknowledges a non-2xx final response (same branch, its To tag).
func (a *poolAttack) ack(res string) string {
	b := *a
	b.to = poolHeader(res, "To")
	return b.request("ACK", 1, "", "")
}

// TestAnonymousCallerCannotExhaustMediaPool is issue 12, item 6, against
// a running switch with a pool of 20 port pairs and limits.streams 8: an
// anonymous source calling a registered user with an offer of one live
// and 20 rejected (port 0) streams takes one stream's two pairs; an offer
// of more live streams than media.max_streams is refused with 488 and a
// Warning before reaching the callee; its calls together never hold more
// than 8 pairs (503 with Retry-After beyond); and meanwhile a legitimate
// call from another source gets its media through the relay. Cancelling
// gives every pair back, and the metrics show the refusals and the
// quarantine.
func TestAnonymousCallerCannotExhaustMediaPool(t *testing.T) {
	const pairs, perSource = 20, 8
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Media.PortMin, c.Media.PortMax = 18200, 18200+2*pairs-1
		c.Limits.Streams = perSource
	})
	if sw.Relay.Allocator().Pairs() != pairs {
		t.Fatalf("pool of %d pairs, want %d", sw.Relay.Allocator().Pairs(), pairs)
	}
	// 1003 rings forever: the attacker's calls stay in progress.
	calleePort := freePort(t)
	sw.register(t, "1003", "udp", calleePort)
	callee := newPoolCallee(t, calleePort)
	server := netip.MustParseAddrPort(sw.udp)
	attacker := newPoolUA(t, "127.0.0.66", 0)
	src := attacker.addr().Addr()
	var ringing []*poolAttack

	// One live stream and 20 rejected: two pairs, not 42 (the old code took
	// a stream's two pairs for every m-line and answered 503 here).
	a := newPoolAttack(0, attacker, sw)
	attacker.send(server, a.invite(1, 20))
	if code, res := attacker.response(a.id, 180); code != 180 {
		t.Fatalf("one live stream and 20 rejected: %d, want 180 (forwarded)\n%s", code, res)
	}
	ringing = append(ringing, a)
	if held, used := sw.Guard.Streams.Held(src), sw.Relay.Allocator().InUse(); held != 2 || used != 2 {
		t.Fatalf("the offer holds %d pairs (%d in use), want 2", held, used)
	}

	// Five live streams, media.max_streams 4: 488 with a Warning.
	a = newPoolAttack(1, attacker, sw)
	attacker.send(server, a.invite(5, 0))
	code, res := attacker.response(a.id, 200)
	if code != 488 || !strings.Contains(poolHeader(res, "Warning"), "too many media streams") {
		t.Fatalf("five live streams: %d, want 488 with a Warning\n%s", code, res)
	}
	attacker.send(server, a.ack(res))

	// Three streams (six pairs) fit the source's eight; the next calls
	// do not.
	refused := 0
	for i := 2; i < 7; i++ {
		a = newPoolAttack(i, attacker, sw)
		attacker.send(server, a.invite(3, 12))
		code, res := attacker.response(a.id, 180)
		switch code {
		case 180:
			ringing = append(ringing, a)
		case 503:
			refused++
			if poolHeader(res, "Retry-After") == "" || !strings.Contains(poolHeader(res, "Warning"), "too many media streams from this source") {
				t.Errorf("503 without Retry-After or Warning:\n%s", res)
			}
			attacker.send(server, a.ack(res))
		default:
			t.Fatalf("poolAttack INVITE %d: %d\n%s", i, code, res)
		}
		if held := sw.Guard.Streams.Held(src); held > perSource {
			t.Fatalf("the anonymous source holds %d pairs, limits.streams is %d", held, perSource)
		}
	}
	if len(ringing) != 2 || refused != 4 || sw.Guard.Streams.Held(src) != perSource || sw.Relay.Allocator().InUse() != perSource {
		t.Fatalf("%d calls ringing, %d refused, %d pairs held, %d in use; want 2, 4, %d, %d",
			len(ringing), refused, sw.Guard.Streams.Held(src), sw.Relay.Allocator().InUse(), perSource, perSource)
	}
	if n := callee.count(); n != len(ringing) {
		t.Errorf("the callee got %d INVITEs, want %d: refused offers must not reach it", n, len(ringing))
	}

	// A legitimate call from another source: media through the relay.
	const pcapPackets = 236 // /usr/share/sip-tester/g711a.pcap
	rcv := newReceiver(t)
	legitCallee := freePort(t)
	sw.register(t, "1002", "udp", legitCallee)
	wait := sippAsync(t, "uas_timeout.xml", legitCallee, "udp", "-key", "rtp_port", strconv.Itoa(rcv.port()))
	sipp(t, sw.udp, "uac_pool_call.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "friend",
		"-mp", strconv.Itoa(mediaPorts(t)))
	trace := wait()
	m := mAudio.FindStringSubmatch(trace)
	if m == nil {
		t.Fatalf("no m=audio in the callee's INVITE:\n%s", trace)
	}
	relayPort, _ := strconv.Atoi(m[1])
	if relayPort < 18200 || relayPort >= 18200+2*pairs {
		t.Fatalf("the legitimate call was not anchored in the pool: port %d", relayPort)
	}
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(relayPort))
	rcv.mu.Lock()
	got := rcv.rtpFrom[want]
	rcv.mu.Unlock()
	if got != pcapPackets {
		t.Errorf("the callee got %d RTP packets from the relay's %v, want %d", got, want, pcapPackets)
	}

	// The attacker gives up: CANCEL gives every pair back.
	for _, a := range ringing {
		attacker.send(server, a.request("CANCEL", 1, "", ""))
		if code, res := attacker.response(a.id, 487); code != 487 {
			t.Fatalf("CANCEL: INVITE ended %d, want 487\n%s", code, res)
		} else {
			attacker.send(server, a.ack(res))
		}
	}
	cancelled := time.Now()
	waitFor(t, 5*time.Second, "every pair released", func() bool {
		return sw.Guard.Streams.Held(src) == 0 && sw.Relay.Allocator().InUse() == 0
	})
	_, metrics := sw.api(t, "GET", "/metrics")
	if q := metric(metrics, "voxvisor_relay_port_pairs_quarantined"); q < 0 || (time.Since(cancelled) < time.Second && q < perSource) {
		t.Errorf("quarantine gauge %v right after %d pairs were released:\n%s", q, perSource, grepLines(metrics, "relay_port_pairs"))
	}
	for name, want := range map[string]float64{
		`voxvisor_source_limit_refused_total{limit="streams"}`:      4,
		`voxvisor_source_limit_blocks_total{limit="streams"}`:       1,
		`voxvisor_media_offers_refused_total{reason="max_streams"}`: 1,
		`voxvisor_relay_port_pairs_in_use`:                          0,
	} {
		if got := metric(metrics, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	sw.expectNoMedia(t)
}
