package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// IPTables is the backend for hosts on legacy iptables: per trunk a chain
// VOX-<trunk> in the filter table, jumped to from INPUT and FORWARD for the
// endpoint's address, every rule tagged with a comment. iptables has no
// transactions: a changed trunk's chain is rebuilt beside the old one and
// swapped in, so packets see one or the other.
type IPTables struct {
	v4, v6 Table
	host   bool // v4 and v6 are this host's tables: Snapshot can read them

	snap4, snap6 *iptState // set by Snapshot for one plan's Checks
}

// Table is the part of go-iptables the backend uses; tests give a fake.
type Table interface {
	ListChains(table string) ([]string, error)
	List(table, chain string) ([]string, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	RenameChain(table, oldChain, newChain string) error
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	Stats(table, chain string) ([][]string, error)
}

// OpenIPTables finds iptables and ip6tables on this host.
func OpenIPTables() (*IPTables, error) {
	v4, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w (install the iptables package, and run as root)", err)
	}
	v6, err := iptables.NewWithProtocol(iptables.ProtocolIPv6)
	if err != nil {
		return nil, fmt.Errorf("ip6tables: %w", err)
	}
	return &IPTables{v4: v4, v6: v6, host: true}, nil
}

// NewIPTables uses the given tables (for tests).
func NewIPTables(v4, v6 Table) *IPTables { return &IPTables{v4: v4, v6: v6} }

func (p *IPTables) Name() string { return "iptables" }

const filter = "filter"

// IPTChain is the trunk's chain: VOX-<trunk>, within iptables' 28
// characters (a long name is cut and given a hash).
func IPTChain(trunk string) string {
	c := "VOX-" + ident(trunk)
	if len(c) <= 28 {
		return c
	}
	h := sha256.Sum256([]byte(trunk))
	return c[:19] + "-" + hex.EncodeToString(h[:])[:8]
}

// IPTLogPrefix is LogPrefix cut to iptables' 29 characters.
func IPTLogPrefix(trunk string) string {
	p := LogPrefix(trunk)
	if len(p) <= 29 {
		return p
	}
	room := 29 - len("voxvisor ") - len(" drop: ") - 1
	return "voxvisor " + trunk[:room] + "~ drop: "
}

func iptComment(r *Rules) string { return "voxvisor:" + r.Trunk + " " + r.Hash() }

func (p *IPTables) table(r *Rules) Table {
	if r.Dest.Is6() {
		return p.v6
	}
	return p.v4
}

// specs are the chain's rules, in order. Peers of the other address
// family than the endpoint's are not reachable through it and are left out.
func (r *Rules) iptSpecs() [][]string {
	com := []string{"-m", "comment", "--comment", iptComment(r)}
	var out [][]string
	type proto struct {
		name  string
		ports []PortRange
	}
	protos := []proto{{"udp", r.UDPPorts}, {"tcp", r.TCPPorts}}
	for _, peer := range family(r.Peers, r.Dest.Is6()) {
		for _, pr := range protos {
			if len(pr.ports) > 0 {
				out = append(out, slices.Concat([]string{"-s", peer.String(), "-p", pr.name, "-m", "multiport", "--dports", joinPorts(pr.ports, PortRange.ipt)}, com, []string{"-j", "ACCEPT"}))
			}
		}
	}
	for _, pr := range protos {
		if len(pr.ports) == 0 {
			continue
		}
		m := []string{"-p", pr.name, "-m", "multiport", "--dports", joinPorts(pr.ports, PortRange.ipt)}
		out = append(out,
			slices.Concat(m, com, []string{"-m", "limit", "--limit", strconv.Itoa(r.LogRate) + "/min", "--limit-burst", "5", "-j", "LOG", "--log-prefix", IPTLogPrefix(r.Trunk), "--log-level", "4"}),
			slices.Concat(m, com, []string{"-j", "DROP"}))
	}
	return out
}

func (r *Rules) jumpSpec(chain string) []string {
	bits := 32
	if r.Dest.Is6() {
		bits = 128
	}
	return []string{"-d", fmt.Sprintf("%s/%d", r.Dest, bits), "-m", "comment", "--comment", "voxvisor:" + r.Trunk, "-j", chain}
}

func (p *IPTables) Check(_ context.Context, r *Rules) (Status, error) {
	st := Status{Trunk: r.Trunk}
	state := p.snapshot(r)
	if state == nil {
		var err error
		if state, err = readChain(p.table(r), IPTChain(r.Trunk)); err != nil {
			return st, fmt.Errorf("iptables: %w", err)
		}
	}
	return state.check(r, st), nil
}

