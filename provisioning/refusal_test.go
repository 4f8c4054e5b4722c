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

	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// TestLibvirtdPlanErrors: against a real libvirtd, nft and qemu-img,
// plan finds per trunk what apply would fail on (issue 15 items 4, 5 and
// 7) and apply and destroy refuse exactly those trunks:
//   - nobridge: its bridge does not exist (was a normal create in plan);
//   - noimage: its base image does not exist (likewise);
//   - foreign: a guest of its name that voxvisor did not make;
//   - foreignimg: a disk image of its name without voxvisor's mark;
//   - with domain_type kvm, every guest to be (re)started, when QEMU's
//     user cannot open /dev/kvm (root:root 0600 on a fresh machine).
//
// One foreign resource used to fail the plan as a whole, so apply and
// destroy refused unrelated trunks; good must be made and removed as usual.
func TestLibvirtdPlanErrors(t *testing.T) {
	ns, dir, uri, base := libvirtdLab(t, "vxpe")
	images := filepath.Join(dir, "images")

	// What others made under the names voxvisor would use.
	foreignXML := filepath.Join(dir, "foreign.xml")
	os.WriteFile(foreignXML, []byte(`<domain type='qemu'><name>vox-foreign</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64' machine='q35'>hvm</type></os></domain>`), 0o644)
	testenv.Run(t, "virsh", "-c", uri, "define", foreignXML)
	foreignDef := testenv.Run(t, "virsh", "-c", uri, "dumpxml", "--inactive", "vox-foreign")
	os.MkdirAll(images, 0o755)
	foreignImg := filepath.Join(images, "vox-foreignimg.raw")
	os.WriteFile(foreignImg, []byte("someone's disk"), 0o644)

	yaml := func(domType string) string {
		var b strings.Builder
		fmt.Fprintf(&b, `sip:
  listen: [{transport: udp, address: 127.0.0.1:5060}]
provision:
  libvirt_uri: %s
  domain_type: %s
  shutdown_timeout: 1s
  storage: {backend: dir, dir: %s}
  firewall: {backend: nftables}
trunks:
`, uri, domType, images)
		for i, tr := range []struct{ name, bridge, image string }{
			{"good", "vxbr0", base}, {"nobridge", "nosuchbr0", base}, {"noimage", "vxbr0", filepath.Join(dir, "missing.qcow2")},
			{"foreign", "vxbr0", base}, {"foreignimg", "vxbr0", base},
		} {
			fmt.Fprintf(&b, `  - name: %s
    peers: [{host: 10.97.0.2}]
    endpoint:
      memory: 128M
      disk: {size: 64M, image: %s}
      network: {bridge: %s, address: 10.97.0.%d/24}
`, tr.name, tr.image, tr.bridge, 21+i)
		}
		return b.String()
	}
	ctx := context.Background()
	with := func(y string, f func(p *Provisioner) error) error { return withProvisioner(t, ns, "pe.yaml", y, f) }
	// errs maps trunk/resource to the change's error, "" for none.
	errs := func(pl *Plan) map[string]string {
		m := map[string]string{}
		for _, c := range pl.Changes {
			if c.Err != nil {
				m[c.Trunk+"/"+c.Resource] = c.Err.Error()
			}
		}
		return m
	}

	// plan: an error line per trunk, with what to do; good plans as usual.
	var pl *Plan
	var planOut, out bytes.Buffer
	err := with(yaml("qemu"), func(p *Provisioner) (err error) {
		pl, err = p.Plan(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pl.Write(&planOut)
	t.Logf("plan:\n%s", planOut.String())
	got := errs(pl)
	for key, want := range map[string]string{
		"nobridge/domain":   "bridge nosuchbr0 does not exist on this host: create it",
		"noimage/volume":    "base image " + filepath.Join(dir, "missing.qcow2") + " does not exist",
		"foreign/domain":    "domain vox-foreign exists but was not created by voxvisor",
		"foreignimg/volume": "image " + foreignImg + " exists but was not created by voxvisor",
	} {
		if !strings.Contains(got[key], want) {
			t.Errorf("plan error of %s = %q, want %q", key, got[key], want)
		}
		delete(got, key)
	}
	if len(got) != 0 {
		t.Errorf("unexpected plan errors: %v", got)
	}
	if r := strings.Join(pl.Refused(), " "); r != "nobridge noimage foreign foreignimg" {
		t.Errorf("refused %q", r)
	}
	for _, want := range []string{
		"good        volume    create   64M from " + base,
		"nobridge    domain    error    bridge nosuchbr0 does not exist",
		"nobridge    volume    refused  create: 64M",
		"3 change(s).",
		"4 trunk(s) with errors (nobridge, noimage, foreign, foreignimg): apply leaves them as they are",
	} {
		if !strings.Contains(planOut.String(), want) {
			t.Errorf("plan output lacks %q:\n%s", want, planOut.String())
		}
	}
	if !pl.Pending() || pl.Err() == nil {
		t.Errorf("plan: pending %v, err %v", pl.Pending(), pl.Err())
	}

	// apply makes good and nothing of the others; foreign things are as
	// they were.
	var st *domain.State
	var rules string
	err = with(yaml("qemu"), func(p *Provisioner) error {
		_, err := p.Apply(ctx, &out)
		st, _ = p.Domains.Get("vox-good")
		rules, _ = testenv.Try("nft", "list", "ruleset")
		return err
	})
	if err == nil {
		t.Fatalf("apply with refused trunks succeeded:\n%s", out.String())
	}
	for _, tr := range []string{"nobridge", "noimage", "foreign", "foreignimg"} {
		if !strings.Contains(err.Error(), "trunk "+tr+": ") || !strings.Contains(out.String(), tr+": refused: nothing changed") {
			t.Errorf("apply does not refuse %s: %v\n%s", tr, err, out.String())
		}
	}
	if !errors.Is(err, domain.ErrNotOurs) || !errors.Is(err, volume.ErrNotOurs) || !errors.Is(err, ErrPreflight) {
		t.Errorf("apply's error does not wrap the causes: %v", err)
	}
	if st == nil || !st.Running {
		t.Fatalf("good was not made: %+v\n%s", st, out.String())
	}
	doms := strings.Fields(testenv.Run(t, "virsh", "-c", uri, "list", "--all", "--name"))
	files, _ := filepath.Glob(filepath.Join(images, "*.raw"))
	if strings.Join(doms, " ") != "vox-good vox-foreign" && strings.Join(doms, " ") != "vox-foreign vox-good" {
		t.Errorf("domains after apply: %v", doms)
	}
	if len(files) != 2 || strings.Count(rules, "chain trunk-") != 1 || !strings.Contains(rules, "chain trunk-good") {
		t.Errorf("after apply: images %v, rules:\n%s", files, rules)
	}
	if b, _ := os.ReadFile(foreignImg); string(b) != "someone's disk" {
		t.Errorf("the foreign image was changed: %q", b)
	}
	if def := testenv.Run(t, "virsh", "-c", uri, "dumpxml", "--inactive", "vox-foreign"); def != foreignDef {
		t.Errorf("the foreign domain was changed:\n%s", def)
	}

	// domain_type kvm: every guest to be (re)started needs a /dev/kvm
	// that QEMU's user can open; plan says so before anything stops.
	err = with(yaml("kvm"), func(p *Provisioner) (err error) {
		pl, err = p.Plan(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got = errs(pl)
	t.Logf("kvm: %s", got["good/domain"])
	if kvmUsable(t) {
		if e := got["good/domain"]; e != "" {
			t.Errorf("QEMU can open /dev/kvm, and plan says %q", e)
		}
	} else {
		// QEMU's user cannot open it, or QEMU cannot run a KVM vCPU here.
		e := got["good/domain"]
		for _, want := range []string{"domain_type kvm", "provision.domain_type: qemu"} {
			if !strings.Contains(e, want) {
				t.Errorf("plan error of good/domain with domain_type kvm = %q, want %q", e, want)
			}
		}
		if !strings.Contains(e, "cannot open /dev/kvm") && !strings.Contains(e, "QEMU cannot run a KVM guest") {
			t.Errorf("plan error of good/domain with domain_type kvm = %q: says neither why", e)
		}
	}

	// destroy of everything removes good and refuses the foreign trunks;
	// the trunks that only lack something (preflight) have nothing to go.
	out.Reset()
	err = with(yaml("qemu"), func(p *Provisioner) error {
		err := p.Destroy(ctx, "", &out)
		rules, _ = testenv.Try("nft", "list", "ruleset")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "trunk foreign: domain") || !strings.Contains(err.Error(), "trunk foreignimg: volume") ||
		strings.Contains(err.Error(), "nobridge") || strings.Contains(err.Error(), "noimage") {
		t.Fatalf("destroy: %v\n%s", err, out.String())
	}
	doms = strings.Fields(testenv.Run(t, "virsh", "-c", uri, "list", "--all", "--name"))
	files, _ = filepath.Glob(filepath.Join(images, "*"))
	if strings.Join(doms, " ") != "vox-foreign" || len(files) != 1 || files[0] != foreignImg || strings.TrimSpace(rules) != "" {
		t.Fatalf("after destroy: domains %v, files %v, rules:\n%s\n%s", doms, files, rules, out.String())
	}
}
