package domain

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// ErrNotOurs is returned for a domain of the right name that lacks
// voxvisor's <metadata>: it is left alone.
var ErrNotOurs = errors.New("exists but was not created by voxvisor (no voxvisor metadata); rename or remove it by hand")

// State is a guest as libvirt has it.
type State struct {
	Name      string
	Trunk     string
	Hash      string // from voxvisor's metadata
	Running   bool
	State     string // running, shut off, paused, ...
	Autostart bool
	Defined   Spec // read back from the persistent definition
}

// Conn is a connection to libvirtd.
type Conn struct {
	c    *libvirt.Connect
	uri  string
	host Host // for Preflight

	kvmOnce sync.Once
	kvmErr  error // CheckKVM's answer, asked once per connection
}

// Open connects to libvirt at uri, saying what to do when the library or
// the daemon is missing.
func Open(uri string) (*Conn, error) {
	c, err := libvirt.NewConnect(uri)
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "Failed to open libvirt.so"):
			return nil, fmt.Errorf("libvirt is not installed on this host (libvirt.so.0 not found): install libvirt0 and libvirt-daemon-driver-qemu (Debian), then start libvirtd")
		case strings.Contains(msg, "Failed to connect socket"), strings.Contains(msg, "No such file or directory"), strings.Contains(msg, "Connection refused"):
			return nil, fmt.Errorf("libvirtd is not running at %s: start it (systemctl start libvirtd, or virtlogd -d and libvirtd -d): %v", uri, err)
		}
		return nil, fmt.Errorf("libvirt %s: %w", uri, err)
	}
	return &Conn{c: c, uri: uri, host: hostOf(uri)}, nil
}

// HostUUID is the UUID libvirtd gives its host (capabilities'
// <host><uuid>): two URIs with the same one reach one machine.
func (c *Conn) HostUUID() (string, error) {
	x, err := c.c.GetCapabilities()
	if err != nil {
		return "", fmt.Errorf("libvirt %s: capabilities: %w", c.uri, err)
	}
	var caps struct {
		UUID string `xml:"host>uuid"`
	}
	if err := xml.Unmarshal([]byte(x), &caps); err != nil {
		return "", fmt.Errorf("libvirt %s: capabilities: %w", c.uri, err)
	}
	return caps.UUID, nil
}

// Libvirt is the connection itself, for the storage pool (volume.OpenPool)
// and the network filters (firewall.NWFilter) of the same host.
func (c *Conn) Libvirt() *libvirt.Connect { return c.c }

// Close drops the connection.
func (c *Conn) Close() error {
	_, err := c.c.Close()
	return err
}

func isCode(err error, code libvirt.ErrorNumber) bool {
	var le libvirt.Error
	return errors.As(err, &le) && le.Code == code
}

// lookup returns the domain if it exists and is ours; nil, nil when absent.
func (c *Conn) lookup(name string) (*libvirt.Domain, mark, error) {
	d, err := c.c.LookupDomainByName(name)
	if isCode(err, libvirt.ERR_NO_DOMAIN) {
		return nil, mark{}, nil
	}
	if err != nil {
		return nil, mark{}, fmt.Errorf("domain %s: %w", name, err)
	}
	md, err := d.GetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, Namespace, libvirt.DOMAIN_AFFECT_CONFIG)
	if err != nil {
		d.Free()
		if isCode(err, libvirt.ERR_NO_DOMAIN_METADATA) {
			return nil, mark{}, fmt.Errorf("domain %s %w", name, ErrNotOurs)
		}
		return nil, mark{}, fmt.Errorf("domain %s: metadata: %w", name, err)
	}
	m, err := parseMark(md)
	if err != nil || m.Trunk == "" {
		d.Free()
		return nil, mark{}, fmt.Errorf("domain %s: unreadable voxvisor metadata %q", name, md)
	}
	return d, m, nil
}

// Get returns the guest, nil when there is none, or ErrNotOurs.
func (c *Conn) Get(name string) (*State, error) {
	d, m, err := c.lookup(name)
	if d == nil || err != nil {
		return nil, err
	}
	defer d.Free()
	return c.state(d, name, m)
}

