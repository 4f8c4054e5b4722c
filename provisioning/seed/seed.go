// Package seed builds cloud-init NoCloud seeds: an ISO 9660 image labelled
// cidata holding meta-data, network-config and user-data, named by the hash
// of its content so that the same inputs give the same file.
package seed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/kdomanski/iso9660"
)

// Seed is what a guest learns at first boot.
type Seed struct {
	MetaData      []byte
	NetworkConfig []byte
	UserData      []byte
}

// Network is the guest's static address.
type Network struct {
	MAC     string
	Address netip.Prefix
	Gateway netip.Addr // may be invalid (none)
	DNS     []netip.Addr
}

// New builds the seed of one guest. instanceID changes whenever the guest's
// configuration does, so cloud-init runs again; userData may be nil.
func New(instanceID, hostname string, n Network, userData []byte) Seed {
	var md bytes.Buffer
	fmt.Fprintf(&md, "instance-id: %s\nlocal-hostname: %s\n", instanceID, hostname)

	// Network config version 2 (netplan form), matched by MAC so the name
	// of the NIC inside the guest does not matter.
	var nc bytes.Buffer
	nc.WriteString("version: 2\nethernets:\n  uplink:\n")
	fmt.Fprintf(&nc, "    match:\n      macaddress: %q\n    set-name: eth0\n", strings.ToLower(n.MAC))
	fmt.Fprintf(&nc, "    addresses:\n      - %s\n", n.Address)
	if n.Gateway.IsValid() {
		key := "gateway4"
		if n.Gateway.Is6() {
			key = "gateway6"
		}
		fmt.Fprintf(&nc, "    %s: %s\n", key, n.Gateway)
	}
	if len(n.DNS) > 0 {
		nc.WriteString("    nameservers:\n      addresses:\n")
		for _, d := range n.DNS {
			fmt.Fprintf(&nc, "        - %s\n", d)
		}
	}
	if userData == nil {
		userData = []byte("#cloud-config\n{}\n")
	}
	return Seed{MetaData: md.Bytes(), NetworkConfig: nc.Bytes(), UserData: userData}
}

// Hash identifies the seed's content: the first 16 hex digits of SHA-256
// over its three files.
func (s Seed) Hash() string {
	h := sha256.New()
	for _, b := range [][]byte{s.MetaData, s.NetworkConfig, s.UserData} {
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// FileName is the seed's name in the seed directory for a domain.
func (s Seed) FileName(domain string) string {
	return domain + "-seed-" + s.Hash() + ".iso"
}

// Write stores the seed as dir/FileName(domain), unless a file of that
// name (and so that content) is already there. It reports whether it
// wrote the file. The image is written beside and renamed into place.
func (s Seed) Write(dir, domain string) (path string, wrote bool, err error) {
	path = filepath.Join(dir, s.FileName(domain))
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("seed directory: %w", err)
	}
	img, err := s.Image()
	if err != nil {
		return "", false, err
	}
	tmp, err := os.CreateTemp(dir, ".seed-*")
	if err != nil {
		return "", false, fmt.Errorf("cloud-init seed: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(img); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("cloud-init seed: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Close(); err != nil {
		return "", false, fmt.Errorf("cloud-init seed: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", false, fmt.Errorf("cloud-init seed: %w", err)
	}
	return path, true, nil
}

// Image is the seed as an ISO 9660 image labelled cidata.
func (s Seed) Image() ([]byte, error) {
	w, err := iso9660.NewWriter()
	if err != nil {
		return nil, fmt.Errorf("cloud-init seed: %w", err)
	}
	defer w.Cleanup()
	for name, b := range map[string][]byte{"meta-data": s.MetaData, "network-config": s.NetworkConfig, "user-data": s.UserData} {
		if err := w.AddFile(bytes.NewReader(b), name); err != nil {
			return nil, fmt.Errorf("cloud-init seed: add %s: %w", name, err)
		}
	}
	var b bytes.Buffer
	if err := w.WriteTo(&b, "cidata"); err != nil {
		return nil, fmt.Errorf("cloud-init seed: %w", err)
	}
	return b.Bytes(), nil
}

// Read returns the files of a seed image, keyed by name as a Linux guest
// sees them (lower case, no version suffix): for tests and status.
func Read(path string) (map[string][]byte, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	img, err := iso9660.OpenImage(f)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	label, err := img.Label()
	if err != nil {
		return nil, "", err
	}
	root, err := img.RootDir()
	if err != nil {
		return nil, "", err
	}
	kids, err := root.GetChildren()
	if err != nil {
		return nil, "", err
	}
	out := map[string][]byte{}
	for _, k := range kids {
		var b bytes.Buffer
		if _, err := b.ReadFrom(k.Reader()); err != nil {
			return nil, "", err
		}
		name := strings.ToLower(strings.TrimSuffix(k.Name(), ";1"))
		out[name] = b.Bytes()
	}
	return out, label, nil
}
