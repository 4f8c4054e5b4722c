package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"golang.org/x/net/ipv4"

	"github.com/voxvisor/voxvisor/sip/digest"
)

// call is one relayed call of the media load: the relay ports its A side
// and its B side send to. Every call's A side is the one shared A socket,
// and so for B, so the generator can batch its system calls.
type call struct {
	toA, toB   netip.AddrPort // relay ports: A sends to toA (the leg facing A)
	seqA, seqB uint16
}

// sides are the generator's two shared media sockets.
type sides struct {
	a, b *net.UDPConn
}

func newSides() (*sides, error) {
	a, err := newEndpoint()
	if err != nil {
		return nil, err
	}
	b, err := newEndpoint()
	if err != nil {
		a.Close()
		return nil, err
	}
	for _, c := range []*net.UDPConn{a, b} {
		c.SetReadBuffer(8 << 20)
		c.SetWriteBuffer(8 << 20)
	}
	return &sides{a: a, b: b}, nil
}

func (s *sides) close() { s.a.Close(); s.b.Close() }

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
func (u *voxUA) setup(sd *sides, i int) (*call, error) {
	c := &call{}
	uac, err := newEndpoint()
	if err != nil {
		return nil, err
	}
	defer uac.Close()
	cid := fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())
	u.mu.Lock()
	u.bPort[cid] = port(sd.b)
	u.mu.Unlock()
	la := uac.LocalAddr().String()
	sdp := offerSDP(port(sd.a))
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
				return nil, fmt.Errorf("INVITE answered %s", m.start)
			}
			ok = m
			break
		}
	}
	if ok.start == "" {
		return nil, errors.New("INVITE: no answer")
	}
	if c.toA, err = sdpAddr(ok.body); err != nil {
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

// setupRtpengine creates one call on rtpengine over ng.
func setupRtpengine(ng *ngClient, sd *sides, i int) (*call, error) {
	c := &call{}
	var err error
	cid := fmt.Sprintf("bench-%d-%d", i, time.Now().UnixNano())
	ctx := context.Background()
	offer, err := ng.call(ctx, map[string]any{"command": "offer", "call-id": cid, "from-tag": "a", "sdp": offerSDP(port(sd.a)), "replace": []string{"origin", "session-connection"}})
	if err != nil {
		return nil, err
	}
	if c.toB, err = sdpAddr(fmt.Sprint(offer["sdp"])); err != nil {
		return nil, err
	}
	ans, err := ng.call(ctx, map[string]any{"command": "answer", "call-id": cid, "from-tag": "a", "to-tag": "b", "sdp": offerSDP(port(sd.b)), "replace": []string{"origin", "session-connection"}})
	if err != nil {
		return nil, err
	}
	if c.toA, err = sdpAddr(fmt.Sprint(ans["sdp"])); err != nil {
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
	HostCPU       time.Duration // every process and the kernel, all cores
	Window        time.Duration
}

// hostCPU is the host's busy CPU time so far (/proc/stat: all but idle
// and iowait), which includes the packet work the kernel charges to
// whichever process sends.
func hostCPU() time.Duration {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
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
// and measures loss and one-way delay; cpuOf reads the relay's CPU. It
// sends and receives with sendmmsg/recvmmsg on the two shared sockets, so
// the generator costs far less than the relay it loads.
func pump(sd *sides, calls []*call, d time.Duration, cpuOf func() time.Duration) mediaResult {
	var lat latencies
	var recvd atomic.Uint64
	var measuring atomic.Bool
	var from atomic.Int64 // send time (since epoch) of the first measured packet
	epoch := time.Now()
	var wg sync.WaitGroup
	recv := func(c *net.UDPConn) {
		defer wg.Done()
		pc := ipv4.NewPacketConn(c)
		msgs := make([]ipv4.Message, 64)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 1500)}
		}
		for {
			n, err := pc.ReadBatch(msgs, 0)
			if err != nil {
				return
			}
			now := time.Since(epoch)
			for _, m := range msgs[:n] {
				b := m.Buffers[0][:m.N]
				if len(b) < 20 || !measuring.Load() {
					continue
				}
				sentAt := time.Duration(binary.BigEndian.Uint64(b[12:20]))
				if int64(sentAt) < from.Load() {
					continue // sent while warming up, only late
				}
				lat.add(now - sentAt)
				recvd.Add(1)
			}
		}
	}
	wg.Add(2)
	go recv(sd.a)
	go recv(sd.b)

	// One packet buffer per stream, reused every tick.
	type stream struct {
		from *ipv4.PacketConn
		to   *net.UDPAddr
		seq  *uint16
		ssrc uint32
		pkt  []byte
	}
	pa, pb := ipv4.NewPacketConn(sd.a), ipv4.NewPacketConn(sd.b)
	var streams []stream
	for i, c := range calls {
		streams = append(streams,
			stream{from: pa, to: net.UDPAddrFromAddrPort(c.toA), seq: &c.seqA, ssrc: uint32(2 * i), pkt: make([]byte, 12+160)},
			stream{from: pb, to: net.UDPAddrFromAddrPort(c.toB), seq: &c.seqB, ssrc: uint32(2*i + 1), pkt: make([]byte, 12+160)})
	}
	var sent atomic.Uint64
	// tick sends one packet on each stream in part (of parts), batched.
	tick := func(part, parts int, measure bool) {
		var batchA, batchB []ipv4.Message
		for i := part; i < len(streams); i += parts {
			st := &streams[i]
			*st.seq++
			h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: *st.seq, Timestamp: uint32(*st.seq) * 160, SSRC: st.ssrc}
			h.MarshalTo(st.pkt)
			binary.BigEndian.PutUint64(st.pkt[12:20], uint64(time.Since(epoch)))
			m := ipv4.Message{Buffers: [][]byte{st.pkt}, Addr: st.to}
			if st.from == pa {
				batchA = append(batchA, m)
			} else {
				batchB = append(batchB, m)
			}
		}
		for _, b := range []struct {
			pc   *ipv4.PacketConn
			msgs []ipv4.Message
		}{{pa, batchA}, {pb, batchB}} {
			for len(b.msgs) > 0 {
				n, err := b.pc.WriteBatch(b.msgs, 0)
				if err != nil || n == 0 {
					break
				}
				if measure {
					sent.Add(uint64(n))
				}
				b.msgs = b.msgs[n:]
			}
		}
	}
	// Warm up so both sides latch; not measured.
	for i := 0; i < 3; i++ {
		tick(0, 1, false)
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	from.Store(int64(time.Since(epoch)))
	measuring.Store(true)

	// Spread each 20 ms round over 4 slots of 5 ms, as phones are not in step.
	const parts = 4
	cpu0, host0 := cpuOf(), hostCPU()
	start := time.Now()
	t := time.NewTicker(20 * time.Millisecond / parts)
	slot := 0
	for time.Since(start) < d {
		<-t.C
		tick(slot%parts, parts, true)
		slot++
	}
	t.Stop()
	window := time.Since(start)
	time.Sleep(300 * time.Millisecond) // drain
	cpu1, host1 := cpuOf(), hostCPU()
	measuring.Store(false)
	sd.close()
	wg.Wait()
	q := lat.quantiles(0.5, 0.99, 1.0)
	return mediaResult{Calls: len(calls), Sent: sent.Load(), Recv: recvd.Load(), P50: q[0], P99: q[1], Max: q[2], CPU: cpu1 - cpu0, HostCPU: host1 - host0, Window: window}
}

// baseline measures the generator's own delay with no relay: A sends to B.
func baseline(n int, d time.Duration) (mediaResult, error) {
	sd, err := newSides()
	if err != nil {
		return mediaResult{}, err
	}
	calls := make([]*call, n)
	for i := range calls {
		calls[i] = &call{toA: sd.b.LocalAddr().(*net.UDPAddr).AddrPort(), toB: sd.a.LocalAddr().(*net.UDPAddr).AddrPort()}
	}
	return pump(sd, calls, d, func() time.Duration { return 0 }), nil
}
