package provisioning

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/voxvisor/voxvisor/provisioning/firewall"
)

// step is a completed step and how to undo it.
type step struct {
	what string
	undo func() error
}

// run is one trunk's sequence of steps.
type run struct {
	ctx   context.Context
	p     *Provisioner
	trunk string
	label string // the trunk, and its host with provision.hosts
	out   io.Writer
	done  []step
}

func (r *run) say(res, format string, args ...any) {
	fmt.Fprintf(r.out, "%s: %s: %s\n", r.label, res, fmt.Sprintf(format, args...))
}

// label names a trunk in apply's and destroy's output: with its host
// (hv1/trunk) under provision.hosts.
func (p *Provisioner) label(trunk string) string {
	if p.Host == "" {
		return trunk
	}
	return p.Host + "/" + trunk
}

// did records a completed step and how to undo it.
func (r *run) did(what string, undo func() error) {
	r.done = append(r.done, step{what, undo})
}

// fail undoes the completed steps in reverse and returns the error, with
// the trunk and the resource, and any undo that failed too.
func (r *run) fail(res string, err error) error {
	err = fmt.Errorf("trunk %s: %s: %w", r.trunk, res, err)
	for i := len(r.done) - 1; i >= 0; i-- {
		s := r.done[i]
		if uerr := s.undo(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("trunk %s: undo %s failed, left as it is: %w", r.trunk, s.what, uerr))
			r.say("undo", "%s: FAILED: %v", s.what, uerr)
		} else {
			r.say("undo", "%s", s.what)
		}
	}
	r.done = nil
	return err
}

