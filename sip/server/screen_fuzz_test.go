package server

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	siplib "github.com/emiago/sipgo/sip"
)

// FuzzScreen: no datagram panics the UDP screen, and whatever the screen
// lets through sipgo parses without panicking either (the screen exists
// so that no input stops a listener). `go test` runs the seeds (sipgo's
// torture messages among them); `go test -fuzz FuzzScreen ./sip/server`
// searches further.
func FuzzScreen(f *testing.F) {
	f.Add([]byte("INVITE sip:1002@x SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nf: <sip:a@x>;tag=1\r\nt: <sip:b@x>\r\ni: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nl: 4\r\n\r\nabcd"))
	f.Add([]byte("SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	if out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output(); err == nil {
		dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
		files, _ := filepath.Glob(filepath.Join(dir, "*", "*.dat"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	s := New(Options{MaxMessageSize: 65535, MaxHeaders: 128}, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = callIDOf(data)
		if s.check(data) != "" {
			return
		}
		_, _ = siplib.ParseMessage(data)
	})
}
