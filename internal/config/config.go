// Package config is voxvisor's configuration model: one YAML file, decoded
// strictly, defaulted in one place and validated before anything starts.
//
// Every error names the file, the line and the key, so an operator can go
// straight to the mistake. It is not for reading live state: the running
// server is handed a validated *Config and never re-reads the file itself.
package config

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	Log       Log       `yaml:"log"`
	DataDir   string    `yaml:"data_dir"`
	SIP       SIP       `yaml:"sip"`
	Registrar Registrar `yaml:"registrar"`
	NAT       NAT       `yaml:"nat"`
	Dialog    Dialog    `yaml:"dialog"`
	Auth      Auth      `yaml:"auth"`
	Users     []User    `yaml:"users"`
	Media     Media     `yaml:"media"`
	Trunks    []Trunk   `yaml:"trunks"`
	DialPlan  []Rule    `yaml:"dialplan"`
	CDR       CDR       `yaml:"cdr"`
	Admin     Admin     `yaml:"admin"`
	Limits    Limits    `yaml:"limits"`
	Provision Provision `yaml:"provision"`
	Cluster   Cluster   `yaml:"cluster"`

	// Source is the name the file was loaded under (a path, or the
	// embedded default's name). Set by Load.
	Source string `yaml:"-"`
}

// Dialog bounds how long a call's dialog may live without a sign of life
// (RFC 4028 session timers) or at all.
type Dialog struct {
	// SessionExpires is put on INVITEs that carry no Session-Expires, so
	// phones that support timers refresh; a dialog whose refreshes stop
	// gets a BYE to both sides when its interval is over. 0s: none put.
	SessionExpires time.Duration `yaml:"session_expires"`
	// MinSE: INVITEs asking for a shorter Session-Expires get 422.
	MinSE time.Duration `yaml:"min_se"`
	// MaxAge ends an answered dialog without a session timer this long
	// after its answer (BYE both ways). 0s: never.
	MaxAge time.Duration `yaml:"max_age"`
}

// Log configures logging and SIP message tracing.
type Log struct {
	Level    string `yaml:"level"`     // debug, info, warn, error
	Format   string `yaml:"format"`    // text or json
	TraceSIP bool   `yaml:"trace_sip"` // trace every SIP message, apart from the log
	Syslog   Syslog `yaml:"syslog"`
}

// Syslog sends the log (and the SIP trace, tagged apart) to syslog.
type Syslog struct {
	Enabled  bool   `yaml:"enabled"`
	Network  string `yaml:"network"`  // "" for the local socket, udp or tcp
	Address  string `yaml:"address"`  // host:port with udp or tcp
	Facility string `yaml:"facility"` // default local5
	Tag      string `yaml:"tag"`      // default voxvisor; the trace uses TAG-trace
}

// SIP configures the listeners and the proxy core.
type SIP struct {
	Domain         string        `yaml:"domain"`
	Listen         []Listener    `yaml:"listen"`
	MaxMessageSize int           `yaml:"max_message_size"`
	MaxHeaders     int           `yaml:"max_headers"`
	TCPIdleTimeout time.Duration `yaml:"tcp_idle_timeout"`
	RingTimeout    time.Duration `yaml:"ring_timeout"`
	// TransactionLinger is how long a finished transaction is kept to
	// absorb retransmissions (RFC 3261 Timers D, J, L, M; 32 s there,
	// 5 s like Kamailio's tm wait timer here), which bounds memory.
	TransactionLinger time.Duration `yaml:"transaction_linger"`
	// DrainTime is how long calls in progress may go on after SIGTERM
	// while new INVITEs get 503.
	DrainTime time.Duration `yaml:"drain_time"`
	// TLS holds the certificate of the tls listeners and how peers'
	// certificates are checked, both ways.
	TLS TLS `yaml:"tls"`
	// Capture keeps recent calls' SIP messages in memory for their
	// ladder (the admin API); calls: 0 turns it off.
	Capture Capture `yaml:"capture"`
}

// Cluster makes registrations cluster-wide, in Redis; without
// cluster.redis.address the location store is this node's bbolt file.
type Cluster struct {
	Node  string `yaml:"node"` // this node's name; default the host name
	Redis Redis  `yaml:"redis"`
}

