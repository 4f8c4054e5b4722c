package provisioning

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/voxvisor/voxvisor/provisioning/domain"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// Action is what a plan does to one resource.
type Action int

const (
	Nothing Action = iota
	Create
	UpdateLive    // changed in place, the guest keeps running
	UpdateRestart // changed, and the guest restarts
	Replace       // removed and made again
	Delete
)

func (a Action) String() string {
	return [...]string{"nothing", "create", "update live", "update, restart", "replace", "delete"}[a]
}

// Resource kinds, in the order they are made.
const (
	Volume   = "volume"
	Domain   = "domain"
	Firewall = "firewall"
)

// Change is the plan for one resource of one trunk.
type Change struct {
	Host     string // with provision.hosts: the host it is on
	Trunk    string
	Resource string
	Action   Action
	Why      string // what differs, for people
	State    string // the resource as it is
	// Err says why the change cannot be made: a resource of the trunk's
	// name that voxvisor did not create, a state that could not be read,
	// or (ErrPreflight) something apply needs that the host lacks. Apply
	// leaves every resource of a trunk with an Err as it is.
	Err error
}

// Plan is every change, trunk by trunk, and the warnings found.
type Plan struct {
	Changes  []Change
	Warnings []string

	desired map[string]*Trunk
	actual  map[string]*actual
	hosts   bool // spans provision.hosts: the tables have a HOST column
}

// Pending reports whether apply would change anything: a change of a
// trunk that is not refused.
func (p *Plan) Pending() bool {
	for _, c := range p.Changes {
		if c.Action != Nothing && !p.refused(c.Trunk) {
			return true
		}
	}
	return false
}

// Err is every change's error, each naming its trunk and resource; nil
// when apply can make every change.
func (p *Plan) Err() error {
	var errs []error
	for i := range p.Changes {
		errs = append(errs, p.Changes[i].errs()...)
	}
	return errors.Join(errs...)
}

// errs is the change's error as one error per problem, each naming the
// trunk and resource (a preflight check may find several).
func (c *Change) errs() []error {
	if c.Err == nil {
		return nil
	}
	parts := []error{c.Err}
	if pf, ok := c.Err.(preflight); ok {
		if j, ok := pf.error.(interface{ Unwrap() []error }); ok {
			parts = parts[:0]
			for _, e := range j.Unwrap() {
				parts = append(parts, preflight{e})
			}
		}
	} else if j, ok := c.Err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	}
	out := make([]error, len(parts))
	for i, e := range parts {
		out[i] = fmt.Errorf("trunk %s: %s: %w", c.Trunk, c.Resource, e)
	}
	return out
}

// Refused lists the trunks apply leaves as they are (a change has an
// error), in plan order.
func (p *Plan) Refused() []string {
	var out []string
	for _, c := range p.Changes {
		if c.Err != nil && !slices.Contains(out, c.Trunk) {
			out = append(out, c.Trunk)
		}
	}
	return out
}

func (p *Plan) refused(trunk string) bool { return slices.Contains(p.Refused(), trunk) }

// trunkErr is the trunk's errors, or those errors.Is does not find
// target in when skip is set.
func (p *Plan) trunkErr(trunk string, skip error) error {
	var errs []error
	for i := range p.Changes {
		if c := &p.Changes[i]; c.Trunk == trunk && c.Err != nil && (skip == nil || !errors.Is(c.Err, skip)) {
			errs = append(errs, c.errs()...)
		}
	}
	return errors.Join(errs...)
}

// trunks lists the trunks with changes or errors, in plan order.
func (p *Plan) trunks() []string {
	var out []string
	for _, c := range p.Changes {
		if (c.Action != Nothing || c.Err != nil) && !slices.Contains(out, c.Trunk) {
			out = append(out, c.Trunk)
		}
	}
	return out
}

func (p *Plan) change(trunk, res string) *Change {
	for i := range p.Changes {
		if p.Changes[i].Trunk == trunk && p.Changes[i].Resource == res {
			return &p.Changes[i]
		}
	}
	return nil
}

