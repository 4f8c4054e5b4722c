package admin

import (
	"github.com/voxvisor/voxvisor/internal/cluster"
	"github.com/voxvisor/voxvisor/sip/capture"

	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/sip/location"
)

// fakeBackend counts the changes the API makes.
type fakeBackend struct {
	mu      sync.Mutex
	reloads int
	hangups []string
	calls   []gateway.CDR
}

func (f *fakeBackend) Registrations() map[string][]location.Binding         { return nil }
func (f *fakeBackend) Unregister(aor, contact string) (int, error)          { return 0, nil }
func (f *fakeBackend) Calls() []gateway.CDR                                 { return f.calls }
func (f *fakeBackend) Ladder(string) ([]capture.Message, int, bool)         { return nil, 0, false }
func (f *fakeBackend) CDRs() ([]gateway.CDR, error)                         { return nil, nil }
func (f *fakeBackend) Provisioning(context.Context) ([]ProvisionRow, error) { return nil, nil }
func (f *fakeBackend) Cluster(context.Context) ([]cluster.Node, error)      { return nil, nil }
func (f *fakeBackend) Trunks() []TrunkInfo                                  { return []TrunkInfo{{Name: "carrier"}} }
func (f *fakeBackend) Hangup(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hangups = append(f.hangups, id)
	return true
}
func (f *fakeBackend) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return nil
}