// Apply plans and makes the changes, trunk by trunk. A trunk with a plan
// error (Plan.Err) is refused and left as it is; a trunk whose step fails
// is rolled back; either way Apply goes on with the next, and the errors
// are returned together, each once (Apply does not log them).
func (p *Provisioner) Apply(ctx context.Context, out io.Writer) (*Plan, error) {
	pl, err := p.Plan(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range pl.Warnings {
		fmt.Fprintf(out, "warning: %s\n", w)
	}
	if !pl.Pending() && pl.Err() == nil {
		fmt.Fprintln(out, "No changes: the infrastructure matches the configuration.")
		return pl, nil
	}
	return pl, p.apply(ctx, pl, out)
}

// apply makes the changes of pl, this host's plan.
func (p *Provisioner) apply(ctx context.Context, pl *Plan, out io.Writer) error {
	var errs []error
	var err error
	for _, name := range pl.trunks() {
		if pl.refused(name) {
			fmt.Fprintf(out, "%s: refused: nothing changed (plan errors)\n", p.label(name))
			errs = append(errs, pl.trunkErr(name, nil))
			continue
		}
		r := &run{ctx: ctx, p: p, trunk: name, label: p.label(name), out: out}
		if t := pl.desired[name]; t != nil {
			err = r.apply(pl, t, pl.actual[name])
		} else {
			err = r.remove(pl.actual[name], nil)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *run) apply(pl *Plan, t *Trunk, a *actual) error {
	p := r.p
	ctx := r.ctx
	running := a.domain != nil && a.domain.Running

	// 1. The volume.
	switch c := pl.change(t.Name, Volume); c.Action {
	case Create:
		if _, err := p.Volumes.Create(ctx, t.Resource, t.Size, t.Image); err != nil {
			return r.fail(Volume, err)
		}
		r.did("remove volume "+t.Resource, func() error { return p.Volumes.Remove(ctx, t.Resource) })
		r.say(Volume, "created %s (%s)", p.Volumes.Path(t.Resource), human(t.Size))
	case UpdateLive:
		if err := p.Volumes.Grow(ctx, t.Resource, t.Size); err != nil {
			return r.fail(Volume, err)
		}
		// A grown volume is not shrunk back on failure: nothing is lost.
		if running {
			if err := p.Domains.BlockResize(t.Resource, t.Size); err != nil {
				return r.fail(Volume, err)
			}
		}
		r.say(Volume, "grown to %s", human(t.Size))
	case UpdateRestart:
		if running {
			if err := p.Domains.Stop(ctx, t.Resource, p.stopWait()); err != nil {
				return r.fail(Volume, err)
			}
			r.did("start "+t.Resource+" again", func() error { return p.Domains.Start(t.Resource) })
			running = false
		}
		if err := p.Volumes.Shrink(ctx, t.Resource, t.Size); err != nil {
			return r.fail(Volume, err)
		}
		r.say(Volume, "shrunk to %s", human(t.Size))
	}

	// 2. The cloud-init seed, content-hashed beside the volumes.
	path, wrote, err := p.Seeds.Put(t.Resource, t.Seed)
	if err != nil {
		return r.fail(Domain, err)
	}
	if wrote {
		r.did("remove seed "+path, func() error { return p.Seeds.Remove(path) })
		r.say(Domain, "seed %s written", path)
	}

	// A firewall the guest's definition names (nwfilter) is there before
	// the guest starts.
	if _, ok := p.Firewall.(firewall.Referenced); ok {
		if err := r.firewall(pl, t); err != nil {
			return err
		}
	}

	// 3. The guest.
	spec := &t.Domain
	switch c := pl.change(t.Name, Domain); c.Action {
	case Create:
		if err := p.Domains.Define(spec); err != nil {
			return r.fail(Domain, err)
		}
		r.did("undefine "+t.Resource, func() error { return p.Domains.Undefine(t.Resource) })
		if spec.Network != "" {
			if err := p.Domains.DHCPHost(spec.Network, spec, true); err != nil {
				return r.fail(Domain, err)
			}
			r.did("remove DHCP host "+spec.MAC, func() error { return p.Domains.DHCPHost(spec.Network, spec, false) })
		}
		if err := p.Domains.SetAutostart(t.Resource, spec.Autostart); err != nil {
			return r.fail(Domain, err)
		}
		if err := p.Domains.Start(t.Resource); err != nil {
			return r.fail(Domain, err)
		}
		r.did("stop "+t.Resource, func() error { return p.Domains.Stop(ctx, t.Resource, p.stopWait()) })
		r.say(Domain, "defined and started %s", t.Resource)
	case UpdateRestart, Replace:
		old, err := p.Domains.XML(t.Resource)
		if err != nil {
			return r.fail(Domain, err)
		}
		wasRunning := running
		down := time.Now()
		if err := p.Domains.Define(spec); err != nil {
			return r.fail(Domain, err)
		}
		r.did("restore the old definition of "+t.Resource, func() error {
			if err := p.Domains.Stop(ctx, t.Resource, p.stopWait()); err != nil {
				return err
			}
			if err := p.Domains.DefineXML(old); err != nil {
				return err
			}
			if wasRunning {
				return p.Domains.Start(t.Resource)
			}
			return nil
		})
		if running {
			if err := p.Domains.Stop(ctx, t.Resource, p.stopWait()); err != nil {
				return r.fail(Domain, err)
			}
		}
		if spec.Network != "" {
			if err := p.Domains.DHCPHost(spec.Network, spec, true); err != nil {
				return r.fail(Domain, err)
			}
		}
		if err := p.Domains.SetAutostart(t.Resource, spec.Autostart); err != nil {
			return r.fail(Domain, err)
		}
		if err := p.Domains.Start(t.Resource); err != nil {
			return r.fail(Domain, err)
		}
		how := ""
		if wasRunning {
			how = fmt.Sprintf(", down %s until it was started again", time.Since(down).Round(100*time.Millisecond))
			if p.ForceStop {
				how = ", powered off" + how
			}
		}
		r.say(Domain, "redefined and restarted %s (%s%s)", t.Resource, c.Why, how)
	case UpdateLive:
		if err := p.Domains.SetAutostart(t.Resource, spec.Autostart); err != nil {
			return r.fail(Domain, err)
		}
		if spec.Network != "" && !a.dhcpOK {
			if err := p.Domains.DHCPHost(spec.Network, spec, true); err != nil {
				return r.fail(Domain, err)
			}
		}
		if !running {
			if err := p.Domains.Start(t.Resource); err != nil {
				return r.fail(Domain, err)
			}
			r.did("stop "+t.Resource, func() error { return p.Domains.Stop(ctx, t.Resource, p.stopWait()) })
		}
		r.say(Domain, "updated live (%s)", c.Why)
	case Nothing:
		if c := pl.change(t.Name, Volume); c.Action == UpdateRestart {
			// Stopped for a shrink: start it again.
			if err := p.Domains.Start(t.Resource); err != nil {
				return r.fail(Domain, err)
			}
		}
	}

	// 4. The firewall: one atomic change (nftables), last, so that a
	// failure leaves no rules for a guest that is not there.
	if _, ok := p.Firewall.(firewall.Referenced); !ok {
		if err := r.firewall(pl, t); err != nil {
			return err
		}
	}

	// Seeds of older configurations of this guest are no longer used.
	old, _ := p.Seeds.List(t.Resource)
	for _, f := range old {
		if f != spec.SeedPath {
			p.Seeds.Remove(f)
		}
	}
	return nil
}

// firewall puts the trunk's rules in as the plan says.
func (r *run) firewall(pl *Plan, t *Trunk) error {
	p := r.p
	c := pl.change(t.Name, Firewall)
	if c == nil || c.Action == Nothing {
		return nil
	}
	// A backend that can put its old rules back gets to on a later failure.
	var restore func() error
	if s, ok := p.Firewall.(interface {
		Saved(trunk string) (func() error, error)
	}); ok && c.Action != Create {
		var err error
		if restore, err = s.Saved(t.Name); err != nil {
			return r.fail(Firewall, err)
		}
	}
	if err := p.Firewall.Add(r.ctx, t.Firewall); err != nil {
		return r.fail(Firewall, err)
	}
	switch {
	case c.Action == Create:
		r.did("remove firewall rules of "+t.Name, func() error { return p.Firewall.Del(r.ctx, t.Name) })
	case restore != nil:
		r.did("restore the previous firewall rules of "+t.Name, restore)
	}
	r.say(Firewall, "%s rules for %d peer(s) to %s", p.Firewall.Name(), len(t.Firewall.Peers), t.Firewall.Dest)
	return nil
}

// remove deletes a trunk's resources: firewall, guest, seeds, volume.
// It goes on past a failure, so that what can go, goes; the errors are
// returned together.
func (r *run) remove(a *actual, t *Trunk) error {
	p := r.p
	var errs []error
	delFirewall := func() {
		if a.firewall != nil && a.firewall.Action != firewall.Missing && p.Firewall != nil {
			if err := p.Firewall.Del(r.ctx, r.trunk); err != nil {
				errs = append(errs, fmt.Errorf("trunk %s: firewall: %w", r.trunk, err))
			} else {
				r.say(Firewall, "rules removed")
			}
		}
	}
	// Rules the guest's definition names (nwfilter) go after the guest.
	_, referenced := p.Firewall.(firewall.Referenced)
	if !referenced {
		delFirewall()
	}
	name := Prefix + r.trunk
	if a.domain != nil {
		name = a.domain.Name
		err := p.Domains.Stop(r.ctx, name, p.stopWait())
		if err == nil {
			err = p.Domains.Undefine(name)
		}
		if err == nil && a.domain.Defined.Network != "" {
			spec := a.domain.Defined
			if t != nil {
				spec.Address = t.Domain.Address
			}
			if spec.Address.IsValid() {
				err = p.Domains.DHCPHost(spec.Network, &spec, false)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("trunk %s: domain: %w", r.trunk, err))
		} else {
			r.say(Domain, "%s shut down and undefined", name)
		}
	}
	if referenced && len(errs) == 0 {
		delFirewall()
	}
	seeds, err := p.Seeds.List(name)
	if err != nil {
		errs = append(errs, fmt.Errorf("trunk %s: seed: %w", r.trunk, err))
	}
	for _, f := range seeds {
		if err := p.Seeds.Remove(f); err != nil {
			errs = append(errs, fmt.Errorf("trunk %s: seed: %w", r.trunk, err))
		}
	}
	if a.volume != nil {
		if len(errs) > 0 {
			errs = append(errs, fmt.Errorf("trunk %s: volume %s kept, as its guest could not be removed", r.trunk, a.volume.Path))
		} else if err := p.Volumes.Remove(r.ctx, a.volume.Name); err != nil {
			errs = append(errs, fmt.Errorf("trunk %s: volume: %w", r.trunk, err))
		} else {
			r.say(Volume, "%s removed", a.volume.Path)
		}
	}
	return errors.Join(errs...)
}

// Destroy removes what voxvisor created for one trunk (or, with trunk
// empty, for every trunk), whether or not it is still configured.
func (p *Provisioner) Destroy(ctx context.Context, trunk string, out io.Writer) error {
	pl, err := p.Plan(ctx)
	if err != nil {
		return err
	}
	n, found, err := p.destroy(ctx, pl, trunk, out)
	if trunk != "" && !found {
		return fmt.Errorf("trunk %q: no such trunk in the configuration or on this host", trunk)
	}
	if n == 0 && err == nil {
		fmt.Fprintln(out, "Nothing to destroy.")
	}
	return err
}

// destroy removes what pl shows of trunk (all, when ""), and of all also
// the firewall's leftovers. It returns how many trunks it removed things
// of, and whether trunk is known on this host.
func (p *Provisioner) destroy(ctx context.Context, pl *Plan, trunk string, out io.Writer) (n int, found bool, err error) {
	var names []string
	for n := range pl.actual {
		if trunk == "" || n == trunk {
			names = append(names, n)
		}
	}
	if trunk != "" && len(names) == 0 {
		return 0, false, nil
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		// A trunk with a resource that is not voxvisor's, or whose state
		// could not be read, is left whole; a preflight error (what a new
		// guest would need) does not stop its removal.
		if err := pl.trunkErr(name, ErrPreflight); err != nil {
			fmt.Fprintf(out, "%s: refused: nothing removed\n", p.label(name))
			errs = append(errs, err)
			continue
		}
		a := pl.actual[name]
		if a.volume == nil && a.domain == nil && (a.firewall == nil || a.firewall.Action == firewall.Missing) {
			continue
		}
		n++
		r := &run{ctx: ctx, p: p, trunk: name, label: p.label(name), out: out}
		if err := r.remove(a, pl.desired[name]); err != nil {
			errs = append(errs, err)
		}
	}
	// Of everything, nothing of voxvisor's may remain: the firewall's own
	// leftovers too (the nftables table when no trunk has rules).
	if trunk == "" && p.Firewall != nil {
		what, err := p.Firewall.Clean(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("firewall: %w", err))
		} else if what != "" {
			n++
			fmt.Fprintf(out, "firewall: %s removed\n", what)
		}
	}
	return n, true, errors.Join(errs...)
}
