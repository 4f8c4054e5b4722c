package volume

import (
	"context"
	"errors"
	"os"
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
