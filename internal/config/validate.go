package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

var (
	usernameRE = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,64}$`)
	domainRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)
)

// validate checks every value and returns all problems at once.
func (c *Config) validate(d *document) Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, d.at(key, format, args...))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be one of debug, info, warn, error; got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be text or json; got %q", c.Log.Format)
	}
	switch sl := c.Log.Syslog; {
	case sl.Network != "" && sl.Network != "udp" && sl.Network != "tcp" && sl.Network != "unixgram" && sl.Network != "unix":
		bad("log.syslog.network", "must be empty (the local socket), udp or tcp; got %q", sl.Network)
	case (sl.Network == "udp" || sl.Network == "tcp") && sl.Address == "":
		bad("log.syslog.address", "needed with network %s, e.g. 192.0.2.50:514", sl.Network)
	}
	switch c.Log.Syslog.Facility {
	case "kern", "user", "daemon", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7":
	default:
		bad("log.syslog.facility", "must be kern, user, daemon or local0..local7; got %q", c.Log.Syslog.Facility)
	}
	if !domainRE.MatchString(c.SIP.Domain) {
		bad("sip.domain", "%q is not a host name", c.SIP.Domain)
	}
	seen := map[string]bool{}
	for i, l := range c.SIP.Listen {
		key := fmt.Sprintf("sip.listen[%d]", i)
		switch l.Transport {
		case "udp", "tcp", "tls":
		default:
			bad(key+".transport", "must be udp, tcp or tls; got %q", l.Transport)
		}
		ap, err := netip.ParseAddrPort(l.Address)
		if err != nil {
			bad(key+".address", "must be ip:port, e.g. 127.0.0.1:5060; got %q", l.Address)
			continue
		}
		k := l.Transport + "/" + ap.String()
		if seen[k] {
			bad(key+".address", "%s %s is listed twice", l.Transport, l.Address)
		}
		seen[k] = true
	}
	if c.SIP.MaxMessageSize < 1024 || c.SIP.MaxMessageSize > 1<<20 {
		bad("sip.max_message_size", "must be between 1024 and 1048576 bytes; got %d", c.SIP.MaxMessageSize)
	}
	if c.SIP.MaxHeaders < 16 || c.SIP.MaxHeaders > 1024 {
		bad("sip.max_headers", "must be between 16 and 1024; got %d", c.SIP.MaxHeaders)
	}
	if c.SIP.TCPIdleTimeout < 0 {
		bad("sip.tcp_idle_timeout", "must not be negative")
	}
	if c.SIP.TransactionLinger < time.Second || c.SIP.TransactionLinger > 32*time.Second {
		bad("sip.transaction_linger", "must be between 1s and 32s; got %s", c.SIP.TransactionLinger)
	}
	c.validateTLS(bad)
	if c.SIP.RingTimeout < 0 {
		bad("sip.ring_timeout", "must not be negative")
	}

	r := c.Registrar
	if r.MinExpires < 1 {
		bad("registrar.min_expires", "must be at least 1 second; got %d", r.MinExpires)
	}
	if r.MaxExpires < r.MinExpires {
		bad("registrar.max_expires", "must be at least min_expires (%d); got %d", r.MinExpires, r.MaxExpires)
	}
	if r.DefaultExpires < r.MinExpires || r.DefaultExpires > r.MaxExpires {
		bad("registrar.default_expires", "must be between min_expires (%d) and max_expires (%d); got %d", r.MinExpires, r.MaxExpires, r.DefaultExpires)
	}
	if r.MaxContacts < 1 {
		bad("registrar.max_contacts", "must be at least 1; got %d", r.MaxContacts)
	}

	if c.Auth.NonceTTL < 1e9 {
		bad("auth.nonce_ttl", "must be at least 1s; got %s", c.Auth.NonceTTL)
	}
	for i, a := range c.Auth.Algorithms {
		switch strings.ToUpper(a) {
		case "MD5", "SHA-256":
			c.Auth.Algorithms[i] = strings.ToUpper(a)
		default:
			bad(fmt.Sprintf("auth.algorithms[%d]", i), "must be MD5 or SHA-256; got %q", a)
		}
	}

	m := c.Media
	if a, err := netip.ParseAddr(m.Address); err != nil || a.IsUnspecified() {
		bad("media.address", "must be the relay's IP address (not 0.0.0.0; it is written into SDP); got %q", m.Address)
	}
	if m.PortMin < 1024 || m.PortMin%2 != 0 {
		bad("media.port_min", "must be an even port >= 1024; got %d", m.PortMin)
	}
	if m.PortMax > 65535 || m.PortMax < m.PortMin+3 {
		bad("media.port_max", "must be at most 65535 and leave room for two port pairs above port_min (%d); got %d", m.PortMin, m.PortMax)
	}
	switch m.Anchor {
	case "always", "never", "nat":
	default:
		bad("media.anchor", "must be always, never or nat; got %q", m.Anchor)
	}
	if m.Timeout < time.Second {
		bad("media.timeout", "must be at least 1s; got %s", m.Timeout)
	}
	if m.HoldTimeout < m.Timeout {
		bad("media.hold_timeout", "must be at least media.timeout (%s); got %s", m.Timeout, m.HoldTimeout)
	}

	l := c.Limits
	for _, f := range []struct {
		key string
		v   int
	}{{"limits.auth_failures", l.AuthFailures}, {"limits.connections", l.Connections}, {"limits.transactions", l.Transactions}, {"limits.dialogs", l.Dialogs},
		{"limits.streams", l.Streams}, {"limits.total_connections", l.TotalConnections}} {
		if f.v < 0 {
			bad(f.key, "must not be negative (0 turns the limit off); got %d", f.v)
		}
	}
	if l.Rate < 0 {
		bad("limits.rate", "must not be negative (0 turns the limit off); got %v", l.Rate)
	}
	for i, n := range c.Registrar.ContactNetworks {
		if _, err := parsePrefixOrAddr(n); err != nil {
			bad(fmt.Sprintf("registrar.contact_networks[%d]", i), "must be an address or a CIDR such as 192.0.2.0/24; got %q", n)
		}
	}
	if m.MaxStreams < 1 || m.MaxStreams > 64 {
		bad("media.max_streams", "must be 1-64; got %d", m.MaxStreams)
	}
	for i, tr := range l.Trusted {
		if _, err := parsePrefixOrAddr(tr); err != nil {
			bad(fmt.Sprintf("limits.trusted[%d]", i), "must be an address or a CIDR such as 192.0.2.0/24; got %q", tr)
		}
	}

	c.validateTrunks(bad)
	c.validateProvision(bad)

	users := map[string]bool{}
	for i, u := range c.Users {
		key := fmt.Sprintf("users[%d]", i)
		if !usernameRE.MatchString(u.Username) {
			bad(key+".username", "must be 1-64 letters, digits or ._+-; got %q", u.Username)
		}
		if users[u.Username] {
			bad(key+".username", "user %q is defined twice", u.Username)
		}
		users[u.Username] = true
		if u.Password == "" && u.HA1 == "" && u.HA1SHA256 == "" {
			bad(key, "user %q needs a password, ha1 or ha1_sha256", u.Username)
		}
		if u.Password != "" && (u.HA1 != "" || u.HA1SHA256 != "") {
			bad(key+".password", "give either password or ha1/ha1_sha256, not both")
		}
		if u.HA1 != "" && !isHex(u.HA1, 32) {
			bad(key+".ha1", "must be 32 hex digits (MD5 of username:realm:password)")
		}
		if u.HA1SHA256 != "" && !isHex(u.HA1SHA256, 64) {
			bad(key+".ha1_sha256", "must be 64 hex digits (SHA-256 of username:realm:password)")
		}
	}
	return errs
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// validateTrunks checks trunks, DIDs and the dial plan, reporting each
// problem through bad.
func (c *Config) validateTrunks(bad func(key, format string, args ...any)) {
	names := map[string]bool{}
	for i, t := range c.Trunks {
		key := fmt.Sprintf("trunks[%d]", i)
		if !usernameRE.MatchString(t.Name) {
			bad(key+".name", "must be 1-64 letters, digits or ._+-; got %q", t.Name)
		}
		if names[t.Name] {
			bad(key+".name", "trunk %q is defined twice", t.Name)
		}
		names[t.Name] = true
		if len(t.Peers) == 0 {
			bad(key+".peers", "trunk %q needs at least one peer", t.Name)
		}
		for j, p := range t.Peers {
			pk := fmt.Sprintf("%s.peers[%d]", key, j)
			if p.Host == "" {
				bad(pk+".host", "is required")
			}
			if p.Port < 1 || p.Port > 65535 {
				bad(pk+".port", "must be 1-65535; got %d", p.Port)
			}
			if p.Transport != "udp" && p.Transport != "tcp" && p.Transport != "tls" {
				bad(pk+".transport", "must be udp, tcp or tls; got %q", p.Transport)
			}
		}
		if t.Register && (t.Credentials == nil || t.Credentials.Username == "") {
			bad(key+".register", "registering needs credentials.username and credentials.password")
		}
		if t.RegExpires < 60 {
			bad(key+".register_expires", "must be at least 60 seconds; got %d", t.RegExpires)
		}
		for j, cidr := range t.Inbound.CIDRs {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				bad(fmt.Sprintf("%s.inbound.cidrs[%d]", key, j), "must be a CIDR such as 192.0.2.0/24; got %q", cidr)
			}
		}
		if t.MaxChannels < 0 {
			bad(key+".max_channels", "must not be negative")
		}
		for j, did := range t.DIDs {
			dk := fmt.Sprintf("%s.dids[%d]", key, j)
			if (did.Number == "") == (did.Pattern == "") {
				bad(dk, "give exactly one of number and pattern")
			}
			if did.Pattern != "" {
				if _, err := regexp.Compile(did.Pattern); err != nil {
					bad(dk+".pattern", "bad regular expression: %v", err)
				}
			}
			n := 0
			for _, v := range []string{did.User, did.URI, did.Trunk} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				bad(dk, "give exactly one of user, uri and trunk")
			}
			if did.URI != "" && !strings.HasPrefix(did.URI, "sip:") {
				bad(dk+".uri", "must be a sip: URI; got %q", did.URI)
			}
		}
	}
	for i, t := range c.Trunks {
		for j, did := range t.DIDs {
			if did.Trunk != "" && !names[did.Trunk] {
				bad(fmt.Sprintf("trunks[%d].dids[%d].trunk", i, j), "no trunk named %q", did.Trunk)
			}
		}
	}
	for i, r := range c.DialPlan {
		key := fmt.Sprintf("dialplan[%d]", i)
		if (r.Prefix == "") == (r.Match == "") {
			bad(key, "give exactly one of prefix and match")
		}
		if r.Match != "" {
			if _, err := regexp.Compile(r.Match); err != nil {
				bad(key+".match", "bad regular expression: %v", err)
			}
		}
		if r.Strip < 0 {
			bad(key+".strip", "must not be negative")
		}
		if len(r.Trunks) == 0 {
			bad(key+".trunks", "a rule needs at least one trunk")
		}
		for j, tn := range r.Trunks {
			if !names[tn] {
				bad(fmt.Sprintf("%s.trunks[%d]", key, j), "no trunk named %q", tn)
			}
		}
	}
	if c.CDR.MaxBytes < 1024 {
		bad("cdr.max_bytes", "must be at least 1024; got %d", c.CDR.MaxBytes)
	}
}

var (
	macRE    = regexp.MustCompile(`^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$`)
	lvNameRE = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$`)
	sizeRE   = regexp.MustCompile(`^([0-9]+)\s*([KMGT]?)(i?B)?$`)
)

