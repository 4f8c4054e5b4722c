package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Dir keeps volumes as raw files in a directory, for hosts without LVM.
// A sidecar file NAME.raw.voxvisor is the mark.
type Dir struct {
	Dir string
	Run Runner
}

func (d *Dir) Kind() string            { return "dir" }
func (d *Dir) DiskType() string        { return "file" }
func (d *Dir) Path(name string) string { return filepath.Join(d.Dir, name+".raw") }
func (d *Dir) mark(name string) string { return d.Path(name) + "." + Mark }

func (d *Dir) Get(_ context.Context, name string) (*State, error) {
	fi, err := os.Stat(d.Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(d.mark(name)); err != nil {
		return nil, fmt.Errorf("image %s %w", d.Path(name), ErrNotOurs)
	}
	return &State{Name: name, Size: fi.Size(), Path: d.Path(name), Granule: 1}, nil
}

func (d *Dir) List(ctx context.Context) ([]State, error) {
	marks, err := filepath.Glob(filepath.Join(d.Dir, "*.raw."+Mark))
	if err != nil {
		return nil, err
	}
	names := make([]string, len(marks))
	for i, m := range marks {
		names[i] = strings.TrimSuffix(filepath.Base(m), ".raw."+Mark)
	}
	return getAll(ctx, names, d.Get)
}

// getAll gets the volumes of the marked names; a mark without its volume
// is skipped.
func getAll(ctx context.Context, names []string, get func(context.Context, string) (*State, error)) ([]State, error) {
	var out []State
	for _, n := range names {
		s, err := get(ctx, n)
		if err != nil {
			return nil, err
		}
		if s != nil {
			out = append(out, *s)
		}
	}
	return out, nil
}

func (d *Dir) Create(ctx context.Context, name string, size int64, image string) (*State, error) {
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("image directory: %w", err)
	}
	p := d.Path(name)
	if _, err := os.Stat(p); err == nil {
		return nil, fmt.Errorf("image %s %w", p, ErrNotOurs)
	}
	var format string
	if image != "" {
		var err error
		if format, err = checkImage(ctx, d.Run, image, size); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(d.mark(name), []byte(name+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("image directory: %w", err)
	}
	undo := func(err error) (*State, error) {
		os.Remove(p)
		os.Remove(d.mark(name))
		return nil, err
	}
	if image != "" {
		if err := cloneImage(ctx, d.Run, image, format, p, false); err != nil {
			return undo(err)
		}
	}
	if err := growFile(p, size); err != nil {
		return undo(err)
	}
	return d.Get(ctx, name)
}

// growFile creates or extends a sparse file to size bytes.
func growFile(p string, size int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < size {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("grow %s: %w", p, err)
		}
	}
	return f.Close()
}

func (d *Dir) Grow(ctx context.Context, name string, size int64) error {
	if err := d.exists(ctx, name); err != nil {
		return err
	}
	return growFile(d.Path(name), size)
}

func (d *Dir) Shrink(ctx context.Context, name string, size int64) error {
	if err := d.exists(ctx, name); err != nil {
		return err
	}
	if err := shrinkExt4(ctx, d.Run, d.Path(name), size); err != nil {
		return err
	}
	return os.Truncate(d.Path(name), size)
}

// exists fails unless name is one of voxvisor's images.
func (d *Dir) exists(ctx context.Context, name string) error {
	s, err := d.Get(ctx, name)
	if err == nil && s == nil {
		err = fmt.Errorf("no image %s", d.Path(name))
	}
	return err
}

func (d *Dir) Remove(ctx context.Context, name string) error {
	s, err := d.Get(ctx, name)
	if err != nil || s == nil {
		return err
	}
	if err := os.Remove(d.Path(name)); err != nil {
		return err
	}
	return os.Remove(d.mark(name))
}

func (d *Dir) CheckImage(ctx context.Context, image string, size int64) error {
	return checkFile(ctx, d.Run, image, size)
}

func (d *Dir) Source(image string) string { return image }
