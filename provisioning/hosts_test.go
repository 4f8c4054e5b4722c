package provisioning

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/seed"
)

// TestHostsApplyDestroy drives provision.hosts against two private
// libvirtds, each in a network namespace of its own with its bridge and a
// directory storage pool: two hypervisors reached only through libvirt.
// Trunks are placed by endpoint.host and by free memory, one that fits
// nowhere is refused, a trunk is never moved, a failed trunk is rolled
// back on its host, and destroy leaves nothing on either.
func TestHostsApplyDestroy(t *testing.T) {
	nsA, dirA, uriA, base := libvirtdLab(t, "vxha")
	_, dirB, uriB, _ := libvirtdLab(t, "vxhb")
	storagePool(t, uriA, dirA)
	poolB := storagePool(t, uriB, dirB)
	domType := "qemu"
	if kvmUsable(t) {
		domType = "kvm"
	}
	type ep struct{ name, host, memory, bridge string }
	peer := "10.98.0.2"
	yaml := func(eps ...ep) string {
		var b strings.Builder
		fmt.Fprintf(&b, `sip:
  listen:
    - {transport: udp, address: 127.0.0.1:5060}
provision:
  domain_type: %s
  shutdown_timeout: 1s
  hosts:
    - {name: hv1, uri: %q, vcpus: 4, memory: 320M}
    - {name: hv2, uri: %q, vcpus: 4, memory: 256M}
trunks:
`, domType, uriA, uriB)
		for i, e := range eps {
			fmt.Fprintf(&b, `  - name: %s
    peers: [{host: %s}]
    inbound: {cidrs: ["2001:db8:5::/48"]}
    endpoint:
      host: %q
      vcpus: 1
      memory: %s
      disk: {size: 64M, image: %s}
      network: {bridge: %s, address: 10.98.0.%d/24}
`, e.name, peer, e.host, e.memory, base, e.bridge, 21+i)
		}
		return b.String()
	}
	ctx := context.Background()
	var out bytes.Buffer
	with := func(y string, f func(fl *Fleet) error) error {
		t.Helper()
		var err error
		testenv.InNetns(t, nsA, func() {
			cfg, lerr := config.Load("hosts.yaml", []byte(y))
			if lerr != nil {
				err = lerr
				return
			}
			infra, closeAll, oerr := Connect(ctx, cfg, nil) // as the CLI opens it
			if oerr != nil {
				err = oerr
				return
			}
			defer closeAll()
			err = f(infra.(*Fleet))
		})
		return err
	}
	virsh := func(uri string, args ...string) string {
		t.Helper()
		o, err := testenv.Try("virsh", append([]string{"-c", uri}, args...)...)
		if err != nil {
			t.Fatalf("virsh %v: %v", args, err)
		}
		return o
	}

	// pinned names hv2; auto1 goes to hv1 (most memory free), then auto2
	// too (hv1 192M free against hv2's 128M); big fits nowhere.
	four := yaml(ep{"pinned", "hv2", "128M", "vxbr0"}, ep{"auto1", "", "128M", "vxbr0"}, ep{"auto2", "", "128M", "vxbr0"}, ep{"big", "", "256M", "vxbr0"})
	err := with(four, func(fl *Fleet) error {
		_, err := fl.Apply(ctx, &out)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "trunk big: placement: no host has room for its 1 vCPU and 256M (free for voxvisor's guests: hv1 2 vCPU and 64M; hv2 3 vCPU and 128M)") {
		t.Fatalf("apply: want big refused for want of room, got %v\n%s", err, out.String())
	}
	domsA, domsB := virsh(uriA, "list", "--name"), virsh(uriB, "list", "--name")
	if !strings.Contains(domsA, "vox-auto1") || !strings.Contains(domsA, "vox-auto2") || !strings.Contains(domsB, "vox-pinned") ||
		strings.Contains(domsA+domsB, "vox-big") || strings.Contains(domsB, "vox-auto") || strings.Contains(domsA, "vox-pinned") {
		t.Fatalf("running guests: hv1 %q, hv2 %q\n%s", domsA, domsB, out.String())
	}
	// Disks and seeds are in each host's pool; the filter is there.
	vols := virsh(uriB, "vol-list", "voxvisor")
	if !strings.Contains(vols, "vox-pinned.raw ") || !strings.Contains(vols, "vox-pinned-seed-") {
		t.Fatalf("hv2's pool:\n%s", vols)
	}
	var seedPath string
	err = with(four, func(fl *Fleet) error {
		st, err := fl.Hosts[1].Domains.Get("vox-pinned")
		if err == nil && st != nil {
			seedPath = st.Defined.SeedPath
		}
		return err
	})
	if files, label, err := seed.Read(seedPath); err != nil || label != "cidata" || !strings.Contains(string(files["network-config"]), "10.98.0.21/24") {
		t.Fatalf("seed %s uploaded into hv2's pool: %q %q %v", seedPath, label, files, err)
	}
	if !strings.HasPrefix(seedPath, poolB+"/") {
		t.Errorf("seed %s is not in hv2's pool %s", seedPath, poolB)
	}
	if f := virsh(uriA, "nwfilter-list"); !strings.Contains(f, "vox-auto1") || !strings.Contains(f, "vox-auto2") {
		t.Fatalf("hv1's filters:\n%s", f)
	}
	if x := virsh(uriA, "nwfilter-dumpxml", "vox-auto1"); !strings.Contains(x, "srcipaddr='10.98.0.2'") || !strings.Contains(x, "<udp-ipv6 srcipaddr='2001:db8:5::' srcipmask='48'") || !strings.Contains(x, "action='drop'") {
		t.Fatalf("vox-auto1's filter:\n%s", x)
	}
	if x := virsh(uriA, "dumpxml", "vox-auto1"); !strings.Contains(x, "<filterref filter='vox-auto1'") {
		t.Fatalf("vox-auto1's interface has no filter:\n%s", x)
	}
	// libvirtd on hv1 made kernel rules of it, in hv1's namespace.
	if r, err := testenv.Try("ip", "netns", "exec", nsA, "iptables-save"); err != nil || !strings.Contains(r, "10.98.0.2/32") || !strings.Contains(r, "5060") {
		t.Fatalf("hv1's kernel rules (%v):\n%s", err, r)
	}

	// The filter works on the wire: UDP to the guest's SIP port from the
	// peer passes hv1's kernel, from a stranger on the same bridge it is
	// dropped (as the rules' packet counters see it: the guest runs no OS
	// to receive).
	counted := func(verdict string) uint64 {
		t.Helper()
		var n uint64
		for _, l := range strings.Split(testenv.Run(t, "ip", "netns", "exec", nsA, "iptables-save", "-c"), "\n") {
			if strings.Contains(l, "voxvisor auto1 ") && strings.Contains(l, "--dport 5060") && strings.HasSuffix(l, "-j "+verdict) {
				var p, b uint64
				fmt.Sscanf(l, "[%d:%d]", &p, &b)
				n += p
			}
		}
		return n
	}
	send := func(from string) {
		t.Helper()
		for range 5 {
			testenv.Run(t, "ip", "netns", "exec", from, "bash", "-c", "echo OPTIONS > /dev/udp/10.98.0.21/5060")
		}
	}
	mac := strings.ToLower(macOf(t, virsh(uriA, "dumpxml", "vox-auto1")))
	peerNS, strangerNS := onBridge(t, nsA, "vxp", "10.98.0.2", mac), onBridge(t, nsA, "vxs", "10.98.0.3", mac)
	send(peerNS)
	if a, d := counted("ACCEPT"), counted("DROP"); a != 5 || d != 0 {
		t.Errorf("the peer's 5 packets: %d accepted, %d dropped", a, d)
	}
	send(strangerNS)
	if a, d := counted("ACCEPT"), counted("DROP"); a != 5 || d != 5 {
		t.Errorf("a stranger's 5 packets: %d accepted, %d dropped (want 0 more accepted, 5 dropped)", a-5, d)
	}
	// libvirt mirrors each rule for the other way: the guest's SIP and
	// media ports talk to its peers only, and to them whoever starts
	// (no state match: the guest may register at its carrier first).
	if r := testenv.Run(t, "ip", "netns", "exec", nsA, "iptables-save"); !regexp.MustCompile(`-A FI-vnet\d+ -d 10\.98\.0\.2/32 -p udp -m udp --sport 5060 -m comment --comment "voxvisor auto1 \w+" -j RETURN`).MatchString(r) {
		t.Errorf("the guest cannot start a SIP exchange with its peer:\n%s", r)
	}

	// Without big, nothing is left to do, and status shows the hosts.
	three := yaml(ep{"pinned", "hv2", "128M", "vxbr0"}, ep{"auto1", "", "128M", "vxbr0"}, ep{"auto2", "", "128M", "vxbr0"})
	out.Reset()
	var status bytes.Buffer
	err = with(three, func(fl *Fleet) error {
		pl, err := fl.Apply(ctx, &out)
		if err == nil {
			pl.WriteStatus(&status)
		}
		return err
	})
	if err != nil || !strings.Contains(out.String(), "No changes") {
		t.Fatalf("second apply: %v\n%s", err, out.String())
	}
	for _, want := range []string{"HOST", "hv2   pinned", "hv1   auto1", "running, autostart"} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, status.String())
		}
	}

	// A new peer reaches the running guests' filters (redefined under
	// their UUIDs), and nothing else changes.
	peer = "10.98.0.4"
	three = yaml(ep{"pinned", "hv2", "128M", "vxbr0"}, ep{"auto1", "", "128M", "vxbr0"}, ep{"auto2", "", "128M", "vxbr0"})
	out.Reset()
	if err := with(three, func(fl *Fleet) error { _, err := fl.Apply(ctx, &out); return err }); err != nil {
		t.Fatalf("apply of a new peer: %v\n%s", err, out.String())
	}
	if x := virsh(uriA, "nwfilter-dumpxml", "vox-auto1"); !strings.Contains(x, "srcipaddr='10.98.0.4'") || strings.Contains(x, "srcipaddr='10.98.0.2'") {
		t.Fatalf("vox-auto1's filter after the peer changed:\n%s\n%s", x, out.String())
	}
	if !strings.Contains(out.String(), "hv1/auto1: firewall: nwfilter rules for 2 peer(s) to 10.98.0.22") || strings.Contains(out.String(), "restart") {
		t.Errorf("apply of a new peer:\n%s", out.String())
	}
	peer = "10.98.0.2"
	three = yaml(ep{"pinned", "hv2", "128M", "vxbr0"}, ep{"auto1", "", "128M", "vxbr0"}, ep{"auto2", "", "128M", "vxbr0"})

	// One libvirtd under two URIs is one machine: refused.
	err = with(strings.Replace(three, "uri: \""+uriB, "uri: \"qemu+unix"+strings.TrimPrefix(uriA, "qemu"), 1), func(fl *Fleet) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "hosts hv1 and hv2 are one machine") {
		t.Fatalf("the same libvirtd as two hosts: %v", err)
	}

	// A trunk is not moved: pinned named hv1 now is an error, and hv2
	// keeps its guest.
	out.Reset()
	err = with(yaml(ep{"pinned", "hv1", "128M", "vxbr0"}, ep{"auto1", "", "128M", "vxbr0"}, ep{"auto2", "", "64M", "vxbr0"}), func(fl *Fleet) error {
		_, err := fl.Apply(ctx, &out)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "is on host hv2, and endpoint.host says hv1: voxvisor does not move guests") {
		t.Fatalf("moving pinned: %v\n%s", err, out.String())
	}
	if !strings.Contains(virsh(uriB, "list", "--name"), "vox-pinned") {
		t.Fatalf("hv2 lost pinned's guest:\n%s", out.String())
	}

	// A trunk failing on its host (its "bridge" is a veth end: the guest
	// cannot start) is rolled back there: filter, seed, volume.
	testenv.Run(t, "ip", "-n", nsA, "link", "add", "vxveth0", "type", "veth", "peer", "name", "vxveth1")
	out.Reset()
	err = with(yaml(ep{"pinned", "hv2", "128M", "vxbr0"}, ep{"auto1", "", "128M", "vxbr0"}, ep{"auto2", "", "128M", "vxbr0"}, ep{"broken", "hv1", "64M", "vxveth0"}), func(fl *Fleet) error {
		_, err := fl.Apply(ctx, &out)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "trunk broken: domain") {
		t.Fatalf("apply of broken: %v\n%s", err, out.String())
	}
	if v := virsh(uriA, "vol-list", "voxvisor"); strings.Contains(v, "broken") {
		t.Fatalf("a failed trunk left volumes in hv1's pool:\n%s\n%s", v, out.String())
	}
	if f := virsh(uriA, "nwfilter-list"); strings.Contains(f, "vox-broken") {
		t.Fatalf("a failed trunk left its filter:\n%s\n%s", f, out.String())
	}
	for _, want := range []string{"hv1/broken: undo: remove firewall rules of broken", "hv1/broken: undo: remove volume vox-broken"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("apply output lacks %q:\n%s", want, out.String())
		}
	}

	// destroy removes everything from both hosts.
	out.Reset()
	if err := with(three, func(fl *Fleet) error { return fl.Destroy(ctx, "", &out) }); err != nil {
		t.Fatalf("destroy: %v\n%s", err, out.String())
	}
	for _, uri := range []string{uriA, uriB} {
		doms := virsh(uri, "list", "--all", "--name")
		vols := virsh(uri, "vol-list", "voxvisor")
		filters := virsh(uri, "nwfilter-list")
		if strings.Contains(doms+vols+filters, "vox-") {
			t.Fatalf("destroy left on %s: %s\n%s\n%s\n%s", uri, doms, vols, filters, out.String())
		}
	}
}

