package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/provisioningtest"
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
	if ee := (*exitError)(nil); !errors.As(err, &ee) || ee.code != 2 || ee.err != nil {
		t.Fatalf("plan with changes: %v, want exit code 2\n%s", err, out)
	}
	for _, want := range []string{"carrier-a  volume    create  64M", "carrier-a  domain    create  1 vCPU, 128M, 10.10.0.21", "2 change(s)."} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "provision", "status", "-c", cfg)
	if ee := (*exitError)(nil); !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(out, "absent") {
		t.Errorf("status: %v\n%s", err, out)
	}
	// A daemon that is not there is named, with what to do.
	cfg = writeProvisionConfig(t, "qemu:///system?socket=/nonexistent/libvirt-sock")
	_, err = runCLI(t, "provision", "plan", "-c", cfg)
	if err == nil || !strings.Contains(err.Error(), "libvirtd is not running") || !strings.Contains(err.Error(), "start it") {
		t.Errorf("plan with no libvirtd: %v", err)
	}
	// Without -c, the embedded config is used, which has no endpoints:
	// said plainly, for every provision command (issue 15 item 6).
	t.Setenv("VOXVISOR_CONFIG", "")
	for _, args := range [][]string{{"plan"}, {"status"}, {"apply"}, {"destroy", "carrier-a"}} {
		var o, e bytes.Buffer
		code := run(append([]string{"provision"}, args...), &o, &e)
		if code != 1 || !strings.HasPrefix(e.String(), "voxvisor: no -c given (nor VOXVISOR_CONFIG); using the embedded config, which has no endpoints: nothing to provision") {
			t.Errorf("provision %s without -c: exit %d, stderr %q", args[0], code, e.String())
		}
	}
}

// TestErrorsStartWithFileLine: config check's errors are written as they
// are, each line starting with file:line, not "voxvisor: " (issue 15 item 6).
func TestErrorsStartWithFileLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "v.yaml")
	os.WriteFile(p, []byte("sip:\n  listen:\n    - {transport: udp, address: nowhere}\nmedia:\n  port_min: 7\n"), 0o644)
	var o, e bytes.Buffer
	code := run([]string{"config", "check", "-c", p}, &o, &e)
	lines := strings.Split(strings.TrimSpace(e.String()), "\n")
	if code != 1 || len(lines) < 2 {
		t.Fatalf("config check: exit %d, stderr %q", code, e.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, p+":") || !strings.Contains(l[len(p)+1:], ": ") {
			t.Errorf("line %q does not start with %s:LINE", l, p)
		}
	}
	// Other errors say whose they are.
	e.Reset()
	if code := run([]string{"config", "check", "-c", p + ".none"}, &o, &e); code != 1 || !strings.HasPrefix(e.String(), "voxvisor: read config: ") {
		t.Errorf("config check of a missing file: exit %d, stderr %q", code, e.String())
	}
}

// cli runs voxvisor with args as main does, inside the network namespace
// ns (where the test's libvirtd, bridge and nft are), and returns what it
// wrote to stdout and stderr and its exit code.
func cli(t *testing.T, ns string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	testenv.InNetns(t, ns, func() { code = run(args, &o, &e) })
	return o.String(), e.String(), code
}

