// Package firewall opens a trunk's signalling and media to its peers only.
// Per trunk: the peers' addresses, a chain that accepts them to the SIP
// ports and the relay's RTP/RTCP range of the trunk's endpoint address,
// and for anyone else a rate-limited log line (prefix "voxvisor <trunk>
// drop: ") and a drop, with counters. Two backends: nftables through
// knftables (one inet table, atomic transactions), iptables through
// go-iptables (a VOX-<trunk> chain jumped to from INPUT and FORWARD).
package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Action is what Check finds to do for a trunk.
type Action int

const (
	// InSync: the kernel has exactly the trunk's rules.
	InSync Action = iota
	// Missing: the trunk has no rules.
	Missing
	// Drifted: the trunk's rules differ from its configuration.
	Drifted
)

// PortRange is an inclusive range of ports; Lo == Hi for one port.
type PortRange struct{ Lo, Hi uint16 }

func (p PortRange) nft() string {
	if p.Lo == p.Hi {
		return fmt.Sprint(p.Lo)
	}
	return fmt.Sprintf("%d-%d", p.Lo, p.Hi)
}

func (p PortRange) ipt() string {
	if p.Lo == p.Hi {
		return fmt.Sprint(p.Lo)
	}
	return fmt.Sprintf("%d:%d", p.Lo, p.Hi)
}

// Rules are one trunk's firewall rules.
type Rules struct {
	Trunk    string
	Dest     netip.Addr     // the trunk's endpoint address
	Peers    []netip.Prefix // allowed sources
	UDPPorts []PortRange    // SIP over UDP and the relay's RTP/RTCP range
	TCPPorts []PortRange    // SIP over TCP
	LogRate  int            // logged drops per minute
}

// Hash identifies the rules' content; it is written into every rule's
// comment so that drift is found without parsing rules back.
func (r *Rules) Hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%v|%v|%v|%d", r.Trunk, r.Dest, r.Peers, r.UDPPorts, r.TCPPorts, r.LogRate)
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// LogPrefix is the kernel log prefix of the trunk's dropped packets.
func LogPrefix(trunk string) string { return "voxvisor " + trunk + " drop: " }

// Status is a trunk's rules as they are in the kernel.
type Status struct {
	Trunk    string
	Action   Action
	Detail   string // what drifted
	Accepted uint64 // packets accepted from the peers
	Dropped  uint64 // packets dropped from anyone else
}

// Backend puts trunks' rules into the kernel. Add and Del are safe to
// repeat; Check never changes anything.
type Backend interface {
	Name() string
	Check(ctx context.Context, r *Rules) (Status, error)
	Add(ctx context.Context, r *Rules) error
	Del(ctx context.Context, trunk string) error
	// Trunks lists the trunks that have rules of ours.
	Trunks(ctx context.Context) ([]string, error)
	// Clean removes what is left of voxvisor's when no trunk has rules
	// (Del of the last trunk leaves nothing; an older voxvisor or a failed
	// Add may have). It says what it removed, or "".
	Clean(ctx context.Context) (string, error)
}

var unsafeRE = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// ident makes a trunk name safe as part of an nftables or iptables name.
func ident(trunk string) string { return unsafeRE.ReplaceAllString(trunk, "_") }

// family is Cover(peers) of one address family.
func family(peers []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range Cover(peers) {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

// Cover returns the fewest of peers that let in the same sources: each
// masked, once, and none that another of them contains (a peer address
// inside an inbound CIDR). Order is kept. nftables refuses overlapping
// elements in one interval set ("conflicting intervals specified"), and
// two CIDR prefixes either nest or are apart, so what Cover returns never
// overlaps.
func Cover(peers []netip.Prefix) []netip.Prefix {
	masked := make([]netip.Prefix, 0, len(peers))
	for _, p := range peers {
		if p.IsValid() {
			masked = append(masked, p.Masked())
		}
	}
	var out []netip.Prefix
	for i, p := range masked {
		keep := true
		for j, q := range masked {
			if i == j || q.Addr().Is6() != p.Addr().Is6() {
				continue
			}
			// A wider q holds p; of two equal ones the first stays.
			if (q.Bits() < p.Bits() && q.Contains(p.Addr())) || (q == p && j < i) {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, p)
		}
	}
	return out
}

func joinPorts(ps []PortRange, f func(PortRange) string) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = f(p)
	}
	return strings.Join(s, ",")
}