func (c *Conn) state(d *libvirt.Domain, name string, m mark) (*State, error) {
	st := &State{Name: name, Trunk: m.Trunk, Hash: m.Hash}
	s, _, err := d.GetState()
	if err != nil {
		return nil, fmt.Errorf("domain %s: %w", name, err)
	}
	st.Running = s == libvirt.DOMAIN_RUNNING || s == libvirt.DOMAIN_PAUSED || s == libvirt.DOMAIN_BLOCKED
	st.State = stateName(s)
	if st.Autostart, err = d.GetAutostart(); err != nil {
		return nil, fmt.Errorf("domain %s: %w", name, err)
	}
	x, err := d.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE)
	if err != nil {
		return nil, fmt.Errorf("domain %s: %w", name, err)
	}
	if st.Defined, err = fromXML(x); err != nil {
		return nil, fmt.Errorf("domain %s: %w", name, err)
	}
	st.Defined.Trunk = m.Trunk
	return st, nil
}

func stateName(s libvirt.DomainState) string {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return "running"
	case libvirt.DOMAIN_BLOCKED:
		return "blocked"
	case libvirt.DOMAIN_PAUSED:
		return "paused"
	case libvirt.DOMAIN_SHUTDOWN:
		return "shutting down"
	case libvirt.DOMAIN_SHUTOFF:
		return "shut off"
	case libvirt.DOMAIN_CRASHED:
		return "crashed"
	case libvirt.DOMAIN_PMSUSPENDED:
		return "suspended"
	}
	return "unknown"
}

// List returns voxvisor's guests.
func (c *Conn) List() ([]State, error) {
	doms, err := c.c.ListAllDomains(0)
	if err != nil {
		return nil, fmt.Errorf("libvirt: list domains: %w", err)
	}
	// A guest of ours that cannot be read is an error, not an absence: a
	// plan that missed it would make a second one (elsewhere, with hosts).
	// Guests without our mark, or gone meanwhile, are not ours to list.
	var out []State
	var errs []error
	for i := range doms {
		d := &doms[i]
		st, err := c.listed(d)
		if err != nil && !isCode(err, libvirt.ERR_NO_DOMAIN) && !isCode(err, libvirt.ERR_NO_DOMAIN_METADATA) {
			errs = append(errs, err)
		} else if st != nil {
			out = append(out, *st)
		}
		d.Free()
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("libvirt: list domains: %w", errors.Join(errs...))
	}
	return out, nil
}

// listed is d's state when it is one of voxvisor's guests, else nil.
func (c *Conn) listed(d *libvirt.Domain) (*State, error) {
	name, err := d.GetName()
	if err != nil {
		return nil, err
	}
	md, err := d.GetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, Namespace, libvirt.DOMAIN_AFFECT_CONFIG)
	if err != nil {
		return nil, err
	}
	m, err := parseMark(md)
	if err != nil || m.Trunk == "" {
		return nil, fmt.Errorf("domain %s: unreadable voxvisor metadata %q", name, md)
	}
	return c.state(d, name, m)
}

// Define creates or replaces the persistent definition. Replacing one
// that is not ours is refused.
func (c *Conn) Define(s *Spec) error {
	old, _, err := c.lookup(s.Name)
	if err != nil {
		return err
	}
	uuid := ""
	if old != nil {
		uuid, err = old.GetUUIDString()
		old.Free()
		if err != nil {
			return fmt.Errorf("domain %s: %w", s.Name, err)
		}
	}
	x, err := s.xml(uuid)
	if err != nil {
		return err
	}
	d, err := c.c.DomainDefineXMLFlags(x, libvirt.DOMAIN_DEFINE_VALIDATE)
	if err != nil {
		return fmt.Errorf("define domain %s: %w", s.Name, err)
	}
	return d.Free()
}

// DefineXML restores a definition (undoing an update).
func (c *Conn) DefineXML(x string) error {
	d, err := c.c.DomainDefineXML(x)
	if err != nil {
		return fmt.Errorf("restore domain definition: %w", err)
	}
	return d.Free()
}

// XML returns the persistent definition of one of voxvisor's guests.
func (c *Conn) XML(name string) (string, error) {
	var x string
	err := c.do(name, func(d *libvirt.Domain) (err error) {
		x, err = d.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE)
		return err
	})
	return x, err
}

// do runs f on one of voxvisor's guests, or fails clearly.
func (c *Conn) do(name string, f func(*libvirt.Domain) error) error {
	d, _, err := c.lookup(name)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("domain %s: not defined", name)
	}
	defer d.Free()
	if err := f(d); err != nil {
		return fmt.Errorf("domain %s: %w", name, err)
	}
	return nil
}

// Start boots a defined guest; starting a running one is no error.
func (c *Conn) Start(name string) error {
	return c.do(name, func(d *libvirt.Domain) error {
		if on, err := d.IsActive(); err == nil && on {
			return nil
		}
		if err := d.Create(); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		return nil
	})
}

