package server

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/internal/config"
)

func TestScreenTorture(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
	s := New(config.SIP{MaxMessageSize: 65535, MaxHeaders: 128}, nil)
	for _, kind := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, kind, "*.dat"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			t.Logf("%s/%s: %q", kind, filepath.Base(f), s.check(b))
		}
	}
}
