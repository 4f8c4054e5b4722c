package provisioning

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/provisioning/firewall/firewalltest"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// host is a provisioning target made of the libvirt test driver, a dir
// of raw files and a knftables fake that refuses what nft refuses: real
// code paths, no root.
type host struct {
	dir     string
	conn    *domain.Conn
	nft     *firewalltest.Fake
	resized []string
	vg      string // set: volumes on this LVM volume group, else raw files
}

// resizeRecorder answers BlockResize, which the test driver lacks.
type resizeRecorder struct {
	*domain.Conn
	h *host
}

func (r *resizeRecorder) BlockResize(name string, size int64) error {
	r.h.resized = append(r.h.resized, fmt.Sprintf("%s %d", name, size))
	return nil
}

func newHost(t testing.TB) *host {
	t.Helper()
	dir := t.TempDir()
	fixture := filepath.Join(dir, "node.xml")
	os.WriteFile(fixture, []byte("<node/>"), 0o644)
	conn, err := domain.Open("test://" + fixture)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &host{dir: dir, conn: conn, nft: firewalltest.NewFake(knftables.InetFamily, firewall.TableName)}
}

// trunkYAML is one trunk with an endpoint; edit changes its endpoint text.
func configYAML(dir string, trunks int, edit func(string) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "provision:\n  storage:\n    backend: dir\n    dir: %s/images\n  domain_type: qemu\n  shutdown_timeout: 1s\ntrunks:\n", dir)
	for i := range trunks {
		ep := fmt.Sprintf(`    endpoint:
      vcpus: 1
      memory: 256M
      disk:
        size: 64M
      network:
        bridge: br0
        address: 10.10.%d.%d/16
`, i/200, i%200+10)
		if edit != nil && i == 0 {
			ep = edit(ep)
		}
		fmt.Fprintf(&b, "  - name: carrier-%d\n    peers:\n      - host: 192.0.2.%d\n%s", i, i%250+1, ep)
	}
	return b.String()
}

func (h *host) provisioner(t testing.TB, yaml string) *Provisioner {
	t.Helper()
	var store volume.Store = &volume.Dir{Dir: filepath.Join(h.dir, "images"), Run: volume.Exec{}}
	if h.vg != "" {
		store = &volume.LVM{VG: h.vg, Run: volume.Exec{}}
	}
	cfg, err := config.Load("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, store, &resizeRecorder{Conn: h.conn, h: h}, firewall.NewNFT(h.nft), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range p.desired {
		d.Domain.Type = "test" // the test driver's only domain type
	}
	return p
}

func actions(pl *Plan) string {
	var out []string
	for _, c := range pl.Changes {
		out = append(out, fmt.Sprintf("%s/%s=%s", c.Trunk, c.Resource, c.Action))
	}
	return strings.Join(out, " ")
}

