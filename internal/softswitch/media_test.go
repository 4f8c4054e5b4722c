package softswitch_test

import (
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/voxvisor/voxvisor/internal/config"
)

// receiver stands in for the callee's media: RTP on an even port, RTCP on
// the next odd one, recording what arrives and from where.
type receiver struct {
	rtp, rtcp *net.UDPConn
	mu        sync.Mutex
	rtpFrom   map[netip.AddrPort]int
	rtcpFrom  map[netip.AddrPort]int
	rtcpPkts  []rtcp.Packet
	wg        sync.WaitGroup
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	a, b := listenPair(t)
	r := &receiver{rtp: a, rtcp: b, rtpFrom: map[netip.AddrPort]int{}, rtcpFrom: map[netip.AddrPort]int{}}
	r.wg.Add(2)
	go r.read(a, false)
	go r.read(b, true)
	t.Cleanup(r.close)
	return r
}

// listenPair binds an even loopback UDP port and the odd one after it,
// as an RTP endpoint's media and RTCP sockets.
func listenPair(t *testing.T) (rtp, rtcp *net.UDPConn) {
	t.Helper()
	for i := 0; i < 100; i++ {
		p := freePort(t) &^ 1
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			continue
		}
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p + 1})
		if err != nil {
			a.Close()
			continue
		}
		return a, b
	}
	t.Fatal("no free even/odd loopback port pair")
	return nil, nil
}

func (r *receiver) port() int { return r.rtp.LocalAddr().(*net.UDPAddr).Port }

func (r *receiver) read(c *net.UDPConn, isRTCP bool) {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		if isRTCP {
			r.rtcpFrom[from]++
			if ps, err := rtcp.Unmarshal(buf[:n]); err == nil {
				r.rtcpPkts = append(r.rtcpPkts, ps...)
			}
		} else {
			r.rtpFrom[from]++
		}
		r.mu.Unlock()
	}
}

func (r *receiver) close() {
	r.rtp.Close()
	r.rtcp.Close()
	r.wg.Wait()
}

func (r *receiver) rtpCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.rtpFrom {
		n += c
	}
	return n
}

var mAudio = regexp.MustCompile(`m=audio (\d+) `)

