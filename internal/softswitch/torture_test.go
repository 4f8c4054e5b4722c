package softswitch_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// tortureDir finds the RFC 4475 messages that the sipgo module ships.
func tortureDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		t.Fatalf("locate the sipgo module: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("RFC 4475 torture messages missing: %v", err)
	}
	return dir
}

// withRport adds ;rport to the first Via line.
func withRport(msg []byte) []byte {
	i := bytes.Index(msg, []byte("\r\nVia:"))
	if i < 0 {
		i = bytes.Index(msg, []byte("\r\nv:"))
	}
	if i < 0 {
		return msg
	}
	end := bytes.Index(msg[i+2:], []byte("\r\n"))
	if end < 0 {
		return msg
	}
	at := i + 2 + end
	out := append([]byte{}, msg[:at]...)
	out = append(out, ";rport"...)
	return append(out, msg[at:]...)
}

// isRequestWithoutAnswer reports messages that get no response by design:
// ACKs and responses.
func isRequestWithoutAnswer(msg []byte) bool {
	return bytes.HasPrefix(msg, []byte("ACK ")) || bytes.HasPrefix(msg, []byte("SIP/2.0"))
}

// status returns the status code of a response's start line.
func status(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	f := strings.Fields(string(line))
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return ""
	}
	return f[1]
}

func sendUDP(t *testing.T, addr string, msg []byte) string {
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(msg)
	buf := make([]byte, 65535)
	last := ""
	deadline := time.Now().Add(2 * time.Second)
	for {
		c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err != nil {
			return last
		}
		last = status(buf[:n])
		if last >= "200" {
			return last
		}
	}
}

func sendTCP(t *testing.T, addr string, msg []byte) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("tcp listener gone: %v", err)
	}
	defer c.Close()
	c.Write(msg)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 65535)
	n, _ := c.Read(buf)
	return status(buf[:n])
}

// TestTortureMessages sends every RFC 4475 message over UDP and TCP. None
// may stop a listener; invalid ones are never accepted with a 2xx.
func TestTortureMessages(t *testing.T) {
	dir := tortureDir(t)
	sw := start(t, t.TempDir(), nil)
	type result struct {
		name, udp, tcp string
		msg            []byte
	}
	var (
		wg      sync.WaitGroup
		results []*result
	)
	for _, kind := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, kind, "*.dat"))
		if len(files) == 0 {
			t.Fatalf("no %s torture messages in %s", kind, dir)
		}
		for _, f := range files {
			msg, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			r := &result{name: kind + "/" + filepath.Base(f), msg: msg}
			results = append(results, r)
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Ask for the response at our port (RFC 3581), or it goes
				// to the Via's port as RFC 3261 §18.2.2 says.
				r.udp = sendUDP(t, sw.udp, withRport(msg))
				// A new branch, or the TCP copy is a retransmission of the UDP one.
				r.tcp = sendTCP(t, sw.tcp, bytes.ReplaceAll(msg, []byte("branch=z9hG4bK"), []byte("branch=z9hG4bKtcp")))
			}()
		}
	}
	wg.Wait()
	handled := func(code string) bool { return code != "" && code != "400" }
	for _, r := range results {
		t.Logf("%-26s udp=%-4s tcp=%-4s", r.name, r.udp, r.tcp)
		valid := strings.HasPrefix(r.name, "valid/")
		if !valid && (strings.HasPrefix(r.udp, "2") || strings.HasPrefix(r.tcp, "2")) {
			t.Errorf("%s: invalid message accepted (udp %s, tcp %s)", r.name, r.udp, r.tcp)
		}
		// wsinv.dat is one sipgo parses wrongly (DESIGN.md); it is
		// answered 400, which is safe.
		if valid && r.name != "valid/wsinv.dat" && !isRequestWithoutAnswer(r.msg) && !handled(r.udp) && !handled(r.tcp) {
			t.Errorf("%s: valid message not handled: udp %q, tcp %q", r.name, r.udp, r.tcp)
		}
	}
	// Still serving on both transports.
	if got := options(t, sw.udp, "sip:voxvisor.local"); got != "200" {
		t.Fatalf("after the torture run, OPTIONS over UDP = %q, want 200", got)
	}
	opt := "OPTIONS sip:voxvisor.local SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKtorture\r\n" +
		"From: <sip:p@x>;tag=1\r\nTo: <sip:voxvisor.local>\r\nCall-ID: torture-tcp\r\nCSeq: 1 OPTIONS\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if got := sendTCP(t, sw.tcp, []byte(opt)); got != "200" {
		t.Fatalf("after the torture run, OPTIONS over TCP = %q, want 200", got)
	}
	st := &sw.Server.Stats
	t.Logf("rejected with 400: %d, dropped: %d, sipgo parse errors: %d", st.Rejected.Load(), st.Dropped.Load(), st.ParseErrors.N.Load())
	if st.Rejected.Load()+st.Dropped.Load()+st.ParseErrors.N.Load() == 0 {
		t.Error("no malformed message was counted")
	}
}

// TestOversizedTCPMessage: a message larger than sip.max_message_size on a
// TCP stream closes that connection and nothing else.
func TestOversizedTCPMessage(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	c, err := net.Dial("tcp", sw.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := "OPTIONS sip:voxvisor.local SIP/2.0\r\nX-Pad: " + strings.Repeat("a", 70000) + "\r\n"
	c.SetWriteDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte(big))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 100)
	if _, err := c.Read(buf); err == nil {
		t.Fatal("oversized stream was not closed")
	}
	if got := options(t, sw.udp, "sip:voxvisor.local"); got != "200" {
		t.Fatalf("server not serving after an oversized TCP message: %q", got)
	}
}
