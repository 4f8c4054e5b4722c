package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	"github.com/voxvisor/voxvisor/sip/digest"
)

// call is one relayed call of the media load: A and B endpoints, and the
// relay ports each sends to.
type call struct {
	a, b         *net.UDPConn
	toA, toB     netip.AddrPort // relay ports: A sends to toA... (the leg facing A)
	seqA, seqB   uint16
	recvA, recvB atomic.Uint64 // packets received by A (from B) and by B (from A)
}

func newEndpoint() (*net.UDPConn, error) {
	return net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

func port(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }

func offerSDP(p int) string {
	return fmt.Sprintf("v=0\r\no=- %d 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", p, p)
}

var (
	mLine   = regexp.MustCompile(`m=audio (\d+) `)
	cLine   = regexp.MustCompile(`c=IN IP4 ([0-9.]+)`)
	hdrLine = regexp.MustCompile(`(?mi)^([A-Za-z-]+):\s*(.*)$`)
)

func sdpAddr(body string) (netip.AddrPort, error) {
	m, c := mLine.FindStringSubmatch(body), cLine.FindStringSubmatch(body)
	if m == nil || c == nil {
		return netip.AddrPort{}, fmt.Errorf("no c=/m= in %q", body)
	}
	p, _ := strconv.Atoi(m[1])
	a, err := netip.ParseAddr(c[1])
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// sipMsg is a received SIP message, split just enough for the load UA.
type sipMsg struct {
	start   string
	headers [][2]string
	body    string
}

func parseSIP(b []byte) sipMsg {
	s := string(b)
	head, body, _ := strings.Cut(s, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	m := sipMsg{start: lines[0], body: body}
	for _, l := range lines[1:] {
		if mm := hdrLine.FindStringSubmatch(l); mm != nil {
			m.headers = append(m.headers, [2]string{mm[1], mm[2]})
		}
	}
	return m
}

func (m sipMsg) get(name string) string {
	for _, h := range m.headers {
		if strings.EqualFold(h[0], name) {
			return h[1]
		}
	}
	return ""
}

func (m sipMsg) all(name string) []string {
	var out []string
	for _, h := range m.headers {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

// voxUA sets up calls through voxvisor with plain SIP over UDP: it
// registers as 1002 and answers its own INVITEs.
type voxUA struct {
	proxy netip.AddrPort
	uas   *net.UDPConn
	mu    sync.Mutex
	bPort map[string]int            // Call-ID -> the B endpoint's port
	bSeen map[string]netip.AddrPort // Call-ID -> relay port facing B
	wg    sync.WaitGroup
}

func newVoxUA(proxy string) (*voxUA, error) {
	uas, err := newEndpoint()
	if err != nil {
		return nil, err
	}
	u := &voxUA{proxy: netip.MustParseAddrPort(proxy), uas: uas, bPort: map[string]int{}, bSeen: map[string]netip.AddrPort{}}
	if err := u.register(); err != nil {
		uas.Close()
		return nil, err
	}
	u.wg.Add(1)
	go u.serveUAS()
	return u, nil
}

func (u *voxUA) close() { u.uas.Close(); u.wg.Wait() }

func (u *voxUA) register() error {
	la := u.uas.LocalAddr().String()
	send := func(cseq int, authz string) (sipMsg, error) {
		msg := fmt.Sprintf("REGISTER sip:voxvisor.local SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKreg%d;rport\r\n"+
			"From: <sip:1002@voxvisor.local>;tag=r1\r\nTo: <sip:1002@voxvisor.local>\r\nCall-ID: bench-reg\r\nCSeq: %d REGISTER\r\n"+
			"Contact: <sip:1002@%s>\r\nExpires: 3600\r\nMax-Forwards: 70\r\n%sContent-Length: 0\r\n\r\n", la, cseq, cseq, la, authz)
		if _, err := u.uas.WriteToUDPAddrPort([]byte(msg), u.proxy); err != nil {
			return sipMsg{}, err
		}
		buf := make([]byte, 65535)
		u.uas.SetReadDeadline(time.Now().Add(3 * time.Second))
		defer u.uas.SetReadDeadline(time.Time{})
		for {
			n, _, err := u.uas.ReadFromUDPAddrPort(buf)
			if err != nil {
				return sipMsg{}, err
			}
			m := parseSIP(buf[:n])
			if strings.HasPrefix(m.start, "SIP/2.0 1") {
				continue
			}
			return m, nil
		}
	}
	m, err := send(1, "")
	if err != nil {
		return err
	}
	ch := m.get("WWW-Authenticate")
	nonce := regexp.MustCompile(`nonce="([^"]+)"`).FindStringSubmatch(ch)
	if nonce == nil {
		return fmt.Errorf("register: no challenge: %s", m.start)
	}
	ha1, _ := digest.HA1(digest.MD5, "1002", "voxvisor.local", "bench1002")
	resp, _ := digest.Response(digest.MD5, ha1, "REGISTER", "sip:voxvisor.local", nonce[1], "00000001", "abc", "auth")
	authz := fmt.Sprintf("Authorization: Digest username=\"1002\", realm=\"voxvisor.local\", nonce=\"%s\", uri=\"sip:voxvisor.local\", response=\"%s\", algorithm=MD5, cnonce=\"abc\", nc=00000001, qop=auth\r\n", nonce[1], resp)
	m, err = send(2, authz)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(m.start, "SIP/2.0 200") {
		return fmt.Errorf("register: %s", m.start)
	}
	return nil
}

// serveUAS answers INVITEs with an SDP naming the call's B endpoint and
// BYEs with 200.
func (u *voxUA) serveUAS() {
	defer u.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := u.uas.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m := parseSIP(buf[:n])
		switch {
		case strings.HasPrefix(m.start, "INVITE "):
			cid := m.get("Call-ID")
			relayB, _ := sdpAddr(m.body)
			u.mu.Lock()
			bp := u.bPort[cid]
			u.bSeen[cid] = relayB
			u.mu.Unlock()
			var b strings.Builder
			b.WriteString("SIP/2.0 200 OK\r\n")
			for _, v := range m.all("Via") {
				b.WriteString("Via: " + v + "\r\n")
			}
			for _, v := range m.all("Record-Route") {
				b.WriteString("Record-Route: " + v + "\r\n")
			}
			fmt.Fprintf(&b, "From: %s\r\nTo: %s;tag=b%s\r\nCall-ID: %s\r\nCSeq: %s\r\nContact: <sip:1002@%s>\r\n",
				m.get("From"), m.get("To"), cid, cid, m.get("CSeq"), u.uas.LocalAddr())
			sdp := offerSDP(bp)
			fmt.Fprintf(&b, "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(sdp), sdp)
			u.uas.WriteToUDPAddrPort([]byte(b.String()), from)
		case strings.HasPrefix(m.start, "BYE "):
			var b strings.Builder
			b.WriteString("SIP/2.0 200 OK\r\n")
			for _, v := range m.all("Via") {
				b.WriteString("Via: " + v + "\r\n")
			}
			fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\nContent-Length: 0\r\n\r\n", m.get("From"), m.get("To"), m.get("Call-ID"), m.get("CSeq"))
			u.uas.WriteToUDPAddrPort([]byte(b.String()), from)
		}
	}
}

// setup places one call through voxvisor and returns it with the relay
// ports each endpoint must send to.
func (u *voxUA) setup(i int) (*call, error) {
	c, err := endpoints()
	if err != nil {
		return nil, err
	}
	uac, err := newEndpoint()
	if err != nil {
		return nil, err
	}
	defer uac.Close()
	cid := fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())
	u.mu.Lock()
	u.bPort[cid] = port(c.b)
	u.mu.Unlock()
	la := uac.LocalAddr().String()
	sdp := offerSDP(port(c.a))
	inv := fmt.Sprintf("INVITE sip:1002@voxvisor.local SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKinv%d;rport\r\n"+
		"From: <sip:load@outside.example>;tag=a%d\r\nTo: <sip:1002@voxvisor.local>\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:load@%s>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		la, i, i, cid, la, len(sdp), sdp)
	buf := make([]byte, 65535)
	var ok sipMsg
	for attempt := 0; attempt < 3 && ok.start == ""; attempt++ {
		uac.WriteToUDPAddrPort([]byte(inv), u.proxy)
		uac.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, _, err := uac.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			m := parseSIP(buf[:n])
			if strings.HasPrefix(m.start, "SIP/2.0 1") {
				continue
			}
			if !strings.HasPrefix(m.start, "SIP/2.0 200") {
				c.close()
				return nil, fmt.Errorf("INVITE answered %s", m.start)
			}
			ok = m
			break
		}
	}
	if ok.start == "" {
		c.close()
		return nil, errors.New("INVITE: no answer")
	}
	if c.toA, err = sdpAddr(ok.body); err != nil {
		c.close()
		return nil, err
	}
	u.mu.Lock()
	c.toB = u.bSeen[cid]
	u.mu.Unlock()
	// ACK along the route set (the Record-Route reversed).
	rr := ok.all("Record-Route")
	var routes []string
	for j := len(rr) - 1; j >= 0; j-- {
		routes = append(routes, strings.Split(rr[j], ", ")...)
	}
	var ack strings.Builder
	contact := strings.Trim(ok.get("Contact"), "<>")
	fmt.Fprintf(&ack, "ACK %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKack%d;rport\r\n", contact, la, i)
	for _, r := range routes {
		ack.WriteString("Route: " + r + "\r\n")
	}
	fmt.Fprintf(&ack, "From: <sip:load@outside.example>;tag=a%d\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", i, ok.get("To"), cid)
	uac.WriteToUDPAddrPort([]byte(ack.String()), u.proxy)
	return c, nil
}

func endpoints() (*call, error) {
	a, err := newEndpoint()
	if err != nil {
		return nil, err
	}
	b, err := newEndpoint()
	if err != nil {
		a.Close()
		return nil, err
	}
	return &call{a: a, b: b}, nil
}

func (c *call) close() {
	c.a.Close()
	c.b.Close()
}

// setupRtpengine creates one call on rtpengine over ng.
func setupRtpengine(ng *ngClient, i int) (*call, error) {
	c, err := endpoints()
	if err != nil {
		return nil, err
	}
	cid := fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())
	ctx := context.Background()
	offer, err := ng.call(ctx, map[string]any{"command": "offer", "call-id": cid, "from-tag": "a", "sdp": offerSDP(port(c.a)), "replace": []string{"origin", "session-connection"}})
	if err != nil {
		c.close()
		return nil, err
	}
	if c.toB, err = sdpAddr(fmt.Sprint(offer["sdp"])); err != nil {
		c.close()
		return nil, err
	}
	ans, err := ng.call(ctx, map[string]any{"command": "answer", "call-id": cid, "from-tag": "a", "to-tag": "b", "sdp": offerSDP(port(c.b)), "replace": []string{"origin", "session-connection"}})
	if err != nil {
		c.close()
		return nil, err
	}
	if c.toA, err = sdpAddr(fmt.Sprint(ans["sdp"])); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// mediaResult is what one media load run measured.
type mediaResult struct {
	Calls         int
	Sent, Recv    uint64
	P50, P99, Max time.Duration
	CPU           time.Duration
	Window        time.Duration
}

// latencies is a histogram of one-way delays in 5 µs buckets up to 1 s.
type latencies struct {
	buckets [200000]atomic.Uint64
}

func (l *latencies) add(d time.Duration) {
	i := int(d / (5 * time.Microsecond))
	if i >= len(l.buckets) {
		i = len(l.buckets) - 1
	}
	if i < 0 {
		i = 0
	}
	l.buckets[i].Add(1)
}

func (l *latencies) quantiles(qs ...float64) []time.Duration {
	var total uint64
	for i := range l.buckets {
		total += l.buckets[i].Load()
	}
	out := make([]time.Duration, len(qs))
	sort.Float64s(qs)
	var acc uint64
	qi := 0
	for i := range l.buckets {
		acc += l.buckets[i].Load()
		for qi < len(qs) && total > 0 && float64(acc) >= qs[qi]*float64(total) {
			out[qi] = time.Duration(i+1) * 5 * time.Microsecond
			qi++
		}
	}
	return out
}

// pump sends RTP at 50 packets/s in both directions of every call for d
// and measures loss and one-way delay; cpuOf reads the relay's CPU.
func pump(calls []*call, d time.Duration, cpuOf func() time.Duration) mediaResult {
	var lat latencies
	var wg sync.WaitGroup
	epoch := time.Now()
	recv := func(c *net.UDPConn, n *atomic.Uint64) {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			k, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if k >= 20 {
				sent := int64(binary.BigEndian.Uint64(buf[12:20]))
				lat.add(time.Since(epoch) - time.Duration(sent))
				n.Add(1)
			}
		}
	}
	for _, c := range calls {
		wg.Add(2)
		go recv(c.a, &c.recvA)
		go recv(c.b, &c.recvB)
	}
	// Warm up: a few packets each way so both sides latch, not measured.
	var sent atomic.Uint64
	send := func(c *call, measure bool) {
		for _, dir := range []struct {
			from *net.UDPConn
			to   netip.AddrPort
			seq  *uint16
		}{{c.a, c.toA, &c.seqA}, {c.b, c.toB, &c.seqB}} {
			*dir.seq++
			h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: *dir.seq, Timestamp: uint32(*dir.seq) * 160, SSRC: uint32(port(dir.from))}
			pkt := make([]byte, 12+160)
			h.MarshalTo(pkt)
			binary.BigEndian.PutUint64(pkt[12:20], uint64(time.Since(epoch)))
			dir.from.WriteToUDPAddrPort(pkt, dir.to)
			if measure {
				sent.Add(1)
			}
		}
	}
	for i := 0; i < 3; i++ {
		for _, c := range calls {
			send(c, false)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	for _, c := range calls {
		c.recvA.Store(0)
		c.recvB.Store(0)
	}
	for i := range lat.buckets {
		lat.buckets[i].Store(0)
	}

	workers := 4
	cpu0 := cpuOf()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	var swg sync.WaitGroup
	for w := 0; w < workers; w++ {
		swg.Add(1)
		go func() {
			defer swg.Done()
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					for i := w; i < len(calls); i += workers {
						send(calls[i], true)
					}
				}
			}
		}()
	}
	swg.Wait()
	cancel()
	window := time.Since(start)
	time.Sleep(300 * time.Millisecond) // drain
	cpu1 := cpuOf()
	var got uint64
	for _, c := range calls {
		got += c.recvA.Load() + c.recvB.Load()
	}
	for _, c := range calls {
		c.close()
	}
	wg.Wait()
	q := lat.quantiles(0.5, 0.99, 1.0)
	return mediaResult{Calls: len(calls), Sent: sent.Load(), Recv: got, P50: q[0], P99: q[1], Max: q[2], CPU: cpu1 - cpu0, Window: window}
}

// baseline measures the generator's own delay with no relay: A sends to B.
func baseline(n int, d time.Duration) (mediaResult, error) {
	var calls []*call
	for i := 0; i < n; i++ {
		c, err := endpoints()
		if err != nil {
			return mediaResult{}, err
		}
		c.toA = c.b.LocalAddr().(*net.UDPAddr).AddrPort()
		c.toB = c.a.LocalAddr().(*net.UDPAddr).AddrPort()
		calls = append(calls, c)
	}
	return pump(calls, d, func() time.Duration { return 0 }), nil
}