// TestMediaThroughRelay: the caller plays g711a.pcap; every RTP packet
// reaches the callee's receiver from the relay's even port announced in
// the INVITE the callee got, RTCP from the next odd one; the relay's
// statistics match what was sent; hold and resume by re-INVITE keep the
// session; everything is released after the BYE.
func TestMediaThroughRelay(t *testing.T) {
	const pcapPackets = 236 // /usr/share/sip-tester/g711a.pcap
	sw := start(t, t.TempDir(), nil)
	rcv := newReceiver(t)
	calleePort, callerPort, callerMedia := freePort(t), freePort(t), mediaPorts(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_media.xml", calleePort, "udp", "-key", "rtp_port", strconv.Itoa(rcv.port()))

	var statsMu sync.Mutex
	var legA, legB struct{ packets, sent uint64 }
	var aLegRTCP netip.AddrPort
	done := make(chan struct{})
	go func() {
		defer close(done)
		// As the caller, send an RTCP sender report to the A leg's odd
		// port once the call is up, from the caller's SDP address.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) && sw.Relay.Len() == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		ss := sw.Relay.Sessions()
		if len(ss) != 1 {
			return
		}
		st := ss[0].Stream(0)
		statsMu.Lock()
		aLegRTCP = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(st.Legs[0].Port()+1))
		statsMu.Unlock()
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return
		}
		defer c.Close()
		sr, _ := (&rtcp.SenderReport{SSRC: 0x1234, NTPTime: uint64(time.Now().Unix()) << 32, PacketCount: 1}).Marshal()
		for time.Now().Before(deadline) && rcv.rtpCount() < pcapPackets {
			c.WriteToUDPAddrPort(sr, aLegRTCP)
			time.Sleep(200 * time.Millisecond)
		}
		s := st.Stats()
		statsMu.Lock()
		legA.packets, legB.sent = s[0].Packets, s[1].Sent
		statsMu.Unlock()
	}()
	sipp(t, sw.udp, "uac_media.xml", callerPort, "udp", "-s", "1002", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-mp", strconv.Itoa(callerMedia))
	calleeTrace := wait()
	<-done

	invites := strings.Split(calleeTrace, "INVITE sip:")
	if len(invites) < 4 {
		t.Fatalf("callee saw %d INVITEs, want 3:\n%s", len(invites)-1, calleeTrace)
	}
	m := mAudio.FindStringSubmatch(invites[1])
	if m == nil {
		t.Fatalf("no m=audio in the INVITE the callee got:\n%s", invites[1])
	}
	bPort, _ := strconv.Atoi(m[1])
	if bPort%2 != 0 || bPort < 20000 || bPort > 29999 {
		t.Fatalf("relay RTP port announced to the callee = %d, want even in 20000-29999", bPort)
	}
	if !strings.Contains(invites[1], "a=rtcp:"+strconv.Itoa(bPort+1)) {
		t.Errorf("INVITE to the callee lacks a=rtcp:%d", bPort+1)
	}
	rcv.mu.Lock()
	wantRTP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(bPort))
	wantRTCP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(bPort+1))
	if len(rcv.rtpFrom) != 1 || rcv.rtpFrom[wantRTP] != pcapPackets {
		t.Errorf("RTP at the callee = %v, want all %d from %v", rcv.rtpFrom, pcapPackets, wantRTP)
	}
	if len(rcv.rtcpFrom) != 1 || rcv.rtcpFrom[wantRTCP] == 0 {
		t.Errorf("RTCP at the callee = %v, want it from %v", rcv.rtcpFrom, wantRTCP)
	}
	rcv.mu.Unlock()
	statsMu.Lock()
	if legA.packets != pcapPackets || legB.sent != pcapPackets {
		t.Errorf("relay stats: A leg received %d, B leg sent %d; want %d each", legA.packets, legB.sent, pcapPackets)
	}
	statsMu.Unlock()

	// Hold and resume reached the callee, anchored on the same port.
	hold, resume := invites[2], invites[3]
	if !strings.Contains(hold, "a=sendonly") || !strings.Contains(resume, "a=sendrecv") {
		t.Errorf("hold/resume directions not passed on:\n%s\n%s", hold, resume)
	}
	for _, inv := range []string{hold, resume} {
		if mm := mAudio.FindStringSubmatch(inv); mm == nil || mm[1] != m[1] {
			t.Errorf("re-INVITE moved the relay port: %v, want %s", mm, m[1])
		}
	}
	sw.expectNoMedia(t)
}

func TestPoolExhaustedAnswers503(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Media.PortMin, c.Media.PortMax = 24000, 24001 // one pair: a call needs two
	})
	sw.register(t, "1002", "udp", freePort(t))
	trace := sipp(t, sw.udp, "uac_expect.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 503 ") {
		t.Fatalf("want 503 when the port pool is exhausted:\n%s", trace)
	}
	sw.expectNoMedia(t)
}

func TestMediaTimeoutSendsBYEBothWays(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Media.Timeout = 2 * time.Second
	})
	caller, wait := sw.callUntilBYE(t)
	trace, callee := <-caller, wait()
	for who, tr := range map[string]string{"caller": trace, "callee": callee} {
		if !strings.Contains(tr, "BYE sip:") || !strings.Contains(tr, "media timeout") {
			t.Errorf("%s got no media-timeout BYE:\n%s", who, tr)
		}
	}
	sw.expectNoMedia(t)
}

// callUntilBYE starts a call 1001 → 1002 (both SIPp) that stays up until
// voxvisor sends each side a BYE; the callee's media goes to a receiver.
// It returns the caller's trace when it ends, and the callee's wait.
func (r *running) callUntilBYE(t *testing.T) (<-chan string, func() string) {
	t.Helper()
	rcv := newReceiver(t)
	calleePort := freePort(t)
	r.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_timeout.xml", calleePort, "udp", "-key", "rtp_port", strconv.Itoa(rcv.port()))
	caller := sippGo(t, r.udp, "uac_timeout.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-mp", strconv.Itoa(mediaPorts(t)))
	return caller, wait
}
