package softswitch_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// TestCallLadder: after a SIPp call through the switch (with proxy
// authentication), the admin API gives its SIP ladder in order, on both
// of the switch's sides, with the caller's credentials redacted; the
// pcap export opens in tshark with the same messages, and the text
// export reads as sngrep prints it.
func TestCallLadder(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	calleePort, callerPort := freePort(t), freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas.xml", calleePort, "udp")
	sipp(t, sw.udp, "uac_call.xml", callerPort, "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	wait()
	cdr := readCDRs(t, sw, 1)[0]

	code, body := sw.api(t, "GET", "/api/v1/calls/"+cdr.CallID+"/ladder")
	if code != 200 {
		t.Fatalf("ladder: %d %s", code, body)
	}
	var ladder struct {
		Messages []struct {
			Sent  bool   `json:"sent"`
			First string `json:"first_line"`
			Raw   string `json:"raw"`
		} `json:"messages"`
	}
	if err := json.Unmarshal([]byte(body), &ladder); err != nil {
		t.Fatal(err)
	}
	// The caller's side as the switch saw and answered it; the callee's
	// leg in between. Retransmissions would only add lines.
	var caller []string
	for _, m := range ladder.Messages {
		method, _, _ := strings.Cut(m.First, " ")
		if strings.HasPrefix(m.First, "SIP/2.0 ") {
			method = strings.Fields(m.First)[1]
		}
		caller = append(caller, method)
		if strings.Contains(m.Raw, "response=") {
			t.Fatalf("credentials in the ladder:\n%s", m.Raw)
		}
	}
	got := strings.Join(caller, " ")
	// In this order, with the callee's copies (and any 100 Trying) between.
	rest := got
	for _, want := range []string{"INVITE 407 ACK INVITE", "180", "200", "ACK", "BYE", "200"} {
		i := strings.Index(rest, want)
		if i < 0 {
			t.Fatalf("ladder %q lacks %q in order", got, want)
		}
		rest = rest[i+len(want):]
	}
	if ladder.Messages[0].Sent || !strings.HasPrefix(ladder.Messages[0].First, "INVITE sip:1002@") {
		t.Fatalf("the ladder does not start with the caller's INVITE: %s", got)
	}
	// Both legs: INVITEs received from the caller and sent to the callee.
	var sentInvite bool
	for _, m := range ladder.Messages {
		sentInvite = sentInvite || (m.Sent && strings.HasPrefix(m.First, "INVITE "))
	}
	if !sentInvite {
		t.Fatalf("the callee's leg is missing from the ladder: %s", got)
	}

	code, pcap := sw.api(t, "GET", "/api/v1/calls/"+cdr.CallID+"/ladder.pcap")
	if code != 200 {
		t.Fatalf("ladder.pcap: %d", code)
	}
	path := filepath.Join(t.TempDir(), "call.pcap")
	os.WriteFile(path, []byte(pcap), 0o644)
	out, err := exec.Command(testenv.Need(t, "tshark"), "-r", path, "-d", "udp.port==5060,sip", "-Y", "sip", "-T", "fields", "-e", "sip.CSeq").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	if n := strings.Count(string(out), "\n"); n != len(ladder.Messages) {
		t.Fatalf("tshark decoded %d SIP messages of %d:\n%s", n, len(ladder.Messages), out)
	}
	code, text := sw.api(t, "GET", "/api/v1/calls/"+cdr.CallID+"/ladder.txt")
	if code != 200 || !strings.Contains(text, " -> ") || !strings.Contains(text, "\nINVITE sip:1002@") {
		t.Fatalf("ladder.txt: %d\n%s", code, text)
	}
	if code, _ := sw.api(t, "GET", "/api/v1/calls/no-such-call/ladder"); code != 404 {
		t.Fatalf("ladder of an unknown call: %d, want 404", code)
	}
}
