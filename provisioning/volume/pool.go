package volume

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirt"
)

// Pool keeps volumes in a libvirt storage pool of a host reached only
// through libvirt (provision.hosts): created, uploaded, resized and
// deleted with libvirt's storage API, so nothing but the libvirt
// connection is needed on the hypervisor. The pool must be a directory
// pool (dir, fs or netfs); its volumes are raw files NAME.raw, and a
// sidecar volume NAME.raw.voxvisor is the mark, as with Dir. The
// guests' cloud-init seeds are uploaded into the same pool (PutFile).
type Pool struct {
	c      *libvirt.Connect
	p      *libvirt.StoragePool
	name   string
	target string // the pool's directory on its host
	Run    Runner // qemu-img, run here on base images before upload
}

// OpenPool looks up the storage pool name on the connection c.
func OpenPool(c *libvirt.Connect, name string) (*Pool, error) {
	p, err := c.LookupStoragePoolByName(name)
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: %w (define it on that host, e.g. virsh pool-define-as %s dir --target /var/lib/voxvisor/images; virsh pool-build %s; virsh pool-start %s; virsh pool-autostart %s)", name, err, name, name, name, name)
	}
	if on, err := p.IsActive(); err != nil || !on {
		p.Free()
		return nil, fmt.Errorf("storage pool %s is not active: start it (virsh pool-start %s; virsh pool-autostart %s)", name, name, name)
	}
	x, err := p.GetXMLDesc(0)
	if err != nil {
		p.Free()
		return nil, fmt.Errorf("storage pool %s: %w", name, err)
	}
	var def struct {
		Type   string `xml:"type,attr"`
		Target struct {
			Path string `xml:"path"`
		} `xml:"target"`
	}
	if err := xml.Unmarshal([]byte(x), &def); err != nil {
		p.Free()
		return nil, fmt.Errorf("storage pool %s: %w", name, err)
	}
	switch def.Type {
	case "dir", "fs", "netfs":
	default:
		p.Free()
		return nil, fmt.Errorf("storage pool %s is of type %s: voxvisor keeps guests' disks in directory pools (dir, fs, netfs) on hosts of provision.hosts", name, def.Type)
	}
	// Files put there by hand or by another client are seen at once.
	if err := p.Refresh(0); err != nil {
		p.Free()
		return nil, fmt.Errorf("storage pool %s: refresh: %w", name, err)
	}
	return &Pool{c: c, p: p, name: name, target: def.Target.Path, Run: Exec{}}, nil
}

// Close frees the pool's handle.
func (p *Pool) Close() { p.p.Free() }

func (p *Pool) Kind() string            { return "pool" }
func (p *Pool) DiskType() string        { return "file" }
func (p *Pool) Path(name string) string { return path.Join(p.target, name+".raw") }

func (p *Pool) vol(file string) (*libvirt.StorageVol, error) {
	v, err := p.p.LookupStorageVolByName(file)
	var le libvirt.Error
	if errors.As(err, &le) && le.Code == libvirt.ERR_NO_STORAGE_VOL {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: volume %s: %w", p.name, file, err)
	}
	return v, nil
}

func (p *Pool) Get(_ context.Context, name string) (*State, error) {
	v, err := p.vol(name + ".raw")
	if v == nil || err != nil {
		return nil, err
	}
	defer v.Free()
	m, err := p.vol(name + ".raw." + Mark)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("volume %s in storage pool %s %w", name+".raw", p.name, ErrNotOurs)
	}
	m.Free()
	// The file's own size: libvirt's capacity comes from probing the
	// file's format, and a guest can write a qcow2 header onto its raw
	// disk.
	info, err := v.GetInfoFlags(libvirt.STORAGE_VOL_GET_PHYSICAL)
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: volume %s: %w", p.name, name, err)
	}
	return &State{Name: name, Size: int64(info.Allocation), Path: p.Path(name), Granule: 1}, nil
}