// SetAutostart sets whether libvirtd starts the guest at boot.
func (c *Conn) SetAutostart(name string, on bool) error {
	return c.do(name, func(d *libvirt.Domain) error { return d.SetAutostart(on) })
}

// Stop shuts the guest down gracefully: an ACPI power button press, a
// wait of up to timeout, then a hard stop. With timeout 0 it is the hard
// stop at once (virsh destroy). A stopped guest is no error.
func (c *Conn) Stop(ctx context.Context, name string, timeout time.Duration) error {
	return c.do(name, func(d *libvirt.Domain) error {
		if on, err := d.IsActive(); err != nil || !on {
			return err
		}
		if timeout > 0 && d.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN) == nil {
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if on, err := d.IsActive(); err == nil && !on {
					return nil
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		if err := d.Destroy(); err != nil && !isCode(err, libvirt.ERR_OPERATION_INVALID) {
			return fmt.Errorf("stop: %w", err)
		}
		return nil
	})
}

// Undefine removes the guest's definition; it must be stopped.
func (c *Conn) Undefine(name string) error {
	return c.do(name, func(d *libvirt.Domain) error {
		err := d.UndefineFlags(libvirt.DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.DOMAIN_UNDEFINE_NVRAM)
		if err != nil {
			err = d.Undefine()
		}
		if err != nil {
			return fmt.Errorf("undefine: %w", err)
		}
		return nil
	})
}

// BlockResize tells a running guest that its disk grew to size bytes.
func (c *Conn) BlockResize(name string, size int64) error {
	return c.do(name, func(d *libvirt.Domain) error {
		if err := d.BlockResize("vda", uint64(size), libvirt.DOMAIN_BLOCK_RESIZE_BYTES); err != nil {
			return fmt.Errorf("block resize: %w", err)
		}
		return nil
	})
}

// DHCPHost adds (or removes) the guest's MAC-to-IP entry in a libvirt
// network's DHCP, live and in its definition. An entry for the MAC with
// another address is modified; repeating is no error.
func (c *Conn) DHCPHost(network string, s *Spec, add bool) error {
	n, err := c.c.LookupNetworkByName(network)
	if err != nil {
		return fmt.Errorf("libvirt network %s: %w", network, err)
	}
	defer n.Free()
	macOK, ipOK, err := dhcpEntry(n, s)
	if err != nil {
		return fmt.Errorf("libvirt network %s: %w", network, err)
	}
	var cmd libvirt.NetworkUpdateCommand
	switch {
	case add && macOK && ipOK, !add && !macOK:
		return nil
	case add && macOK:
		cmd = libvirt.NETWORK_UPDATE_COMMAND_MODIFY
	case add:
		cmd = libvirt.NETWORK_UPDATE_COMMAND_ADD_LAST
	default:
		cmd = libvirt.NETWORK_UPDATE_COMMAND_DELETE
	}
	flags := libvirt.NETWORK_UPDATE_AFFECT_CONFIG
	if on, _ := n.IsActive(); on {
		flags |= libvirt.NETWORK_UPDATE_AFFECT_LIVE
	}
	entry := fmt.Sprintf("<host mac='%s' name='%s' ip='%s'/>", strings.ToLower(s.MAC), s.Name, s.Address)
	if err := n.Update(cmd, libvirt.NETWORK_SECTION_IP_DHCP_HOST, -1, entry, flags); err != nil {
		return fmt.Errorf("libvirt network %s: DHCP host %s: %w", network, entry, err)
	}
	return nil
}

// HasDHCPHost says whether the network maps the guest's MAC to its IP.
func (c *Conn) HasDHCPHost(network string, s *Spec) (bool, error) {
	n, err := c.c.LookupNetworkByName(network)
	if err != nil {
		return false, fmt.Errorf("libvirt network %s: %w", network, err)
	}
	defer n.Free()
	macOK, ipOK, err := dhcpEntry(n, s)
	return macOK && ipOK, err
}

// dhcpEntry finds the network's DHCP host entry for the guest's MAC and
// whether it gives the guest's address.
func dhcpEntry(n *libvirt.Network, s *Spec) (macOK, ipOK bool, err error) {
	x, err := n.GetXMLDesc(0)
	if err != nil {
		return false, false, err
	}
	var def libvirtxml.Network
	if err := def.Unmarshal(x); err != nil {
		return false, false, err
	}
	for _, ip := range def.IPs {
		if ip.DHCP == nil {
			continue
		}
		for _, h := range ip.DHCP.Hosts {
			if strings.EqualFold(h.MAC, s.MAC) {
				return true, h.IP == s.Address.String(), nil
			}
		}
	}
	return false, false, nil
}
