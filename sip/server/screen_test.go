package server

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestScreenTorture(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
	s := New(Options{MaxMessageSize: 65535, MaxHeaders: 128}, nil)
	for _, kind := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, kind, "*.dat"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			t.Logf("%s/%s: %q", kind, filepath.Base(f), s.check(b))
		}
	}
}

func TestScreenVerdicts(t *testing.T) {
	s := New(Options{MaxMessageSize: 65535, MaxHeaders: 128}, nil)
	good := "INVITE sip:1002@x SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nf: <sip:a@x>;tag=1\r\nt: <sip:b@x>\r\ni: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nl: 4\r\n\r\nabcd"
	for _, tc := range []struct{ msg, want string }{
		{good, ""},
		{strings.Replace(good, "l: 4", "l: 9", 1), "Content-Length Beyond Datagram"},
		{strings.Replace(good, "CSeq: 1", "CSeq: x", 1), "Bad CSeq"},
		{strings.Replace(good, "Max-Forwards: 70", "Max-Forwards: 700", 1), "Bad Max-Forwards"},
		{strings.Replace(good, "i: c1\r\n", "", 1), "Missing Mandatory Header"},
		{strings.Replace(good, "i: c1\r\n", "broken line\r\n", 1), "Malformed Header"},
		{strings.Replace(good, "INVITE sip:1002@x SIP/2.0", "INVITE  SIP/2.0", 1), "Bad Request Line"},
		{"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n", ""},
	} {
		if got := s.check([]byte(tc.msg)); got != tc.want {
			t.Errorf("check(%q) = %q, want %q", tc.msg[:20], got, tc.want)
		}
	}
}

// BenchmarkScreen is the cost every UDP datagram pays before sipgo parses it.
func BenchmarkScreen(b *testing.B) {
	s := New(Options{MaxMessageSize: 65535, MaxHeaders: 128}, nil)
	msg := []byte("INVITE sip:1002@voxvisor.local SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n" +
		"From: <sip:1001@voxvisor.local>;tag=1\r\nTo: <sip:1002@voxvisor.local>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n" +
		"Contact: <sip:1001@10.0.0.1:5060>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if s.check(msg) != "" {
			b.Fatal("rejected")
		}
	}
}
