package auth

import (
	"context"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/digest"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

// TestMiddleware: the auth step challenges whoever claims our domain
// outside a dialog, sets r.User once proved and strips our credentials;
// it leaves in-dialog requests, foreign callers and skipped sources (a
// carrier's INVITEs) to the next step unchallenged.
func TestMiddleware(t *testing.T) {
	a := newAuth(t, digest.MD5)
	isLocal := func(host string) bool { return host == "voxvisor.local" }
	skip := func(r *sip.Request) bool { return r.Source.Addr().String() == "198.51.100.9" }
	var reached *sip.Request
	h := a.Middleware(isLocal, skip)(sip.HandlerFunc(func(_ context.Context, r *sip.Request) error {
		reached = r
		return nil
	}))
	req := func(t *testing.T, src, from, to string, hdrs ...string) *sip.Request {
		t.Helper()
		raw := strings.Join(append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0",
			"Via: SIP/2.0/UDP " + src + ";branch=z9hG4bK1", "From: <" + from + ">;tag=1", "To: " + to,
			"Call-ID: mw", "CSeq: 1 INVITE", "Max-Forwards: 70"}, append(hdrs, "Content-Length: 0")...), "\n")
		r, _, err := siptest.Request(raw, src, "udp")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name      string
		r         *sip.Request
		challenge bool
	}{
		{"one of ours, no credentials", req(t, "192.0.2.7:5060", "sip:1001@voxvisor.local", "<sip:1002@voxvisor.local>"), true},
		{"an unknown user claiming our domain", req(t, "192.0.2.7:5060", "sip:4242@voxvisor.local", "<sip:1002@voxvisor.local>"), true},
		{"a foreign caller", req(t, "192.0.2.7:5060", "sip:alice@elsewhere.example", "<sip:1002@voxvisor.local>"), false},
		{"in a dialog", req(t, "192.0.2.7:5060", "sip:1001@voxvisor.local", "<sip:1002@voxvisor.local>;tag=x"), false},
		{"a carrier's source", req(t, "198.51.100.9:5060", "sip:1001@voxvisor.local", "<sip:1002@voxvisor.local>"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached = nil
			err := h.ServeSIP(context.Background(), tc.r)
			if tc.challenge != (code(err) == 407) || tc.challenge == (reached != nil) {
				t.Fatalf("got %v, reached the next step: %v; challenge wanted: %v", err, reached != nil, tc.challenge)
			}
		})
	}

	// Proved: r.User set.
	r := req(t, "192.0.2.7:5060", "sip:1001@voxvisor.local", "<sip:1002@voxvisor.local>")
	ch := challenge(t, a, digest.MD5)
	r2 := req(t, "192.0.2.7:5060", "sip:1001@voxvisor.local", "<sip:1002@voxvisor.local>",
		"Proxy-Authorization: "+answer(t, ch, "secret1001", r.Recipient.String()))
	reached = nil
	if err := h.ServeSIP(context.Background(), r2); err != nil || reached == nil {
		t.Fatalf("good credentials: %v", err)
	}
	if reached.User != "1001" {
		t.Fatalf("after the auth step: User %q", reached.User)
	}
}
