package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// fsStub runs lvm2 for real and answers the file-system tools, which need
// a device node that this host (no device-mapper, activation = 0) cannot
// give a logical volume. It records what it answered.
type fsStub struct {
	real Runner
	mu   sync.Mutex
	ran  []string
}

func (f *fsStub) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	switch name {
	case "blkid", "e2fsck", "resize2fs":
		f.mu.Lock()
		f.ran = append(f.ran, name)
		f.mu.Unlock()
		if name == "blkid" {
			return []byte("ext4\n"), nil
		}
		return nil, nil
	}
	return f.real.Run(ctx, name, args...)
}

func TestLVM(t *testing.T) {
	vg := testenv.LoopVG(t)
	ctx := context.Background()
	run := &fsStub{real: Exec{}}
	l := &LVM{VG: vg, Run: run}

	// A volume that is not ours is never touched.
	testenv.Run(t, "lvcreate", "--yes", "-q", "-n", "vox-foreign", "-L", "8m", vg)
	if _, err := l.Get(ctx, "vox-foreign"); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("Get of an untagged volume: %v, want ErrNotOurs", err)
	}
	if err := l.Remove(ctx, "vox-foreign"); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("Remove of an untagged volume: %v, want ErrNotOurs", err)
	}

	s, err := l.Create(ctx, "vox-a", 32<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != 32<<20 || s.Path != "/dev/"+vg+"/vox-a" || s.Granule != 4<<20 {
		t.Errorf("created %+v", s)
	}
	tags, err := Exec{}.Run(ctx, "lvs", "--noheadings", "-o", "lv_tags", vg+"/vox-a")
	if err != nil || strings.TrimSpace(string(tags)) != Mark {
		t.Errorf("tags %q, want %q", tags, Mark)
	}
	if err := l.Grow(ctx, "vox-a", 64<<20); err != nil {
		t.Fatal(err)
	}
	// Drift: lvs is the truth, whatever changed it.
	testenv.Run(t, "lvextend", "-q", "-L", "72m", vg+"/vox-a")
	if s, _ = l.Get(ctx, "vox-a"); s == nil || s.Size != 72<<20 {
		t.Fatalf("after an lvextend by hand: %+v, want 72 MiB", s)
	}
	if err := l.Shrink(ctx, "vox-a", 16<<20); err != nil {
		t.Fatal(err)
	}
	if s, _ = l.Get(ctx, "vox-a"); s == nil || s.Size != 16<<20 {
		t.Fatalf("after Shrink: %+v", s)
	}
	if want := []string{"blkid", "e2fsck", "resize2fs"}; !slices.Equal(run.ran, want) {
		t.Errorf("file-system steps %v, want %v in that order", run.ran, want)
	}
	list, err := l.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "vox-a" {
		t.Fatalf("List = %+v, %v; want only vox-a", list, err)
	}
	if err := l.Remove(ctx, "vox-a"); err != nil {
		t.Fatal(err)
	}
	if s, err := l.Get(ctx, "vox-a"); s != nil || err != nil {
		t.Fatalf("after Remove: %+v, %v", s, err)
	}
	// A base image with a backing file is refused before lvcreate: no
	// volume is made, and the error names both files.
	if _, err := exec.LookPath("qemu-img"); err == nil {
		over, backing := backedImage(t)
		_, err := l.Create(ctx, "vox-backed", 32<<20, over)
		if !errors.Is(err, ErrImageRefers) || !strings.Contains(err.Error(), "base image "+over+" has the backing file "+backing) {
			t.Fatalf("Create from an image with a backing file: %v", err)
		}
		if s, err := l.Get(ctx, "vox-backed"); s != nil || err != nil {
			t.Fatalf("a refused image left a volume: %+v, %v", s, err)
		}
	}
	// A failing command names itself and says what lvm2 said.
	_, err = l.Create(ctx, "vox-big", 1<<40, "")
	var ce *CmdError
	if !errors.As(err, &ce) || !strings.Contains(ce.Cmd, "lvcreate") || !strings.Contains(ce.Output, "insufficient free space") {
		t.Fatalf("Create too big: %v", err)
	}
}