func TestPlanTable(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		edit    func(string) string
		want    string
		prepare func(t *testing.T, h *host)
	}{
		{"same config", nil,
			"carrier-0/volume=nothing carrier-0/domain=nothing carrier-0/firewall=nothing", nil},
		{"bigger disk", func(s string) string { return strings.Replace(s, "size: 64M", "size: 128M", 1) },
			"carrier-0/volume=update live carrier-0/domain=nothing carrier-0/firewall=nothing", nil},
		{"smaller disk, not allowed", func(s string) string { return strings.Replace(s, "size: 64M", "size: 32M", 1) },
			"carrier-0/volume=nothing carrier-0/domain=nothing carrier-0/firewall=nothing", nil},
		{"smaller disk, allowed", func(s string) string {
			return strings.Replace(s, "size: 64M", "size: 32M\n        allow_shrink: true", 1)
		}, "carrier-0/volume=update, restart carrier-0/domain=nothing carrier-0/firewall=nothing", func(t *testing.T, h *host) {
			testenv.Need(t, "mkfs.ext4")
			testenv.Run(t, "mkfs.ext4", "-q", "-F", filepath.Join(h.dir, "images", "vox-carrier-0.raw"))
		}},
		{"more memory", func(s string) string { return strings.Replace(s, "memory: 256M", "memory: 512M", 1) },
			"carrier-0/volume=nothing carrier-0/domain=update, restart carrier-0/firewall=nothing", nil},
		{"new address", func(s string) string { return strings.Replace(s, "10.10.0.10/16", "10.10.0.99/16", 1) },
			"carrier-0/volume=nothing carrier-0/domain=update, restart carrier-0/firewall=update live", nil},
		{"autostart off", func(s string) string { return s + "      autostart: false\n" },
			"carrier-0/volume=nothing carrier-0/domain=update live carrier-0/firewall=nothing", nil},
		{"endpoint removed", func(string) string { return "" },
			"carrier-0/volume=delete carrier-0/domain=delete carrier-0/firewall=delete", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			p := h.provisioner(t, configYAML(h.dir, 1, nil))
			pl, err := p.Plan(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := actions(pl); got != "carrier-0/volume=create carrier-0/domain=create carrier-0/firewall=create" {
				t.Fatalf("first plan: %s", got)
			}
			var out bytes.Buffer
			if _, err := p.Apply(ctx, &out); err != nil {
				t.Fatalf("apply: %v\n%s", err, out.String())
			}
			if tc.prepare != nil {
				tc.prepare(t, h)
			}
			p2 := h.provisioner(t, configYAML(h.dir, 1, tc.edit))
			pl, err = p2.Plan(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := actions(pl); got != tc.want {
				t.Errorf("plan after the edit:\n got %s\nwant %s", got, tc.want)
			}
			// Apply reaches the plan, and the plan is then empty.
			if _, err := p2.Apply(ctx, &out); err != nil {
				t.Fatalf("apply of the edit: %v\n%s", err, out.String())
			}
			if pl, _ = p2.Plan(ctx); pl.Pending() {
				t.Errorf("after apply the plan still has changes: %s\n%s", actions(pl), out.String())
			}
			if tc.name == "bigger disk" && (len(h.resized) != 1 || h.resized[0] != "vox-carrier-0 134217728") {
				t.Errorf("the running guest was not told of its bigger disk: %v", h.resized)
			}
		})
	}
}