// Redis is where a cluster keeps what its nodes share.
type Redis struct {
	Address  string `yaml:"address"` // host:port
	Password string `yaml:"password"`
	TLS      bool   `yaml:"tls"`
	Prefix   string `yaml:"prefix"` // key prefix; default voxvisor:
}

// Capture bounds the in-memory SIP capture of recent calls.
type Capture struct {
	Calls     int           `yaml:"calls"`     // calls kept, oldest dropped first
	Messages  int           `yaml:"messages"`  // messages kept per call
	Retention time.Duration `yaml:"retention"` // a call kept this long after its last message
}

// TLS configures SIP over TLS (RFC 3261 §26.2, RFC 5630).
type TLS struct {
	// CertFile and KeyFile are the PEM certificate chain and key the tls
	// listeners present, and the client certificate sent to peers that
	// ask for one. Relative paths are taken from the config file's folder.
	// SIGHUP reloads them.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile holds the CAs that client certificates and the certificates
	// of peers we dial must chain to; empty: the system's roots.
	CAFile string `yaml:"ca_file"`
	// VerifyClient is none (default), optional (checked when a client
	// sends one) or require.
	VerifyClient string `yaml:"verify_client"`
	// VerifyServer checks the certificate of every peer we dial (trunks,
	// phones registered over tls) against CAFile and the peer's name.
	VerifyServer *bool  `yaml:"verify_server"`
	MinVersion   string `yaml:"min_version"` // 1.2 (default) or 1.3
}

// Listener is one SIP socket.
type Listener struct {
	Transport string `yaml:"transport"` // udp, tcp or tls
	Address   string `yaml:"address"`   // ip:port
	// Advertise is the host[:port] written into Via and Record-Route when
	// the listen address is not what peers should use (NAT, 0.0.0.0).
	Advertise string `yaml:"advertise"`
}

// AddrPort returns the parsed listen address. Valid after Validate.
func (l Listener) AddrPort() netip.AddrPort {
	ap, _ := netip.ParseAddrPort(l.Address)
	return ap
}

// Media configures anchoring and the RTP/RTCP relay.
type Media struct {
	Address string `yaml:"address"`  // the relay's IP: bound and written into SDP
	PortMin int    `yaml:"port_min"` // even
	PortMax int    `yaml:"port_max"` //
	Anchor  string `yaml:"anchor"`   // always, never, nat
	// Learning says which sources the relay may learn as a side's media
	// address during the first seconds of a stream: heuristic (the SDP's
	// address or IP, or where the side's SIP came from), strict (the SDP's
	// IP only) or any (any source during the window).
	Learning string `yaml:"learning"`
	// NATLatching is deprecated: true means learning: any (the old
	// latch-to-any-source switch); false changes nothing.
	NATLatching bool `yaml:"nat_latching"`
	// Timeout: an answered call with no RTP this long is hung up. It runs
	// from the answer; a ringing call has no media timeout (sip.ring_timeout
	// bounds it).
	Timeout     time.Duration `yaml:"timeout"`
	HoldTimeout time.Duration `yaml:"hold_timeout"` // no RTP while on hold: hang up
	Codecs      []string      `yaml:"codecs"`       // allowed encodings; empty allows all
	// MaxStreams is how many media streams (m= lines with a port) one call
	// may anchor; an offer with more is refused with 488.
	MaxStreams int `yaml:"max_streams"`
	// Kernel says where latched RTP is forwarded: auto (in the kernel by
	// eBPF when it can be loaded, else by the relay's sockets), on (the
	// kernel or no start), off (the sockets only).
	Kernel string `yaml:"kernel"`
	// KernelInterfaces are the interfaces the kernel path is attached to;
	// empty: every interface that is up and carries Ethernet (and lo).
	KernelInterfaces []string `yaml:"kernel_interfaces"`
}

