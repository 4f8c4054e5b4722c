package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// TestLVMBaseRefusedByLVM: against real lvm2 (a loop-device volume group),
// a base volume that is missing, outside the thin pool, or one of
// voxvisor's own disks is refused by plan's check and by Create alike,
// before anything is made.
func TestLVMBaseRefusedByLVM(t *testing.T) {
	vg := testenv.LoopVG(t)
	ctx := context.Background()
	l := &LVM{VG: vg, ThinPool: "pool0", Base: "debian12", Run: Exec{}}
	try := func(want string) {
		t.Helper()
		for _, err := range []error{l.CheckImage(ctx, "", 64<<20), func() error { _, err := l.Create(ctx, "vox-a", 64<<20, ""); return err }()} {
			if !errors.Is(err, ErrNoBase) || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want ErrNoBase saying %q", err, want)
			}
		}
		if s, err := l.Get(ctx, "vox-a"); s != nil || err != nil {
			t.Fatalf("a refused base left a volume: %+v, %v", s, err)
		}
	}
	try("base volume " + vg + "/debian12 does not exist")
	testenv.Run(t, "lvcreate", "--yes", "-q", "-n", "debian12", "-L", "8m", vg)
	try(`is not in the thin pool pool0 (pool "")`)
	testenv.Run(t, "lvchange", "-q", "--addtag", Mark, vg+"/debian12")
	try("is a guest disk of voxvisor's")
	// An image given to the endpoint is cloned instead: the base is not
	// consulted, and a blank volume needs no base at all.
	if err := (&LVM{VG: vg, Run: Exec{}}).CheckImage(ctx, "", 64<<20); err != nil {
		t.Fatalf("a blank volume without a base: %v", err)
	}
}

// lvm2Thin stands in for lvm2 where this host cannot run it: lvm2 makes
// no thin volume without device-mapper, not even metadata-only ("Can't
// create thin without using device-mapper kernel driver"). It keeps the
// volume group as lvs would report it and applies lvcreate --snapshot,
// lvextend and lvremove as lvm2 does for thin volumes; failExtend makes
// lvextend fail as a full pool would.
type lvm2Thin struct {
	mu         sync.Mutex
	vg         string
	lvs        map[string]lvRow
	ran        []string
	failExtend bool
}

func (f *lvm2Thin) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, name+" "+strings.Join(args, " "))
	arg := func(flag string) string {
		if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	lv := func() string { return strings.TrimPrefix(args[len(args)-1], f.vg+"/") }
	switch name {
	case "lvs":
		var rows []lvRow
		for _, r := range f.lvs {
			rows = append(rows, r)
		}
		return json.Marshal(map[string]any{"report": []any{map[string]any{"lv": rows}}})
	case "lvcreate":
		origin, ok := f.lvs[lv()]
		if !slices.Contains(args, "--snapshot") || !ok {
			return nil, &CmdError{Cmd: name, Output: "unexpected lvcreate"}
		}
		n := arg("-n")
		f.lvs[n] = lvRow{Name: n, Size: origin.Size, Tags: arg("--addtag"), Path: "/dev/" + f.vg + "/" + n, Extent: origin.Extent, Pool: origin.Pool}
	case "lvextend":
		if f.failExtend {
			return nil, &CmdError{Cmd: name, Output: "Insufficient free space in thin pool"}
		}
		r := f.lvs[lv()]
		r.Size = strings.TrimSuffix(arg("-L"), "b")
		f.lvs[lv()] = r
	case "lvremove":
		delete(f.lvs, lv())
	default:
		return nil, fmt.Errorf("lvm2Thin: %s not expected", name)
	}
	return nil, nil
}

// TestLVMThinSnapshot: a new disk is a thin snapshot of the base volume,
// marked as voxvisor's, made activatable, then grown to its size; a
// failure to grow removes the snapshot; the base is never touched.
func TestLVMThinSnapshot(t *testing.T) {
	ctx := context.Background()
	mib := func(n int64) string { return strconv.FormatInt(n<<20, 10) }
	f := &lvm2Thin{vg: "vg0", lvs: map[string]lvRow{
		"pool0":    {Name: "pool0", Size: mib(1024), Extent: mib(4)},
		"debian12": {Name: "debian12", Size: mib(16), Extent: mib(4), Pool: "pool0"},
	}}
	l := &LVM{VG: "vg0", ThinPool: "pool0", Base: "debian12", Run: f}
	if got := l.Source(""); got != "a thin snapshot of vg0/debian12" {
		t.Errorf("Source = %q", got)
	}
	s, err := l.Create(ctx, "vox-a", 64<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != 64<<20 || s.Path != "/dev/vg0/vox-a" {
		t.Errorf("created %+v", s)
	}
	want := []string{
		"lvcreate --yes --snapshot --setactivationskip n -n vox-a --addtag voxvisor vg0/debian12",
		"lvextend --yes -L " + mib(64) + "b vg0/vox-a",
	}
	var changes []string
	for _, c := range f.ran {
		if !strings.HasPrefix(c, "lvs ") {
			changes = append(changes, c)
		}
	}
	if !slices.Equal(changes, want) {
		t.Errorf("lvm2 changes:\n%s\nwant:\n%s", strings.Join(changes, "\n"), strings.Join(want, "\n"))
	}
	if b := f.lvs["debian12"]; b.Size != mib(16) || b.Tags != "" {
		t.Errorf("the base changed: %+v", b)
	}
	if list, _ := l.List(ctx); len(list) != 1 || list[0].Name != "vox-a" {
		t.Errorf("List = %+v, want vox-a only (never the base or the pool)", list)
	}

	// The pool cannot give the size: the snapshot goes, and the error
	// says what lvm2 said.
	f.failExtend = true
	if _, err := l.Create(ctx, "vox-b", 64<<20, ""); err == nil || !strings.Contains(err.Error(), "Insufficient free space") {
		t.Fatalf("Create with a full pool: %v", err)
	}
	if _, ok := f.lvs["vox-b"]; ok {
		t.Error("a snapshot that could not be grown was left behind")
	}
	// A disk smaller than the base is refused before lvcreate.
	f.ran = nil
	if _, err := l.Create(ctx, "vox-c", 8<<20, ""); err == nil || !strings.Contains(err.Error(), "more than the volume's") {
		t.Fatalf("Create smaller than the base: %v", err)
	}
	if slices.ContainsFunc(f.ran, func(c string) bool { return strings.HasPrefix(c, "lvcreate") }) {
		t.Error("lvcreate ran for a disk smaller than its base")
	}
	// A base exactly the disk's size is not grown.
	f.failExtend = false
	f.ran = nil
	if _, err := l.Create(ctx, "vox-d", 16<<20, ""); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(f.ran, func(c string) bool { return strings.HasPrefix(c, "lvextend") }) {
		t.Error("lvextend ran for a disk the base's size")
	}
}
