package provisioning

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// Infra is what provision plan, apply, destroy and status drive: the one
// host's Provisioner, or a Fleet over provision.hosts.
type Infra interface {
	Plan(ctx context.Context) (*Plan, error)
	Apply(ctx context.Context, out io.Writer) (*Plan, error)
	Destroy(ctx context.Context, trunk string, out io.Writer) error
	// SetForceStop is Provisioner.ForceStop, for every host.
	SetForceStop(on bool)
}

func (p *Provisioner) SetForceStop(on bool) { p.ForceStop = on }

// Connect opens what the configuration provisions: the hosts of
// provision.hosts (OpenFleet), or the one host of libvirt_uri (Open).
func Connect(ctx context.Context, cfg *config.Config, log *slog.Logger) (Infra, func(), error) {
	// Each branch returns a nil Infra on error, not a nil pointer in one.
	if len(cfg.Provision.Hosts) > 0 {
		f, closeAll, err := OpenFleet(ctx, cfg, log)
		if err != nil {
			return nil, nil, err
		}
		return f, closeAll, nil
	}
	p, closeConn, err := Open(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return p, closeConn, nil
}

// Fleet provisions the trunks' endpoints across provision.hosts, each on
// one host: a Provisioner per host, whose volumes and seeds live in the
// host's libvirt storage pool and whose firewall is libvirt's nwfilter,
// so that a hypervisor needs nothing but libvirtd. Where a trunk goes is
// decided once, when the fleet is opened (place): where its guest or
// volume already is; else the host endpoint.host names; else the host
// with room (vcpus and memory of provision.hosts, less the guests placed
// on it) that has the most memory free. A trunk is never moved: one
// found on another host than the one it names is an error, and so is one
// no host has room for; such a trunk is left as it is everywhere.
type Fleet struct {
	Hosts []*Provisioner // in the order of provision.hosts
	// Placement errors, one per trunk that could not be placed.
	unplaced []Change
	warnings []string // hosts over their capacity
}

// hostConn is one host's connections while the fleet is opened.
type hostConn struct {
	cfg  *config.ProvisionHost
	conn *domain.Conn
	pool *volume.Pool
}

// OpenFleet connects to every host of provision.hosts, places the trunks
// and builds the hosts' provisioners. A host that cannot be reached
// stops it: a trunk's guest might be there, and placing it elsewhere
// would make a second one.
func OpenFleet(ctx context.Context, cfg *config.Config, log *slog.Logger) (f *Fleet, _ func(), err error) {
	if !cfg.HasEndpoints() {
		return nil, nil, fmt.Errorf("%s: no trunk has an endpoint block: nothing to provision (to remove what an earlier configuration made, run provision destroy -c with that configuration)", cfg.Source)
	}
	var hosts []hostConn
	var ids []string // libvirt host UUIDs, by host
	closeAll := func() {
		for _, h := range hosts {
			if h.pool != nil {
				h.pool.Close()
			}
			h.conn.Close()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	for i := range cfg.Provision.Hosts {
		hc := &cfg.Provision.Hosts[i]
		conn, err := domain.Open(hc.URI)
		if err != nil {
			return nil, nil, fmt.Errorf("host %s: %w", hc.Name, err)
		}
		hosts = append(hosts, hostConn{cfg: hc, conn: conn})
		// One machine listed twice would get each trunk placed "on both"
		// and then refused everywhere.
		id, err := conn.HostUUID()
		if err != nil {
			return nil, nil, fmt.Errorf("host %s: %w", hc.Name, err)
		}
		if j := slices.Index(ids, id); j >= 0 && id != "" {
			return nil, nil, fmt.Errorf("hosts %s and %s are one machine (libvirt host UUID %s): list it once in provision.hosts", cfg.Provision.Hosts[j].Name, hc.Name, id)
		}
		ids = append(ids, id)
		if hosts[i].pool, err = volume.OpenPool(conn.Libvirt(), hc.StoragePool); err != nil {
			return nil, nil, fmt.Errorf("host %s (%s): %w", hc.Name, hc.URI, err)
		}
	}
	placed, unplaced, warnings, err := place(cfg, hosts)
	if err != nil {
		return nil, nil, err
	}
	f = &Fleet{unplaced: unplaced, warnings: warnings}
	for _, h := range hosts {
		var fw firewall.Backend
		if h.cfg.Firewall == "nwfilter" {
			fw = firewall.NewNWFilter(h.conn.Libvirt())
		}
		name := h.cfg.Name
		p, err := forHost(cfg, name, h.pool, poolSeeds{h.pool}, h.conn, fw, func(trunk string) bool { return placed[trunk] == name }, log)
		if err != nil {
			return nil, nil, err
		}
		p.unplaced = map[string]bool{}
		for _, c := range unplaced {
			p.unplaced[c.Trunk] = true
		}
		f.Hosts = append(f.Hosts, p)
	}
	return f, closeAll, nil
}

// Placement is the pseudo-resource of a trunk that could not be placed.
const Placement = "placement"

// place decides each endpoint's host (see Fleet). It returns the host by
// trunk, and a Placement change with the error for each trunk it could
// not place.
func place(cfg *config.Config, hosts []hostConn) (map[string]string, []Change, []string, error) {
	// Where each trunk's guest or volume is now.
	found := map[string][]string{}
	add := func(trunk, host string) {
		if !slices.Contains(found[trunk], host) {
			found[trunk] = append(found[trunk], host)
		}
	}
	type room struct {
		vcpus int
		mem   int64
	}
	free := map[string]*room{}
	for _, h := range hosts {
		doms, err := h.conn.List()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("host %s: %w", h.cfg.Name, err)
		}
		for _, d := range doms {
			add(d.Trunk, h.cfg.Name)
		}
		vols, err := h.pool.List(context.Background())
		if err != nil {
			return nil, nil, nil, fmt.Errorf("host %s: %w", h.cfg.Name, err)
		}
		for _, v := range vols {
			if t, ok := strings.CutPrefix(v.Name, Prefix); ok {
				add(t, h.cfg.Name)
			}
		}
		free[h.cfg.Name] = &room{h.cfg.VCPUs, h.cfg.MemoryBytes}
	}
	placed := map[string]string{}
	var unplaced []Change
	refuse := func(trunk string, format string, args ...any) {
		unplaced = append(unplaced, Change{Trunk: trunk, Resource: Placement, State: cmp.Or(strings.Join(found[trunk], ", "), "nowhere"), Err: fmt.Errorf(format, args...)})
	}
	take := func(t *config.Trunk, host string) {
		placed[t.Name] = host
		free[host].vcpus -= t.Endpoint.VCPUs
		free[host].mem -= t.Endpoint.MemoryBytes
	}
	// First the trunks whose host is known: where they are, or named.
	var rest []*config.Trunk
	for i := range cfg.Trunks {
		t := &cfg.Trunks[i]
		e := t.Endpoint
		if e == nil {
			continue
		}
		on := found[t.Name]
		switch {
		case len(on) > 1:
			refuse(t.Name, "has a guest or volume on each of the hosts %s: a trunk has one endpoint; remove the one not in use (provision destroy %s removes all of them)", strings.Join(on, " and "), t.Name)
		case len(on) == 1 && e.Host != "" && e.Host != on[0]:
			refuse(t.Name, "is on host %s, and endpoint.host says %s: voxvisor does not move guests; to move it, run provision destroy %s (its guest and disk on %s go) and apply again, or set endpoint.host back to %s", on[0], e.Host, t.Name, on[0], on[0])
		case len(on) == 1:
			take(t, on[0])
		case e.Host != "":
			take(t, e.Host)
		default:
			rest = append(rest, t)
		}
	}
	// Then the others, each on the host with the most memory free that
	// has room for it.
	for _, t := range rest {
		e := t.Endpoint
		best := ""
		for _, h := range hosts {
			r := free[h.cfg.Name]
			if r.vcpus >= e.VCPUs && r.mem >= e.MemoryBytes && (best == "" || r.mem > free[best].mem) {
				best = h.cfg.Name
			}
		}
		if best == "" {
			var left []string
			for _, h := range hosts {
				r := free[h.cfg.Name]
				left = append(left, fmt.Sprintf("%s %d vCPU and %s", h.cfg.Name, max(r.vcpus, 0), human(max(r.mem, 0))))
			}
			refuse(t.Name, "no host has room for its %d vCPU and %s (free for voxvisor's guests: %s): raise vcpus or memory of a host in provision.hosts, or add a host", e.VCPUs, e.Memory, strings.Join(left, "; "))
			continue
		}
		take(t, best)
	}
	// Guests already on a host stay there even when they have grown past
	// its room: said, not refused.
	var warnings []string
	for _, h := range hosts {
		if r := free[h.cfg.Name]; r.vcpus < 0 || r.mem < 0 {
			warnings = append(warnings, fmt.Sprintf("host %s: the guests placed there need more than its vcpus %d and memory %s (provision.hosts): raise them, or move a trunk (provision destroy TRUNK, then apply with endpoint.host)", h.cfg.Name, h.cfg.VCPUs, h.cfg.Memory))
		}
	}
	return placed, unplaced, warnings, nil
}

func (f *Fleet) SetForceStop(on bool) {
	for _, p := range f.Hosts {
		p.ForceStop = on
	}
}

// plans plans every host; the merged plan is what people see.
func (f *Fleet) plans(ctx context.Context) ([]*Plan, *Plan, error) {
	merged := &Plan{desired: map[string]*Trunk{}, actual: map[string]*actual{}, hosts: true, Warnings: slices.Clone(f.warnings)}
	merged.Changes = append(merged.Changes, f.unplaced...)
	var parts []*Plan
	for _, p := range f.Hosts {
		pl, err := p.Plan(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("host %s: %w", p.Host, err)
		}
		parts = append(parts, pl)
		for _, w := range pl.Warnings {
			if !slices.Contains(merged.Warnings, w) {
				merged.Warnings = append(merged.Warnings, w)
			}
		}
		merged.Changes = append(merged.Changes, pl.Changes...)
	}
	return parts, merged, nil
}

// Plan compares the configuration with every host. It changes nothing.
func (f *Fleet) Plan(ctx context.Context) (*Plan, error) {
	_, merged, err := f.plans(ctx)
	return merged, err
}

// Apply makes every host's changes, host by host, trunk by trunk, with
// the guarantees of Provisioner.Apply; a trunk that could not be placed
// is refused.
func (f *Fleet) Apply(ctx context.Context, out io.Writer) (*Plan, error) {
	parts, merged, err := f.plans(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range merged.Warnings {
		fmt.Fprintf(out, "warning: %s\n", w)
	}
	if !merged.Pending() && merged.Err() == nil {
		fmt.Fprintln(out, "No changes: the infrastructure matches the configuration.")
		return merged, nil
	}
	var errs []error
	for _, c := range f.unplaced {
		fmt.Fprintf(out, "%s: refused: nothing changed (%s)\n", c.Trunk, Placement)
		errs = append(errs, c.errs()...)
	}
	for i, p := range f.Hosts {
		if err := p.apply(ctx, parts[i], out); err != nil {
			errs = append(errs, err)
		}
	}
	return merged, errors.Join(errs...)
}

// Destroy removes what voxvisor created for trunk (all, when "") on every
// host, placed or not.
func (f *Fleet) Destroy(ctx context.Context, trunk string, out io.Writer) error {
	parts, _, err := f.plans(ctx)
	if err != nil {
		return err
	}
	var errs []error
	n, found := 0, false
	for i, p := range f.Hosts {
		m, ok, err := p.destroy(ctx, parts[i], trunk, out)
		n, found = n+m, found || ok
		if err != nil {
			errs = append(errs, err)
		}
	}
	if trunk != "" && !found && !slices.ContainsFunc(f.unplaced, func(c Change) bool { return c.Trunk == trunk }) {
		return fmt.Errorf("trunk %q: no such trunk in the configuration or on any host of provision.hosts", trunk)
	}
	if n == 0 && len(errs) == 0 {
		fmt.Fprintln(out, "Nothing to destroy.")
	}
	return errors.Join(errs...)
}
