// Package gateway connects voxvisor to carriers over SIP trunks: it
// identifies inbound carriers by source address and routes their DIDs,
// routes outbound numbers through the dial plan with number
// normalisation, enforces per-trunk channel limits and writes a CDR per
// call attempt. Registration to carriers is in register.go.
//
// It decides and records; the proxy forwards. It knows nothing of libvirt.
package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
)

// Errors.
var (
	// ErrNoRoute means no dial plan rule matches the number: answer 404.
	ErrNoRoute = errors.New("gateway: no route for the number")
	// ErrNoDID means the inbound number is not one of the trunk's DIDs.
	ErrNoDID = errors.New("gateway: number is not a DID of this trunk")
)

// Options are the trunks and the dial plan.
type Options struct {
	Trunks   []TrunkOptions
	DialPlan []Rule
	// Health says which trunk peers are down: failover skips them (all
	// of a call's peers down: all are tried). nil: every peer is up.
	Health *Health
	// Channels holds each trunk's max_channels across a cluster's nodes
	// (the carrier's contract is per trunk); nil: this node counts alone.
	Channels ChannelCounter
}

// ChannelCounter holds trunks' channels across the nodes of a cluster.
type ChannelCounter interface {
	// Acquire takes one of trunk's max channels cluster-wide: false when
	// they are all taken; an error when it cannot tell (the node then
	// counts alone).
	Acquire(trunk string, max int) (bool, error)
	Release(trunk string)
}

// TrunkOptions configure one trunk.
type TrunkOptions struct {
	Name        string
	Peers       []Peer      // tried in order
	Credentials *Credential // for the carrier's challenges and REGISTER; nil: none
	CallerID    CallerID
	Codecs      []string // allowed on the trunk's calls; empty: the switch's
	MaxChannels int      // 0: no limit
	Register    bool     // keep a registration at the carrier
	RegExpires  int      // seconds asked for
	// CIDRs are the carrier's source networks: INVITEs from them are the
	// trunk's, routed by DIDs; Transit lets them leave by another trunk.
	CIDRs   []netip.Prefix
	Transit bool
	DIDs    []DID
	Health  HealthCheck // OPTIONS pings to the peers; zero: none
}

// Peer is one address of a carrier.
type Peer struct {
	Host      string
	Port      int
	Transport string // udp, tcp or tls
}

// Credential is a trunk's account at its carrier.
type Credential struct {
	Username, Password string
	Realm              string // empty: answer any realm
}

// CallerID rules for calls out through a trunk.
type CallerID struct {
	FromUser string // replaces the From user part
	PAI      string // adds P-Asserted-Identity with this URI
}

// DID is one inbound number (Number exact, or Pattern a regular
// expression) and where it goes.
type DID struct {
	Number, Pattern string
	Destination
}

// Rule is one dial plan rule: numbers starting with Prefix, or matching
// Match (Replace expands it), lose Strip digits, get Prepend, and go out
// through Trunks in order.
type Rule struct {
	Prefix, Match, Replace string
	Strip                  int
	Prepend                string
	Trunks                 []string
}

// Trunk is one configured trunk at run time.
type Trunk struct {
	Name        string
	Peers       []Peer
	Credentials *Credential
	CallerID    CallerID
	Codecs      []string
	MaxChannels int
	Transit     bool
	Register    bool
	RegExpires  int
	Health      HealthCheck

	shared   ChannelCounter // nil: this node's count only
	cidrs    []netip.Prefix
	dids     []did
	channels *atomic.Int64 // shared with the same trunk across reloads
}

type did struct {
	number string
	re     *regexp.Regexp
	dest   Destination
}

// Destination is where an inbound DID goes: a local user, a URI (the
// trunk's media endpoint; "{did}" is replaced by the number), or a trunk.
type Destination struct {
	User  string
	URI   string
	Trunk string
}

// Acquire takes one channel; false when the trunk is full, on this node
// or, in a cluster, across the nodes (when the cluster cannot be asked,
// this node's count alone decides).
func (t *Trunk) Acquire() bool {
	for {
		n := t.channels.Load()
		if t.MaxChannels > 0 && n >= int64(t.MaxChannels) {
			return false
		}
		if t.channels.CompareAndSwap(n, n+1) {
			break
		}
	}
	if t.shared != nil && t.MaxChannels > 0 {
		if ok, err := t.shared.Acquire(t.Name, t.MaxChannels); err == nil && !ok {
			t.channels.Add(-1)
			return false
		}
	}
	return true
}

// Release returns a channel.
func (t *Trunk) Release() {
	if t.channels.Add(-1) < 0 {
		t.channels.Store(0)
	}
	if t.shared != nil && t.MaxChannels > 0 {
		t.shared.Release(t.Name)
	}
}

func (t *Trunk) Channels() int { return int(t.channels.Load()) }