// TestProvisionExitCodes runs provision as an operator does, against a
// real libvirtd, nft and qemu-img (issue 15 items 3, 6 and 8): plan and
// status exit 0 when all is as configured, 2 when apply has something to
// do or the host drifted, 1 on an error; errors are printed once, on
// stderr, each line "voxvisor: ..."; apply --force-stop restarts a guest
// that ignores ACPI without waiting, as plan --force-stop says.
func TestProvisionExitCodes(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.Need(t, "nft")
	ns := testenv.Netns(t, fmt.Sprintf("vxcli-%d", os.Getpid()))
	testenv.Run(t, "ip", "-n", ns, "link", "add", "vxbr0", "type", "bridge")
	testenv.Run(t, "ip", "-n", ns, "link", "set", "vxbr0", "up")
	dir := provisioningtest.OpenDir(t)
	uri := provisioningtest.Libvirtd(t, ns, dir)
	base := filepath.Join(dir, "base.qcow2")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "32M")
	cfg := filepath.Join(dir, "v.yaml")
	write := func(memory string, more string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf(`sip:
  listen: [{transport: udp, address: 127.0.0.1:5060}]
provision:
  libvirt_uri: %q
  domain_type: qemu
  shutdown_timeout: 30s
  storage: {backend: dir, dir: %s/images}
  firewall: {backend: nftables}
trunks:
  - name: carrier-a
    peers: [{host: 10.96.0.2}]
    endpoint:
      memory: %s
      disk: {size: 64M, image: %s}
      network: {bridge: vxbr0, address: 10.96.0.21/24}
%s`, uri, dir, memory, base, more)), 0o644)
	}
	want := func(step string, code, wantCode int, stdout, stderr string, in ...string) {
		t.Helper()
		if code != wantCode {
			t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", step, code, wantCode, stdout, stderr)
		}
		for _, s := range in {
			if !strings.Contains(stdout+stderr, s) {
				t.Errorf("%s: output lacks %q\nstdout:\n%s\nstderr:\n%s", step, s, stdout, stderr)
			}
		}
	}

	write("128M", "")
	o, e, code := cli(t, ns, "provision", "plan", "-c", cfg)
	want("plan before apply", code, 2, o, e, "carrier-a  volume    create", "3 change(s).")
	o, e, code = cli(t, ns, "provision", "status", "-c", cfg)
	want("status before apply", code, 2, o, e, "absent")
	o, e, code = cli(t, ns, "provision", "apply", "-c", cfg)
	want("apply", code, 0, o, e, "carrier-a: domain: defined and started vox-carrier-a")
	o, e, code = cli(t, ns, "provision", "plan", "-c", cfg)
	want("plan after apply", code, 0, o, e, "No changes")
	o, e, code = cli(t, ns, "provision", "status", "-c", cfg)
	want("status after apply", code, 0, o, e, "running, autostart")

	// Drift: someone powers the guest off. status says so with exit 2;
	// apply starts it again.
	testenv.Run(t, "virsh", "-c", uri, "destroy", "vox-carrier-a")
	o, e, code = cli(t, ns, "provision", "status", "-c", cfg)
	want("status after virsh destroy", code, 2, o, e, "update live: not running: start")
	o, e, code = cli(t, ns, "provision", "apply", "-c", cfg)
	want("apply of the drift", code, 0, o, e, "updated live (not running: start)")

	// A memory change restarts the guest: plan shows the downtime, and
	// --force-stop does not wait the 30 s shutdown_timeout for a guest
	// (no OS) that ignores ACPI.
	write("160M", "")
	o, e, code = cli(t, ns, "provision", "plan", "-c", cfg)
	want("plan of more memory", code, 2, o, e, "memory 128M -> 160M; restarts: down up to 30s while it shuts down")
	o, e, code = cli(t, ns, "provision", "plan", "--force-stop", "-c", cfg)
	want("plan --force-stop", code, 2, o, e, "restarts: powered off at once (--force-stop), down while it boots")
	start := time.Now()
	o, e, code = cli(t, ns, "provision", "apply", "--force-stop", "-c", cfg)
	want("apply --force-stop", code, 0, o, e, "redefined and restarted vox-carrier-a (memory 128M -> 160M", "powered off, down ")
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("apply --force-stop took %s: it waited for the guest's shutdown", took)
	}

	// A trunk that cannot be applied (its base image is missing): plan
	// and apply exit 1, the error on stdout's table once and on stderr
	// once, the other trunk as it is.
	write("160M", `  - name: carrier-b
    peers: [{host: 10.96.0.3}]
    endpoint:
      memory: 128M
      disk: {size: 64M, image: `+dir+`/missing.qcow2}
      network: {bridge: vxbr0, address: 10.96.0.22/24}
`)
	o, e, code = cli(t, ns, "provision", "plan", "-c", cfg)
	want("plan with a missing image", code, 1, o, e, "carrier-b  volume    error    base image "+dir+"/missing.qcow2 does not exist")
	if e != "voxvisor: 1 trunk(s) cannot be applied, see the error lines: carrier-b\n" {
		t.Errorf("plan's stderr: %q", e)
	}
	o, e, code = cli(t, ns, "provision", "apply", "-c", cfg)
	want("apply with a missing image", code, 1, o, e, "carrier-b: refused: nothing changed")
	if n := strings.Count(o+e, "missing.qcow2 does not exist"); n != 1 || strings.Contains(e, "level=ERROR") {
		t.Errorf("apply printed the error %d times (want once):\nstdout:\n%s\nstderr:\n%s", n, o, e)
	}
	for _, line := range strings.Split(strings.TrimSpace(e), "\n") {
		if !strings.HasPrefix(line, "voxvisor: ") {
			t.Errorf("stderr line %q does not start with voxvisor: ", line)
		}
	}

	// destroy of everything: carrier-b only lacks its image, which does
	// not stop its removal (it has nothing); nothing of voxvisor's is left.
	o, e, code = cli(t, ns, "provision", "destroy", "--force-stop", "-c", cfg)
	want("destroy", code, 0, o, e, "carrier-a: domain: vox-carrier-a shut down and undefined")
	if rules := testenv.Run(t, "ip", "netns", "exec", ns, "nft", "list", "ruleset"); strings.TrimSpace(rules) != "" {
		t.Errorf("destroy left rules:\n%s", rules)
	}
	o, e, code = cli(t, ns, "provision", "status", "-c", "/dev/null")
	want("status of an empty config", code, 1, o, e, "no trunk has an endpoint block")
}
