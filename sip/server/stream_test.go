package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/sip"
)

// logBuf collects a server's log for assertions.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), substr)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testServer is a Server on loopback port 0 that answers every request 200.
type testServer struct {
	*Server
	udp, tcp, tls string
	log           *logBuf
	certs         testenv.TLSFiles
}

// startServer runs a server with udp, tcp and tls listeners until the test
// ends; prep runs between New and Listen, after runs between Listen and
// Serve.
func startServer(t *testing.T, idle time.Duration, prep, after func(*Server)) *testServer {
	t.Helper()
	ts := &testServer{log: &logBuf{}, certs: testenv.TLSCerts(t)}
	any0 := netip.MustParseAddrPort("127.0.0.1:0")
	cfg := Options{
		Domain:         "voxvisor.local",
		MaxMessageSize: 65535,
		MaxHeaders:     128,
		TCPIdleTimeout: idle,
		Listen:         []Listener{{Transport: "udp", Addr: any0}, {Transport: "tcp", Addr: any0}, {Transport: "tls", Addr: any0}},
		TLS: TLS{MinVersion: "1.2", Certificate: func() (tls.Certificate, error) {
			return tls.LoadX509KeyPair(ts.certs.Cert, ts.certs.Key)
		}},
	}
	s := New(cfg, slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ts.Server = s
	if prep != nil {
		prep(s)
	}
	self, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range self.Listeners {
		switch l.Transport {
		case "udp":
			ts.udp = l.Bound.String()
		case "tcp":
			ts.tcp = l.Bound.String()
		case "tls":
			ts.tls = l.Bound.String()
		}
	}
	s.SetHandler(sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
		return r.Respond(200, "OK", nil)
	}))
	if after != nil {
		after(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not return")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.log)
		}
	})
	return ts
}

// client is one connection to the server, over TCP or TLS.
type client struct {
	net.Conn
	r *bufio.Reader
	n int
}

func (ts *testServer) dial(t *testing.T, transport string) *client {
	t.Helper()
	var c net.Conn
	var err error
	if transport == "tls" {
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(ts.certs.CA)
		pool.AppendCertsFromPEM(pem)
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", ts.tls, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	} else {
		c, err = net.DialTimeout("tcp", ts.tcp, 3*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{Conn: c, r: bufio.NewReader(c)}
}

func options(transport, local, callID string) string {
	return fmt.Sprintf("OPTIONS sip:voxvisor.local SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=z9hG4bK%s\r\n"+
		"From: <sip:probe@example.com>;tag=1\r\nTo: <sip:voxvisor.local>\r\nCall-ID: %s\r\n"+
		"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", strings.ToUpper(transport), local, callID, callID)
}

// exchange sends an OPTIONS and reads its response's head, skipping
// keep-alive pongs; it returns the status line.
func (c *client) exchange(transport string) (string, error) {
	c.n++
	id := fmt.Sprintf("%s-%p-%d", transport, c, c.n)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, options(transport, c.LocalAddr().String(), id)); err != nil {
		return "", err
	}
	status := ""
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return status, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case status == "" && line == "":
			// a pong
		case status == "":
			status = line
		case line == "":
			return status, nil
		}
	}
}

// closedWithin waits up to d for the server to close c and returns how long
// that took; ok is false when c is still open.
func closedWithin(c net.Conn, d time.Duration) (took time.Duration, ok bool) {
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return time.Since(start), false
		}
		return time.Since(start), true // EOF, reset, TLS alert
	}
}

