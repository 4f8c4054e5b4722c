package volume

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Mark is the LVM tag (and, for the dir backend, the sidecar file's
// suffix) that says voxvisor made a volume.
const Mark = "voxvisor"

// ErrNotOurs is returned for a volume of the right name that lacks
// voxvisor's mark: it is left alone.
var ErrNotOurs = errors.New("exists but was not created by voxvisor (no voxvisor mark); rename or remove it by hand")

// ErrImageRefers is returned for a base image that names another file
// whose content qemu-img would read while cloning it: a backing file, a
// qcow2 external data file, a vmdk extent elsewhere. Whoever wrote the
// image could otherwise have any file of this host copied into a guest.
var ErrImageRefers = errors.New("refers to another file whose content cloning would copy into the guest's disk")

// imageFormats are the base image formats cloned; others may name files
// of their own (parallels descriptors, quorum) and are refused.
var imageFormats = []string{"raw", "qcow2", "qed", "vmdk", "vdi", "vhdx", "vpc"}

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
	// image is not empty. An image that names other files (a backing
	// file: ErrImageRefers) or is larger than size is refused before
	// anything is made.
	Create(ctx context.Context, name string, size int64, image string) (*State, error)
	// Grow enlarges a volume; the caller tells a running guest.
	Grow(ctx context.Context, name string, size int64) error
	// Shrink reduces a bare ext4 volume: e2fsck -f, resize2fs, then the
	// volume. The guest must be shut off.
	Shrink(ctx context.Context, name string, size int64) error
	// Remove deletes a volume of voxvisor's.
	Remove(ctx context.Context, name string) error
	// CheckImage checks, changing nothing, what Create will check of a
	// base image (or base volume): that it is there, fits in size bytes
	// and names no other file. Plan runs it for every volume to be made.
	CheckImage(ctx context.Context, image string, size int64) error
	// Source says what Create makes a volume from, given image: the
	// image, another volume, or "" for a blank one.
	Source(image string) string
}

// ErrNoImage is returned for a base image that is not there.
var ErrNoImage = errors.New("does not exist")

// checkImage reads image (any format qemu-img reads) with qemu-img info
// and returns its format, after checking that it fits in size bytes and
// that cloning it reads no other file. It runs before anything is made.
func checkImage(ctx context.Context, r Runner, image string, size int64) (string, error) {
	if fi, err := os.Stat(image); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("base image %s %w: put the image there or set endpoint.disk.image to one that exists", image, ErrNoImage)
	} else if err == nil && fi.IsDir() {
		return "", fmt.Errorf("base image %s is a directory: set endpoint.disk.image to an image file", image)
	}
	out, err := r.Run(ctx, "qemu-img", "info", "--output=json", image)
	if err != nil {
		return "", fmt.Errorf("base image: %w", err)
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("base image %s: qemu-img info: %w", image, err)
	}
	if err := info.selfContained(image); err != nil {
		return "", err
	}
	if info.VirtualSize > size {
		return "", fmt.Errorf("base image %s is %d bytes, more than the volume's %d: raise endpoint.disk.size", image, info.VirtualSize, size)
	}
	return info.Format, nil
}

// checkFile is CheckImage for backends whose images are files here: no
// image, nothing to check.
func checkFile(ctx context.Context, r Runner, image string, size int64) error {
	if image == "" {
		return nil
	}
	_, err := checkImage(ctx, r, image, size)
	return err
}

// cloneImage copies image, in format (from checkImage), onto dst as raw.
// existing says dst is a block device or file that must not be recreated.
func cloneImage(ctx context.Context, r Runner, image, format, dst string, existing bool) error {
	args := []string{"convert", "-f", format, "-O", "raw"}
	if existing {
		args = append(args, "-n")
	}
	if _, err := r.Run(ctx, "qemu-img", append(args, image, dst)...); err != nil {
		return fmt.Errorf("clone base image: %w", err)
	}
	return nil
}

// imageInfo is what qemu-img info --output=json says of an image (it does
// not open backing files without --backing-chain).
type imageInfo struct {
	VirtualSize     int64  `json:"virtual-size"`
	Format          string `json:"format"`
	BackingFilename string `json:"backing-filename"`
	FullBacking     string `json:"full-backing-filename"`
	Specific        struct {
		Type string `json:"type"`
		Data struct {
			DataFile string `json:"data-file"` // qcow2
			Extents  []struct {
				Filename string `json:"filename"`
			} `json:"extents"` // vmdk
		} `json:"data"`
	} `json:"format-specific"`
}

// selfContained refuses an image whose clone would read another file.
func (info *imageInfo) selfContained(image string) error {
	fix := "flatten it into a self-contained image first (qemu-img convert -O qcow2 " + image + " NEW.qcow2) and set endpoint.disk.image to that"
	if b := cmp.Or(info.FullBacking, info.BackingFilename); b != "" {
		return fmt.Errorf("base image %s has the backing file %s: it %w; %s", image, b, ErrImageRefers, fix)
	}
	if f := info.Specific.Data.DataFile; f != "" {
		return fmt.Errorf("base image %s has the external data file %s: it %w; %s", image, f, ErrImageRefers, fix)
	}
	for _, e := range info.Specific.Data.Extents {
		if filepath.Clean(e.Filename) != filepath.Clean(image) {
			return fmt.Errorf("base image %s has its data in the extent %s: it %w; %s", image, e.Filename, ErrImageRefers, fix)
		}
	}
	if !slices.Contains(imageFormats, info.Format) {
		return fmt.Errorf("base image %s is in the %s format, which voxvisor does not clone (it may name other files): convert it with qemu-img convert -O qcow2 %s NEW.qcow2 and set endpoint.disk.image to that",
			image, info.Format, image)
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