// storagePool defines, builds and starts the directory pool voxvisor in
// the libvirtd at uri, under dir; it returns the pool's directory.
func storagePool(t *testing.T, uri, dir string) string {
	t.Helper()
	target := filepath.Join(dir, "pool")
	testenv.Run(t, "virsh", "-c", uri, "pool-define-as", "voxvisor", "dir", "--target", target)
	testenv.Run(t, "virsh", "-c", uri, "pool-build", "voxvisor")
	testenv.Run(t, "virsh", "-c", uri, "pool-start", "voxvisor")
	return target
}

// onBridge puts a namespace with address addr on the bridge vxbr0 of ns
// (a veth pair named from name), with the guest's address 10.98.0.21
// resolved to mac (the guest runs no OS to answer ARP).
func onBridge(t *testing.T, ns, name, addr, mac string) string {
	t.Helper()
	peer := testenv.Netns(t, fmt.Sprintf("%s-%d", name, os.Getpid()))
	testenv.Run(t, "ip", "-n", ns, "link", "add", name+"0", "type", "veth", "peer", "name", name+"1", "netns", peer)
	testenv.Run(t, "ip", "-n", ns, "link", "set", name+"0", "master", "vxbr0", "up")
	testenv.Run(t, "ip", "-n", peer, "addr", "add", addr+"/24", "dev", name+"1")
	testenv.Run(t, "ip", "-n", peer, "link", "set", name+"1", "up")
	testenv.Run(t, "ip", "-n", peer, "neigh", "add", "10.98.0.21", "lladdr", mac, "dev", name+"1", "nud", "permanent")
	return peer
}

var macRE = regexp.MustCompile(`<mac address='([0-9a-f:]+)'`)

// macOf is the first interface's MAC address in a domain's XML.
func macOf(t *testing.T, x string) string {
	t.Helper()
	m := macRE.FindStringSubmatch(x)
	if m == nil {
		t.Fatalf("no MAC address in:\n%s", x)
	}
	return m[1]
}

// A host that cannot be reached stops the command with its name and the
// reason, and nothing else is opened or left open.
func TestFleetUnreachableHost(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Load("hosts.yaml", []byte(fmt.Sprintf(`provision:
  hosts:
    - {name: hv1, uri: "qemu:///system?socket=%s/none", vcpus: 2, memory: 1G}
trunks:
  - name: a
    peers: [{host: 192.0.2.1}]
    endpoint:
      vcpus: 1
      memory: 256M
      disk: {size: 64M}
      network: {bridge: br0, address: 10.0.0.5/24}
`, dir)))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Connect(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "host hv1: libvirtd is not running at qemu:///system?socket="+dir+"/none") {
		t.Fatalf("want host hv1 named as unreachable, got %v", err)
	}
}