// Write prints the plan as a table: what would change and why. A change
// that cannot be made is an error line (ACTION error, WHY what is wrong
// and what to do); the other changes of its trunk are shown refused.
func (p *Plan) Write(w io.Writer) {
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, p.hostColumn("HOST")+"TRUNK\tRESOURCE\tACTION\tWHY")
	n := 0
	for _, c := range p.Changes {
		action, why := c.Action.String(), c.Why
		switch {
		case c.Err != nil:
			action, why = "error", oneLine(c.Err)
		case c.Action != Nothing && p.refused(c.Trunk):
			action, why = "refused", c.Action.String()+": "+cmp.Or(why, "-")
		case c.Action != Nothing:
			n++
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", p.hostColumn(cmp.Or(c.Host, "-")), c.Trunk, c.Resource, action, cmp.Or(why, "-"))
	}
	tw.Flush()
	switch {
	case n == 0 && p.Err() == nil:
		fmt.Fprintln(w, "No changes: the infrastructure matches the configuration.")
	case n == 0:
		fmt.Fprintln(w, "No changes can be made.")
	default:
		fmt.Fprintf(w, "%d change(s).\n", n)
	}
	p.writeRefused(w)
}

func (p *Plan) writeRefused(w io.Writer) {
	if r := p.Refused(); len(r) > 0 {
		fmt.Fprintf(w, "%d trunk(s) with errors (%s): apply leaves them as they are until the errors are fixed.\n", len(r), strings.Join(r, ", "))
	}
}

// hostColumn is v and a tab when the plan spans provision.hosts, else "".
func (p *Plan) hostColumn(v string) string {
	if !p.hosts {
		return ""
	}
	return v + "\t"
}

// oneLine joins a multi-line error (errors.Join) with "; " for a table.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// WriteStatus prints each resource's actual state and its drift.
func (p *Plan) WriteStatus(w io.Writer) {
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, p.hostColumn("HOST")+"TRUNK\tRESOURCE\tSTATE\tDRIFT")
	for _, c := range p.Changes {
		drift := "none"
		if c.Action != Nothing {
			drift = c.Action.String()
			if c.Why != "" {
				drift += ": " + c.Why
			}
		}
		if c.Err != nil {
			drift = "error: " + oneLine(c.Err)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", p.hostColumn(cmp.Or(c.Host, "-")), c.Trunk, c.Resource, cmp.Or(c.State, "-"), drift)
	}
	tw.Flush()
	p.writeRefused(w)
}

// actual is what the backends report for one trunk's resources.
type actual struct {
	volume   *volume.State
	domain   *domain.State
	firewall *firewall.Status
	seedOK   bool
	dhcpOK   bool
}

