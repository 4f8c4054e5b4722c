package softswitch_test

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	siplib "github.com/emiago/sipgo/sip"
)

// sipPeer is a SIP peer of the test's on loopback UDP (a carrier, a trunk
// peer, a carrier's registrar): it records the first line of every
// request, and answers those for which answer (may be nil) gives a
// status, echoing the request's Via, From, To (with a tag), Call-ID and
// CSeq, then the extra header lines.
type sipPeer struct {
	conn     *net.UDPConn
	requests atomic.Int64
	mu       sync.Mutex
	first    []string

	answer func(req string, src *net.UDPAddr) (status string, extra []string) // "": no answer
}

func newSIPPeer(t *testing.T, answer func(req string, src *net.UDPAddr) (string, []string)) *sipPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &sipPeer{conn: c, answer: answer}
	t.Cleanup(func() { c.Close() })
	go p.serve()
	return p
}

func (p *sipPeer) serve() {
	buf := make([]byte, 65535)
	for {
		n, src, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		req := string(buf[:n])
		if strings.HasPrefix(req, "SIP/2.0") {
			continue
		}
		p.requests.Add(1)
		line, _, _ := strings.Cut(req, "\r\n")
		p.mu.Lock()
		p.first = append(p.first, line)
		p.mu.Unlock()
		if p.answer == nil {
			continue
		}
		status, extra := p.answer(req, src)
		if status == "" {
			continue
		}
		var hdrs []string
		for _, l := range strings.Split(req, "\r\n") {
			name, _, _ := strings.Cut(l, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "via", "v", "from", "f", "call-id", "i", "cseq":
				hdrs = append(hdrs, l)
			case "to", "t":
				hdrs = append(hdrs, l+";tag=peer")
			}
		}
		res := fmt.Sprintf("SIP/2.0 %s\r\n%s\r\n", status, strings.Join(append(hdrs, extra...), "\r\n"))
		p.conn.WriteToUDP([]byte(res+"Content-Length: 0\r\n\r\n"), src)
	}
}

func (p *sipPeer) port() int { return p.conn.LocalAddr().(*net.UDPAddr).Port }

// seen returns the first lines of the requests received, in order.
func (p *sipPeer) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.first...)
}

// count returns how many requests of method arrived.
func (p *sipPeer) count(method string) int {
	n := 0
	for _, l := range p.seen() {
		if strings.HasPrefix(l, method+" ") {
			n++
		}
	}
	return n
}

// sipMethod is a request's method.
func sipMethod(req string) string {
	m, _, _ := strings.Cut(req, " ")
	return m
}

// readRequests reads datagrams from c until it is closed and hands each
// SIP request, with its source, to f (it runs on the caller's
// goroutine); responses and what does not parse are skipped.
func readRequests(c *net.UDPConn, f func(req *siplib.Request, from *net.UDPAddr)) {
	buf := make([]byte, 65535)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := siplib.ParseMessage(append([]byte(nil), buf[:n]...))
		if req, ok := m.(*siplib.Request); err == nil && ok {
			f(req, from)
		}
	}
}

// buildVoxvisor builds the real binary into a directory of the test's,
// for tests that run the switch as a process (to limit it, put it in a
// network namespace, or kill it).
func buildVoxvisor(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "voxvisor")
	build := exec.Command(need(t, "go"), "build", "-tags", "libvirt_dlopen", "-o", bin, "./cmd/voxvisor")
	build.Dir = mustAbs(t, "../..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// phoneOn registers user at the switch on addr over UDP (SIPp, with
// the demo password) and returns a socket of the test's on the port it
// registered from: the phone the switch now sends the user's calls to.
func phoneOn(t *testing.T, addr, user string) (*net.UDPConn, int) {
	t.Helper()
	port := freePort(t)
	sipp(t, addr, "register.xml", port, "udp", "-key", "user", user, "-key", "expires", "3600", "-au", user, "-ap", "demo"+user)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, port
}
