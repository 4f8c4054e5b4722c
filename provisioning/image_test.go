package provisioning

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// TestApplyRefusesBackedImage: a trunk whose base image has a backing
// file (a qcow2 made with qemu-img that points at a "host file") gets no
// volume, no seed and no guest, and apply says which image and which file
// and how to flatten it; the other trunk is provisioned as usual.
func TestApplyRefusesBackedImage(t *testing.T) {
	testenv.Need(t, "qemu-img")
	ctx := context.Background()
	h := newHost(t)
	src := t.TempDir()
	secret := filepath.Join(src, "shadow")
	if err := os.WriteFile(secret, append([]byte("root:x:0:0\n"), make([]byte, 1<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(src, "base.qcow2")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", image, "16M")

	yaml := configYAML(h.dir, 2, func(s string) string {
		return strings.Replace(s, "size: 64M", "size: 64M\n        image: "+image, 1)
	})
	p := h.provisioner(t, yaml)
	// plan says so already, as an error of carrier-0's volume.
	pl, err := p.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := pl.Changes[0]; c.Trunk != "carrier-0" || c.Resource != Volume || !errors.Is(c.Err, volume.ErrImageRefers) || !errors.Is(c.Err, ErrPreflight) {
		t.Fatalf("plan's first change: %+v", c)
	}
	var out bytes.Buffer
	_, err = p.Apply(ctx, &out)
	want := "base image " + image + " has the backing file " + secret
	if !errors.Is(err, volume.ErrImageRefers) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "flatten it") {
		t.Fatalf("apply = %v\nwant an error with %q\n%s", err, want, out.String())
	}
	if !strings.Contains(err.Error(), "carrier-0") {
		t.Errorf("the error does not name the trunk: %v", err)
	}
	pl, perr := p.Plan(ctx)
	if perr != nil {
		t.Fatal(perr)
	}
	if got := actions(pl); got != "carrier-0/volume=create carrier-0/domain=create carrier-0/firewall=create "+
		"carrier-1/volume=nothing carrier-1/domain=nothing carrier-1/firewall=nothing" {
		t.Fatalf("after the refused apply: %s\n%s", got, out.String())
	}
	if _, err := os.Stat(filepath.Join(h.dir, "images", "vox-carrier-0.raw")); !os.IsNotExist(err) {
		t.Fatalf("a volume was made from the refused image: %v", err)
	}
}
