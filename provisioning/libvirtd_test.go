package provisioning

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/seed"
)

// daemon is a process the test started, stopped by its PID at the end.
func daemon(t *testing.T, logf string, name string, args ...string) *exec.Cmd {
	t.Helper()
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		f.Close()
	})
	return cmd
}

func waitSocket(t *testing.T, path string, logf string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
	}
	b, _ := os.ReadFile(logf)
	t.Fatalf("%s did not appear:\n%s", path, b)
}

// libvirtd starts virtlogd (unless one runs) and a libvirtd of the test's
// own, with its sockets in a private directory, inside a network
// namespace that has the bridge the guests attach to. It returns the URI.
func libvirtd(t *testing.T, ns, dir string) string {
	t.Helper()
	for _, tool := range []string{"libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img"} {
		testenv.Need(t, tool)
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"); err != nil {
		testenv.Missing(t, "libvirt's QEMU driver is not installed (libvirt-daemon-driver-qemu)")
	}
	os.MkdirAll("/var/log/libvirt/qemu", 0o755)
	os.MkdirAll("/run/libvirt", 0o755)
	if c, err := net.Dial("unix", "/run/libvirt/virtlogd-sock"); err == nil {
		c.Close()
	} else {
		daemon(t, filepath.Join(dir, "virtlogd.log"), "virtlogd", "-p", filepath.Join(dir, "virtlogd.pid"))
		waitSocket(t, "/run/libvirt/virtlogd-sock", filepath.Join(dir, "virtlogd.log"))
	}
	sock := filepath.Join(dir, "run")
	os.MkdirAll(sock, 0o700)
	conf := filepath.Join(dir, "libvirtd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`unix_sock_dir = %q
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:%s/libvirtd.log"
`, sock, dir)), 0o644)
	logf := filepath.Join(dir, "libvirtd.out")
	daemon(t, logf, "ip", "netns", "exec", ns, "libvirtd", "-f", conf, "-p", filepath.Join(dir, "libvirtd.pid"))
	waitSocket(t, filepath.Join(sock, "libvirt-sock"), logf)
	uri := "qemu:///system?socket=" + filepath.Join(sock, "libvirt-sock")
	// Guests outlive libvirtd: stop any of ours before it goes.
	t.Cleanup(func() {
		c, err := domain.Open(uri)
		if err != nil {
			return
		}
		defer c.Close()
		list, _ := c.List()
		for _, d := range list {
			c.Stop(context.Background(), d.Name, 0)
			c.Undefine(d.Name)
		}
	})
	return uri
}

// kvmUsable reports whether QEMU, run by libvirtd as libvirt-qemu, can
// open /dev/kvm. Its existence is not enough: a fresh machine may have it
// root:root 0600, and a test must not change device permissions.
func kvmUsable(t *testing.T) bool {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Log("no /dev/kvm: guests run under TCG")
		return false
	}
	if out, err := exec.Command("runuser", "-u", "libvirt-qemu", "--", "sh", "-c", "exec 3<>/dev/kvm").CombinedOutput(); err != nil {
		t.Logf("libvirt-qemu cannot open /dev/kvm (%s): guests run under TCG", strings.TrimSpace(string(out)))
		return false
	}
	return true
}

// openDir makes a directory qemu (user libvirt-qemu) can reach.
func openDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

func TestLibvirtdApplyDestroy(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.Need(t, "nft")
	ns := testenv.Netns(t, fmt.Sprintf("vxlv-%d", os.Getpid()))
	testenv.Run(t, "ip", "-n", ns, "link", "add", "vxbr0", "type", "bridge")
	testenv.Run(t, "ip", "-n", ns, "link", "set", "vxbr0", "up")
	dir := openDir(t)
	uri := libvirtd(t, ns, dir)

	base := filepath.Join(dir, "base.qcow2")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "32M")
	userData := filepath.Join(dir, "user-data")
	os.WriteFile(userData, []byte("#cloud-config\npackages: [sngrep]\n"), 0o644)
	domType := "qemu" // TCG
	if kvmUsable(t) {
		domType = "kvm"
	}
	yaml := func(bridge, memory string) string {
		return fmt.Sprintf(`sip:
  listen:
    - {transport: udp, address: 127.0.0.1:5060}
    - {transport: tcp, address: 127.0.0.1:5060}
provision:
  libvirt_uri: %s
  domain_type: %s
  shutdown_timeout: 2s
  storage: {backend: dir, dir: %s/images}
  firewall: {backend: nftables}
trunks:
  - name: itest
    peers: [{host: 10.98.0.2}]
    endpoint:
      vcpus: 1
      memory: %s
      disk: {size: 64M, image: %s}
      network: {bridge: %s, address: 10.98.0.21/24, gateway: 10.98.0.1, dns: [10.98.0.1]}
      user_data: %s
`, uri, domType, dir, memory, base, bridge, userData)
	}
	ctx := context.Background()
	// with opens a provisioner for the configuration y, as the CLI does,
	// and runs f with it inside the namespace, so the rules land there.
	with := func(y string, f func(p *Provisioner) error) (err error) {
		testenv.InNetns(t, ns, func() {
			cfg, lerr := config.Load("itest.yaml", []byte(y))
			if lerr != nil {
				err = lerr
				return
			}
			p, closeConn, oerr := Open(ctx, cfg, nil)
			if oerr != nil {
				err = oerr
				return
			}
			defer closeConn()
			err = f(p)
		})
		return err
	}

	var out bytes.Buffer
	var pl *Plan
	var st *domain.State
	err := with(yaml("vxbr0", "128M"), func(p *Provisioner) (err error) {
		if pl, err = p.Plan(ctx); err != nil {
			return err
		}
		if _, err = p.Apply(ctx, &out); err != nil {
			return err
		}
		if pl, err = p.Plan(ctx); err != nil {
			return err
		}
		st, err = p.Domains.Get("vox-itest")
		return err
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var status bytes.Buffer
	pl.WriteStatus(&status)
	if pl.Pending() || st == nil || !st.Running || !st.Autostart {
		t.Fatalf("after apply: domain %+v\n%s\n%s", st, out.String(), status.String())
	}
	if !strings.Contains(status.String(), "running, autostart") || !strings.Contains(status.String(), "in sync") {
		t.Errorf("status:\n%s", status.String())
	}
	// The guest has its seed: a cidata ISO with its address and user-data.
	files, label, err := seed.Read(st.Defined.SeedPath)
	if err != nil || label != "cidata" || !strings.Contains(string(files["network-config"]), "10.98.0.21/24") ||
		!strings.Contains(string(files["user-data"]), "sngrep") || !strings.HasPrefix(string(files["meta-data"]), "instance-id: vox-itest-") {
		t.Fatalf("seed %s: label %q files %q err %v", st.Defined.SeedPath, label, files, err)
	}
	if !strings.HasPrefix(st.Defined.SeedPath, dir+"/images/") || st.Defined.DiskPath != dir+"/images/vox-itest.raw" {
		t.Errorf("disk %s, seed %s: want both in the storage dir", st.Defined.DiskPath, st.Defined.SeedPath)
	}

	// A second apply changes nothing.
	out.Reset()
	err = with(yaml("vxbr0", "128M"), func(p *Provisioner) (err error) {
		pl, err = p.Apply(ctx, &out)
		return err
	})
	if err != nil || pl.Pending() || !strings.Contains(out.String(), "No changes") {
		t.Fatalf("second apply: %v\n%s", err, out.String())
	}

	// More memory restarts the guest with the new definition.
	out.Reset()
	err = with(yaml("vxbr0", "160M"), func(p *Provisioner) (err error) {
		if _, err = p.Apply(ctx, &out); err == nil {
			st, err = p.Domains.Get("vox-itest")
		}
		return err
	})
	if err != nil || !st.Running || st.Defined.MemoryKiB != 160<<10 {
		t.Fatalf("memory change: %v %+v\n%s", err, st, out.String())
	}

	// destroy shuts the guest down and removes all of it.
	out.Reset()
	var rules string
	err = with(yaml("vxbr0", "160M"), func(p *Provisioner) (err error) {
		if err = p.Destroy(ctx, "itest", &out); err != nil {
			return err
		}
		st, err = p.Domains.Get("vox-itest")
		rules, _ = testenv.Try("nft", "list", "ruleset")
		return err
	})
	if err != nil || st != nil {
		t.Fatalf("destroy: %v, domain %+v\n%s", err, st, out.String())
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "images", "*"))
	if len(leftovers) != 0 || strings.Contains(rules, "itest") {
		t.Fatalf("destroy left %v and rules:\n%s", leftovers, rules)
	}

	// A step failing in the middle (the bridge does not exist, so the
	// guest cannot start after its volume, seed and definition are made)
	// leaves nothing behind.
	out.Reset()
	err = with(yaml("nosuchbr0", "128M"), func(p *Provisioner) error {
		_, err := p.Apply(ctx, &out)
		st, _ = p.Domains.Get("vox-itest")
		rules, _ = testenv.Try("nft", "list", "ruleset")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "trunk itest: domain") || !strings.Contains(err.Error(), "nosuchbr0") {
		t.Fatalf("apply with a missing bridge: %v\n%s", err, out.String())
	}
	leftovers, _ = filepath.Glob(filepath.Join(dir, "images", "*"))
	if st != nil || len(leftovers) != 0 || strings.Contains(rules, "itest") {
		t.Fatalf("a failed apply left domain %+v, files %v, rules:\n%s\n%s", st, leftovers, rules, out.String())
	}
	for _, want := range []string{"undo: undefine vox-itest", "undo: remove seed", "undo: remove volume vox-itest"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("apply output lacks %q:\n%s", want, out.String())
		}
	}
}
