package provisioning

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// Domains is the libvirt side; *domain.Conn implements it.
type Domains interface {
	Get(name string) (*domain.State, error)
	List() ([]domain.State, error)
	Define(s *domain.Spec) error
	DefineXML(x string) error
	XML(name string) (string, error)
	Start(name string) error
	SetAutostart(name string, on bool) error
	Stop(ctx context.Context, name string, timeout time.Duration) error
	Undefine(name string) error
	BlockResize(name string, size int64) error
	DHCPHost(network string, s *domain.Spec, add bool) error
	HasDHCPHost(network string, s *domain.Spec) (bool, error)
	// Preflight checks what starting the guest needs: its bridge or
	// libvirt network, a /dev/kvm QEMU can open for domain_type kvm.
	Preflight(s *domain.Spec) error
}

// Provisioner plans and applies one host's part of a configuration's
// infrastructure: all of it without provision.hosts, else the trunks
// placed on its host (see Fleet).
type Provisioner struct {
	// Host is the provision.hosts entry; "" for the one host of
	// libvirt_uri.
	Host     string
	Volumes  volume.Store
	Seeds    Seeds
	Domains  Domains
	Firewall firewall.Backend // nil: firewall backend none
	// ShutdownTimeout bounds the wait for a guest's ACPI shutdown.
	ShutdownTimeout time.Duration
	// ForceStop powers a guest off at once (virsh destroy) where a change
	// needs it stopped, instead of asking it to shut down and waiting up
	// to ShutdownTimeout (apply --force-stop). Set it before Plan: the
	// plan's expected downtime depends on it.
	ForceStop bool
	Log       *slog.Logger

	desired  []*Trunk
	warnings []string
	// unplaced are the configuration's trunks that could not be placed on
	// a host (Fleet): no host makes or removes anything of theirs.
	unplaced map[string]bool
}

// New builds a provisioner for cfg's trunks on one host from the given
// backends, its seeds in the directory provision.storage.dir.
func New(cfg *config.Config, vols volume.Store, doms Domains, fw firewall.Backend, log *slog.Logger) (*Provisioner, error) {
	return forHost(cfg, "", vols, dirSeeds(cfg.Provision.Storage.Dir), doms, fw, nil, log)
}

// forHost builds the provisioner of host (the one host when ""), for
// cfg's trunks that here says are placed on it (all, when nil).
func forHost(cfg *config.Config, host string, vols volume.Store, seeds Seeds, doms Domains, fw firewall.Backend, here func(trunk string) bool, log *slog.Logger) (*Provisioner, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Provisioner{
		Host: host, Volumes: vols, Seeds: seeds, Domains: doms, Firewall: fw,
		ShutdownTimeout: cfg.Provision.ShutdownTimeout,
		Log:             log,
	}
	var err error
	p.desired, p.warnings, err = Desired(cfg, vols, seeds, fw != nil, here)
	if err != nil {
		return nil, err
	}
	if ref, ok := fw.(firewall.Referenced); ok {
		for _, t := range p.desired {
			t.Domain.Filter = ref.FilterRef(t.Name)
		}
	}
	return p, nil
}

// Open connects to this host's backends as the configuration says:
// libvirt at provision.libvirt_uri, the storage and firewall backends.
// close releases the libvirt connection.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger) (p *Provisioner, close func(), err error) {
	if !cfg.HasEndpoints() {
		return nil, nil, fmt.Errorf("%s: no trunk has an endpoint block: nothing to provision (to remove what an earlier configuration made, run provision destroy -c with that configuration)", cfg.Source)
	}
	if len(cfg.Provision.Hosts) > 0 {
		return nil, nil, fmt.Errorf("%s: provision.hosts is set: open the hosts with OpenFleet", cfg.Source)
	}
	var vols volume.Store
	switch st := cfg.Provision.Storage; st.Backend {
	case "lvm":
		vols = &volume.LVM{VG: st.VolumeGroup, ThinPool: st.ThinPool, Base: st.BaseVolume, Run: volume.Exec{}}
	default:
		vols = &volume.Dir{Dir: st.Dir, Run: volume.Exec{}}
	}
	var fw firewall.Backend
	switch cfg.Provision.Firewall.Backend {
	case "nftables":
		if fw, err = firewall.OpenNFT(); err != nil {
			return nil, nil, err
		}
	case "iptables":
		if fw, err = firewall.OpenIPTables(); err != nil {
			return nil, nil, err
		}
	}
	conn, err := domain.Open(cfg.Provision.LibvirtURI)
	if err != nil {
		return nil, nil, err
	}
	p, err = New(cfg, vols, conn, fw, log)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if fw != nil {
		if c, err := firewall.Conflicts(ctx); err == nil {
			p.warnings = append(p.warnings, c...)
		}
	}
	return p, func() { conn.Close() }, nil
}

// stopWait is how long a guest gets to shut down when asked: none with
// ForceStop.
func (p *Provisioner) stopWait() time.Duration {
	if p.ForceStop {
		return 0
	}
	return p.ShutdownTimeout
}

// downtime says for how long a running guest that a change restarts is
// down: its shutdown (up to ShutdownTimeout, or none with ForceStop),
// then its boot, which voxvisor cannot know.
func (p *Provisioner) downtime() string {
	if p.ForceStop {
		return "restarts: powered off at once (--force-stop), down while it boots"
	}
	return fmt.Sprintf("restarts: down up to %s while it shuts down (ACPI, provision.shutdown_timeout; apply --force-stop powers it off at once), then while it boots", seconds(p.ShutdownTimeout))
}

// seconds prints a duration as people write it: 60s, 1.5s.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}