func (p *Pool) List(ctx context.Context) ([]State, error) {
	vols, err := p.p.ListAllStorageVolumes(0)
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: %w", p.name, err)
	}
	var names []string
	for i := range vols {
		if n, err := vols[i].GetName(); err == nil && strings.HasSuffix(n, ".raw."+Mark) {
			names = append(names, strings.TrimSuffix(n, ".raw."+Mark))
		}
		vols[i].Free()
	}
	return getAll(ctx, names, p.Get)
}

// create makes a raw volume of size bytes named file.
func (p *Pool) create(file string, size int64) (*libvirt.StorageVol, error) {
	// Allocation 0: a sparse file, not one written full of zeros first.
	x := fmt.Sprintf(`<volume><name>%s</name><capacity unit="bytes">%d</capacity><allocation>0</allocation><target><format type="raw"/></target></volume>`, xmlText(file), size)
	v, err := p.p.StorageVolCreateXML(x, 0)
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: create %s: %w", p.name, file, err)
	}
	return v, nil
}

func (p *Pool) Create(ctx context.Context, name string, size int64, image string) (*State, error) {
	file := name + ".raw"
	if v, err := p.vol(file); err != nil {
		return nil, err
	} else if v != nil {
		v.Free()
		return nil, fmt.Errorf("volume %s in storage pool %s %w", file, p.name, ErrNotOurs)
	}
	var format string
	if image != "" {
		var err error
		if format, err = checkImage(ctx, p.Run, image, size); err != nil {
			return nil, err
		}
	}
	undo := func(err error) (*State, error) {
		p.Remove(ctx, name)
		return nil, err
	}
	v, err := p.create(file, size)
	if err != nil {
		return nil, err
	}
	defer v.Free()
	if image != "" {
		// The image is converted here (qemu-img) and sent as raw data,
		// its holes as holes: the hypervisor needs no copy of it.
		tmp, err := os.CreateTemp("", "voxvisor-image-*.raw")
		if err != nil {
			return undo(fmt.Errorf("clone base image: %w", err))
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if err := cloneImage(ctx, p.Run, image, format, tmp.Name(), false); err != nil {
			return undo(err)
		}
		if err := p.upload(v, tmp.Name()); err != nil {
			return undo(fmt.Errorf("upload base image %s: %w", image, err))
		}
		// A file upload ends the file where the data ends.
		if info, err := v.GetInfoFlags(libvirt.STORAGE_VOL_GET_PHYSICAL); err != nil {
			return undo(fmt.Errorf("storage pool %s: volume %s: %w", p.name, file, err))
		} else if int64(info.Allocation) < size {
			if err := v.Resize(uint64(size), 0); err != nil {
				return undo(fmt.Errorf("storage pool %s: resize %s to %d bytes after the upload: %w", p.name, file, size, err))
			}
		}
	}
	// The mark last: a volume cut off mid-upload (apply killed) is not
	// taken for a whole one of ours, it is refused as not voxvisor's.
	m, err := p.create(file+"."+Mark, 0)
	if err != nil {
		return undo(err)
	}
	m.Free()
	return p.Get(ctx, name)
}

// upload sends the file at src into v, from offset 0, skipping holes.
func (p *Pool) upload(v *libvirt.StorageVol, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, err := p.c.NewStream(0)
	if err != nil {
		return err
	}
	defer st.Free()
	if err := v.Upload(st, 0, uint64(fi.Size()), libvirt.STORAGE_VOL_UPLOAD_SPARSE_STREAM); err != nil {
		return err
	}
	if err := sendSparse(st, f, fi.Size()); err != nil {
		st.Abort()
		return err
	}
	return st.Finish()
}

// sendSparse sends f's size bytes: its data with Send, its holes (found
// with SEEK_DATA and SEEK_HOLE) with SendHole.
func sendSparse(st *libvirt.Stream, f *os.File, size int64) error {
	fd := int(f.Fd())
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO { // a hole to the end
			data = size
		} else if err != nil {
			return err
		}
		if data > off {
			if err := st.SendHole(data-off, 0); err != nil {
				return err
			}
			off = data
			continue
		}
		hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for off < hole {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-off)], off)
			if n > 0 {
				if err := sendAll(st, buf[:n]); err != nil {
					return err
				}
				off += int64(n)
			}
			if err != nil && err != io.EOF {
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
		}
	}
	return nil
}

