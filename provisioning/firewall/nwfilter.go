package firewall

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"

	"libvirt.org/go/libvirt"
)

// NWFilter is the backend for hosts reached only through libvirt
// (provision.hosts): per trunk a libvirt network filter vox-<trunk> on
// the guest's interface, which libvirtd on the hypervisor turns into its
// own kernel rules. The guest's definition names the filter (FilterRef),
// so it is made before the guest and removed after it; a changed filter
// reaches a running guest at once. libvirt keeps no counters for it.
type NWFilter struct {
	c *libvirt.Connect
}

// NewNWFilter keeps the filters of the libvirtd behind c.
func NewNWFilter(c *libvirt.Connect) *NWFilter { return &NWFilter{c: c} }

func (n *NWFilter) Name() string { return "nwfilter" }

// Referenced is a backend whose rules the guest's definition names: the
// rules exist before the guest starts and go after it is gone.
type Referenced interface {
	FilterRef(trunk string) string
}

// FilterRef is the name of trunk's filter, for the guest's interface.
func (n *NWFilter) FilterRef(trunk string) string { return filterName(trunk) }

func filterName(trunk string) string { return "vox-" + ident(trunk) }

// nwfilterComment marks every rule of ours with the rules' hash.
func nwfilterComment(r *Rules) string { return "voxvisor " + r.Trunk + " " + r.Hash() }

// nwfilterXML is the trunk's filter: accept the peers to the SIP ports
// and the relay's range, drop anyone else there; other traffic is not
// the filter's business (libvirt's root chain accepts it).
func (r *Rules) nwfilterXML() (xmlText string, rules int) {
	var b strings.Builder
	esc := func(s string) string {
		var e strings.Builder
		xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	comment := esc(nwfilterComment(r))
	fmt.Fprintf(&b, "<filter name='%s' chain='root'>\n", filterName(r.Trunk))
	type proto struct {
		name  string
		ports []PortRange
	}
	protos := []proto{{"udp", r.UDPPorts}, {"tcp", r.TCPPorts}}
	for _, p := range Cover(r.Peers) {
		for _, pr := range protos {
			el := pr.name
			if p.Addr().Is6() {
				el += "-ipv6"
			}
			for _, ports := range pr.ports {
				fmt.Fprintf(&b, "  <rule action='accept' direction='in' priority='100' statematch='false'><%s srcipaddr='%s' srcipmask='%d' dstportstart='%d' dstportend='%d' comment='%s'/></rule>\n",
					el, p.Addr(), p.Bits(), ports.Lo, ports.Hi, comment)
				rules++
			}
		}
	}
	for _, pr := range protos {
		for _, el := range []string{pr.name, pr.name + "-ipv6"} {
			for _, ports := range pr.ports {
				fmt.Fprintf(&b, "  <rule action='drop' direction='in' priority='500' statematch='false'><%s dstportstart='%d' dstportend='%d' comment='%s'/></rule>\n",
					el, ports.Lo, ports.Hi, comment)
				rules++
			}
		}
	}
	b.WriteString("</filter>\n")
	return b.String(), rules
}

// lookup returns the trunk's filter's XML, "" when there is none.
func (n *NWFilter) lookup(trunk string) (string, error) {
	f, err := n.c.LookupNWFilterByName(filterName(trunk))
	var le libvirt.Error
	if errors.As(err, &le) && le.Code == libvirt.ERR_NO_NWFILTER {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("nwfilter %s: %w", filterName(trunk), err)
	}
	defer f.Free()
	x, err := f.GetXMLDesc(0)
	if err != nil {
		return "", fmt.Errorf("nwfilter %s: %w", filterName(trunk), err)
	}
	return x, nil
}

func (n *NWFilter) Check(_ context.Context, r *Rules) (Status, error) {
	st := Status{Trunk: r.Trunk}
	x, err := n.lookup(r.Trunk)
	switch {
	case err != nil:
		return st, err
	case x == "":
		st.Action = Missing
		return st, nil
	case !strings.Contains(x, "voxvisor "+r.Trunk+" "):
		return st, fmt.Errorf("nwfilter %s exists but was not made by voxvisor (no voxvisor comment in its rules): rename or remove it (virsh nwfilter-undefine %s)", filterName(r.Trunk), filterName(r.Trunk))
	}
	_, want := r.nwfilterXML()
	if strings.Count(x, "<rule ") != want || strings.Count(x, nwfilterComment(r)) != want {
		st.Action, st.Detail = Drifted, "filter rules differ from the configuration"
	}
	return st, nil
}

// Add defines the trunk's filter, or redefines it under its UUID (libvirt
// refuses a filter of an existing name under another one); a running
// guest gets the new rules at once.
func (n *NWFilter) Add(_ context.Context, r *Rules) error {
	x, _ := r.nwfilterXML()
	old, err := n.lookup(r.Trunk)
	if err != nil {
		return err
	}
	if old != "" {
		var def struct {
			UUID string `xml:"uuid"`
		}
		if err := xml.Unmarshal([]byte(old), &def); err != nil || def.UUID == "" {
			return fmt.Errorf("nwfilter %s: its UUID does not read: %v", filterName(r.Trunk), err)
		}
		x = strings.Replace(x, ">\n", ">\n  <uuid>"+def.UUID+"</uuid>\n", 1)
	}
	return n.define(x)
}

func (n *NWFilter) define(x string) error {
	f, err := n.c.NWFilterDefineXML(x)
	if err != nil {
		return fmt.Errorf("nwfilter: define: %w", err)
	}
	f.Free()
	return nil
}

// Saved returns how to put the trunk's filter back as it is now, for an
// apply that changes it and then fails; nil when there is none.
func (n *NWFilter) Saved(trunk string) (func() error, error) {
	old, err := n.lookup(trunk)
	if err != nil || old == "" {
		return nil, err
	}
	return func() error { return n.define(old) }, nil
}

func (n *NWFilter) Del(_ context.Context, trunk string) error {
	f, err := n.c.LookupNWFilterByName(filterName(trunk))
	var le libvirt.Error
	if errors.As(err, &le) && le.Code == libvirt.ERR_NO_NWFILTER {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nwfilter %s: %w", filterName(trunk), err)
	}
	defer f.Free()
	if err := f.Undefine(); err != nil {
		return fmt.Errorf("nwfilter %s: undefine: %w", filterName(trunk), err)
	}
	return nil
}

func (n *NWFilter) Trunks(context.Context) ([]string, error) {
	fs, err := n.c.ListAllNWFilters(0)
	if err != nil {
		return nil, fmt.Errorf("nwfilter: list: %w", err)
	}
	var out []string
	for i := range fs {
		name, err := fs[i].GetName()
		if t, ok := strings.CutPrefix(name, "vox-"); ok && err == nil {
			if x, err := fs[i].GetXMLDesc(0); err == nil && strings.Contains(x, "voxvisor "+t+" ") {
				out = append(out, t)
			}
		}
		fs[i].Free()
	}
	return out, nil
}

// Clean has nothing to do: a trunk's filter is all there is.
func (n *NWFilter) Clean(context.Context) (string, error) { return "", nil }