// Plan compares the configuration with the host. It changes nothing.
func (p *Provisioner) Plan(ctx context.Context) (*Plan, error) {
	pl := &Plan{Warnings: p.warnings, desired: map[string]*Trunk{}, actual: map[string]*actual{}, hosts: p.Host != ""}
	vols, err := p.Volumes.List(ctx)
	if err != nil {
		return nil, err
	}
	volByName := map[string]*volume.State{}
	for i := range vols {
		volByName[vols[i].Name] = &vols[i]
	}
	doms, err := p.Domains.List()
	if err != nil {
		return nil, err
	}
	domByName := map[string]*domain.State{}
	for i := range doms {
		domByName[doms[i].Name] = &doms[i]
	}
	// A backend that can read all its state at once does so for the plan.
	if s, ok := p.Firewall.(interface {
		Snapshot(context.Context) error
		Release()
	}); ok {
		if err := s.Snapshot(ctx); err != nil {
			return nil, err
		}
		defer s.Release()
	}
	// A trunk's problem is its own: it becomes an error on the change
	// (refusing that trunk), and the other trunks are planned as usual.
	for _, t := range p.desired {
		pl.desired[t.Name] = t
		a := &actual{volume: volByName[t.Resource], domain: domByName[t.Resource]}
		pl.actual[t.Name] = a
		var volErr, domErr, fwErr error
		if a.volume == nil {
			_, volErr = p.Volumes.Get(ctx, t.Resource) // a volume that is not ours
		}
		if a.domain == nil {
			_, domErr = p.Domains.Get(t.Resource) // a domain that is not ours
		}
		a.seedOK, _ = p.Seeds.Has(t.Domain.SeedPath)
		a.dhcpOK = true
		if t.Domain.Network != "" && a.domain != nil {
			a.dhcpOK, domErr = p.Domains.HasDHCPHost(t.Domain.Network, &t.Domain)
		}
		if t.Firewall != nil && p.Firewall != nil {
			if st, err := p.Firewall.Check(ctx, t.Firewall); err != nil {
				fwErr = err
			} else {
				a.firewall = &st
			}
		}

		vc := planVolume(t, a, p.Volumes.Source(t.Image))
		switch {
		case volErr != nil:
			vc = Change{Trunk: t.Name, Resource: Volume, State: "not voxvisor's", Err: volErr}
		case vc.Action == Create:
			if err := p.Volumes.CheckImage(ctx, t.Image, t.Size); err != nil {
				vc.Err = preflight{err}
			}
		}
		dc := planDomain(t, a)
		switch {
		case domErr != nil && a.domain == nil:
			dc = Change{Trunk: t.Name, Resource: Domain, State: "not voxvisor's", Err: domErr}
		case domErr != nil:
			dc.Err = domErr // its libvirt network could not be read
		case dc.Action != Nothing:
			if err := p.Domains.Preflight(&t.Domain); err != nil {
				dc.Err = preflight{err}
			}
		}
		// A running guest that a change restarts is down for a while.
		if a.domain != nil && a.domain.Running {
			switch {
			case dc.Action == UpdateRestart || dc.Action == Replace:
				dc.Why += "; " + p.downtime()
			case vc.Action == UpdateRestart:
				vc.Why += "; " + p.downtime()
			}
		}
		pl.Changes = append(pl.Changes, vc, dc)
		if t.Firewall != nil && p.Firewall != nil {
			if fwErr != nil {
				pl.Changes = append(pl.Changes, Change{Trunk: t.Name, Resource: Firewall, State: "unknown", Err: fwErr})
			} else {
				pl.Changes = append(pl.Changes, planFirewall(t, a))
			}
		}
	}
	// What is ours on the host but no longer in the configuration.
	gone := map[string]*actual{}
	get := func(trunk string) *actual {
		if pl.desired[trunk] != nil {
			return nil
		}
		if gone[trunk] == nil {
			gone[trunk] = &actual{}
		}
		return gone[trunk]
	}
	for i := range vols {
		if a := get(strings.TrimPrefix(vols[i].Name, Prefix)); a != nil && strings.HasPrefix(vols[i].Name, Prefix) {
			a.volume = &vols[i]
		}
	}
	for i := range doms {
		if a := get(doms[i].Trunk); a != nil {
			a.domain = &doms[i]
		}
	}
	if p.Firewall != nil {
		fw, err := p.Firewall.Trunks(ctx)
		if err != nil {
			return nil, err
		}
		for _, trunk := range fw {
			if a := get(trunk); a != nil {
				a.firewall = &firewall.Status{Trunk: trunk}
			}
		}
	}
	names := make([]string, 0, len(gone))
	for n := range gone {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pl.actual[n] = gone[n]
		// A trunk that could not be placed keeps what it has (destroy
		// still removes it).
		if !p.unplaced[n] {
			pl.Changes = append(pl.Changes, deletes(n, gone[n])...)
		}
	}
	for i := range pl.Changes {
		pl.Changes[i].Host = p.Host
	}
	return pl, nil
}

// deletes plans the removal of a trunk's resources that exist.
func deletes(trunk string, a *actual) []Change {
	var out []Change
	if a.volume != nil {
		out = append(out, Change{Trunk: trunk, Resource: Volume, Action: Delete, Why: "not in the configuration", State: volumeState(a.volume)})
	}
	if a.domain != nil {
		out = append(out, Change{Trunk: trunk, Resource: Domain, Action: Delete, Why: "not in the configuration", State: domainState(a.domain)})
	}
	if a.firewall != nil {
		out = append(out, Change{Trunk: trunk, Resource: Firewall, Action: Delete, Why: "not in the configuration", State: "rules present"})
	}
	return out
}

func volumeState(v *volume.State) string {
	if v == nil {
		return "absent"
	}
	return fmt.Sprintf("%s, %s", v.Path, human(v.Size))
}

