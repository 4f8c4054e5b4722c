package server

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestUDPKeepAlive: over UDP a "\r\n\r\n" ping is answered with exactly
// "\r\n" (RFC 5626 §4.4.1; phones send it over UDP to keep their NAT
// binding) from the socket it came to; a lone CRLF or any other run of
// CRLFs gets nothing. None of them reaches the parser or counts as
// malformed, and the listener goes on serving.
func TestUDPKeepAlive(t *testing.T) {
	ts := startServer(t, time.Minute, nil, nil)
	c, err := net.Dial("udp", ts.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	read := func(d time.Duration) (string, bool) {
		c.SetReadDeadline(time.Now().Add(d))
		n, err := c.Read(buf)
		if err != nil {
			return "", false
		}
		return string(buf[:n]), true
	}
	for i := 0; i < 3; i++ {
		c.Write([]byte("\r\n\r\n"))
		if got, ok := read(2 * time.Second); !ok || got != "\r\n" {
			t.Fatalf("ping %d: answered %q (%v), want a single CRLF", i, got, ok)
		}
	}
	for _, quiet := range []string{"\r\n", "\r\n\r\n\r\n\r\n", "\n\n"} {
		c.Write([]byte(quiet))
		if got, ok := read(300 * time.Millisecond); ok {
			t.Fatalf("%q answered %q, want nothing", quiet, got)
		}
	}
	c.Write([]byte(options("udp", c.LocalAddr().String(), "after-pings")))
	if got, ok := read(2 * time.Second); !ok || !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("OPTIONS after the pings: %q", got)
	}
	if r, d, p := ts.Stats.Rejected.Load(), ts.Stats.Dropped.Load(), ts.Stats.ParseErrors.N.Load(); r+d+p != 0 {
		t.Fatalf("keep-alives counted as malformed: rejected %d dropped %d parse errors %d", r, d, p)
	}
}

// TestStreamKeepAlive: over TCP and TLS a "\r\n\r\n" ping gets "\r\n",
// alone in its segment (sipgo answers) or followed in the same segment
// by another ping or by a request (answered here), and the request is
// served after it.
func TestStreamKeepAlive(t *testing.T) {
	ts := startServer(t, time.Minute, nil, nil)
	for _, tp := range []string{"tcp", "tls"} {
		t.Run(tp, func(t *testing.T) {
			c := ts.dial(t, tp)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			pong := func(what string) {
				t.Helper()
				b := make([]byte, 2)
				if _, err := io.ReadFull(c.r, b); err != nil || string(b) != "\r\n" {
					t.Fatalf("%s: read %q, %v; want the CRLF pong", what, b, err)
				}
			}
			c.Write([]byte("\r\n\r\n"))
			pong("a ping alone")
			c.Write([]byte("\r\n\r\n\r\n\r\n"))
			pong("two pings at once")
			c.Write([]byte("\r\n\r\n" + options(tp, c.LocalAddr().String(), tp+"-after-ping")))
			pong("a ping before a request")
			status, err := readStatus(c.r)
			if err != nil || !strings.HasPrefix(status, "SIP/2.0 200") {
				t.Fatalf("request after the ping: %q, %v", status, err)
			}
		})
	}
}

// readStatus reads a response's head (skipping further pongs) and
// returns its status line.
func readStatus(r *bufio.Reader) (string, error) {
	status := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return status, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case status == "" && line == "":
		case status == "":
			status = line
		case line == "":
			return status, nil
		}
	}
}
