package sip

import (
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
	hdrs := []string{"From: <sip:a@x>;tag=1", "To: <sip:1002@voxvisor.local>", "Call-ID: c1", "CSeq: 1 INVITE", "Max-Forwards: 70"}
	first := parseReq(t, append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"}, hdrs...)...)
	if Looped(first) {
		t.Fatal("a fresh request counted as looped")
	}
	ours := "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=" + BranchPrefix + LoopKey(first) + ".0123"
	back := parseReq(t, append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0", ours, "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"}, hdrs...)...)
	if !Looped(back) {
		t.Fatal("the same request back through us is not a loop")
	}
	spiral := parseReq(t, append([]string{"INVITE sip:1003@voxvisor.local SIP/2.0", ours, "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"}, hdrs...)...)
	if Looped(spiral) {
		t.Fatal("a spiral (new Request-URI) counted as a loop")
	}
	// A Via with several values in one header is looked at whole.
	joined := parseReq(t, append([]string{"INVITE sip:1002@voxvisor.local SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKb, " + strings.TrimPrefix(ours, "Via: ")}, hdrs...)...)
	if !Looped(joined) {
		t.Fatal("our branch in a multi-value Via was missed")
	}
}