func domainState(d *domain.State) string {
	if d == nil {
		return "absent"
	}
	s := d.State
	if d.Autostart {
		s += ", autostart"
	}
	return s
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// planVolume compares the volume with t; source is what a new one is
// made from ("" for blank).
func planVolume(t *Trunk, a *actual, source string) Change {
	c := Change{Trunk: t.Name, Resource: Volume, State: volumeState(a.volume)}
	v := a.volume
	switch {
	case v == nil:
		c.Action, c.Why = Create, human(t.Size)
		if source != "" {
			c.Why += " from " + source
		}
	case v.Size < t.Size:
		c.Action, c.Why = UpdateLive, fmt.Sprintf("grow %s to %s", human(v.Size), human(t.Size))
	case v.Size >= t.Size+max(v.Granule, 1):
		if t.AllowShrink {
			c.Action, c.Why = UpdateRestart, fmt.Sprintf("shrink %s to %s (guest shut off; e2fsck, resize2fs, then the volume)", human(v.Size), human(t.Size))
		} else {
			c.Why = fmt.Sprintf("is %s, configured %s: not shrunk without disk.allow_shrink", human(v.Size), human(t.Size))
		}
	}
	return c
}

func planDomain(t *Trunk, a *actual) Change {
	c := Change{Trunk: t.Name, Resource: Domain, State: domainState(a.domain)}
	d := a.domain
	want := &t.Domain
	if d == nil {
		c.Action, c.Why = Create, fmt.Sprintf("%d vCPU, %s, %s", want.VCPUs, human(int64(want.MemoryKiB)<<10), want.Address)
		return c
	}
	var why []string
	if d.Hash != want.Hash() {
		got := d.Defined
		if got.DiskPath != want.DiskPath || got.DiskType != want.DiskType {
			c.Action = Replace
			why = append(why, fmt.Sprintf("disk %s -> %s", got.DiskPath, want.DiskPath))
		} else {
			c.Action = UpdateRestart
			if got.VCPUs != want.VCPUs {
				why = append(why, fmt.Sprintf("vcpus %d -> %d", got.VCPUs, want.VCPUs))
			}
			if got.MemoryKiB != want.MemoryKiB {
				why = append(why, fmt.Sprintf("memory %s -> %s", human(int64(got.MemoryKiB)<<10), human(int64(want.MemoryKiB)<<10)))
			}
			if got.SeedPath != want.SeedPath {
				why = append(why, "cloud-init seed changed")
			}
			if !strings.EqualFold(got.MAC, want.MAC) || got.Bridge != want.Bridge || got.Network != want.Network {
				why = append(why, "network changed")
			}
			if got.Type != want.Type {
				why = append(why, fmt.Sprintf("type %s -> %s", got.Type, want.Type))
			}
			if len(why) == 0 {
				why = append(why, "definition changed")
			}
		}
	} else {
		if !a.seedOK {
			c.Action = UpdateLive
			why = append(why, "seed file missing: written again")
		}
		if !d.Running {
			c.Action = UpdateLive
			why = append(why, "not running: start")
		}
		if d.Autostart != want.Autostart {
			c.Action = UpdateLive
			why = append(why, fmt.Sprintf("autostart %v -> %v", d.Autostart, want.Autostart))
		}
		if !a.dhcpOK {
			c.Action = UpdateLive
			why = append(why, "DHCP host entry missing")
		}
	}
	c.Why = strings.Join(why, "; ")
	return c
}

func planFirewall(t *Trunk, a *actual) Change {
	c := Change{Trunk: t.Name, Resource: Firewall}
	st := a.firewall
	switch st.Action {
	case firewall.Missing:
		c.Action, c.Why, c.State = Create, fmt.Sprintf("%d peer(s) to %s", len(t.Firewall.Peers), t.Firewall.Dest), "absent"
	case firewall.Drifted:
		c.Action, c.Why = UpdateLive, st.Detail
		c.State = fmt.Sprintf("present, accepted %d, dropped %d", st.Accepted, st.Dropped)
	default:
		c.State = fmt.Sprintf("in sync, accepted %d, dropped %d", st.Accepted, st.Dropped)
	}
	return c
}
