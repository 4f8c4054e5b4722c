package domain

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

func TestQEMUConfUser(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ conf, user, group string }{
		{"", "libvirt-qemu", "libvirt-qemu"},
		{"#user = \"qemu\"\n# group = \"qemu\"\n", "libvirt-qemu", "libvirt-qemu"},
		{"user = \"+0\"\ngroup = \"+0\"\n", "+0", "+0"},
		{"  user=\"qemu\" # the QEMU user\nsecurity_driver = \"none\"\n", "qemu", "libvirt-qemu"},
	} {
		p := filepath.Join(dir, "qemu.conf")
		os.WriteFile(p, []byte(tc.conf), 0o644)
		if u, g := qemuConfUser(p); u != tc.user || g != tc.group {
			t.Errorf("qemu.conf %q: user %q group %q, want %q %q", tc.conf, u, g, tc.user, tc.group)
		}
	}
	if u, g := qemuConfUser(filepath.Join(dir, "none")); u != "libvirt-qemu" || g != "libvirt-qemu" {
		t.Errorf("no qemu.conf: %q %q", u, g)
	}
}

func TestHostOf(t *testing.T) {
	for uri, local := range map[string]bool{
		"qemu:///system": true,
		"qemu:///system?socket=/run/x/libvirt-sock": true,
		"qemu+unix:///system":                       true,
		"qemu+ssh://root@hv1/system":                false,
		"qemu+tcp://hv1/system":                     false,
		"test:///default":                           false,
		"test:///tmp/node.xml":                      false,
	} {
		if h := hostOf(uri); h.Local != local {
			t.Errorf("%s: local %v, want %v", uri, h.Local, local)
		}
	}
	me, _ := user.Current()
	if h := hostOf("qemu:///session"); !h.Local || me == nil || h.QEMUUser != me.Username {
		t.Errorf("qemu:///session: %+v, want QEMU as %v", h, me)
	}
}

// TestCheckKVM asks the kernel whether a user can open a device as QEMU
// would: a copy of /dev/null's node made root:root 0600 stands for a
// fresh machine's /dev/kvm, then 0666 for a usable one; root can always.
func TestCheckKVM(t *testing.T) {
	testenv.NeedRoot(t)
	u := "nobody"
	if _, err := user.Lookup(u); err != nil {
		t.Skip("no user nobody")
	}
	dev := filepath.Join(openTempDir(t), "kvm")
	if out, err := exec.Command("mknod", "-m", "0600", dev, "c", "1", "3").CombinedOutput(); err != nil {
		t.Skipf("mknod: %v %s", err, out)
	}
	if f, err := os.OpenFile(dev, os.O_RDWR, 0); err != nil {
		t.Skipf("the test directory does not allow device nodes: %v", err)
	} else {
		f.Close()
	}
	h := Host{Local: true, QEMUUser: u, QEMUGroup: "nogroup", KVM: dev}
	err := CheckKVM(h)
	if err == nil || !strings.Contains(err.Error(), "QEMU runs as nobody") || !strings.Contains(err.Error(), "root:root 0600: Permission denied") ||
		!strings.Contains(err.Error(), "provision.domain_type: qemu") {
		t.Fatalf("CheckKVM of a root:root 0600 device = %v", err)
	}
	os.Chmod(dev, 0o666)
	if err := CheckKVM(h); err != nil {
		t.Fatalf("CheckKVM of a 0666 device = %v", err)
	}
	os.Chmod(dev, 0o600)
	if err := CheckKVM(Host{Local: true, QEMUUser: "+0", QEMUGroup: "+0", KVM: dev}); err != nil {
		t.Fatalf("CheckKVM as root = %v", err)
	}
	h.KVM = filepath.Join(filepath.Dir(dev), "none")
	if err := CheckKVM(h); err == nil || !strings.Contains(err.Error(), "there is no "+h.KVM) || !strings.Contains(err.Error(), "modprobe kvm_intel") {
		t.Fatalf("CheckKVM without a device = %v", err)
	}
}

// openTempDir is a test directory other users can reach.
func openTempDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// TestPreflightNetwork: a guest on a libvirt network needs the network,
// active (the test driver's default has one, active, named default).
func TestPreflightNetwork(t *testing.T) {
	c, err := Open("test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := testSpec()
	s.Bridge, s.Network = "", "default"
	if err := c.Preflight(s); err != nil {
		t.Fatalf("Preflight on the active network default: %v", err)
	}
	s.Network = "nosuchnet"
	if err := c.Preflight(s); err == nil || !strings.Contains(err.Error(), "libvirt network nosuchnet does not exist: define and start it") {
		t.Fatalf("Preflight on a missing network: %v", err)
	}
	n, err := c.c.LookupNetworkByName("default")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Free()
	if err := n.Destroy(); err != nil {
		t.Fatal(err)
	}
	s.Network = "default"
	if err := c.Preflight(s); err == nil || !strings.Contains(err.Error(), "virsh net-start default") {
		t.Fatalf("Preflight on an inactive network: %v", err)
	}
	// The test driver has no host: its bridges and /dev/kvm are not looked at.
	s.Network, s.Bridge, s.Type = "", "nosuchbr0", "kvm"
	if err := c.Preflight(s); err != nil {
		t.Fatalf("Preflight on the test driver looked at this host: %v", err)
	}
}