// Health is a trunk's peer health check: SIP OPTIONS to each peer every
// Interval (0, the default: none); a peer is down after DownAfter misses
// in a row (no answer within Timeout, or a 5xx) and failover skips it
// until UpAfter answers in a row bring it back.
type Health struct {
	Interval  time.Duration `yaml:"interval"`
	Timeout   time.Duration `yaml:"timeout"`
	DownAfter int           `yaml:"down_after"`
	UpAfter   int           `yaml:"up_after"`
}

// Health check defaults, as Kamailio's dispatcher probing thresholds.
const (
	DefaultHealthDownAfter = 3
	DefaultHealthUpAfter   = 2
	DefaultHealthTimeout   = 5 * time.Second
)

// Media kernel forwarding modes (media.kernel).
const (
	KernelAuto = "auto"
	KernelOn   = "on"
	KernelOff  = "off"
)

// Trunk is a SIP trunk to a carrier (or to a trunk's media endpoint).
type Trunk struct {
	Name        string      `yaml:"name"`
	Peers       []Peer      `yaml:"peers"`       // tried in order (failover)
	Credentials *Credential `yaml:"credentials"` // for the carrier's challenges and REGISTER
	Register    bool        `yaml:"register"`    // register to the carrier
	RegExpires  int         `yaml:"register_expires"`
	Inbound     Inbound     `yaml:"inbound"`
	DIDs        []DID       `yaml:"dids"`
	Codecs      []string    `yaml:"codecs"`       // allowed on the trunk; empty: media.codecs
	MaxChannels int         `yaml:"max_channels"` // 0: unlimited
	CallerID    CallerID    `yaml:"caller_id"`
	Health      Health      `yaml:"health"`
	// Endpoint is the trunk's media endpoint: a KVM guest that
	// `voxvisor provision` creates with its volume and firewall rules.
	Endpoint *Endpoint `yaml:"endpoint"`
}

// Provision holds the host-level settings of `voxvisor provision`.
type Provision struct {
	LibvirtURI string `yaml:"libvirt_uri"` // default qemu:///system
	// DomainType is the libvirt domain type: kvm (default) or qemu (TCG,
	// for hosts without /dev/kvm).
	DomainType      string         `yaml:"domain_type"`
	Storage         Storage        `yaml:"storage"`
	Firewall        FirewallConfig `yaml:"firewall"`
	ShutdownTimeout time.Duration  `yaml:"shutdown_timeout"` // ACPI shutdown, then destroy
	// Hosts are hypervisors reached through libvirt only (qemu+ssh://,
	// qemu+tls://): each trunk's endpoint is placed on one of them, its
	// disk and seed in the host's storage pool, its firewall a libvirt
	// nwfilter. Without hosts, the endpoints live on libvirt_uri with the
	// storage and firewall settings above.
	Hosts []ProvisionHost `yaml:"hosts"`
}

// ProvisionHost is one hypervisor of provision.hosts.
type ProvisionHost struct {
	Name string `yaml:"name"` // what endpoint.host names
	URI  string `yaml:"uri"`  // libvirt URI, e.g. qemu+ssh://root@hv1/system
	// StoragePool is the libvirt directory pool (dir, fs or netfs) that
	// holds the guests' disks and seeds; default voxvisor.
	StoragePool string `yaml:"storage_pool"`
	// Firewall is nwfilter (default: a libvirt network filter per trunk
	// on the guest's interface) or none.
	Firewall string `yaml:"firewall"`
	// VCPUs and Memory are the host's capacity for voxvisor's guests:
	// placement never puts more on it.
	VCPUs  int    `yaml:"vcpus"`
	Memory string `yaml:"memory"`

	MemoryBytes int64 `yaml:"-"` // parsed Memory, set by validation
}

// Storage is where the guests' disks live.
type Storage struct {
	Backend     string `yaml:"backend"`      // lvm (default) or dir
	VolumeGroup string `yaml:"volume_group"` // lvm
	ThinPool    string `yaml:"thin_pool"`    // lvm, optional
	// BaseVolume (lvm, with thin_pool) is a thin volume of the pool
	// holding the prepared guest image: each new disk is a thin snapshot
	// of it (an endpoint's disk.image, when given, is cloned instead).
	BaseVolume string `yaml:"base_volume"`
	// Dir holds the raw images (dir backend) and, for both backends, the
	// cloud-init seeds, content-hashed.
	Dir string `yaml:"dir"`
}