// ParseSize reads a size such as 512M, 4G, 4GiB or 1073741824 (bytes);
// the units are binary (M = MiB), as in lvm2 and qemu-img.
func ParseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size such as 512M or 4G", s)
	}
	var n int64
	if _, err := fmt.Sscan(m[1], &n); err != nil {
		return 0, fmt.Errorf("%q is not a size such as 512M or 4G", s)
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	if n <= 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return n << shift, nil
}

// validateProvision checks the provision block and the trunks' endpoints.
func (c *Config) validateProvision(bad func(key, format string, args ...any)) {
	p := &c.Provision
	switch p.DomainType {
	case "kvm", "qemu":
	default:
		bad("provision.domain_type", "must be kvm or qemu (TCG, no /dev/kvm); got %q", p.DomainType)
	}
	switch p.Storage.Backend {
	case "lvm":
		if p.Storage.VolumeGroup == "" && c.HasEndpoints() {
			bad("provision.storage.volume_group", "the lvm backend needs a volume group (or set backend: dir)")
		}
		if p.Storage.VolumeGroup != "" && !lvNameRE.MatchString(p.Storage.VolumeGroup) {
			bad("provision.storage.volume_group", "%q is not a volume group name", p.Storage.VolumeGroup)
		}
		if p.Storage.ThinPool != "" && !lvNameRE.MatchString(p.Storage.ThinPool) {
			bad("provision.storage.thin_pool", "%q is not a logical volume name", p.Storage.ThinPool)
		}
	case "dir":
		if p.Storage.ThinPool != "" || p.Storage.VolumeGroup != "" {
			bad("provision.storage.backend", "volume_group and thin_pool apply to the lvm backend only")
		}
	default:
		bad("provision.storage.backend", "must be lvm or dir; got %q", p.Storage.Backend)
	}
	if !strings.HasPrefix(p.Storage.Dir, "/") {
		bad("provision.storage.dir", "must be an absolute path; got %q", p.Storage.Dir)
	}
	switch p.Firewall.Backend {
	case "nftables", "iptables", "none":
	default:
		bad("provision.firewall.backend", "must be nftables, iptables or none; got %q", p.Firewall.Backend)
	}
	if p.Firewall.LogRate < 1 || p.Firewall.LogRate > 10000 {
		bad("provision.firewall.log_rate", "must be 1-10000 packets a minute; got %d", p.Firewall.LogRate)
	}
	if p.ShutdownTimeout < time.Second {
		bad("provision.shutdown_timeout", "must be at least 1s; got %s", p.ShutdownTimeout)
	}
	macs := map[string]string{}
	addrs := map[netip.Addr]string{}
	for i := range c.Trunks {
		t := &c.Trunks[i]
		e := t.Endpoint
		if e == nil {
			continue
		}
		key := fmt.Sprintf("trunks[%d].endpoint", i)
		if e.VCPUs < 1 || e.VCPUs > 64 {
			bad(key+".vcpus", "must be 1-64; got %d", e.VCPUs)
		}
		var err error
		if e.MemoryBytes, err = ParseSize(e.Memory); err != nil {
			bad(key+".memory", "%v", err)
		} else if e.MemoryBytes < 64<<20 {
			bad(key+".memory", "must be at least 64M; got %s", e.Memory)
		}
		if e.Disk.SizeBytes, err = ParseSize(e.Disk.Size); err != nil {
			bad(key+".disk.size", "%v", err)
		} else if e.Disk.SizeBytes < 1<<20 || e.Disk.SizeBytes%512 != 0 {
			bad(key+".disk.size", "must be at least 1M and a multiple of 512 bytes; got %s", e.Disk.Size)
		}
		if e.Disk.Image != "" && !strings.HasPrefix(e.Disk.Image, "/") {
			bad(key+".disk.image", "must be an absolute path; got %q", e.Disk.Image)
		}
		if e.UserData != "" && !strings.HasPrefix(e.UserData, "/") {
			bad(key+".user_data", "must be an absolute path; got %q", e.UserData)
		}
		n := e.Network
		if (n.Bridge == "") == (n.Network == "") {
			bad(key+".network", "give exactly one of bridge and network")
		}
		if n.MAC != "" {
			if !macRE.MatchString(n.MAC) {
				bad(key+".network.mac", "must be six hex bytes such as 52:54:00:12:34:56; got %q", n.MAC)
			} else if o, dup := macs[strings.ToLower(n.MAC)]; dup {
				bad(key+".network.mac", "%s is also trunk %q's", n.MAC, o)
			}
			macs[strings.ToLower(n.MAC)] = t.Name
		}
		pfx, err := netip.ParsePrefix(n.Address)
		if err != nil {
			bad(key+".network.address", "must be the guest's IP with its prefix length, e.g. 10.10.0.21/24; got %q", n.Address)
		} else if o, dup := addrs[pfx.Addr()]; dup {
			bad(key+".network.address", "%s is also trunk %q's", pfx.Addr(), o)
		} else {
			addrs[pfx.Addr()] = t.Name
		}
		if n.Gateway != "" {
			if _, err := netip.ParseAddr(n.Gateway); err != nil {
				bad(key+".network.gateway", "must be an IP address; got %q", n.Gateway)
			}
		}
		for j, d := range n.DNS {
			if _, err := netip.ParseAddr(d); err != nil {
				bad(fmt.Sprintf("%s.network.dns[%d]", key, j), "must be an IP address; got %q", d)
			}
		}
	}
}

// HasEndpoints reports whether any trunk has an endpoint to provision.
func (c *Config) HasEndpoints() bool {
	for _, t := range c.Trunks {
		if t.Endpoint != nil {
			return true
		}
	}
	return false
}
