package server

import (
	"context"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/sip"
)

// TestPanicAnswered500: a request whose handling panics is answered 500,
// counted and logged with its stack; the listener serves the next request
// on the same connection, and its source's request slot was given back.
func TestPanicAnswered500(t *testing.T) {
	ts := startServer(t, 0, nil, func(s *Server) {
		s.SetHandler(sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
			if r.CSeq().SeqNo == 1 && strings.HasSuffix(r.CallID().Value(), "-1") {
				var m map[string]int
				m["boom"]++ // a nil map: the kind of bug a request can hit
			}
			return r.Respond(200, "OK", nil)
		}))
	})
	c := ts.dial(t, "tcp")
	status, err := c.exchange("tcp")
	if err != nil || !strings.Contains(status, " 500 ") {
		t.Fatalf("panicking request: %q, %v; want 500", status, err)
	}
	for i := 0; i < 3; i++ {
		if status, err := c.exchange("tcp"); err != nil || !strings.Contains(status, " 200 ") {
			t.Fatalf("request after the panic: %q, %v; want 200", status, err)
		}
	}
	if n := ts.Stats.Panics.Load(); n != 1 {
		t.Errorf("Stats.Panics = %d, want 1", n)
	}
	if ts.log.count("panicked") != 1 || ts.log.count("recover_test.go") == 0 {
		t.Errorf("panic not logged once with its stack:\n%s", ts.log)
	}
}
