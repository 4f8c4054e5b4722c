package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// LVM keeps volumes as logical volumes of one volume group, optionally in
// a thin pool, through the lvm2 commands.
//
// With a thin pool and a Base, a new volume is a thin snapshot of Base (a
// thin volume of the pool that holds the prepared guest image): made at
// once whatever its size, sharing Base's blocks until the guest writes
// them, then grown to the size asked. Base is only read; it is never
// voxvisor's and never removed.
type LVM struct {
	VG       string
	ThinPool string // empty: thick volumes
	Base     string // with ThinPool: new volumes are thin snapshots of it
	Run      Runner
}

func (l *LVM) Kind() string            { return "lvm" }
func (l *LVM) DiskType() string        { return "block" }
func (l *LVM) Path(name string) string { return "/dev/" + l.VG + "/" + name }

type lvRow struct {
	Name   string `json:"lv_name"`
	Size   string `json:"lv_size"`
	Tags   string `json:"lv_tags"`
	Path   string `json:"lv_path"`
	Extent string `json:"vg_extent_size"`
	Pool   string `json:"pool_lv"`
}

// report runs lvs on the volume group with a JSON report.
func (l *LVM) report(ctx context.Context) ([]lvRow, error) {
	out, err := l.Run.Run(ctx, "lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
		"-o", "lv_name,lv_size,lv_tags,lv_path,vg_extent_size,pool_lv", l.VG)
	if err != nil {
		return nil, fmt.Errorf("volume group %s: %w", l.VG, err)
	}
	var rep struct {
		Report []struct {
			LV []lvRow `json:"lv"`
		} `json:"report"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return nil, fmt.Errorf("volume group %s: lvs report: %w", l.VG, err)
	}
	var rows []lvRow
	for _, r := range rep.Report {
		rows = append(rows, r.LV...)
	}
	return rows, nil
}

func (l *LVM) state(r lvRow) State {
	size, _ := strconv.ParseInt(r.Size, 10, 64)
	ext, _ := strconv.ParseInt(r.Extent, 10, 64)
	p := r.Path
	if p == "" {
		p = l.Path(r.Name)
	}
	return State{Name: r.Name, Size: size, Path: p, Granule: ext}
}

func ours(tags string) bool { return slices.Contains(strings.Split(tags, ","), Mark) }

func (l *LVM) Get(ctx context.Context, name string) (*State, error) {
	rows, err := l.report(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.Name == name {
			if !ours(r.Tags) {
				return nil, fmt.Errorf("logical volume %s/%s %w", l.VG, name, ErrNotOurs)
			}
			s := l.state(r)
			return &s, nil
		}
	}
	return nil, nil
}

func (l *LVM) List(ctx context.Context) ([]State, error) {
	rows, err := l.report(ctx)
	if err != nil {
		return nil, err
	}
	var out []State
	for _, r := range rows {
		if ours(r.Tags) {
			out = append(out, l.state(r))
		}
	}
	return out, nil
}

func (l *LVM) Create(ctx context.Context, name string, size int64, image string) (*State, error) {
	if l.Base != "" && image == "" {
		return l.snapshot(ctx, name, size)
	}
	var format string
	if image != "" {
		var err error
		if format, err = checkImage(ctx, l.Run, image, size); err != nil {
			return nil, err
		}
	}
	args := []string{"--yes", "-n", name, "--addtag", Mark}
	if l.ThinPool != "" {
		args = append(args, "-V", sizeArg(size), "--thinpool", l.ThinPool, l.VG)
	} else {
		args = append(args, "-L", sizeArg(size), l.VG)
	}
	if _, err := l.Run.Run(ctx, "lvcreate", args...); err != nil {
		return nil, err
	}
	if image != "" {
		if err := cloneImage(ctx, l.Run, image, format, l.Path(name), true); err != nil {
			if rerr := l.Remove(ctx, name); rerr != nil {
				err = fmt.Errorf("%w; and removing the new volume failed: %v", err, rerr)
			}
			return nil, err
		}
	}
	return l.Get(ctx, name)
}

func (l *LVM) Grow(ctx context.Context, name string, size int64) error {
	_, err := l.Run.Run(ctx, "lvextend", "--yes", "-L", sizeArg(size), l.VG+"/"+name)
	return err
}

func (l *LVM) Shrink(ctx context.Context, name string, size int64) error {
	if err := shrinkExt4(ctx, l.Run, l.Path(name), size); err != nil {
		return err
	}
	_, err := l.Run.Run(ctx, "lvreduce", "--yes", "-L", sizeArg(size), l.VG+"/"+name)
	return err
}

func (l *LVM) Remove(ctx context.Context, name string) error {
	s, err := l.Get(ctx, name)
	if err != nil || s == nil {
		return err
	}
	_, err = l.Run.Run(ctx, "lvremove", "--yes", l.VG+"/"+name)
	return err
}

func sizeArg(n int64) string { return strconv.FormatInt(n, 10) + "b" }

func (l *LVM) CheckImage(ctx context.Context, image string, size int64) error {
	if image == "" {
		if l.Base == "" {
			return nil
		}
		_, err := l.base(ctx, size)
		return err
	}
	_, err := checkImage(ctx, l.Run, image, size)
	return err
}

func (l *LVM) Source(image string) string {
	if l.Base != "" && image == "" {
		return "a thin snapshot of " + l.VG + "/" + l.Base
	}
	return image
}

// ErrNoBase is returned when the base volume is missing or unusable.
var ErrNoBase = errors.New("cannot be the base of thin snapshots")

// base checks, changing nothing, that Base is a thin volume of ThinPool
// no larger than size, and returns its size.
func (l *LVM) base(ctx context.Context, size int64) (int64, error) {
	rows, err := l.report(ctx)
	if err != nil {
		return 0, err
	}
	i := slices.IndexFunc(rows, func(r lvRow) bool { return r.Name == l.Base })
	switch {
	case i < 0:
		return 0, fmt.Errorf("base volume %s/%s does not exist, so it %w: make it a thin volume of %s/%s holding the guest image, or unset provision.storage.base_volume", l.VG, l.Base, ErrNoBase, l.VG, l.ThinPool)
	case ours(rows[i].Tags):
		return 0, fmt.Errorf("base volume %s/%s is a guest disk of voxvisor's, so it %w: name a volume voxvisor did not make in provision.storage.base_volume", l.VG, l.Base, ErrNoBase)
	case rows[i].Pool != l.ThinPool:
		return 0, fmt.Errorf("base volume %s/%s is not in the thin pool %s (pool %q), so it %w: thin snapshots share their origin's pool", l.VG, l.Base, l.ThinPool, rows[i].Pool, ErrNoBase)
	}
	bs := l.state(rows[i]).Size
	if bs > size {
		return 0, fmt.Errorf("base volume %s/%s is %d bytes, more than the volume's %d: raise endpoint.disk.size", l.VG, l.Base, bs, size)
	}
	return bs, nil
}

// snapshot makes name a thin snapshot of Base, marked, activated like
// any volume (lvm2 sets thin snapshots to be skipped at activation), and
// grown to size. A failure after lvcreate removes the snapshot.
func (l *LVM) snapshot(ctx context.Context, name string, size int64) (*State, error) {
	bs, err := l.base(ctx, size)
	if err != nil {
		return nil, err
	}
	if _, err := l.Run.Run(ctx, "lvcreate", "--yes", "--snapshot", "--setactivationskip", "n",
		"-n", name, "--addtag", Mark, l.VG+"/"+l.Base); err != nil {
		return nil, err
	}
	if bs < size {
		if err := l.Grow(ctx, name, size); err != nil {
			if _, rerr := l.Run.Run(ctx, "lvremove", "--yes", l.VG+"/"+name); rerr != nil {
				err = fmt.Errorf("%w; and removing the new snapshot failed: %v", err, rerr)
			}
			return nil, err
		}
	}
	return l.Get(ctx, name)
}