// TestSlowloris: with a 1 s idle timeout, a connection trickling a request
// that never ends is closed about 1 s after its first byte (also after a
// complete request, and under TLS), as is one that never speaks or never
// finishes its TLS handshake, while connections that send a complete
// OPTIONS or a CRLF ping every 500 ms stay open past 3 s.
func TestSlowloris(t *testing.T) {
	const idle = time.Second
	ts := startServer(t, idle, nil, nil)
	var wg sync.WaitGroup
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	for _, tp := range []string{"tcp", "tls"} {
		run(tp+" trickler", func() error {
			c := ts.dial(t, tp)
			if st, err := c.exchange(tp); st != "SIP/2.0 200 OK" {
				return fmt.Errorf("first request: %q %v", st, err)
			}
			msg := options(tp, c.LocalAddr().String(), "never-ends")
			stop := make(chan struct{})
			defer close(stop)
			go func() { // one byte every 200 ms, no more than the message holds
				for i := 0; i < len(msg)-4; i++ {
					if _, err := c.Write([]byte{msg[i]}); err != nil {
						return
					}
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
			took, ok := closedWithin(c, 3*idle)
			if !ok {
				return fmt.Errorf("still open after %v of trickling", took)
			}
			if took < idle*8/10 {
				return fmt.Errorf("closed after %v, before the idle timeout", took)
			}
			return nil
		})
		run(tp+" pinger", func() error {
			c := ts.dial(t, tp)
			for start := time.Now(); time.Since(start) < 3500*time.Millisecond; time.Sleep(500 * time.Millisecond) {
				if _, err := io.WriteString(c, "\r\n\r\n"); err != nil {
					return fmt.Errorf("ping after %v: %v", time.Since(start), err)
				}
			}
			if st, err := c.exchange(tp); st != "SIP/2.0 200 OK" {
				return fmt.Errorf("after 3.5 s of pings: %q %v", st, err)
			}
			return nil
		})
		run(tp+" requester", func() error {
			c := ts.dial(t, tp)
			for start := time.Now(); time.Since(start) < 3500*time.Millisecond; time.Sleep(500 * time.Millisecond) {
				if st, err := c.exchange(tp); st != "SIP/2.0 200 OK" {
					return fmt.Errorf("after %v: %q %v", time.Since(start), st, err)
				}
			}
			return nil
		})
	}
	run("silent tcp", func() error {
		c, err := net.Dial("tcp", ts.tcp)
		if err != nil {
			return err
		}
		defer c.Close()
		if took, ok := closedWithin(c, 3*idle); !ok || took < idle*8/10 {
			return fmt.Errorf("closed %v after %v", ok, took)
		}
		return nil
	})
	run("tls without a handshake", func() error {
		c, err := net.Dial("tcp", ts.tls)
		if err != nil {
			return err
		}
		defer c.Close()
		io.WriteString(c, "\x16\x03\x01") // the start of a ClientHello, never finished
		if took, ok := closedWithin(c, 3*idle); !ok || took < idle*8/10 {
			return fmt.Errorf("closed %v after %v", ok, took)
		}
		return nil
	})
	wg.Wait()
	if n := ts.Stats.ConnsTimedOut.Load(); n < 4 {
		t.Errorf("ConnsTimedOut = %d, want at least 4", n)
	}
}

// TestTotalConnectionCap: with a cap of 10 across the tcp and tls
// listeners, the 11th and 12th connections are closed at accept (logged
// once) while the first 10 are still answered; closing one makes room.
func TestTotalConnectionCap(t *testing.T) {
	ts := startServer(t, time.Minute, func(s *Server) { s.SetConnectionLimit(10) }, nil)
	if got := ts.ConnectionLimit(); got != 10 {
		t.Fatalf("ConnectionLimit() = %d, want 10", got)
	}
	var held []*client
	var kinds []string
	for i := range 10 {
		tp := "tcp"
		if i == 9 {
			tp = "tls"
		}
		c := ts.dial(t, tp)
		if st, err := c.exchange(tp); st != "SIP/2.0 200 OK" {
			t.Fatalf("connection %d (%s): %q %v", i+1, tp, st, err)
		}
		held, kinds = append(held, c), append(kinds, tp)
	}
	for i, addr := range []string{ts.tcp, ts.tls} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if took, ok := closedWithin(c, 3*time.Second); !ok {
			t.Fatalf("connection %d over the cap still open after %v", 11+i, took)
		}
	}
	if n := ts.Stats.ConnsOverCap.Load(); n != 2 {
		t.Errorf("ConnsOverCap = %d, want 2", n)
	}
	if n := ts.log.count("at the total connection cap"); n != 1 {
		t.Errorf("cap logged %d times, want once", n)
	}
	for i, c := range held {
		if st, err := c.exchange(kinds[i]); st != "SIP/2.0 200 OK" {
			t.Fatalf("held connection %d after the refusals: %q %v", i+1, st, err)
		}
	}
	held[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	for ts.Stats.TCPConns.Load() != 8 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c := ts.dial(t, "tcp")
	if st, err := c.exchange("tcp"); st != "SIP/2.0 200 OK" {
		t.Fatalf("a new connection after one closed: %q %v", st, err)
	}
	if n := ts.Stats.ConnsOverCap.Load(); n != 2 {
		t.Errorf("ConnsOverCap = %d after room was made, want 2", n)
	}
}

// TestConnectionLimitFitsOpenFiles: whatever the configured cap, the one
// in force leaves the reserve free under RLIMIT_NOFILE.
func TestConnectionLimitFitsOpenFiles(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	want := int(rl.Cur) - fdReserve - 3
	for _, set := range []int{0, int(rl.Cur) * 2} {
		ts := startServer(t, time.Minute, func(s *Server) { s.SetConnectionLimit(set) }, nil)
		if got := ts.ConnectionLimit(); got != want {
			t.Errorf("SetConnectionLimit(%d): ConnectionLimit() = %d, want %d (RLIMIT_NOFILE %d)", set, got, want, rl.Cur)
		}
		if ts.log.count("capped by the open-file limit") != 1 {
			t.Errorf("the lowered cap is not logged:\n%s", ts.log)
		}
	}
}

// flaky fails its first n accepts with EMFILE, as accept4 does when the
// process is out of file descriptors.
type flaky struct {
	net.Listener
	n atomic.Int32
}

var errEMFILE = &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}

func (f *flaky) Accept() (net.Conn, error) {
	if f.n.Add(-1) >= 0 {
		return nil, errEMFILE
	}
	return f.Listener.Accept()
}

// TestServeThroughEMFILE: a real server whose tcp listener fails accept
// with EMFILE six times keeps serving: the waiting connection and later
// ones are answered, Serve does not return, the failures are counted and
// logged once.
func TestServeThroughEMFILE(t *testing.T) {
	ts := startServer(t, time.Minute, nil, func(s *Server) {
		sl := s.tcp[0].(*streamListener)
		f := &flaky{Listener: sl.ln}
		f.n.Store(6)
		sl.ln = f
	})
	for i := range 3 {
		c := ts.dial(t, "tcp")
		if st, err := c.exchange("tcp"); st != "SIP/2.0 200 OK" {
			t.Fatalf("connection %d: %q %v", i+1, st, err)
		}
	}
	if n := ts.Stats.AcceptErrors.Load(); n != 6 {
		t.Errorf("AcceptErrors = %d, want 6", n)
	}
	if n := ts.log.count("accept failing, backing off"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, ts.log)
	}
	if n := ts.log.count("too many open files"); n != 1 {
		t.Errorf("the warning does not carry the error:\n%s", ts.log)
	}
	if n := ts.log.count("accepting again"); n != 1 {
		t.Errorf("the episode's end is not logged:\n%s", ts.log)
	}
}

