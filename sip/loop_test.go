package sip

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	siplib "github.com/emiago/sipgo/sip"
)

func parseReq(t *testing.T, lines ...string) *siplib.Request {
	t.Helper()
	msg, err := siplib.ParseMessage([]byte(strings.Join(append(lines, "Content-Length: 0", "", ""), "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*siplib.Request)
}

// TestLooped: a request that comes back with our branch for the same
// Request-URI and dialog identifiers has looped; one that comes back for
// another Request-URI is spiralling and goes on.
func TestLooped(t *testing.T) {
	me := func(host string, port int) bool { return host == "127.0.0.1" && port == 5060 }
	hdrs := []string{"From: <sip:a@x>;tag=1", "To: <sip:1002@voxvisor.local>", "Call-ID: c1", "CSeq: 1 INVITE", "Max-Forwards: 70"}
	first := parseReq(t, append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"}, hdrs...)...)
	if Looped(first, me) {
		t.Fatal("a fresh request counted as looped")
	}
	ours := "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=" + BranchPrefix + LoopKey(first) + ".0123"
	back := parseReq(t, append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0", ours, "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"}, hdrs...)...)
	if !Looped(back, me) {
		t.Fatal("the same request back through us is not a loop")
	}
	spiral := parseReq(t, append([]string{"INVITE sip:1003@voxvisor.local SIP/2.0", ours, "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"}, hdrs...)...)
	if Looped(spiral, me) {
		t.Fatal("a spiral (new Request-URI) counted as a loop")
	}
	// A Via with several values in one header is looked at whole.
	joined := parseReq(t, append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKb, " + strings.TrimPrefix(ours, "Via: ")}, hdrs...)...)
	if !Looped(joined, me) {
		t.Fatal("our branch in a multi-value Via was missed")
	}
	// The same branch written by another node of the cluster (its own
	// sent-by) is a hop through it, not a loop here.
	other := strings.Replace(ours, "127.0.0.1:5060", "127.0.0.2:5060", 1)
	hop := parseReq(t, append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0", other, "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"}, hdrs...)...)
	if Looped(hop, me) {
		t.Fatal("another node's Via counted as our loop")
	}
}

// TestLoopKeyStable: the key is a hash of the same fields, each followed
// by a zero byte, as every earlier version computed it, so a request in
// flight while a node is upgraded is still recognised if it loops. The
// value below is what the first version (a streaming SHA-256) gave.
func TestLoopKeyStable(t *testing.T) {
	r := parseReq(t, "INVITE sip:1002@voxvisor.local;user=phone SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa",
		"From: <sip:a@x>;tag=1", "To: <sip:1002@voxvisor.local>", "Call-ID: c1", "CSeq: 17 INVITE", "Proxy-Require: foo", "Max-Forwards: 70")
	h := sha256.New()
	for _, f := range []string{"sip:1002@voxvisor.local;user=phone", "1", "", "c1", "17 INVITE", "foo"} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	want := hex.EncodeToString(h.Sum(nil)[:6])
	for range 3 { // the pooled buffer is reused
		if got := LoopKey(r); got != want {
			t.Fatalf("LoopKey = %s, want %s", got, want)
		}
	}
}