// FirewallConfig selects how the trunks' rules reach the kernel.
type FirewallConfig struct {
	Backend string `yaml:"backend"`  // nftables (default) or iptables
	LogRate int    `yaml:"log_rate"` // dropped packets logged per minute per trunk
}

// Endpoint is a trunk's KVM guest.
type Endpoint struct {
	VCPUs     int             `yaml:"vcpus"`
	Memory    string          `yaml:"memory"` // e.g. 512M, 1G
	Disk      EndpointDisk    `yaml:"disk"`
	Network   EndpointNetwork `yaml:"network"`
	UserData  string          `yaml:"user_data"` // cloud-init user-data file, optional
	Autostart *bool           `yaml:"autostart"` // default true
	// Host names the provision.hosts entry the guest runs on; empty: the
	// host with the most free memory that has room, and where it is once
	// made.
	Host string `yaml:"host"`

	MemoryBytes int64 `yaml:"-"` // parsed Memory, set by validation
}

// EndpointDisk is the guest's volume.
type EndpointDisk struct {
	Size  string `yaml:"size"`  // e.g. 4G
	Image string `yaml:"image"` // base image cloned onto a new volume (any qemu-img format)
	// AllowShrink permits shrinking the volume when size goes down: only a
	// shut-off guest's bare ext4 volume, e2fsck then resize2fs then lvreduce.
	AllowShrink bool `yaml:"allow_shrink"`

	SizeBytes int64 `yaml:"-"` // parsed Size, set by validation
}

// EndpointNetwork attaches the guest: exactly one of Bridge and Network.
type EndpointNetwork struct {
	Bridge  string   `yaml:"bridge"`  // a host bridge
	Network string   `yaml:"network"` // a libvirt network (gets a DHCP host entry)
	MAC     string   `yaml:"mac"`     // default: derived from the trunk name
	Address string   `yaml:"address"` // the guest's IP with prefix, e.g. 10.10.0.21/24
	Gateway string   `yaml:"gateway"`
	DNS     []string `yaml:"dns"`
}

// Peer is one carrier address.
type Peer struct {
	Host      string `yaml:"host"`
	Port      int    `yaml:"port"`      // default 5060, 5061 over tls
	Transport string `yaml:"transport"` // udp, tcp or tls
}

// Credential is a trunk account at the carrier. Never logged.
type Credential struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	Realm    string `yaml:"realm"` // empty: answer any realm
}

// Inbound says how requests from the carrier are recognised.
type Inbound struct {
	CIDRs   []string `yaml:"cidrs"`   // source networks of the carrier
	Transit bool     `yaml:"transit"` // may its calls leave through another trunk
}

// DID routes an inbound number. Exactly one of Number and Pattern, and
// exactly one of User, URI and Trunk.
type DID struct {
	Number  string `yaml:"number"`  // exact, after normalisation
	Pattern string `yaml:"pattern"` // regular expression
	User    string `yaml:"user"`    // a local user
	URI     string `yaml:"uri"`     // e.g. sip:{did}@10.10.0.21:5060, the trunk's media endpoint
	Trunk   string `yaml:"trunk"`   // another trunk (transit)
}

// CallerID rewrites the caller's identity on calls out of the trunk.
type CallerID struct {
	FromUser string `yaml:"from_user"` // replaces the From user part
	PAI      string `yaml:"pai"`       // adds P-Asserted-Identity with this URI
}

// Rule is one dial plan entry: the first rule that matches routes the call.
type Rule struct {
	Prefix  string   `yaml:"prefix"`  // matches numbers starting with it
	Match   string   `yaml:"match"`   // or a regular expression
	Strip   int      `yaml:"strip"`   // digits removed from the front
	Prepend string   `yaml:"prepend"` // then added in front
	Replace string   `yaml:"replace"` // with match: the expansion ($1...)
	Trunks  []string `yaml:"trunks"`  // tried in order
}

