package provisioning

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/provisioningtest"
	"github.com/voxvisor/voxvisor/provisioning/seed"
)

// The libvirtd the tests drive is provisioningtest's: see Libvirtd.
var (
	libvirtd  = provisioningtest.Libvirtd
	kvmUsable = provisioningtest.KVMUsable
	openDir   = provisioningtest.OpenDir
)

func TestLibvirtdApplyDestroy(t *testing.T) {
	ns, dir, uri, base := libvirtdLab(t, "vxlv")
	userData := filepath.Join(dir, "user-data")
	os.WriteFile(userData, []byte("#cloud-config\npackages: [sngrep]\n"), 0o644)
	domType := "qemu" // TCG
	if kvmUsable(t) {
		domType = "kvm"
	}
	shutdown := "2s" // provision.shutdown_timeout
	yaml := func(bridge, memory string) string {
		return fmt.Sprintf(`sip:
  listen:
    - {transport: udp, address: 127.0.0.1:5060}
    - {transport: tcp, address: 127.0.0.1:5060}
provision:
  libvirt_uri: %s
  domain_type: %s
  shutdown_timeout: %s
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
`, uri, domType, shutdown, dir, memory, base, bridge, userData)
	}
	ctx := context.Background()
	with := func(y string, f func(p *Provisioner) error) error { return withProvisioner(t, ns, "itest.yaml", y, f) }

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

	// More memory restarts the guest with the new definition. The guest
	// has no OS and ignores the ACPI power button: it is down the whole
	// shutdown_timeout before it is powered off, and plan says so.
	const wait = 6 * time.Second
	shutdown = "6s"
	restart := func(memory string, kib uint64, force bool) (time.Duration, string) {
		t.Helper()
		out.Reset()
		var why string
		var took time.Duration
		err := with(yaml("vxbr0", memory), func(p *Provisioner) (err error) {
			p.ForceStop = force
			if pl, err = p.Plan(ctx); err != nil {
				return err
			}
			why = pl.change("itest", Domain).Why
			start := time.Now()
			if _, err = p.Apply(ctx, &out); err == nil {
				took = time.Since(start)
				st, err = p.Domains.Get("vox-itest")
			}
			return err
		})
		if err != nil || !st.Running || st.Defined.MemoryKiB != kib {
			t.Fatalf("memory change to %s: %v %+v\n%s", memory, err, st, out.String())
		}
		return took, why
	}
	took, why := restart("160M", 160<<10, false)
	if !strings.Contains(why, "memory 128M -> 160M; restarts: down up to 6s while it shuts down") {
		t.Errorf("plan of the restart: %q", why)
	}
	if took < wait {
		t.Fatalf("the restart took %s, less than the shutdown_timeout: the guest did not ignore ACPI, so --force-stop is not tested\n%s", took, out.String())
	}
	// apply --force-stop powers it off at once (issue 15 item 8).
	took, why = restart("192M", 192<<10, true)
	if !strings.Contains(why, "memory 160M -> 192M; restarts: powered off at once (--force-stop)") {
		t.Errorf("plan of the forced restart: %q", why)
	}
	if took >= wait || !strings.Contains(out.String(), "powered off, down ") {
		t.Fatalf("apply --force-stop took %s (the shutdown_timeout is %s):\n%s", took, wait, out.String())
	}
	t.Logf("restart with ACPI shutdown: at least %s; with --force-stop: %s", wait, took)
	shutdown = "2s"

	// destroy of everything shuts the guest down and removes all of it:
	// as virsh, nft and ls see it, nothing of voxvisor's remains (not the
	// table inet voxvisor with its base chains either).
	out.Reset()
	var rules, doms string
	err = with(yaml("vxbr0", "160M"), func(p *Provisioner) (err error) {
		if err = p.Destroy(ctx, "", &out); err != nil {
			return err
		}
		rules, err = testenv.Try("nft", "list", "ruleset")
		return err
	})
	if err == nil {
		doms, err = testenv.Try("virsh", "-c", uri, "list", "--all", "--name")
	}
	if err != nil {
		t.Fatalf("destroy: %v\n%s", err, out.String())
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "images", "*"))
	if len(leftovers) != 0 || strings.TrimSpace(rules) != "" || strings.TrimSpace(doms) != "" {
		t.Fatalf("destroy left files %v, domains %q and rules:\n%s\n%s", leftovers, doms, rules, out.String())
	}

	// A step failing in the middle (the "bridge" is one end of a veth
	// pair: it passes plan's check that it exists, and the guest cannot
	// start after its volume, seed and definition are made) leaves nothing
	// behind.
	out.Reset()
	testenv.Run(t, "ip", "-n", ns, "link", "add", "vxveth0", "type", "veth", "peer", "name", "vxveth1")
	err = with(yaml("vxveth0", "128M"), func(p *Provisioner) error {
		_, err := p.Apply(ctx, &out)
		st, _ = p.Domains.Get("vox-itest")
		rules, _ = testenv.Try("nft", "list", "ruleset")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "trunk itest: domain") || !strings.Contains(err.Error(), "vxveth0") {
		t.Fatalf("apply with a veth as the bridge: %v\n%s", err, out.String())
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

// withProvisioner opens a provisioner for the configuration y (named
// name), as the CLI does, and runs f with it inside namespace ns, so the
// firewall rules land there.
func withProvisioner(t *testing.T, ns, name, y string, f func(p *Provisioner) error) (err error) {
	testenv.InNetns(t, ns, func() {
		cfg, lerr := config.Load(name, []byte(y))
		if lerr != nil {
			err = lerr
			return
		}
		p, closeConn, oerr := Open(context.Background(), cfg, nil)
		if oerr != nil {
			err = oerr
			return
		}
		defer closeConn()
		err = f(p)
	})
	return err
}

// libvirtdLab is what the libvirtd tests run in: a network namespace
// (named from prefix) with a bridge vxbr0, a folder, a private libvirtd
// (its URI) and a 32M qcow2 base image.
func libvirtdLab(t *testing.T, prefix string) (ns, dir, uri, base string) {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.Need(t, "nft")
	ns = testenv.Netns(t, fmt.Sprintf("%s-%d", prefix, os.Getpid()))
	testenv.Run(t, "ip", "-n", ns, "link", "add", "vxbr0", "type", "bridge")
	testenv.Run(t, "ip", "-n", ns, "link", "set", "vxbr0", "up")
	dir = openDir(t)
	uri = libvirtd(t, ns, dir)
	base = filepath.Join(dir, "base.qcow2")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "32M")
	return ns, dir, uri, base
}