func newServer(t *testing.T, addr, token string) (*Server, *fakeBackend) {
	t.Helper()
	b := &fakeBackend{}
	s, err := New(addr, token, b, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

// do sends one request from a loopback address to the handler.
func do(h http.Handler, method, host string, hdr map[string]string) (int, string) {
	r := httptest.NewRequest(method, "http://"+host+"/api/v1/reload", nil)
	if method == "GET" {
		r = httptest.NewRequest(method, "http://"+host+"/api/v1/trunks", nil)
	}
	if method == "DELETE" {
		r = httptest.NewRequest(method, "http://"+host+"/api/v1/calls/c1", nil)
	}
	r.Host = host
	r.RemoteAddr = "127.0.0.1:40000"
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// TestHostMustBeLoopbackWithoutToken: a page on evil.example whose name
// now resolves to 127.0.0.1 (DNS rebinding) reaches the listener from
// loopback, but its requests say Host: evil.example and are refused.
func TestHostMustBeLoopbackWithoutToken(t *testing.T) {
	s, b := newServer(t, "127.0.0.1:8060", "")
	h := s.Handler()
	for _, host := range []string{"127.0.0.1:8060", "127.0.0.1", "localhost:8060", "LOCALHOST", "[::1]:8060", "[::1]", "127.1.2.3:8060"} {
		if code, body := do(h, "GET", host, nil); code != 200 {
			t.Errorf("Host %s: %d %s, want 200", host, code, body)
		}
	}
	for _, host := range []string{"evil.example:8060", "evil.example", "127.0.0.1.nip.io:8060", "localhost.evil.example", "0.0.0.0:8060", "192.0.2.1:8060", "[fe80::1%25lo]:8060", ""} {
		code, body := do(h, "GET", host, nil)
		if code != http.StatusMisdirectedRequest || !strings.Contains(body, "addressed to localhost or a loopback address") {
			t.Errorf("Host %q: %d %s, want 421", host, code, body)
		}
		if code, _ := do(h, "POST", host, nil); code != http.StatusMisdirectedRequest {
			t.Errorf("POST with Host %q: %d, want 421", host, code)
		}
	}
	if b.reloads != 0 {
		t.Fatalf("%d reloads through a rebound name", b.reloads)
	}
	// With a token, the token is the guard: any name will do.
	s, _ = newServer(t, "0.0.0.0:8060", "t0ken")
	if code, body := do(s.Handler(), "GET", "admin.example:8060", map[string]string{"Authorization": "Bearer t0ken"}); code != 200 {
		t.Errorf("with the token, by name: %d %s", code, body)
	}
	if code, _ := do(s.Handler(), "GET", "127.0.0.1:8060", nil); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", code)
	}
}

// TestCrossOriginChangesRefused: a browser's form or fetch from another
// origin cannot reload or hang up (CSRF), token or not; the same request
// from voxvisor ctl or curl (no Origin, no Sec-Fetch-Site), or from the
// API's own origin, goes through.
func TestCrossOriginChangesRefused(t *testing.T) {
	for _, token := range []string{"", "t0ken"} {
		s, b := newServer(t, "127.0.0.1:8060", token)
		h := s.Handler()
		with := func(extra map[string]string) map[string]string {
			m := map[string]string{}
			if token != "" {
				m["Authorization"] = "Bearer " + token
			}
			for k, v := range extra {
				m[k] = v
			}
			return m
		}
		for _, method := range []string{"POST", "DELETE"} {
			for _, hdr := range []map[string]string{
				{"Origin": "http://evil.example"},
				{"Origin": "http://127.0.0.1:9999"},
				{"Origin": "null"},
				{"Sec-Fetch-Site": "cross-site"},
				{"Sec-Fetch-Site": "same-site"},
				{"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1:8060"},
			} {
				code, body := do(h, method, "127.0.0.1:8060", with(hdr))
				if code != http.StatusForbidden || !strings.Contains(body, "refused a cross-origin "+method) {
					t.Errorf("token %q, %s with %v: %d %s, want 403", token, method, hdr, code, body)
				}
			}
		}
		if b.reloads != 0 || len(b.hangups) != 0 {
			t.Fatalf("token %q: cross-origin requests changed things: %d reloads, hangups %v", token, b.reloads, b.hangups)
		}
		for _, hdr := range []map[string]string{
			nil,
			{"Origin": "http://127.0.0.1:8060"},
			{"Sec-Fetch-Site": "same-origin"},
			{"Sec-Fetch-Site": "none"},
		} {
			if code, body := do(h, "POST", "127.0.0.1:8060", with(hdr)); code != 200 {
				t.Errorf("token %q, POST with %v: %d %s, want 200", token, hdr, code, body)
			}
		}
		if code, _ := do(h, "DELETE", "127.0.0.1:8060", with(nil)); code != 200 || len(b.hangups) != 1 {
			t.Errorf("token %q: DELETE from ctl: %d, hangups %v", token, code, b.hangups)
		}
		// Reading stays open to any origin's GET: it changes nothing.
		if code, _ := do(h, "GET", "127.0.0.1:8060", with(map[string]string{"Sec-Fetch-Site": "cross-site"})); code != 200 {
			t.Errorf("token %q: GET cross-site: %d", token, code)
		}
	}
}

// TestConnectionsTimeOut: an idle keep-alive connection and a client that
// never finishes its headers are both closed by the server.
func TestConnectionsTimeOut(t *testing.T) {
	if s, _ := newServer(t, "127.0.0.1:0", ""); s.timeouts != (timeouts{10 * time.Second, 30 * time.Second, 30 * time.Second, 60 * time.Second}) {
		t.Fatalf("default timeouts %+v", s.timeouts)
	}
	s, _ := newServer(t, "127.0.0.1:0", "")
	s.timeouts = timeouts{readHeader: 300 * time.Millisecond, read: time.Second, write: time.Second, idle: 300 * time.Millisecond}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	closedWithin := func(c net.Conn, r *bufio.Reader, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, r)
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout()) // EOF or reset: closed
	}

	// Keep-alive: one request answered, then the idle connection closed.
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /api/v1/trunks HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	r := bufio.NewReader(c)
	res, err := http.ReadResponse(r, nil)
	if err != nil || res.StatusCode != 200 || res.Close {
		t.Fatalf("keep-alive request: %v %+v", err, res)
	}
	io.Copy(io.Discard, res.Body)
	start := time.Now()
	if !closedWithin(c, r, 3*time.Second) {
		t.Fatal("an idle keep-alive connection was still open after 3 s (idle timeout 300 ms)")
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", el)
	}

	// Slow headers: a byte now and then does not keep it open.
	c2, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "GET /api/v1/trunks HTTP/1.1\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := io.WriteString(c2, "X"); err != nil {
					return
				}
			}
		}
	}()
	if !closedWithin(c2, bufio.NewReader(c2), 3*time.Second) {
		t.Fatal("a client trickling its headers kept its connection for 3 s (header timeout 300 ms)")
	}
}