// CDR configures call detail records.
type CDR struct {
	Path     string `yaml:"path"`      // JSON lines; empty: data_dir/cdr.jsonl
	MaxBytes int64  `yaml:"max_bytes"` // rotate past this size
	Keep     int    `yaml:"keep"`      // rotated files kept
}

// Limits protect against floods and brute force.
type Limits struct {
	Rate         float64       `yaml:"rate"`          // requests/s per source IP; 0 disables
	Burst        float64       `yaml:"burst"`         // requests a source may send at once
	Block        time.Duration `yaml:"block"`         // how long a flooding source is ignored
	AuthFailures int           `yaml:"auth_failures"` // failed logins that lock out (user and source); 0 disables
	AuthWindow   time.Duration `yaml:"auth_window"`
	Lockout      time.Duration `yaml:"lockout"`
	// Per source IP, at once: TCP and TLS connections, requests in
	// progress (server transactions) and calls (dialogs). 0: no limit.
	Connections  int `yaml:"connections"`
	Transactions int `yaml:"transactions"`
	Dialogs      int `yaml:"dialogs"`
	// Streams is how many anchored media streams (relay port pairs) one
	// source's calls hold at once. 0: no limit.
	Streams int `yaml:"streams"`
	// TotalConnections caps the TCP and TLS connections of all sources
	// together, below the process's file limit. 0: no limit.
	TotalConnections int `yaml:"total_connections"`
	// Trusted sources (CIDRs or addresses) are exempt from the rate
	// limit, the per-source limits and the per-source lockout: an SBC in
	// front, a load generator. Trunks' inbound.cidrs and peers given as
	// addresses are trusted too.
	Trusted []string `yaml:"trusted"`
}

// Admin configures the metrics and admin API listener.
type Admin struct {
	Listen string `yaml:"listen"` // host:port; "off" disables it
	Token  string `yaml:"token"`  // bearer token; required off loopback. Never logged.
}

// Registrar configures REGISTER handling (RFC 3261 §10).
type Registrar struct {
	MinExpires     int `yaml:"min_expires"`
	MaxExpires     int `yaml:"max_expires"`
	DefaultExpires int `yaml:"default_expires"`
	MaxContacts    int `yaml:"max_contacts"`
	// ContactNetworks, when set, are the only networks a registered
	// Contact (and the REGISTER's source) may be in. Contacts at the
	// switch itself or at a trunk's peers are refused in any case.
	ContactNetworks []string `yaml:"contact_networks"`
}

// NAT configures how contacts behind NAT are kept reachable. A binding is
// NATed when the registrar sees its REGISTER come from another address
// than its Contact or Via names, or from a public address for a private
// Contact or Via (RFC 1918, RFC 6598, IPv6 ULA).
type NAT struct {
	// PingInterval is how often the switch sends an OPTIONS to each
	// NATed UDP contact, from the socket it registered to, so the
	// router's UDP binding stays open. 0 turns pings off.
	PingInterval time.Duration `yaml:"ping_interval"`
	// PingTimeout: a NATed UDP contact that answers no ping (and does not
	// register again) for this long is removed, so calls to it get 480 at
	// once. 0 keeps such contacts until they expire.
	PingTimeout time.Duration `yaml:"ping_timeout"`
	// MaxExpires caps the expiry (seconds) granted to NATed contacts, so
	// phones re-register often enough to keep their pinhole open
	// themselves. 0: no cap beyond registrar.max_expires.
	MaxExpires int `yaml:"max_expires"`
}

// Auth configures digest authentication of local users.
type Auth struct {
	Realm      string        `yaml:"realm"`
	NonceTTL   time.Duration `yaml:"nonce_ttl"`
	Algorithms []string      `yaml:"algorithms"` // challenge order: MD5, SHA-256
}

// User is a local subscriber. Exactly one of Password, HA1 or HA1SHA256
// (or both HA1 forms) is given.
type User struct {
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
	HA1       string `yaml:"ha1"`        // hex MD5(username:realm:password)
	HA1SHA256 string `yaml:"ha1_sha256"` // hex SHA-256(username:realm:password)
}

// String never prints a secret.
func (u User) String() string { return "user " + u.Username }

