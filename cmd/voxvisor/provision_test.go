package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot(&out, &out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func writeProvisionConfig(t *testing.T, uri string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "v.yaml")
	os.WriteFile(p, []byte(fmt.Sprintf(`provision:
  libvirt_uri: %q
  domain_type: qemu
  storage: {backend: dir, dir: %s/images}
  firewall: {backend: none}
trunks:
  - name: carrier-a
    peers: [{host: 192.0.2.1}]
    endpoint:
      memory: 128M
      disk: {size: 64M}
      network: {bridge: br0, address: 10.10.0.21/24}
`, uri, dir)), 0o644)
	return p
}

func TestProvisionCLI(t *testing.T) {
	// The libvirt test driver: plan shows the three creations, status the absence.
	fixture := filepath.Join(t.TempDir(), "node.xml")
	os.WriteFile(fixture, []byte("<node/>"), 0o644)
	cfg := writeProvisionConfig(t, "test://"+fixture)
	out, err := runCLI(t, "provision", "plan", "-c", cfg)
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	for _, want := range []string{"carrier-a  volume    create  64M", "carrier-a  domain    create  1 vCPU, 128M, 10.10.0.21", "2 change(s)."} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "provision", "status", "-c", cfg)
	if err != nil || !strings.Contains(out, "absent") {
		t.Errorf("status: %v\n%s", err, out)
	}
	// A daemon that is not there is named, with what to do.
	cfg = writeProvisionConfig(t, "qemu:///system?socket=/nonexistent/libvirt-sock")
	_, err = runCLI(t, "provision", "plan", "-c", cfg)
	if err == nil || !strings.Contains(err.Error(), "libvirtd is not running") || !strings.Contains(err.Error(), "start it") {
		t.Errorf("plan with no libvirtd: %v", err)
	}
	// Nothing to provision is said plainly.
	_, err = runCLI(t, "provision", "plan")
	if err == nil || !strings.Contains(err.Error(), "no trunk has an endpoint") {
		t.Errorf("plan of the default config: %v", err)
	}
}