func (p *IPTables) Add(ctx context.Context, r *Rules) error {
	p.Release()
	t := p.table(r)
	chain := IPTChain(r.Trunk)
	fail := func(err error) error { return fmt.Errorf("iptables: trunk %s: %w", r.Trunk, err) }
	chains, err := t.ListChains(filter)
	if err != nil {
		return fail(err)
	}
	// Build the new chain under a temporary name, then swap it in.
	tmp := chain[:min(len(chain), 26)] + "~N"
	if slices.Contains(chains, tmp) { // left by an Add that failed
		p.unjump(t, tmp)
		t.ClearAndDeleteChain(filter, tmp)
	}
	if err := t.NewChain(filter, tmp); err != nil {
		return fail(err)
	}
	for _, spec := range r.iptSpecs() {
		if err := t.Append(filter, tmp, spec...); err != nil {
			t.ClearAndDeleteChain(filter, tmp)
			return fail(err)
		}
	}
	for _, hook := range []string{"INPUT", "FORWARD"} {
		if err := t.Insert(filter, hook, 1, r.jumpSpec(tmp)...); err != nil {
			p.unjump(t, tmp)
			t.ClearAndDeleteChain(filter, tmp)
			return fail(err)
		}
	}
	// The new chain is live; retire the old one and take its name.
	if slices.Contains(chains, chain) {
		p.unjump(t, chain)
		if err := t.ClearAndDeleteChain(filter, chain); err != nil {
			return fail(err)
		}
	}
	if err := t.RenameChain(filter, tmp, chain); err != nil {
		return fail(err)
	}
	return nil
}

// unjump removes every jump from INPUT and FORWARD to chain.
func (p *IPTables) unjump(t Table, chain string) {
	for _, hook := range []string{"INPUT", "FORWARD"} {
		rules, err := t.List(filter, hook)
		if err != nil {
			continue
		}
		for _, rule := range rules {
			f := strings.Fields(rule)
			if len(f) > 2 && f[0] == "-A" && f[len(f)-1] == chain && f[len(f)-2] == "-j" {
				t.DeleteIfExists(filter, hook, unquote(f[2:])...)
			}
		}
	}
}

// unquote joins the words of a quoted comment that iptables -S printed.
func unquote(f []string) []string {
	var out []string
	for i := 0; i < len(f); i++ {
		if strings.HasPrefix(f[i], `"`) {
			s := f[i]
			for !strings.HasSuffix(s, `"`) || len(s) == 1 {
				if i+1 >= len(f) {
					break
				}
				i++
				s += " " + f[i]
			}
			out = append(out, strings.Trim(s, `"`))
			continue
		}
		out = append(out, f[i])
	}
	return out
}

func (p *IPTables) Del(_ context.Context, trunk string) error {
	p.Release()
	chain := IPTChain(trunk)
	for _, t := range []Table{p.v4, p.v6} {
		chains, err := t.ListChains(filter)
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		p.unjump(t, chain)
		if slices.Contains(chains, chain) {
			if err := t.ClearAndDeleteChain(filter, chain); err != nil {
				return fmt.Errorf("iptables: remove trunk %s: %w", trunk, err)
			}
		}
	}
	return nil
}

// Clean removes the chains an Add that failed half-way left under their
// temporary names (VOX-...~N) and the jumps to them.
func (p *IPTables) Clean(_ context.Context) (string, error) {
	p.Release()
	var removed []string
	for _, t := range []Table{p.v4, p.v6} {
		chains, err := t.ListChains(filter)
		if err != nil {
			return "", fmt.Errorf("iptables: %w", err)
		}
		for _, c := range chains {
			if strings.HasPrefix(c, "VOX-") && strings.HasSuffix(c, "~N") {
				p.unjump(t, c)
				if err := t.ClearAndDeleteChain(filter, c); err != nil {
					return "", fmt.Errorf("iptables: remove chain %s: %w", c, err)
				}
				removed = append(removed, "chain "+c)
			}
		}
	}
	return strings.Join(removed, ", "), nil
}

func (p *IPTables) Trunks(_ context.Context) ([]string, error) {
	var out []string
	for _, t := range []Table{p.v4, p.v6} {
		chains, err := t.ListChains(filter)
		if err != nil {
			return nil, fmt.Errorf("iptables: %w", err)
		}
		for _, c := range chains {
			if !strings.HasPrefix(c, "VOX-") {
				continue
			}
			rules, _ := t.List(filter, c)
			for _, rule := range rules {
				if i := strings.Index(rule, `"voxvisor:`); i >= 0 {
					name := strings.Fields(rule[i+len(`"voxvisor:`):])[0]
					if !slices.Contains(out, name) {
						out = append(out, name)
					}
					break
				}
			}
		}
	}
	return out, nil
}
