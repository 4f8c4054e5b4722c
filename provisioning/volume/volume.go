package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Mark is the LVM tag (and, for the dir backend, the sidecar file's
// suffix) that says voxvisor made a volume.
const Mark = "voxvisor"

// ErrNotOurs is returned for a volume of the right name that lacks
// voxvisor's mark: it is left alone.
var ErrNotOurs = errors.New("exists but was not created by voxvisor (no voxvisor mark); rename or remove it by hand")

// State is a volume as it is.
type State struct {
	Name string
	Size int64  // bytes
	Path string // device node or file
	// Granule is the allocation unit (the LVM extent size); a size within
	// one granule above the wanted one is no change.
	Granule int64
}

// Store is a backend for guest disks.
type Store interface {
	// Kind is lvm or dir; DiskType is libvirt's disk type for its paths
	// (block or file).
	Kind() string
	DiskType() string
	// Path is where a volume of that name is (or will be).
	Path(name string) string
	// Get returns the volume, nil when there is none, or ErrNotOurs.
	Get(ctx context.Context, name string) (*State, error)
	// List returns voxvisor's volumes.
	List(ctx context.Context) ([]State, error)
	// Create makes a volume of size bytes, cloning image onto it when
	// image is not empty.
	Create(ctx context.Context, name string, size int64, image string) (*State, error)
	// Grow enlarges a volume; the caller tells a running guest.
	Grow(ctx context.Context, name string, size int64) error
	// Shrink reduces a bare ext4 volume: e2fsck -f, resize2fs, then the
	// volume. The guest must be shut off.
	Shrink(ctx context.Context, name string, size int64) error
	// Remove deletes a volume of voxvisor's.
	Remove(ctx context.Context, name string) error
}

// cloneImage copies image (any format qemu-img reads) onto dst as raw,
// after checking it fits in size bytes. existing says dst is a block
// device or file that must not be recreated.
func cloneImage(ctx context.Context, r Runner, image, dst string, size int64, existing bool) error {
	out, err := r.Run(ctx, "qemu-img", "info", "--output=json", image)
	if err != nil {
		return fmt.Errorf("base image: %w", err)
	}
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return fmt.Errorf("base image %s: qemu-img info: %w", image, err)
	}
	if info.VirtualSize > size {
		return fmt.Errorf("base image %s is %d bytes, more than the volume's %d: raise endpoint.disk.size", image, info.VirtualSize, size)
	}
	args := []string{"convert", "-f", info.Format, "-O", "raw"}
	if existing {
		args = append(args, "-n")
	}
	if _, err := r.Run(ctx, "qemu-img", append(args, image, dst)...); err != nil {
		return fmt.Errorf("clone base image: %w", err)
	}
	return nil
}

// shrinkExt4 checks that path holds a bare ext4 file system and shrinks
// it to size bytes: e2fsck -f first, as resize2fs demands.
func shrinkExt4(ctx context.Context, r Runner, path string, size int64) error {
	out, err := r.Run(ctx, "blkid", "-p", "-o", "value", "-s", "TYPE", path)
	if fs := strings.TrimSpace(string(out)); err != nil || fs != "ext4" {
		if fs == "" {
			fs = "no file system blkid recognises"
		}
		return fmt.Errorf("refusing to shrink %s: it holds %s, and only a bare ext4 volume is shrunk", path, fs)
	}
	if _, err := r.Run(ctx, "e2fsck", "-f", "-p", path); err != nil {
		return fmt.Errorf("shrink %s: %w", path, err)
	}
	if _, err := r.Run(ctx, "resize2fs", path, strconv.FormatInt(size/1024, 10)+"K"); err != nil {
		return fmt.Errorf("shrink %s: %w", path, err)
	}
	return nil
}