// Route returns the destination of an inbound number.
func (t *Trunk) Route(number string) (Destination, error) {
	for _, d := range t.dids {
		if d.number != "" && d.number == number || d.re != nil && d.re.MatchString(number) {
			dest := d.dest
			dest.URI = strings.ReplaceAll(dest.URI, "{did}", number)
			return dest, nil
		}
	}
	return Destination{}, fmt.Errorf("%w: %s on %s", ErrNoDID, number, t.Name)
}

type rule struct {
	prefix  string
	re      *regexp.Regexp
	strip   int
	prepend string
	replace string
	trunks  []*Trunk
}

// Gateway holds the trunks and the dial plan. Safe for concurrent use.
type Gateway struct {
	trunks map[string]*Trunk // set once
	order  []*Trunk
	plan   []rule
	health *Health // nil: every peer up
}

// New builds the gateway from validated options. On a reload, prev is
// the gateway it replaces: a trunk that keeps its name keeps its channel
// count, so calls up across the reload are still counted.
func New(opts Options, prev *Gateway) (*Gateway, error) {
	g := &Gateway{trunks: map[string]*Trunk{}, health: opts.Health}
	for _, tc := range opts.Trunks {
		t := &Trunk{Name: tc.Name, Peers: tc.Peers, Credentials: tc.Credentials, CallerID: tc.CallerID,
			Codecs: tc.Codecs, MaxChannels: tc.MaxChannels, Transit: tc.Transit,
			Register: tc.Register, RegExpires: tc.RegExpires, Health: tc.Health, channels: new(atomic.Int64), shared: opts.Channels}
		if old := prev.Trunk(tc.Name); old != nil {
			t.channels = old.channels
		}
		for _, p := range tc.CIDRs {
			t.cidrs = append(t.cidrs, p.Masked())
		}
		for _, d := range tc.DIDs {
			x := did{number: d.Number, dest: d.Destination}
			if d.Pattern != "" {
				re, err := regexp.Compile(d.Pattern)
				if err != nil {
					return nil, fmt.Errorf("trunk %s: DID pattern: %w", tc.Name, err)
				}
				x.re = re
			}
			t.dids = append(t.dids, x)
		}
		g.trunks[t.Name] = t
		g.order = append(g.order, t)
	}
	for _, rc := range opts.DialPlan {
		r := rule{prefix: rc.Prefix, strip: rc.Strip, prepend: rc.Prepend, replace: rc.Replace}
		if rc.Match != "" {
			re, err := regexp.Compile(rc.Match)
			if err != nil {
				return nil, fmt.Errorf("dial plan: %w", err)
			}
			r.re = re
		}
		for _, name := range rc.Trunks {
			t, ok := g.trunks[name]
			if !ok {
				return nil, fmt.Errorf("dial plan: no trunk %q", name)
			}
			r.trunks = append(r.trunks, t)
		}
		g.plan = append(g.plan, r)
	}
	return g, nil
}

// Trunk returns the trunk called name, or nil (also on a nil Gateway).
func (g *Gateway) Trunk(name string) *Trunk {
	if g == nil {
		return nil
	}
	return g.trunks[name]
}

// Trunks returns every trunk in configuration order; none for a nil
// Gateway (no trunks configured).
func (g *Gateway) Trunks() []*Trunk {
	if g == nil {
		return nil
	}
	return g.order
}

// Registers reports whether any trunk registers to its carrier.
func (g *Gateway) Registers() bool {
	for _, t := range g.order {
		if t.Register {
			return true
		}
	}
	return false
}

// Identify returns the trunk whose inbound networks hold src, or nil
// (also on a nil Gateway).
func (g *Gateway) Identify(src netip.Addr) *Trunk {
	if g == nil {
		return nil
	}
	src = src.Unmap()
	for _, t := range g.order {
		for _, p := range t.cidrs {
			if p.Contains(src) {
				return t
			}
		}
	}
	return nil
}

// Outbound applies the first matching dial plan rule to number and
// returns the normalised number and the trunks to try in order.
func (g *Gateway) Outbound(number string) (string, []*Trunk, error) {
	for _, r := range g.plan {
		switch {
		case r.re != nil:
			m := r.re.FindStringSubmatchIndex(number)
			if m == nil {
				continue
			}
			out := number
			if r.replace != "" {
				out = string(r.re.ExpandString(nil, r.replace, number, m))
			}
			return normalise(out, r.strip, r.prepend), r.trunks, nil
		case strings.HasPrefix(number, r.prefix):
			return normalise(number, r.strip, r.prepend), r.trunks, nil
		}
	}
	return "", nil, fmt.Errorf("%w: %s", ErrNoRoute, number)
}

func normalise(n string, strip int, prepend string) string {
	if strip > len(n) {
		strip = len(n)
	}
	return prepend + n[strip:]
}
