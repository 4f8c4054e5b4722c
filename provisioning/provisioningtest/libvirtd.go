// Package provisioningtest runs what the provisioning tests drive: a
// libvirtd of the test's own (Libvirtd) beside the host's, with QEMU's
// access to /dev/kvm as it is (KVMUsable). It is for tests only.
package provisioningtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/domain"
)

// daemon is a process the test started in a process group of its own,
// stopped at the end with its group (SIGTERM, then SIGKILL after 10 s).
func daemon(t testing.TB, logf string, cmd *exec.Cmd) {
	t.Helper()
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		f.Close()
	})
}

// waitGone waits until the process whose pid is in pidFile has exited,
// killing it after 10 s.
func waitGone(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 1 {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

func waitSocket(t testing.TB, path string, logf string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
	}
	b, _ := os.ReadFile(logf)
	t.Fatalf("%s did not appear:\n%s", path, b)
}

// libvirtPrivate are the directories a system libvirtd and its QEMUs keep
// definitions and state in. Two system libvirtds on one host share them
// (the second cannot take /run/libvirt/qemu/driver.pid, and both write
// /etc/libvirt/qemu/NAME.xml), so the test's own gets them from its
// directory, bind-mounted in a mount namespace of its own.
var libvirtPrivate = []string{"/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"}

// skeleton copies the directories under src to dst with their owners and
// modes (QEMU, as libvirt-qemu, must reach some of them), and of the files
// only libvirt's own *.conf in /etc/libvirt: no definitions, no state.
func skeleton(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // a directory we cannot read is not needed
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case d.IsDir():
			if strings.HasPrefix(d.Name(), "qmp-") {
				return filepath.SkipDir // a capabilities probe's leftovers
			}
			if err := os.MkdirAll(to, 0o700); err != nil {
				return err
			}
		case d.Type().IsRegular() && src == "/etc/libvirt" && filepath.Dir(rel) == "." && strings.HasSuffix(d.Name(), ".conf"):
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			if err := os.WriteFile(to, b, 0o600); err != nil {
				return err
			}
		default:
			return nil
		}
		if st != nil {
			os.Lchown(to, int(st.Uid), int(st.Gid))
		}
		return os.Chmod(to, fi.Mode().Perm())
	})
}

// Libvirtd starts a libvirtd and a virtlogd of the test's own, in a mount
// namespace where libvirt's directories are the test's (libvirtPrivate,
// made from the host's by skeleton: the same directories, the host's
// *.conf, so the same QEMU user), with libvirtd inside the network
// namespace ns that has the bridges the guests attach to, and its sockets
// in a private directory. Nothing of the host's libvirt is touched, and a
// libvirtd of the host or of another test run may be running. It returns
// the URI.
func Libvirtd(t testing.TB, ns, dir string) string {
	t.Helper()
	for _, tool := range []string{"libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "sh", "mount", "virsh"} {
		testenv.Need(t, tool)
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"); err != nil {
		testenv.Missing(t, "libvirt's QEMU driver is not installed (libvirt-daemon-driver-qemu)")
	}
	root := filepath.Join(dir, "root")
	for _, d := range libvirtPrivate {
		if err := os.MkdirAll(d, 0o755); err != nil { // the mount point, on the host
			t.Fatal(err)
		}
		if err := skeleton(d, root+d); err != nil {
			t.Fatal(err)
		}
	}

	sock := filepath.Join(dir, "run")
	os.MkdirAll(sock, 0o700)
	conf := filepath.Join(dir, "libvirtd.conf")
	// Each test libvirtd is a host of its own (provision.hosts refuses
	// two URIs to one machine).
	os.WriteFile(conf, []byte(fmt.Sprintf(`unix_sock_dir = %q
host_uuid = %q
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:%s/libvirtd.log"
`, sock, randomUUID(), dir)), 0o644)
	// A /dev/kvm that QEMU's user cannot open (root:root 0600 on a fresh
	// machine) makes libvirt 9.0 probe QEMU's capabilities again at every
	// call, 4 s each ("KVM was enabled when probing, but it is not
	// available now"). Guests run under TCG there anyway, so libvirtd gets
	// an empty root-only file in its place: KVM is then absent for it
	// alike at the probe and at the check, and the probe is cached. QEMU
	// then runs without a private /dev (namespaces = []), as libvirt
	// cannot move a file's bind mount into one.
	hideKVM := ""
	if _, err := os.Stat("/dev/kvm"); err == nil && !KVMUsable(t) {
		hideKVM = filepath.Join(dir, "kvm-hidden")
		if err := os.WriteFile(hideKVM, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(root+"/etc/libvirt/qemu.conf", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			_, err = f.WriteString("\n# voxvisor test: /dev/kvm is hidden from libvirtd\nnamespaces = []\n")
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// sh binds the directories, starts virtlogd, waits for its socket,
	// then becomes libvirtd (ip netns exec execs it): one process group.
	script := `set -e
for d in ` + strings.Join(libvirtPrivate, " ") + `; do mount --bind "$ROOT$d" "$d"; done
if [ -n "$HIDE_KVM" ]; then mount --bind "$HIDE_KVM" /dev/kvm; fi
virtlogd -p "$DIR/virtlogd.pid" &
i=0
while [ ! -S /run/libvirt/virtlogd-sock ]; do
	i=$((i+1)); [ $i -lt 300 ] || { echo "virtlogd did not start"; exit 1; }
	sleep 0.1
done
exec ip netns exec "$NS" libvirtd -f "$CONF" -p "$DIR/libvirtd.pid"
`
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "ROOT="+root, "DIR="+dir, "NS="+ns, "CONF="+conf, "HIDE_KVM="+hideKVM)
	// Go makes the new mount namespace's mounts private before sh runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	logf := filepath.Join(dir, "libvirtd.out")
	// virtlogd is in libvirtd's process group and gets its SIGTERM; it
	// must be gone before the test's directory is removed.
	t.Cleanup(func() { waitGone(filepath.Join(dir, "virtlogd.pid")) })
	daemon(t, logf, cmd)
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

// KVMUsable reports whether QEMU, run by libvirtd as libvirt-qemu, can
// open /dev/kvm. Its existence is not enough: a fresh machine may have it
// root:root 0600, and a test must not change device permissions.
func KVMUsable(t testing.TB) bool {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Log("no /dev/kvm: guests run under TCG")
		return false
	}
	if out, err := exec.Command("runuser", "-u", "libvirt-qemu", "--", "sh", "-c", "exec 3<>/dev/kvm").CombinedOutput(); err != nil {
		t.Logf("libvirt-qemu cannot open /dev/kvm (%s): guests run under TCG", strings.TrimSpace(string(out)))
		return false
	}
	// Nor is opening it: under some nested hypervisors QEMU aborts
	// setting up a host-passthrough vCPU. Ask QEMU, as provision does.
	if u, err := user.Lookup("libvirt-qemu"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		var groups []uint32
		ids, _ := u.GroupIds()
		for _, g := range ids {
			if n, err := strconv.Atoi(g); err == nil {
				groups = append(groups, uint32(n))
			}
		}
		if err := domain.ProbeKVM(uid, gid, groups); err != nil {
			t.Logf("%v: guests run under TCG", err)
			return false
		}
	}
	return true
}

// OpenDir makes a directory qemu (user libvirt-qemu) can reach.
func OpenDir(t testing.TB) string {
	d := t.TempDir()
	for p := d; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// randomUUID is a version 4 UUID.
func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