func TestDirShrinkExt4(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "resize2fs", "blkid", "qemu-img"} {
		testenv.Need(t, tool)
	}
	ctx := context.Background()
	d := &Dir{Dir: t.TempDir(), Run: Exec{}}

	// A base image in another format is cloned and grown to the size.
	base := filepath.Join(t.TempDir(), "base.qcow2")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	s, err := d.Create(ctx, "vox-a", 64<<20, base)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != 64<<20 {
		t.Fatalf("size %d", s.Size)
	}
	if _, err := d.Create(ctx, "vox-small", 8<<20, base); err == nil || !strings.Contains(err.Error(), "raise endpoint.disk.size") {
		t.Fatalf("an image larger than the volume: %v", err)
	}
	if _, err := os.Stat(d.Path("vox-small")); !os.IsNotExist(err) {
		t.Error("a failed Create left its file")
	}
	// Not ext4: refused.
	if err := d.Shrink(ctx, "vox-a", 32<<20); err == nil || !strings.Contains(err.Error(), "only a bare ext4") {
		t.Fatalf("shrinking a volume without ext4: %v", err)
	}
	testenv.Run(t, "mkfs.ext4", "-q", "-F", d.Path("vox-a"))
	if err := d.Grow(ctx, "vox-a", 96<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Shrink(ctx, "vox-a", 32<<20); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "e2fsck", "-f", "-n", d.Path("vox-a"))
	if s, _ = d.Get(ctx, "vox-a"); s.Size != 32<<20 {
		t.Fatalf("after Shrink %d", s.Size)
	}
	// A file without the mark is not ours.
	os.WriteFile(d.Path("vox-b"), nil, 0o644)
	if _, err := d.Get(ctx, "vox-b"); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("unmarked file: %v", err)
	}
	if list, _ := d.List(ctx); len(list) != 1 {
		t.Fatalf("List = %+v", list)
	}
	if err := d.Remove(ctx, "vox-a"); err != nil {
		t.Fatal(err)
	}
	if list, _ := d.List(ctx); len(list) != 0 {
		t.Fatalf("after Remove: %+v", list)
	}
}

// backedImage makes a qcow2 image whose backing file is a "host file"
// holding a secret, as an attacker who supplies the base image would.
func backedImage(t *testing.T) (image, backing string) {
	t.Helper()
	testenv.Need(t, "qemu-img")
	dir := t.TempDir()
	backing = filepath.Join(dir, "host-secret")
	if err := os.WriteFile(backing, append([]byte("host secret\n"), make([]byte, 1<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	image = filepath.Join(dir, "base.qcow2")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", image, "16M")
	return image, backing
}

// TestImageReferringElsewhereRefused: a base image that would make
// qemu-img read another file of the host (a backing file, a qcow2
// external data file, a vmdk extent) is refused before anything is made;
// flattened, the same content is cloned.
func TestImageReferringElsewhereRefused(t *testing.T) {
	testenv.Need(t, "qemu-img")
	ctx := context.Background()
	d := &Dir{Dir: t.TempDir(), Run: Exec{}}
	over, backing := backedImage(t)
	dir := filepath.Dir(over)
	dataFile := filepath.Join(dir, "data.raw")
	ext := filepath.Join(dir, "ext.qcow2")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+dataFile+",data_file_raw=on", ext, "16M")
	flat := filepath.Join(dir, "flat.vmdk")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat, "16M")

	for _, tc := range []struct{ image, want string }{
		{over, "base image " + over + " has the backing file " + backing + ": it refers to another file whose content cloning would copy into the guest's disk; flatten it"},
		{ext, "base image " + ext + " has the external data file " + dataFile},
		{flat, "base image " + flat + " has its data in the extent " + filepath.Join(dir, "flat-flat.vmdk")},
	} {
		_, err := d.Create(ctx, "vox-a", 64<<20, tc.image)
		if !errors.Is(err, ErrImageRefers) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Create from %s: %v\nwant %q", filepath.Base(tc.image), err, tc.want)
		}
		if ents, _ := os.ReadDir(d.Dir); len(ents) != 0 {
			t.Fatalf("a refused image left %v in the image directory", ents)
		}
	}

	// Flattened as the error says, it is cloned, backing content and all:
	// the operator chose to copy it.
	flattened := filepath.Join(dir, "flattened.qcow2")
	testenv.Run(t, "qemu-img", "convert", "-O", "qcow2", over, flattened)
	s, err := d.Create(ctx, "vox-a", 64<<20, flattened)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(s.Path)
	if !bytes.HasPrefix(got, []byte("host secret\n")) || s.Size != 64<<20 {
		t.Fatalf("flattened clone: %d bytes starting %q", s.Size, got[:min(len(got), 16)])
	}
	// A self-contained vmdk (its one extent is itself) is cloned too.
	sparse := filepath.Join(dir, "sparse.vmdk")
	testenv.Run(t, "qemu-img", "create", "-q", "-f", "vmdk", sparse, "16M")
	if _, err := d.Create(ctx, "vox-b", 64<<20, sparse); err != nil {
		t.Fatalf("a monolithicSparse vmdk: %v", err)
	}
}
