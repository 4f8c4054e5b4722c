package config

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
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
	// A value with a control character is reported once, for that.
	ctl := c.checkControl(func(key, format string, args ...any) {
		errs = append(errs, d.at(key, format, args...))
	})
	bad := func(key, format string, args ...any) {
		if !ctl[key] {
			errs = append(errs, d.at(key, format, args...))
		}
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
		if l.Advertise != "" && !isHostPort(l.Advertise) {
			bad(key+".advertise", "must be a host name or an IP address, with an optional :port (it goes into Via and Record-Route); got %q", l.Advertise)
		}
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
	if cp := c.SIP.Capture; cp.Calls < 0 || cp.Calls > 100000 || cp.Messages < 1 || cp.Messages > 1000 || cp.Retention < time.Second {
		bad("sip.capture", "calls must be 0 (off) to 100000, messages 1 to 1000 per call, retention at least 1s; got %d, %d, %s", cp.Calls, cp.Messages, cp.Retention)
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
	c.validateNAT(bad)
	c.validateDialog(bad)

	if !quotedSafe(c.Auth.Realm) || c.Auth.Realm == "" {
		bad("auth.realm", "must not be empty or hold a quote or a backslash (it goes into a quoted WWW-Authenticate parameter); got %q", c.Auth.Realm)
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
	switch m.Learning {
	case LearningHeuristic, LearningStrict:
		if m.NATLatching {
			bad("media.nat_latching", "is a deprecated alias for learning: any and contradicts learning: %s; remove nat_latching", m.Learning)
		}
	case LearningAny:
	default:
		bad("media.learning", "must be heuristic (the default: SDP address, SDP IP or the SIP source; NATed phones work), strict (the SDP IP only) or any (any source during the learning window); got %q", m.Learning)
	}
	if cl := c.Cluster; cl.Redis.Address != "" {
		if _, _, err := net.SplitHostPort(cl.Redis.Address); err != nil {
			bad("cluster.redis.address", "must be host:port, such as 10.0.0.5:6379; got %q", cl.Redis.Address)
		}
		if !nodeNameRE.MatchString(cl.Node) {
			bad("cluster.node", "must be 1-64 letters, digits or ._- (a name for this node in the cluster); got %q", cl.Node)
		}
	}
	switch m.Kernel {
	case KernelAuto, KernelOn, KernelOff:
	default:
		bad("media.kernel", "must be auto (the default: RTP of latched legs forwarded in the kernel by eBPF when it loads, else by the relay), on (the kernel path or no start) or off (the relay's sockets only); got %q", m.Kernel)
	}
	for i, name := range m.KernelInterfaces {
		if !isIfName(name) {
			bad(fmt.Sprintf("media.kernel_interfaces[%d]", i), "must be an interface name: 1-15 letters, digits or _.-, not . or ..; got %q", name)
		}
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

	c.validateAdmin(bad)
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
	// In file order; problems with keys the file does not set, last.
	slices.SortStableFunc(errs, func(a, b *Error) int {
		if (a.Line == 0) != (b.Line == 0) {
			return cmp.Compare(b.Line, a.Line)
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return errs
}

// validateDialog checks the dialog section against RFC 4028's floor.
func (c *Config) validateDialog(bad func(key, format string, args ...any)) {
	d := c.Dialog
	if d.MinSE < 90*time.Second {
		bad("dialog.min_se", "must be at least 90s (RFC 4028); got %s", d.MinSE)
	}
	if d.SessionExpires != 0 && d.SessionExpires < d.MinSE {
		bad("dialog.session_expires", "must be 0s (none offered) or at least dialog.min_se (%s); got %s", d.MinSE, d.SessionExpires)
	}
	if d.MaxAge < 0 {
		bad("dialog.max_age", "must be 0s (no bound) or positive; got %s", d.MaxAge)
	}
}

// validateNAT checks the nat section: pings no more often than once a
// second, a removal timeout longer than the interval, and a cap on NATed
// contacts' expiry that the registrar's limits allow.
func (c *Config) validateNAT(bad func(key, format string, args ...any)) {
	n := c.NAT
	if n.PingInterval != 0 && n.PingInterval < time.Second {
		bad("nat.ping_interval", "must be 0s (no pings) or at least 1s; got %s", n.PingInterval)
	}
	switch {
	case n.PingTimeout < 0:
		bad("nat.ping_timeout", "must not be negative (0s keeps silent contacts until they expire); got %s", n.PingTimeout)
	case n.PingTimeout > 0 && n.PingInterval > 0 && n.PingTimeout <= n.PingInterval:
		bad("nat.ping_timeout", "must be longer than nat.ping_interval (%s), or 0s; got %s", n.PingInterval, n.PingTimeout)
	}
	r := c.Registrar
	if n.MaxExpires != 0 && (n.MaxExpires < r.MinExpires || n.MaxExpires > r.MaxExpires) {
		bad("nat.max_expires", "must be 0 (no cap) or between registrar.min_expires (%d) and registrar.max_expires (%d); got %d", r.MinExpires, r.MaxExpires, n.MaxExpires)
	}
}

// isHostPort reports whether s is host or host:port, the host a name or
// an IP address (IPv6 in [ ] when a port follows).
func isHostPort(s string) bool {
	if isHost(s) {
		return true
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil || !isHost(h) {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535 && p[0] != '+'
}

// firstTransport is the transport of t's first peer when it is a valid
// one, else "".
func firstTransport(t Trunk) string {
	if len(t.Peers) == 0 {
		return ""
	}
	switch tr := t.Peers[0].Transport; tr {
	case "udp", "tcp", "tls":
		return tr
	}
	return ""
}

// validateAdmin checks the admin listener as the admin server will:
// off loopback, it needs a token.
func (c *Config) validateAdmin(bad func(key, format string, args ...any)) {
	a := c.Admin
	if a.Listen == "off" {
		return
	}
	host, port, err := net.SplitHostPort(a.Listen)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 || host != "" && !isHost(host) {
		bad("admin.listen", "must be ip:port such as 127.0.0.1:8060, or off; got %q", a.Listen)
		return
	}
	if ip, err := netip.ParseAddr(host); (err != nil || !ip.IsLoopback()) && a.Token == "" {
		bad("admin.listen", "%s is not a loopback address: set admin.token, or listen on 127.0.0.1", a.Listen)
	}
	if strings.ContainsAny(a.Token, " ") {
		bad("admin.token", "must not hold spaces (it is sent as a bearer token)")
	}
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
		checkTrunkName(bad, key+".name", t.Name)
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
			} else if !isHost(p.Host) {
				bad(pk+".host", "must be a host name or an IP address, nothing else (no port, brackets or spaces); got %q", p.Host)
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
		if tr := firstTransport(t); t.Register && tr != "" && !slices.ContainsFunc(c.SIP.Listen, func(l Listener) bool { return l.Transport == tr }) {
			bad(key+".register", "trunk %s registers over %s (its first peer's transport), and there is no %s listener in sip.listen", t.Name, tr, tr)
		}
		if cr := t.Credentials; cr != nil {
			if !quotedSafe(cr.Username) {
				bad(key+".credentials.username", "must not hold a quote or a backslash (it goes into a quoted Authorization parameter); got %q", cr.Username)
			}
			if !quotedSafe(cr.Realm) {
				bad(key+".credentials.realm", "must not hold a quote or a backslash (it is compared with a quoted realm parameter); got %q", cr.Realm)
			}
		}
		if u := t.CallerID.FromUser; u != "" && !userPartRE.MatchString(u) {
			bad(key+".caller_id.from_user", "may hold %s only (it becomes the From URI's user part); got %q", userPartChars, u)
		}
		if u := t.CallerID.PAI; u != "" {
			if why := checkURI(u, "sip", "sips", "tel"); why != "" {
				bad(key+".caller_id.pai", "must be a sip:, sips: or tel: URI such as sip:+4930123456@carrier.example (it goes into P-Asserted-Identity): %s; got %q", why, u)
			}
		}
		if t.RegExpires < 60 {
			bad(key+".register_expires", "must be at least 60 seconds; got %d", t.RegExpires)
		}
		if h := t.Health; h.Interval != 0 {
			switch {
			case h.Interval < 100*time.Millisecond:
				bad(key+".health.interval", "must be 0 (no OPTIONS pings) or at least 100ms (30s is usual); got %s", h.Interval)
			case h.Timeout <= 0 || h.Timeout > h.Interval:
				bad(key+".health.timeout", "must be more than 0 and at most health.interval (%s); got %s", h.Interval, h.Timeout)
			}
			if h.DownAfter < 1 || h.UpAfter < 1 {
				bad(key+".health", "down_after and up_after must be at least 1; got %d and %d", h.DownAfter, h.UpAfter)
			}
		} else if h.Timeout != 0 || h.DownAfter != 0 || h.UpAfter != 0 {
			bad(key+".health", "timeout, down_after and up_after need health.interval (OPTIONS pings are off without it)")
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
			if did.Number != "" && !userPartRE.MatchString(did.Number) {
				bad(dk+".number", "may hold %s only (it is a Request-URI's user part); got %q", userPartChars, did.Number)
			}
			if did.URI != "" {
				if why := checkURI(strings.ReplaceAll(did.URI, "{did}", "0"), "sip", "sips"); why != "" {
					bad(dk+".uri", "must be a sip: or sips: URI such as sip:{did}@10.10.0.21:5060 (it becomes the Request-URI): %s; got %q", why, did.URI)
				}
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
		if r.Prepend != "" && !userPartRE.MatchString(r.Prepend) {
			bad(key+".prepend", "may hold %s only (it goes into the Request-URI's user part); got %q", userPartChars, r.Prepend)
		}
		if r.Replace != "" {
			if r.Match == "" {
				bad(key+".replace", "needs match (a regular expression whose groups it uses)")
			} else if lit := expandRefRE.ReplaceAllString(r.Replace, ""); lit != "" && !userPartRE.MatchString(lit) {
				bad(key+".replace", "may hold $1, ${name} and %s only (it becomes the Request-URI's user part); got %q", userPartChars, r.Replace)
			}
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
	macRE  = regexp.MustCompile(`^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$`)
	sizeRE = regexp.MustCompile(`^([0-9]+)\s*([KMGT]?)(i?B)?$`)
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
		if p.Storage.VolumeGroup == "" && c.HasEndpoints() && len(p.Hosts) == 0 {
			bad("provision.storage.volume_group", "the lvm backend needs a volume group (or set backend: dir)")
		}
		if vg := p.Storage.VolumeGroup; vg != "" {
			if why := lvmNameProblem(vg, false); why != "" {
				bad("provision.storage.volume_group", "%s (a volume group name); got %q", why, vg)
			}
		}
		if tp := p.Storage.ThinPool; tp != "" {
			if why := lvmNameProblem(tp, true); why != "" {
				bad("provision.storage.thin_pool", "%s (a logical volume name); got %q", why, tp)
			}
		}
		if bv := p.Storage.BaseVolume; bv != "" {
			if why := lvmNameProblem(bv, true); why != "" {
				bad("provision.storage.base_volume", "%s (a logical volume name); got %q", why, bv)
			} else if p.Storage.ThinPool == "" {
				bad("provision.storage.base_volume", "needs thin_pool: disks are thin snapshots of the base volume, which lives in that pool")
			} else if bv == p.Storage.ThinPool {
				bad("provision.storage.base_volume", "is the thin pool itself; name a thin volume of the pool holding the guest image")
			}
		}
	case "dir":
		if p.Storage.ThinPool != "" || p.Storage.VolumeGroup != "" || p.Storage.BaseVolume != "" {
			bad("provision.storage.backend", "volume_group, thin_pool and base_volume apply to the lvm backend only")
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
	hosts := c.validateHosts(bad)
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
		c.placeExplicit(bad, hosts, key, e)
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
		if n.Bridge != "" && !isIfName(n.Bridge) {
			bad(key+".network.bridge", "must be an interface name: 1-15 letters, digits or _.-, not . or ..; got %q", n.Bridge)
		}
		if n.Network != "" && !isIfName(n.Network) {
			bad(key+".network.network", "must be a libvirt network name of 1-15 letters, digits or _.-, not . or ..; got %q", n.Network)
		}
		if n.MAC != "" {
			if !macRE.MatchString(n.MAC) {
				bad(key+".network.mac", "must be six hex bytes such as 52:54:00:12:34:56; got %q", n.MAC)
			} else if o, dup := macs[strings.ToLower(n.MAC)]; dup {
				bad(key+".network.mac", "%s is also trunk %q's", n.MAC, o)
			} else {
				checkMAC(bad, key+".network.mac", n.MAC)
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

// hostNameRE: a host's name is for people and for endpoint.host.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// validateHosts checks provision.hosts and returns each host's room
// (capacity, for placeExplicit to count down) by name.
func (c *Config) validateHosts(bad func(key, format string, args ...any)) map[string]*ProvisionHost {
	room := map[string]*ProvisionHost{}
	for i := range c.Provision.Hosts {
		h := &c.Provision.Hosts[i]
		key := fmt.Sprintf("provision.hosts[%d]", i)
		if !hostNameRE.MatchString(h.Name) {
			bad(key+".name", "must be 1-64 letters, digits or _.-, starting with a letter or digit; got %q", h.Name)
		} else if room[h.Name] != nil {
			bad(key+".name", "%q is listed twice", h.Name)
		}
		if u, err := url.Parse(h.URI); err != nil || u.Scheme == "" || !strings.HasPrefix(u.Scheme, "qemu") {
			bad(key+".uri", "must be a libvirt QEMU URI such as qemu+ssh://root@hv1/system; got %q", h.URI)
		}
		for j, o := range c.Provision.Hosts[:i] {
			if o.URI == h.URI && h.URI != "" {
				bad(key+".uri", "is also provision.hosts[%d]'s (%s): one libvirtd is one host", j, o.Name)
			}
		}
		if h.StoragePool == "" {
			h.StoragePool = "voxvisor"
		} else if !isIfName(h.StoragePool) && !trunkNameRE.MatchString(h.StoragePool) {
			bad(key+".storage_pool", "must be a libvirt storage pool name of letters, digits or _.-; got %q", h.StoragePool)
		}
		switch h.Firewall {
		case "":
			h.Firewall = "nwfilter"
		case "nwfilter", "none":
		default:
			bad(key+".firewall", "must be nwfilter or none; got %q", h.Firewall)
		}
		if h.VCPUs < 1 || h.VCPUs > 4096 {
			bad(key+".vcpus", "must be the vCPUs voxvisor's guests may use there, 1-4096; got %d", h.VCPUs)
		}
		var err error
		if h.MemoryBytes, err = ParseSize(h.Memory); err != nil {
			bad(key+".memory", "%v (the memory voxvisor's guests may use there)", err)
		}
		if room[h.Name] == nil {
			r := *h
			room[h.Name] = &r
		}
	}
	return room
}

// placeExplicit counts an endpoint's guest against the room of the host
// it names.
func (c *Config) placeExplicit(bad func(key, format string, args ...any), room map[string]*ProvisionHost, key string, e *Endpoint) {
	if e.Host == "" {
		return
	}
	h := room[e.Host]
	if h == nil {
		if len(c.Provision.Hosts) == 0 {
			bad(key+".host", "needs provision.hosts: list the hypervisors (name, uri, vcpus, memory) there; got %q", e.Host)
		} else {
			bad(key+".host", "names no host of provision.hosts (%s); got %q", hostNames(c.Provision.Hosts), e.Host)
		}
		return
	}
	h.VCPUs -= e.VCPUs
	h.MemoryBytes -= e.MemoryBytes
	if h.VCPUs < 0 || h.MemoryBytes < 0 {
		i := slices.IndexFunc(c.Provision.Hosts, func(o ProvisionHost) bool { return o.Name == e.Host })
		o := c.Provision.Hosts[i]
		bad(key+".host", "host %s has no room for this guest: with the guests placed on it before, they need more than its vcpus %d and memory %s (provision.hosts)", e.Host, o.VCPUs, o.Memory)
	}
}

func hostNames(hs []ProvisionHost) string {
	n := make([]string, len(hs))
	for i, h := range hs {
		n[i] = h.Name
	}
	return strings.Join(n, ", ")
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

// Values that reach a SIP header, a file path, a command line or XML are
// checked here for what each place can carry. The rules are narrow on
// purpose: a carrier never needs a CR in a caller ID, and a bridge never
// needs a semicolon in its name.

// secretKeys are the keys whose values an error must not print.
var secretKeys = map[string]bool{"password": true, "token": true, "ha1": true, "ha1_sha256": true}

// checkControl reports every string value of the configuration that holds
// a control character (a byte below 0x20, or DEL): none of them has a use
// for one, and a CR or LF in a value that reaches a SIP header starts a
// header of the attacker's choosing. It returns the keys it reported, so
// that the checks of each value's form do not report them again.
func (c *Config) checkControl(bad func(key, format string, args ...any)) map[string]bool {
	found := map[string]bool{}
	var walk func(v reflect.Value, key string)
	walk = func(v reflect.Value, key string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem(), key)
			}
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Type().Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if !f.IsExported() || name == "" || name == "-" {
					continue
				}
				k := name
				if key != "" {
					k = key + "." + name
				}
				walk(v.Field(i), k)
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", key, i))
			}
		case reflect.String:
			s := v.String()
			i := strings.IndexFunc(s, isControl)
			if i < 0 {
				return
			}
			found[key] = true
			if secretKeys[key[strings.LastIndexAny(key, ".]")+1:]] {
				bad(key, "must not hold control characters: found %s at byte %d (value not shown: it is a secret)", ctlName(s[i]), i)
				return
			}
			bad(key, "must not hold control characters: found %s at byte %d of %q", ctlName(s[i]), i, s)
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return found
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func ctlName(b byte) string {
	switch b {
	case '\r':
		return "CR"
	case '\n':
		return "LF"
	case '\t':
		return "TAB"
	case 0:
		return "NUL"
	case 0x7f:
		return "DEL"
	}
	return fmt.Sprintf("byte 0x%02x", b)
}

// userPartRE is what a number or a SIP URI's user part may hold here:
// RFC 3261's unreserved and user-unreserved characters and %XX escapes,
// without ';' and '?', which many parsers take for the start of
// parameters and headers.
var userPartRE = regexp.MustCompile(`^([A-Za-z0-9\-_.!~*'()&=+$,/]|%[0-9A-Fa-f]{2})+$`)

const userPartChars = "letters, digits, %XX escapes and -_.!~*'()&=+$,/"

// expandRefRE matches the references regexp.Expand replaces in a
// dial plan's replace template: $1, ${1}, $name, ${name} and $$.
var expandRefRE = regexp.MustCompile(`\$(\$|\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)`)

// isHostname reports whether s is a DNS host name (letters, digits and
// hyphens in dot-separated labels of at most 63 characters).
func isHostname(s string) bool {
	if len(s) > 253 || !domainRE.MatchString(s) {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) > 63 {
			return false
		}
	}
	return true
}

// isHost reports whether s is a host name or an IP address literal
// (IPv6 without brackets and without a zone).
func isHost(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	return isHostname(s)
}

// uriParamRE is a URI's ;name or ;name=value parameters (RFC 3261's
// paramchar, and the characters of a tel: URI's parameters).
var uriParamRE = regexp.MustCompile(`^(;[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+(=[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+)?)*$`)

// telNumberRE is a tel: URI's number (RFC 3966): a global number with
// its visual separators, or a local one.
var telNumberRE = regexp.MustCompile(`^\+?[0-9A-Fa-f*#.()-]+$`)

// checkURI reports what is wrong with u as a URI of one of schemes (sip,
// sips, tel), or "" when it is fine: a user part of safe characters, a
// host name or an IP literal, an optional port, and parameters. Nothing
// else: no headers (?), no spaces, quotes or angle brackets, which would
// end the header the URI is written into.
func checkURI(u string, schemes ...string) string {
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || !slices.Contains(schemes, strings.ToLower(scheme)) {
		return "must start with " + strings.Join(schemes, ": or ") + ":"
	}
	if i := strings.IndexAny(rest, " <>\"?\\`{}|^"); i >= 0 {
		return fmt.Sprintf("must not hold %q: it ends the header the URI is written into or adds headers to it", rest[i])
	}
	rest, params, _ := strings.Cut(rest, ";")
	if params != "" && !uriParamRE.MatchString(";"+params) {
		return "has a malformed ;parameter"
	}
	if strings.EqualFold(scheme, "tel") {
		if !telNumberRE.MatchString(rest) {
			return "a tel: URI holds a number (digits, a leading +, and -.() as separators)"
		}
		return ""
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		user, pass, _ := strings.Cut(rest[:i], ":")
		if !userPartRE.MatchString(user) || pass != "" && !userPartRE.MatchString(pass) {
			return "its user part may hold " + userPartChars + " only"
		}
		rest = rest[i+1:]
	}
	host, port := rest, ""
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "has an unclosed [ in its host"
		}
		a, err := netip.ParseAddr(host[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "holds no IPv6 address between [ and ]"
		}
		host, port = "", host[end+1:]
		if port != "" && port[0] != ':' {
			return "has something after its host that is not :port"
		}
	} else {
		host, port, _ = strings.Cut(host, ":")
		if port != "" {
			port = ":" + port
		}
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() || !isHost(host) {
			return "its host must be a host name, an IPv4 address or an IPv6 address in [ ]"
		}
	}
	if port != "" {
		if n, err := strconv.Atoi(port[1:]); err != nil || n < 1 || n > 65535 || port[1] == '+' {
			return "its port must be 1-65535"
		}
	}
	return ""
}

// quotedSafe reports whether s may go inside a quoted-string of an
// Authorization or WWW-Authenticate header: no quote, no backslash.
func quotedSafe(s string) bool { return !strings.ContainsAny(s, `"\`) }

// nodeNameRE is a cluster node's name.
var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ifNameRE is a Linux network interface name (IFNAMSIZ is 16 with the NUL).
var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

func isIfName(s string) bool { return ifNameRE.MatchString(s) && s != "." && s != ".." }

// lvmNameRE is a volume group or logical volume name as lvm2 accepts it.
var lvmNameRE = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$`)

// lvmReserved are what lvm2 keeps for its own hidden volumes: a logical
// volume's name may not contain them.
var lvmReserved = []string{"_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta", "_iorig", "_mimage",
	"_mlog", "_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig"}

// lvmNameProblem says why s is not a volume group name (lv false) or a
// logical volume name (lv true), or "".
func lvmNameProblem(s string, lv bool) string {
	if !lvmNameRE.MatchString(s) || s == "." || s == ".." {
		return "must be 1-127 letters, digits or +_.-, not start with -, and not be . or .."
	}
	if lv {
		for _, p := range []string{"snapshot", "pvmove"} {
			if strings.HasPrefix(s, p) {
				return fmt.Sprintf("must not start with %q: lvm2 keeps such names", p)
			}
		}
		for _, r := range lvmReserved {
			if strings.Contains(s, r) {
				return fmt.Sprintf("must not contain %q: lvm2 keeps such names for its hidden volumes", r)
			}
		}
	}
	return ""
}

// trunkNameRE: a trunk's name becomes the guest's and the volume's name
// (vox-NAME), the firewall's chain and set names and a log prefix, so it
// is kept to characters all of them take, without the '+' that the
// firewall would fold into '_' (two trunks on one chain).
var trunkNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// checkTrunkName reports through bad what makes name unusable.
func checkTrunkName(bad func(key, format string, args ...any), key, name string) {
	if !trunkNameRE.MatchString(name) {
		bad(key, "must be 1-64 letters, digits or _.-, starting with a letter or digit (it names the trunk's guest, volume and firewall chain); got %q", name)
		return
	}
	for _, r := range lvmReserved {
		if strings.Contains(name, r) {
			bad(key, "must not contain %q: it names the trunk's logical volume, and lvm2 keeps such names; got %q", r, name)
			return
		}
	}
}

// checkMAC reports through bad a MAC address that a guest's NIC must not
// have: a multicast or broadcast one (the low bit of the first octet
// set), or all zeros.
func checkMAC(bad func(key, format string, args ...any), key, mac string) {
	b, err := hex.DecodeString(strings.ReplaceAll(mac, ":", ""))
	if err != nil || len(b) != 6 {
		return // the form is checked apart
	}
	switch {
	case b[0]&1 == 1:
		bad(key, "%s is a multicast or broadcast address (the low bit of the first octet is set): give a unicast one such as 52:54:00:12:34:56", mac)
	case bytes.Equal(b, make([]byte, 6)):
		bad(key, "must not be all zeros: give a unicast address such as 52:54:00:12:34:56")
	}
}