// Named defaults. Changing one changes it everywhere.
const (
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "text"
	DefaultDataDir        = "./data"
	DefaultDomain         = "voxvisor.local"
	DefaultMaxMessageSize = 65535
	DefaultMaxHeaders     = 128
	DefaultTCPIdleTimeout = 120 * time.Second
	DefaultRingTimeout    = 180 * time.Second
	DefaultTxLinger       = 5 * time.Second
	DefaultMinExpires     = 60
	DefaultMaxExpires     = 7200
	DefaultExpires        = 3600
	DefaultMaxContacts    = 5
	DefaultNonceTTL       = 5 * time.Minute
	DefaultMediaAddress   = "127.0.0.1"
	DefaultPortMin        = 20000
	DefaultPortMax        = 29999
	DefaultAnchor         = "always"
	DefaultMediaTimeout   = 60 * time.Second
	DefaultHoldTimeout    = time.Hour
	DefaultMaxStreams     = 4
	DefaultLearning       = LearningHeuristic
	DefaultSessionExpires = 1800 * time.Second
	DefaultMinSE          = 90 * time.Second
	DefaultMaxAge         = 12 * time.Hour

	// Limits that apply when the file does not set them (an explicit 0
	// turns one off).
	DefaultRate             = 100
	DefaultAuthFailures     = 5
	DefaultConnections      = 256
	DefaultTransactions     = 200
	DefaultDialogs          = 100
	DefaultStreams          = 200
	DefaultTotalConnections = 4096
)

// NAT keepalive defaults: an interval well under common routers' UDP
// timeouts (30 s and more), and four unanswered intervals before a
// contact is removed.
const (
	DefaultNATPingInterval = 15 * time.Second
	DefaultNATPingTimeout  = 60 * time.Second
)

// Media endpoint learning modes (media.learning), weakest defence last.
const (
	LearningHeuristic = "heuristic" // the SDP address, the SDP IP, the signalling IP
	LearningStrict    = "strict"    // the SDP IP only
	LearningAny       = "any"       // also any source during the learning window
)

// DefaultAlgorithms is the digest challenge order when none is configured:
// MD5 alone, because the phones people have must register on the
// defaults, and some (Debian's baresip 1.0) give up on a challenge list
// that names SHA-256 instead of skipping it. SHA-256 (RFC 8760) is one
// line away for phones that take it: auth.algorithms: [SHA-256, MD5].
var DefaultAlgorithms = []string{"MD5"}