func sendAll(st *libvirt.Stream, b []byte) error {
	for len(b) > 0 {
		n, err := st.Send(b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (p *Pool) Grow(_ context.Context, name string, size int64) error {
	v, err := p.vol(name + ".raw")
	if err != nil {
		return err
	}
	if v == nil {
		return fmt.Errorf("storage pool %s: volume %s.raw is gone", p.name, name)
	}
	defer v.Free()
	if err := v.Resize(uint64(size), 0); err != nil {
		return fmt.Errorf("storage pool %s: grow %s.raw: %w", p.name, name, err)
	}
	return nil
}

// Shrink is refused: the file system check and resize2fs that make a
// shrink safe would have to run on the hypervisor.
func (p *Pool) Shrink(_ context.Context, name string, _ int64) error {
	return fmt.Errorf("volume %s in storage pool %s: shrinking is not done on hosts of provision.hosts (e2fsck and resize2fs would have to run there); set endpoint.disk.size back, or destroy the trunk's endpoint and apply again", name, p.name)
}

func (p *Pool) Remove(_ context.Context, name string) error {
	var errs []error
	for _, file := range []string{name + ".raw", name + ".raw." + Mark} {
		if err := p.delete(file); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Pool) delete(file string) error {
	v, err := p.vol(file)
	if v == nil || err != nil {
		return err
	}
	defer v.Free()
	if err := v.Delete(0); err != nil {
		return fmt.Errorf("storage pool %s: delete %s: %w", p.name, file, err)
	}
	return nil
}

func (p *Pool) CheckImage(ctx context.Context, image string, size int64) error {
	return checkFile(ctx, p.Run, image, size)
}

func (p *Pool) Source(image string) string { return image }

// FilePath is where the volume file is on the pool's host.
func (p *Pool) FilePath(file string) string { return path.Join(p.target, file) }

// PutFile stores data as the volume file unless it is there already, and
// returns its path on the host; wrote says it was made.
func (p *Pool) PutFile(file string, data []byte) (string, bool, error) {
	where := p.FilePath(file)
	if v, err := p.vol(file); err != nil {
		return "", false, err
	} else if v != nil {
		v.Free()
		return where, false, nil
	}
	v, err := p.create(file, int64(len(data)))
	if err != nil {
		return "", false, err
	}
	defer v.Free()
	tmp, err := os.CreateTemp("", "voxvisor-file-*")
	if err == nil {
		defer os.Remove(tmp.Name())
		_, err = tmp.Write(data)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = p.upload(v, tmp.Name())
	}
	if err != nil {
		v.Delete(0)
		return "", false, fmt.Errorf("storage pool %s: upload %s: %w", p.name, file, err)
	}
	return where, true, nil
}

// HasFile reports whether the volume file is in the pool.
func (p *Pool) HasFile(file string) (bool, error) {
	v, err := p.vol(file)
	if v != nil {
		v.Free()
	}
	return v != nil, err
}

// Files lists the pool's volume files whose names start with prefix and
// end with suffix, as paths on the host.
func (p *Pool) Files(prefix, suffix string) ([]string, error) {
	vols, err := p.p.ListAllStorageVolumes(0)
	if err != nil {
		return nil, fmt.Errorf("storage pool %s: %w", p.name, err)
	}
	var out []string
	for i := range vols {
		if n, err := vols[i].GetName(); err == nil && strings.HasPrefix(n, prefix) && strings.HasSuffix(n, suffix) {
			out = append(out, path.Join(p.target, n))
		}
		vols[i].Free()
	}
	return out, nil
}

// RemoveFile deletes the volume at the host path file, if it is there.
func (p *Pool) RemoveFile(file string) error { return p.delete(path.Base(file)) }

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