func TestDriftAndStatus(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	p := h.provisioner(t, configYAML(h.dir, 2, nil))
	if _, err := p.Apply(ctx, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	// Someone stops a guest, deletes a seed and edits a peer set by hand.
	if err := h.conn.Stop(ctx, "vox-carrier-1", 0); err != nil {
		t.Fatal(err)
	}
	os.Remove(p.desired[0].Domain.SeedPath)
	tx := h.nft.NewTransaction()
	tx.Add(&knftables.Element{Set: "peers4-carrier-1", Key: []string{"10.66.6.6"}})
	h.nft.Run(ctx, tx)

	pl, err := p.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	pl.WriteStatus(&out)
	for _, want := range []string{
		"carrier-0  domain    running, autostart",
		"update live: seed file missing",
		"carrier-1  domain    shut off, autostart",
		"update live: not running: start",
		"update live: set peers4-carrier-1 holds",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := p.Apply(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if pl, _ = p.Plan(ctx); pl.Pending() {
		t.Fatalf("drift not repaired: %s", actions(pl))
	}
	// destroy of one trunk removes exactly its resources.
	out.Reset()
	if err := p.Destroy(ctx, "carrier-1", &out); err != nil {
		t.Fatal(err)
	}
	pl, _ = p.Plan(ctx)
	if got := actions(pl); got != "carrier-0/volume=nothing carrier-0/domain=nothing carrier-0/firewall=nothing carrier-1/volume=create carrier-1/domain=create carrier-1/firewall=create" {
		t.Errorf("after destroy carrier-1: %s\n%s", got, out.String())
	}
	if err := p.Destroy(ctx, "nope", &out); err == nil {
		t.Error("destroy of an unknown trunk succeeded")
	}
}

// TestLVMBackedApply provisions on real lvm2 (a loop-device volume group)
// with the libvirt test driver: block disks on the logical volumes.
func TestLVMBackedApply(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	h.vg = testenv.LoopVG(t)
	var out bytes.Buffer
	if _, err := h.provisioner(t, configYAML(h.dir, 2, nil)).Apply(ctx, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	st, err := h.conn.Get("vox-carrier-1")
	if err != nil || st == nil || st.Defined.DiskType != "block" || st.Defined.DiskPath != "/dev/"+h.vg+"/vox-carrier-1" || !st.Running {
		t.Fatalf("domain on LVM: %+v %v", st, err)
	}
	tags := testenv.Run(t, "lvs", "--noheadings", "-o", "lv_name,lv_tags,lv_size", "--units", "m", h.vg)
	if !strings.Contains(tags, "vox-carrier-0 voxvisor 64.00m") || !strings.Contains(tags, "vox-carrier-1 voxvisor 64.00m") {
		t.Fatalf("lvs:\n%s", tags)
	}
	// Growing carrier-0's disk is lvextend, then the running guest is told.
	p := h.provisioner(t, configYAML(h.dir, 2, func(s string) string { return strings.Replace(s, "size: 64M", "size: 96M", 1) }))
	if _, err := p.Apply(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if tags = testenv.Run(t, "lvs", "--noheadings", "-o", "lv_size", "--units", "m", h.vg+"/vox-carrier-0"); strings.TrimSpace(tags) != "96.00m" || len(h.resized) != 1 {
		t.Fatalf("after growing: %q, resized %v", tags, h.resized)
	}
	if pl, _ := p.Plan(ctx); pl.Pending() {
		t.Fatalf("second plan: %s", actions(pl))
	}
	if err := p.Destroy(ctx, "", &out); err != nil {
		t.Fatal(err)
	}
	if lvs := testenv.Run(t, "lvs", "--noheadings", "-o", "lv_name", h.vg); strings.Contains(lvs, "vox-") {
		t.Fatalf("destroy left %s", lvs)
	}
}

// TestLVMForeignVolume: a logical volume of a trunk's name without
// voxvisor's tag (someone's, in the same volume group) refuses that trunk
// in plan, apply and destroy; the other trunk is made and removed as
// usual, and the foreign volume is left as it was (real lvm2).
func TestLVMForeignVolume(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	h.vg = testenv.LoopVG(t)
	testenv.Run(t, "lvcreate", "-q", "--yes", "-n", "vox-carrier-1", "-L", "8m", h.vg)
	p := h.provisioner(t, configYAML(h.dir, 2, nil))
	pl, err := p.Plan(ctx)
	if err != nil {
		t.Fatalf("one foreign volume failed the whole plan: %v", err)
	}
	if c := pl.change("carrier-1", Volume); c == nil || !errors.Is(c.Err, volume.ErrNotOurs) || !strings.Contains(c.Err.Error(), "logical volume "+h.vg+"/vox-carrier-1 exists but was not created by voxvisor") {
		t.Fatalf("carrier-1's volume: %+v", c)
	}
	if r := pl.Refused(); len(r) != 1 || r[0] != "carrier-1" {
		t.Fatalf("refused %v", r)
	}
	var out bytes.Buffer
	if _, err := p.Apply(ctx, &out); err == nil || !strings.Contains(err.Error(), "trunk carrier-1: volume: logical volume") {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	if st, _ := h.conn.Get("vox-carrier-0"); st == nil || !st.Running {
		t.Fatalf("carrier-0 was not made beside the refused trunk:\n%s", out.String())
	}
	if st, _ := h.conn.Get("vox-carrier-1"); st != nil {
		t.Fatalf("carrier-1 got a guest: %+v", st)
	}
	out.Reset()
	if err := p.Destroy(ctx, "", &out); err == nil || !strings.Contains(err.Error(), "carrier-1") {
		t.Fatalf("destroy: %v\n%s", err, out.String())
	}
	lvs := testenv.Run(t, "lvs", "--noheadings", "-o", "lv_name,lv_tags,lv_size", "--units", "m", h.vg)
	if strings.Contains(lvs, "vox-carrier-0") || !strings.Contains(lvs, "vox-carrier-1") || !strings.Contains(lvs, "8.00m") {
		t.Fatalf("after destroy:\n%s\n%s", lvs, out.String())
	}
}

// TestPlanErrorsNameTheirTrunk: a change with several problems (a
// preflight check finds a missing network and more) gives one error per
// problem, each with its trunk and resource, so that each line of
// voxvisor's output says whose it is; ErrPreflight stays findable.
func TestPlanErrorsNameTheirTrunk(t *testing.T) {
	pl := &Plan{Changes: []Change{
		{Trunk: "a", Resource: Domain, Err: preflight{errors.Join(errors.New("no network x"), errors.New("no /dev/kvm"))}},
		{Trunk: "b", Resource: Volume, Err: errors.New("not ours")},
	}}
	err := pl.Err()
	if got := err.Error(); got != "trunk a: domain: no network x\ntrunk a: domain: no /dev/kvm\ntrunk b: volume: not ours" {
		t.Errorf("Err() =\n%s", got)
	}
	if !errors.Is(err, ErrPreflight) || errors.Is(pl.trunkErr("b", nil), ErrPreflight) || pl.trunkErr("a", ErrPreflight) != nil {
		t.Errorf("ErrPreflight is not where it belongs: %v", err)
	}
}
