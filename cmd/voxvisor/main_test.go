package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/sip/digest"
)

// TestConfigCheckAgreesWithServe: config check refuses what serve
// refuses, with the same words: a demo password (or its HA1) on a
// listener off loopback, and a value that would inject a header.
func TestConfigCheckAgreesWithServe(t *testing.T) {
	ha1, _ := digest.HA1("MD5", "1001", "voxvisor.local", "demo1001")
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "v.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const public = "data_dir: DIR\nsip:\n  listen:\n    - {transport: udp, address: 0.0.0.0:0}\n"
	for name, tc := range map[string]struct{ body, want string }{
		"demo password": {public + "users:\n  - {username: \"1001\", password: demo1001}\n",
			"user 1001 has a demo password (password) and listener udp 0.0.0.0:0 is not loopback"},
		"demo ha1": {public + "users:\n  - {username: \"1001\", ha1: " + ha1 + "}\n",
			"user 1001 has a demo password (ha1) and listener udp 0.0.0.0:0 is not loopback"},
		"header injection": {"trunks:\n  - name: a\n    peers: [{host: 192.0.2.1}]\n    caller_id: {pai: \"sip:a@b\\r\\nX-Evil: 1\"}\n",
			"v.yaml:4: trunks[0].caller_id.pai: must not hold control characters: found CR"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := write(strings.ReplaceAll(tc.body, "DIR", t.TempDir()))
			out, checkErr := runCLI(t, "config", "check", "-c", cfg)
			if checkErr == nil || !strings.Contains(checkErr.Error(), tc.want) {
				t.Fatalf("config check = %v (%s), want a refusal with %q", checkErr, out, tc.want)
			}
			_, serveErr := runCLI(t, "serve", "-c", cfg)
			if serveErr == nil || serveErr.Error() != checkErr.Error() {
				t.Fatalf("serve = %v\nconfig check = %v\nwant the same refusal", serveErr, checkErr)
			}
		})
	}
	// The same users on loopback only: both accept (check says ok).
	cfg := write("sip:\n  listen:\n    - {transport: udp, address: 127.0.0.1:0}\nusers:\n  - {username: \"1001\", ha1: " + ha1 + "}\n")
	if out, err := runCLI(t, "config", "check", "-c", cfg); err != nil || !strings.Contains(out, ": ok (1 users, 1 listeners)") {
		t.Fatalf("config check of a loopback demo: %v\n%s", err, out)
	}
}
