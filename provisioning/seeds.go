package provisioning

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/voxvisor/voxvisor/provisioning/seed"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// Seeds keeps the guests' cloud-init seeds where the QEMU of their host
// reads them, content-hashed (seed.Seed.FileName): a new configuration
// is a new file, and the old one goes once the guest uses the new.
type Seeds interface {
	// Path is where the seed of domain is (or will be) on its host.
	Path(domain string, s seed.Seed) string
	Has(path string) (bool, error)
	// Put stores the seed unless it is there; wrote says it was made.
	Put(domain string, s seed.Seed) (path string, wrote bool, err error)
	Remove(path string) error
	// List gives the paths of domain's seeds, of any content.
	List(domain string) ([]string, error)
}

// dirSeeds keeps seeds in a directory of this host.
type dirSeeds string

func (d dirSeeds) Path(domain string, s seed.Seed) string {
	return filepath.Join(string(d), s.FileName(domain))
}

func (d dirSeeds) Has(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func (d dirSeeds) Put(domain string, s seed.Seed) (string, bool, error) {
	return s.Write(string(d), domain)
}

func (d dirSeeds) Remove(path string) error { return os.Remove(path) }

func (d dirSeeds) List(domain string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(string(d), domain+"-seed-*.iso"))
	return seedsOf(domain, m), err
}

// seedsOf keeps the paths that are domain's seeds: DOMAIN-seed-HASH.iso
// exactly, not another domain's whose name goes on (vox-a and
// vox-a-seed-b).
func seedsOf(domain string, paths []string) []string {
	var out []string
	for _, p := range paths {
		h, ok := strings.CutSuffix(strings.TrimPrefix(filepath.Base(p), domain+"-seed-"), ".iso")
		if ok && strings.HasPrefix(filepath.Base(p), domain+"-seed-") && seedHashRE.MatchString(h) {
			out = append(out, p)
		}
	}
	return out
}

var seedHashRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// poolSeeds keeps seeds as volumes of a libvirt storage pool, uploaded.
type poolSeeds struct{ *volume.Pool }

func (p poolSeeds) Path(domain string, s seed.Seed) string {
	return p.Pool.FilePath(s.FileName(domain))
}

func (p poolSeeds) Has(path string) (bool, error) { return p.HasFile(filepath.Base(path)) }

func (p poolSeeds) Put(domain string, s seed.Seed) (string, bool, error) {
	file := s.FileName(domain)
	if ok, err := p.HasFile(file); err != nil || ok {
		return p.FilePath(file), false, err
	}
	img, err := s.Image()
	if err != nil {
		return "", false, err
	}
	return p.PutFile(file, img)
}

func (p poolSeeds) Remove(path string) error { return p.RemoveFile(path) }

func (p poolSeeds) List(domain string) ([]string, error) {
	m, err := p.Files(domain+"-seed-", ".iso")
	return seedsOf(domain, m), err
}