// applyDefaults fills every zero value that has a default. present
// reports whether the file sets a key (a dotted path such as
// "limits.rate"): limits take their default only when absent, so an
// explicit 0 can still turn one off. nil: nothing is set.
func (c *Config) applyDefaults(present func(key string) bool) {
	if present == nil {
		present = func(string) bool { return false }
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defInt := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Log.Level, DefaultLogLevel)
	def(&c.Log.Format, DefaultLogFormat)
	def(&c.Log.Syslog.Facility, "local5")
	def(&c.Log.Syslog.Tag, "voxvisor")
	def(&c.DataDir, DefaultDataDir)
	def(&c.SIP.Domain, DefaultDomain)
	if len(c.SIP.Listen) == 0 {
		c.SIP.Listen = []Listener{
			{Transport: "udp", Address: "127.0.0.1:5060"},
			{Transport: "tcp", Address: "127.0.0.1:5060"},
		}
	}
	for i := range c.SIP.Listen {
		c.SIP.Listen[i].Transport = strings.ToLower(c.SIP.Listen[i].Transport)
	}
	defInt(&c.SIP.MaxMessageSize, DefaultMaxMessageSize)
	defInt(&c.SIP.MaxHeaders, DefaultMaxHeaders)
	defDur(&c.SIP.TCPIdleTimeout, DefaultTCPIdleTimeout)
	defDur(&c.SIP.RingTimeout, DefaultRingTimeout)
	defDur(&c.SIP.TransactionLinger, DefaultTxLinger)
	defDur(&c.SIP.DrainTime, 30*time.Second)
	if !present("sip.capture.calls") {
		c.SIP.Capture.Calls = 1000
	}
	defInt(&c.SIP.Capture.Messages, 64)
	defDur(&c.SIP.Capture.Retention, 15*time.Minute)
	def(&c.SIP.TLS.VerifyClient, "none")
	def(&c.SIP.TLS.MinVersion, "1.2")
	if c.SIP.TLS.VerifyServer == nil {
		yes := true
		c.SIP.TLS.VerifyServer = &yes
	}
	defInt(&c.Registrar.MinExpires, DefaultMinExpires)
	defInt(&c.Registrar.MaxExpires, DefaultMaxExpires)
	defInt(&c.Registrar.DefaultExpires, DefaultExpires)
	defInt(&c.Registrar.MaxContacts, DefaultMaxContacts)
	// Dialog bounds take their defaults only when absent: 0s turns the
	// session timer offer or the age bound off.
	if !present("dialog.session_expires") {
		c.Dialog.SessionExpires = DefaultSessionExpires
	}
	defDur(&c.Dialog.MinSE, DefaultMinSE)
	if !present("dialog.max_age") {
		c.Dialog.MaxAge = DefaultMaxAge
	}
	// NAT pings take their defaults only when absent: an explicit 0 turns
	// them (or the removal of silent contacts) off.
	if !present("nat.ping_interval") {
		c.NAT.PingInterval = DefaultNATPingInterval
	}
	if !present("nat.ping_timeout") {
		c.NAT.PingTimeout = max(DefaultNATPingTimeout, 4*c.NAT.PingInterval)
	}
	def(&c.Auth.Realm, c.SIP.Domain)
	defDur(&c.Auth.NonceTTL, DefaultNonceTTL)
	def(&c.Media.Address, DefaultMediaAddress)
	defInt(&c.Media.PortMin, DefaultPortMin)
	defInt(&c.Media.PortMax, DefaultPortMax)
	def(&c.Media.Anchor, DefaultAnchor)
	if c.Media.Learning == "" && c.Media.NATLatching {
		c.Media.Learning = LearningAny // the deprecated alias
	}
	def(&c.Media.Learning, DefaultLearning)
	def(&c.Media.Kernel, KernelAuto)
	if c.Cluster.Node == "" {
		c.Cluster.Node, _ = os.Hostname()
	}
	def(&c.Cluster.Redis.Prefix, "voxvisor:")
	defDur(&c.Media.Timeout, DefaultMediaTimeout)
	defDur(&c.Media.HoldTimeout, DefaultHoldTimeout)
	def(&c.Provision.LibvirtURI, "qemu:///system")
	def(&c.Provision.DomainType, "kvm")
	def(&c.Provision.Storage.Backend, "lvm")
	def(&c.Provision.Storage.Dir, "/var/lib/voxvisor/images")
	def(&c.Provision.Firewall.Backend, "nftables")
	defInt(&c.Provision.Firewall.LogRate, 10)
	defDur(&c.Provision.ShutdownTimeout, 60*time.Second)
	for i := range c.Trunks {
		t := &c.Trunks[i]
		for j := range t.Peers {
			if t.Peers[j].Transport == "" {
				t.Peers[j].Transport = "udp"
			}
			t.Peers[j].Transport = strings.ToLower(t.Peers[j].Transport)
			if t.Peers[j].Port == 0 {
				t.Peers[j].Port = 5060
				if t.Peers[j].Transport == "tls" {
					t.Peers[j].Port = 5061
				}
			}
		}
		defInt(&t.RegExpires, 600)
		if t.Health.Interval > 0 {
			defInt(&t.Health.DownAfter, DefaultHealthDownAfter)
			defInt(&t.Health.UpAfter, DefaultHealthUpAfter)
			if t.Health.Timeout == 0 {
				t.Health.Timeout = min(DefaultHealthTimeout, t.Health.Interval)
			}
		}
		if e := t.Endpoint; e != nil {
			defInt(&e.VCPUs, 1)
			def(&e.Memory, "512M")
			def(&e.Disk.Size, "4G")
			if e.Autostart == nil {
				yes := true
				e.Autostart = &yes
			}
		}
	}
	def(&c.Admin.Listen, "127.0.0.1:8060")
	defInt(&c.Media.MaxStreams, DefaultMaxStreams)
	l := &c.Limits
	if !present("limits.rate") {
		l.Rate = DefaultRate
	}
	for _, f := range []struct {
		key string
		v   *int
		def int
	}{
		{"limits.auth_failures", &l.AuthFailures, DefaultAuthFailures},
		{"limits.connections", &l.Connections, DefaultConnections},
		{"limits.transactions", &l.Transactions, DefaultTransactions},
		{"limits.dialogs", &l.Dialogs, DefaultDialogs},
		{"limits.streams", &l.Streams, DefaultStreams},
		{"limits.total_connections", &l.TotalConnections, DefaultTotalConnections},
	} {
		if !present(f.key) {
			*f.v = f.def
		}
	}
	if l.Burst == 0 {
		l.Burst = 2 * l.Rate
	}
	defDur(&c.Limits.Block, time.Minute)
	defDur(&c.Limits.AuthWindow, time.Minute)
	defDur(&c.Limits.Lockout, 5*time.Minute)
	if c.CDR.MaxBytes == 0 {
		c.CDR.MaxBytes = 100 << 20
	}
	defInt(&c.CDR.Keep, 5)
	if len(c.Auth.Algorithms) == 0 {
		c.Auth.Algorithms = append([]string(nil), DefaultAlgorithms...)
	}
}

