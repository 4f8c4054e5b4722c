// Package domain keeps each trunk's KVM guest through libvirt: the domain
// XML (libvirtxml) with voxvisor's mark and config hash in <metadata>, and
// the lifecycle: define, start, autostart, graceful stop, undefine. A
// domain without voxvisor's mark is never touched.
package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/netip"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// Namespace is voxvisor's XML namespace in a domain's <metadata>.
const Namespace = "https://voxvisor.dev/xmlns/endpoint/1"

// Spec is a guest as the configuration wants it.
type Spec struct {
	Name      string
	Trunk     string
	Type      string // kvm or qemu
	VCPUs     int
	MemoryKiB uint64
	DiskType  string // block (LVM) or file (dir)
	DiskPath  string
	SeedPath  string // cloud-init NoCloud ISO, attached as a cdrom
	MAC       string
	Bridge    string // exactly one of Bridge and Network
	Network   string
	Address   netip.Addr // for the libvirt network's DHCP host entry
	// Filter is the libvirt network filter on the interface (the
	// trunk's firewall on hosts of provision.hosts), or "".
	Filter    string
	Autostart bool
}

// Hash covers everything in the domain's definition; autostart is not in
// it (it changes live).
func (s *Spec) Hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s|%d|%d|%s|%s|%s|%s|%s|%s|%s", s.Name, s.Trunk, s.Type, s.VCPUs, s.MemoryKiB,
		s.DiskType, s.DiskPath, s.SeedPath, strings.ToLower(s.MAC), s.Bridge, s.Network, s.Address)
	if s.Filter != "" { // so that the hashes of guests without one stay
		fmt.Fprintf(h, "|%s", s.Filter)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// MAC derives a stable locally administered address in QEMU's 52:54:00
// range from the trunk's name, for endpoints that do not set one.
func MAC(trunk string) string {
	h := sha256.Sum256([]byte("voxvisor-mac:" + trunk))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}

// mark is what voxvisor writes into <metadata>.
type mark struct {
	XMLName xml.Name `xml:"endpoint"`
	Trunk   string   `xml:"trunk"`
	Hash    string   `xml:"hash"`
}

func (s *Spec) metadata() string {
	return fmt.Sprintf(`<voxvisor:endpoint xmlns:voxvisor=%q><voxvisor:trunk>%s</voxvisor:trunk><voxvisor:hash>%s</voxvisor:hash></voxvisor:endpoint>`,
		Namespace, xmlEscape(s.Trunk), s.Hash())
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// XML is the domain's definition.
func (s *Spec) XML() (string, error) { return s.xml("") }

// xml is the definition with the UUID of the domain it replaces, if any:
// libvirt redefines a domain only under its own UUID.
func (s *Spec) xml(uuid string) (string, error) {
	disk := libvirtxml.DomainDisk{
		Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
	}
	if s.DiskType == "block" {
		disk.Driver.Cache, disk.Driver.IO = "none", "native"
		disk.Source = &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: s.DiskPath}}
	} else {
		disk.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.DiskPath}}
	}
	seed := libvirtxml.DomainDisk{
		Device:   "cdrom",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
		Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.SeedPath}},
		Target:   &libvirtxml.DomainDiskTarget{Dev: "sda", Bus: "sata"},
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
	}
	nic := libvirtxml.DomainInterface{
		MAC:   &libvirtxml.DomainInterfaceMAC{Address: strings.ToLower(s.MAC)},
		Model: &libvirtxml.DomainInterfaceModel{Type: "virtio"},
	}
	if s.Bridge != "" {
		nic.Source = &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: s.Bridge}}
	} else {
		nic.Source = &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: s.Network}}
	}
	if s.Filter != "" {
		nic.FilterRef = &libvirtxml.DomainInterfaceFilterRef{Filter: s.Filter}
	}
	port := uint(0)
	d := &libvirtxml.Domain{
		Type:        s.Type,
		Name:        s.Name,
		UUID:        uuid,
		Description: "media endpoint of trunk " + s.Trunk + ", managed by voxvisor provision",
		Metadata:    &libvirtxml.DomainMetadata{XML: s.metadata()},
		Memory:      &libvirtxml.DomainMemory{Value: uint(s.MemoryKiB), Unit: "KiB"},
		VCPU:        &libvirtxml.DomainVCPU{Value: uint(s.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type:        &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "q35", Type: "hvm"},
			BootDevices: []libvirtxml.DomainBootDevice{{Dev: "hd"}},
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "restart",
		Devices: &libvirtxml.DomainDeviceList{
			Disks:      []libvirtxml.DomainDisk{disk, seed},
			Interfaces: []libvirtxml.DomainInterface{nic},
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port},
			}},
			Consoles: []libvirtxml.DomainConsole{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "virtio"},
		},
	}
	if s.Type == "kvm" {
		d.CPU = &libvirtxml.DomainCPU{Mode: "host-passthrough"}
	}
	out, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("domain %s: %w", s.Name, err)
	}
	return out + "\n", nil
}

// fromXML reads back what voxvisor compares from a live definition.
func fromXML(x string) (Spec, error) {
	var d libvirtxml.Domain
	if err := d.Unmarshal(x); err != nil {
		return Spec{}, err
	}
	s := Spec{Name: d.Name, Type: d.Type}
	if d.VCPU != nil {
		s.VCPUs = int(d.VCPU.Value)
	}
	if d.Memory != nil {
		s.MemoryKiB = kib(d.Memory.Value, d.Memory.Unit)
	}
	if d.Devices != nil {
		for _, disk := range d.Devices.Disks {
			if disk.Source == nil {
				continue
			}
			path, typ := "", ""
			switch {
			case disk.Source.Block != nil:
				path, typ = disk.Source.Block.Dev, "block"
			case disk.Source.File != nil:
				path, typ = disk.Source.File.File, "file"
			}
			switch disk.Device {
			case "disk":
				if s.DiskPath == "" {
					s.DiskPath, s.DiskType = path, typ
				}
			case "cdrom":
				s.SeedPath = path
			}
		}
		if len(d.Devices.Interfaces) > 0 {
			nic := d.Devices.Interfaces[0]
			if nic.MAC != nil {
				s.MAC = nic.MAC.Address
			}
			if nic.Source != nil && nic.Source.Bridge != nil {
				s.Bridge = nic.Source.Bridge.Bridge
			}
			if nic.Source != nil && nic.Source.Network != nil {
				s.Network = nic.Source.Network.Network
			}
			if nic.FilterRef != nil {
				s.Filter = nic.FilterRef.Filter
			}
		}
	}
	return s, nil
}

func kib(v uint, unit string) uint64 {
	switch strings.ToLower(unit) {
	case "b", "bytes":
		return uint64(v) / 1024
	case "m", "mib":
		return uint64(v) * 1024
	case "g", "gib":
		return uint64(v) << 20
	}
	return uint64(v)
}

// parseMark reads voxvisor's <metadata> element.
func parseMark(x string) (mark, error) {
	var m mark
	err := xml.Unmarshal([]byte(x), &m)
	return m, err
}
