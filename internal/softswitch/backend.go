package softswitch

import (
	"context"
	"errors"
	"github.com/voxvisor/voxvisor/internal/cluster"
	"github.com/voxvisor/voxvisor/provisioning"
	"github.com/voxvisor/voxvisor/sip/capture"
	"io/fs"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/internal/admin"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/sip/location"
)

// backend lets the admin API read and act on the switch.
type backend struct{ sw *Switch }

var _ admin.Backend = backend{}

func (b backend) Registrations() map[string][]location.Binding { return b.sw.Store.All() }

func (b backend) Unregister(aor, contact string) (int, error) { return b.sw.Store.Remove(aor, contact) }

func (b backend) Calls() []gateway.CDR {
	ds := b.sw.Dialogs.Dialogs()
	out := make([]gateway.CDR, 0, len(ds))
	for _, d := range ds {
		out = append(out, b.sw.CDRs.Record(d))
	}
	return out
}

func (b backend) Hangup(id string) bool {
	return b.sw.Hangup(id, "operator", "hung up by the operator")
}

func (b backend) Trunks() []admin.TrunkInfo {
	out := []admin.TrunkInfo{}
	gw := b.sw.Gateway()
	if gw == nil {
		return out
	}
	fw := b.sw.firewall.status()
	peers := b.sw.Health.Peers()
	for _, t := range gw.Trunks() {
		ti := admin.TrunkInfo{Name: t.Name, Channels: t.Channels(), MaxChannels: t.MaxChannels, Registers: t.Register}
		if st, ok := fw[t.Name]; ok {
			ti.Firewall = &admin.FirewallInfo{Accepted: st.Accepted, Dropped: st.Dropped, InSync: st.Action == firewall.InSync}
		}
		for _, p := range peers {
			if p.Trunk == t.Name {
				ti.Peers = append(ti.Peers, p)
			}
		}
		if t.Register && b.sw.Registrations != nil {
			if st, ok := b.sw.Registrations.State(t.Name); ok {
				ti.Registration = &st
			}
		}
		out = append(out, ti)
	}
	return out
}

func (b backend) Reload() error { return b.sw.ReloadNow() }

func (b backend) CDRs() ([]gateway.CDR, error) {
	cdrs, err := gateway.ReadCDRs(b.sw.CDR.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return cdrs, err
}

// Cluster lists the cluster's live nodes; an error alone.
func (b backend) Cluster(ctx context.Context) ([]cluster.Node, error) {
	if b.sw.Members == nil {
		return nil, errors.New("this node is not in a cluster (no cluster.redis.address)")
	}
	return b.sw.Members.List(ctx)
}

// Provisioning reads, as voxvisor provision status does, each resource
// the start-up configuration provisions.
func (b backend) Provisioning(ctx context.Context) ([]admin.ProvisionRow, error) {
	if !b.sw.Config.HasEndpoints() {
		return nil, errors.New("no trunk has an endpoint block: nothing is provisioned from this configuration")
	}
	p, closeP, err := provisioning.Connect(ctx, b.sw.Config, b.sw.log)
	if err != nil {
		return nil, err
	}
	defer closeP()
	pl, err := p.Plan(ctx)
	if err != nil {
		return nil, err
	}
	rows := make([]admin.ProvisionRow, 0, len(pl.Changes))
	for _, c := range pl.Changes {
		row := admin.ProvisionRow{Host: c.Host, Trunk: c.Trunk, Resource: c.Resource, State: c.State}
		if c.Action != provisioning.Nothing {
			row.Drift = c.Action.String()
			if c.Why != "" {
				row.Drift += ": " + c.Why
			}
		}
		if c.Err != nil {
			row.Error = c.Err.Error()
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (b backend) Ladder(callID string) ([]capture.Message, int, bool) {
	return b.sw.Capture.Ladder(callID)
}