// LoadFile reads and validates the configuration at path.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Load(path, data)
}

// DemoPasswords are the passwords of the demo users in the embedded default.
// serve refuses to expose them on a listener that is not loopback.
var DemoPasswords = map[string]bool{"demo1001": true, "demo1002": true, "demo1003": true}

// TrustedSources are limits.trusted, every trunk's inbound networks and
// every trunk peer given as an address, as prefixes. Valid after Validate.
func (c *Config) TrustedSources() []netip.Prefix {
	var out []netip.Prefix
	add := func(s string) {
		if p, err := parsePrefixOrAddr(s); err == nil {
			out = append(out, p)
		}
	}
	for _, s := range c.Limits.Trusted {
		add(s)
	}
	for _, t := range c.Trunks {
		for _, s := range t.Inbound.CIDRs {
			add(s)
		}
		for _, p := range t.Peers {
			add(p.Host)
		}
	}
	return out
}

// Prefixes parses addresses and CIDRs (validated ones: what does not
// parse is left out) as prefixes; a host name is left out too.
func Prefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := parsePrefixOrAddr(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parsePrefixOrAddr reads a CIDR, or an address as its one-address prefix.
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CheckExposure returns an error when a demo password would be reachable
// from outside this host: given as password, or as its ha1 or ha1_sha256
// under this configuration's realm (which is what the demo's password
// amounts to: the digest is computed from the HA1, never the password).
func (c *Config) CheckExposure() error {
	demo, how := "", ""
	for _, u := range c.Users {
		if how = c.demoSecret(u); how != "" {
			demo = u.Username
			break
		}
	}
	if demo == "" {
		return nil
	}
	for _, l := range c.SIP.Listen {
		if !l.AddrPort().Addr().IsLoopback() {
			return fmt.Errorf("%s: user %s has a demo password (%s) and listener %s %s is not loopback: "+
				"set real passwords (or ha1) for every user, or listen on 127.0.0.1 only",
				c.Source, demo, how, l.Transport, l.Address)
		}
	}
	return nil
}

// demoSecret says how u's secret is a demo password ("password", "ha1",
// "ha1_sha256"), or "" when it is none.
func (c *Config) demoSecret(u User) string {
	for pw := range DemoPasswords {
		if u.Password == pw {
			return "password"
		}
		a1 := []byte(u.Username + ":" + c.Auth.Realm + ":" + pw)
		if md := md5.Sum(a1); u.HA1 != "" && strings.EqualFold(u.HA1, hex.EncodeToString(md[:])) {
			return "ha1"
		}
		if sh := sha256.Sum256(a1); u.HA1SHA256 != "" && strings.EqualFold(u.HA1SHA256, hex.EncodeToString(sh[:])) {
			return "ha1_sha256"
		}
	}
	return ""
}
