// Package provisioning turns the configuration's trunks into
// infrastructure: per trunk with an endpoint, a volume (LVM or a raw file),
// a KVM guest booted with a cloud-init seed (libvirt), and firewall rules
// (nftables or iptables). It works as data: the configuration gives the
// desired state, the backends report the actual state, Plan compares them
// per resource, Apply makes the changes trunk by trunk in dependency order
// (volume, seed, domain, firewall) and undoes a trunk's completed steps in
// reverse when one fails. It never runs in the call path.
package provisioning

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"sort"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/provisioning/seed"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// Prefix starts the names of voxvisor's domains and volumes.
const Prefix = "vox-"

// Trunk is one trunk's desired infrastructure.
type Trunk struct {
	Name        string
	Resource    string // the domain's and the volume's name
	Size        int64  // volume bytes
	Image       string
	AllowShrink bool
	Seed        seed.Seed
	Domain      domain.Spec
	Firewall    *firewall.Rules // nil with firewall backend none
}

// Desired reads the trunks with an endpoint from the configuration, those
// that here says are placed on this host (all, when here is nil), with
// their firewall rules when the host has a firewall backend.
// Warnings are things an operator should know that do not stop apply.
// The volumes live in vols and the seeds in seeds, which give the disks
// and seeds their paths.
func Desired(cfg *config.Config, vols volume.Store, seeds Seeds, firewalled bool, here func(trunk string) bool) ([]*Trunk, []string, error) {
	var out []*Trunk
	var warn []string
	udp, tcp := ports(cfg)
	for i := range cfg.Trunks {
		t := &cfg.Trunks[i]
		e := t.Endpoint
		if e == nil || (here != nil && !here(t.Name)) {
			continue
		}
		name := Prefix + t.Name
		addr := netip.MustParsePrefix(e.Network.Address) // validated
		mac := e.Network.MAC
		if mac == "" {
			mac = domain.MAC(t.Name)
		}
		var userData []byte
		if e.UserData != "" {
			b, err := os.ReadFile(e.UserData)
			if err != nil {
				return nil, nil, fmt.Errorf("trunk %s: endpoint.user_data: %w", t.Name, err)
			}
			userData = b
		}
		n := seed.Network{MAC: mac, Address: addr}
		if e.Network.Gateway != "" {
			n.Gateway = netip.MustParseAddr(e.Network.Gateway)
		}
		for _, d := range e.Network.DNS {
			n.DNS = append(n.DNS, netip.MustParseAddr(d))
		}
		s := seed.New(instanceID(name, n, userData), name, n, userData)
		tr := &Trunk{
			Name: t.Name, Resource: name,
			Size: e.Disk.SizeBytes, Image: e.Disk.Image, AllowShrink: e.Disk.AllowShrink,
			Seed: s,
			Domain: domain.Spec{
				Name: name, Trunk: t.Name, Type: cfg.Provision.DomainType,
				VCPUs: e.VCPUs, MemoryKiB: uint64(e.MemoryBytes >> 10),
				DiskType: vols.DiskType(), DiskPath: vols.Path(name),
				SeedPath: seeds.Path(name, s),
				MAC:      mac, Bridge: e.Network.Bridge, Network: e.Network.Network,
				Address: addr.Addr(), Autostart: *e.Autostart,
			},
		}
		if firewalled {
			r, w := trunkRules(cfg, t, addr.Addr(), udp, tcp)
			tr.Firewall, warn = r, append(warn, w...)
		}
		out = append(out, tr)
	}
	return out, warn, nil
}

// FirewallRules are the firewall rules of the trunks with an endpoint, as
// apply puts them into this host's kernel (none with
// provision.firewall.backend: none, nor with provision.hosts, whose rules
// are on the hypervisors): what serve reads the counters of.
func FirewallRules(cfg *config.Config) []*firewall.Rules {
	if cfg.Provision.Firewall.Backend == "none" || len(cfg.Provision.Hosts) > 0 {
		return nil
	}
	udp, tcp := ports(cfg)
	var out []*firewall.Rules
	for i := range cfg.Trunks {
		t := &cfg.Trunks[i]
		if t.Endpoint == nil {
			continue
		}
		r, _ := trunkRules(cfg, t, netip.MustParsePrefix(t.Endpoint.Network.Address).Addr(), udp, tcp)
		out = append(out, r)
	}
	return out
}

// trunkRules are trunk t's firewall rules for its endpoint at addr: SIP
// and media from its peers and inbound networks only.
func trunkRules(cfg *config.Config, t *config.Trunk, addr netip.Addr, udp, tcp []firewall.PortRange) (*firewall.Rules, []string) {
	var warn []string
	r := &firewall.Rules{Trunk: t.Name, Dest: addr, UDPPorts: udp, TCPPorts: tcp, LogRate: cfg.Provision.Firewall.LogRate}
	for _, c := range t.Inbound.CIDRs {
		r.Peers = append(r.Peers, netip.MustParsePrefix(c).Masked())
	}
	for _, p := range t.Peers {
		if a, err := netip.ParseAddr(p.Host); err == nil {
			r.Peers = append(r.Peers, netip.PrefixFrom(a, a.BitLen()))
		} else {
			warn = append(warn, fmt.Sprintf("trunk %s: peer %s is a name, not an address: list its addresses in inbound.cidrs for the firewall to let it in", t.Name, p.Host))
		}
	}
	// Peer addresses inside an inbound CIDR are let in by the CIDR.
	r.Peers = firewall.Cover(r.Peers)
	if len(r.Peers) == 0 {
		warn = append(warn, fmt.Sprintf("trunk %s: no peer addresses: its firewall drops all SIP and media to %s", t.Name, addr))
	}
	return r, warn
}

// instanceID changes when what cloud-init configures changes, so that it
// runs again at the next boot.
func instanceID(name string, n seed.Network, userData []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s|%s|%v|", name, n.MAC, n.Address, n.Gateway, n.DNS)
	h.Write(userData)
	return name + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// ports are the SIP listeners' ports and the relay's range, as serve
// listens on them.
func ports(cfg *config.Config) (udp, tcp []firewall.PortRange) {
	seen := map[string]bool{}
	for _, l := range cfg.SIP.Listen {
		ap, err := netip.ParseAddrPort(l.Address)
		if err != nil {
			continue
		}
		p := firewall.PortRange{Lo: ap.Port(), Hi: ap.Port()}
		proto := "udp"
		if l.Transport == "tcp" || l.Transport == "tls" {
			proto = "tcp" // TLS runs over TCP
		}
		key := proto + fmt.Sprint(p.Lo)
		if seen[key] {
			continue
		}
		seen[key] = true
		if proto == "tcp" {
			tcp = append(tcp, p)
		} else {
			udp = append(udp, p)
		}
	}
	sortPorts(udp)
	sortPorts(tcp)
	udp = append(udp, firewall.PortRange{Lo: uint16(cfg.Media.PortMin), Hi: uint16(cfg.Media.PortMax)})
	return udp, tcp
}

func sortPorts(p []firewall.PortRange) {
	sort.Slice(p, func(i, j int) bool { return p[i].Lo < p[j].Lo })
}
