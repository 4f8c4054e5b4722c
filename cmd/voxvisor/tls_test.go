package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTLSCertCommand: `tls cert` makes a CA and a server certificate a
// TLS listener's config accepts, then more certificates from the same
// CA, and never replaces a file.
func TestTLSCertCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	out, err := runCLI(t, "tls", "cert", "--dir", dir, "--host", "voxvisor.local", "--host", "127.0.0.1")
	if err != nil || !strings.Contains(out, "cert_file: "+dir+"/server.pem") {
		t.Fatalf("tls cert: %v\n%s", err, out)
	}
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	cfg := filepath.Join(t.TempDir(), "v.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("sip:\n  listen:\n    - {transport: tls, address: 127.0.0.1:5061}\n  tls:\n"+
		"    cert_file: %s/server.pem\n    key_file: %s/server.key\n    ca_file: %s/ca.pem\n    verify_client: require\n", dir, dir, dir)), 0o644)
	if out, err := runCLI(t, "config", "check", "-c", cfg); err != nil {
		t.Fatalf("config check with the new certificate: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "tls", "cert", "--dir", dir, "--name", "phone-1001"); err != nil || !strings.Contains(out, "phone-1001.pem") {
		t.Fatalf("client certificate: %v\n%s", err, out)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(again) != string(ca) {
		t.Fatal("the CA was replaced")
	}
	if _, err := runCLI(t, "tls", "cert", "--dir", dir, "--host", "other.example"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("a second server certificate replaced the first: %v", err)
	}
	if _, err := runCLI(t, "tls", "cert", "--dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--host") {
		t.Fatalf("a server certificate without --host: %v", err)
	}
}