// fakeListener hands out accept results from a channel.
type fakeListener struct {
	res    chan any // net.Conn or error
	closed atomic.Bool
}

func (f *fakeListener) Accept() (net.Conn, error) {
	switch r := (<-f.res).(type) {
	case net.Conn:
		return r, nil
	default:
		return nil, r.(error)
	}
}
func (f *fakeListener) Close() error   { f.closed.Store(true); return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060} }

type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000} }

func testListener(res chan any, log *logBuf) *streamListener {
	return &streamListener{ln: &fakeListener{res: res}, transport: "tcp", name: "TCP", streams: &streams{}, stats: &Stats{},
		open: &atomic.Int64{}, log: slog.New(slog.NewTextHandler(log, nil)), done: make(chan struct{})}
}

// TestAcceptBackoff: temporary errors back off 5 ms doubling to 1 s and
// are retried; a permanent one, or Close during a backoff, returns.
func TestAcceptBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		res := make(chan any, 20)
		log := &logBuf{}
		l := testListener(res, log)
		temporary := []error{errEMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED,
			syscall.ECONNRESET, syscall.EINTR, errEMFILE, errEMFILE, errEMFILE}
		for _, e := range temporary {
			res <- e
		}
		a, b := net.Pipe()
		defer b.Close()
		res <- pipeConn{a}
		start := time.Now()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// 5+10+20+40+80+160+320+640+1000+1000 ms
		if took := time.Since(start); took != 3275*time.Millisecond {
			t.Errorf("backoff took %v, want 3.275s", took)
		}
		if n := l.stats.AcceptErrors.Load(); n != uint64(len(temporary)) {
			t.Errorf("AcceptErrors = %d, want %d", n, len(temporary))
		}
		if n := log.count("accept failing"); n != 1 {
			t.Errorf("logged %d times, want once:\n%s", n, log)
		}

		// A permanent error returns at once.
		res <- syscall.EBADF
		if _, err := l.Accept(); !errors.Is(err, syscall.EBADF) {
			t.Errorf("permanent error: %v", err)
		}

		// Close during a backoff ends Accept with net.ErrClosed.
		for range 5 {
			res <- errEMFILE
		}
		done := make(chan error)
		go func() {
			_, err := l.Accept()
			done <- err
		}()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		l.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}
		if time.Since(start) > 3275*time.Millisecond+200*time.Millisecond {
			t.Errorf("Close waited out the backoff")
		}
	})
}

// TestTemporaryAccept names which accept errors are retried.
func TestTemporaryAccept(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errEMFILE, true},
		{fmt.Errorf("x: %w", syscall.ENFILE), true},
		{syscall.ECONNABORTED, true},
		{net.ErrClosed, false},
		{syscall.EINVAL, false},
		{errors.New("too many open files"), false},
	} {
		if got := temporaryAccept(tc.err); got != tc.want {
			t.Errorf("temporaryAccept(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestStreamReadAllocs: a read and the touch of a complete message
// allocate nothing.
func TestStreamReadAllocs(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	l := &streamListener{ln: ln, transport: "tcp", name: "TCP", idle: time.Minute, streams: &s.streams, stats: &s.Stats,
		open: &s.Stats.TCPConns, log: slog.New(slog.NewTextHandler(io.Discard, nil)), done: make(chan struct{})}
	defer l.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := c.(*streamConn)
	buf, ping := make([]byte, 64), []byte("\r\n\r\n")
	allocs := testing.AllocsPerRun(100, func() {
		cl.Write(ping)
		if _, err := sc.Read(buf); err != nil {
			t.Fatal(err)
		}
		s.streams.touch("TCP", sc.key.addr)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per read", allocs)
	}
	if sc.msgStart.Load() >= 0 || sc.last.Load() == 0 {
		t.Errorf("keep-alives not counted as activity: start %d last %d", sc.msgStart.Load(), sc.last.Load())
	}
}
