package firewall

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// iptState is one family's filter table read at once with
// iptables-save -c: the chains, and each chain's rules as iptables -S
// prints them (split into words, the comment's quotes removed) with
// their packet counters.
type iptState struct {
	chains  map[string]bool
	rules   map[string][][]string
	packets map[string][]uint64
}

func newIPTState() *iptState {
	return &iptState{chains: map[string]bool{}, rules: map[string][][]string{}, packets: map[string][]uint64{}}
}

// readChain reads what a Check of chain needs without a snapshot,
// through the iptables commands: whether the chain exists, its rules and
// their counters, and the rules of INPUT and FORWARD.
func readChain(t Table, chain string) (*iptState, error) {
	st := newIPTState()
	chains, err := t.ListChains(filter)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(chains, chain) {
		return st, nil
	}
	st.chains[chain] = true
	for _, c := range []string{chain, "INPUT", "FORWARD"} {
		rules, err := t.List(filter, c)
		if err != nil {
			return nil, err
		}
		for _, rule := range rules {
			if f := unquote(strings.Fields(rule)); len(f) >= 2 && f[0] == "-A" {
				st.rules[c] = append(st.rules[c], f)
			}
		}
	}
	// Counters are for status only: without them the check still holds.
	if stats, err := t.Stats(filter, chain); err == nil {
		for _, row := range stats {
			var n uint64
			if len(row) > 0 {
				n, _ = strconv.ParseUint(row[0], 10, 64)
			}
			st.packets[chain] = append(st.packets[chain], n)
		}
	}
	return st, nil
}

// Snapshot reads the filter tables once (iptables-save and
// ip6tables-save), for the Checks of one plan: two commands instead of
// five per trunk. Release (or any Add or Del) drops it. With tables that
// are not the host's (tests) it does nothing.
func (p *IPTables) Snapshot(ctx context.Context) error {
	if !p.host {
		return nil
	}
	v4, err := readIPTables(ctx, "iptables-save")
	if err != nil {
		return err
	}
	v6, err := readIPTables(ctx, "ip6tables-save")
	if err != nil {
		return err
	}
	p.snap4, p.snap6 = v4, v6
	return nil
}

// Release drops the snapshot.
func (p *IPTables) Release() { p.snap4, p.snap6 = nil, nil }

func readIPTables(ctx context.Context, cmd string) (*iptState, error) {
	out, err := exec.CommandContext(ctx, cmd, "-c", "-t", filter).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return parseIPTablesSave(string(out)), nil
}

// parseIPTablesSave reads iptables-save -c output for one table:
// ":CHAIN POLICY [p:b]" declares a chain, "[p:b] -A CHAIN ..." is a rule.
func parseIPTablesSave(out string) *iptState {
	st := newIPTState()
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) > 0 {
				st.chains[f[0]] = true
			}
		case strings.HasPrefix(line, "["):
			end := strings.IndexByte(line, ']')
			if end < 0 {
				continue
			}
			pk, _, _ := strings.Cut(line[1:end], ":")
			f := unquote(strings.Fields(line[end+1:]))
			if len(f) < 2 || f[0] != "-A" {
				continue
			}
			n, _ := strconv.ParseUint(pk, 10, 64)
			st.rules[f[1]] = append(st.rules[f[1]], f)
			st.packets[f[1]] = append(st.packets[f[1]], n)
		}
	}
	return st
}

// snapshot returns the snapshot of r's family, or nil.
func (p *IPTables) snapshot(r *Rules) *iptState {
	if r.Dest.Is6() {
		return p.snap6
	}
	return p.snap4
}

// check compares r with the state read: Missing, Drifted (with what
// differs) or InSync, and the chain's counters.
func (s *iptState) check(r *Rules, st Status) Status {
	chain := IPTChain(r.Trunk)
	if !s.chains[chain] {
		st.Action = Missing
		return st
	}
	rules, packets := s.rules[chain], s.packets[chain]
	for i, f := range rules {
		if i >= len(packets) {
			break
		}
		switch target(f) {
		case "ACCEPT":
			st.Accepted += packets[i]
		case "DROP":
			st.Dropped += packets[i]
		}
	}
	st.Action = Drifted
	if want := len(r.iptSpecs()); len(rules) != want {
		st.Detail = fmt.Sprintf("chain %s has %d rules, want %d", chain, len(rules), want)
		return st
	}
	for _, f := range rules {
		if !strings.Contains(strings.Join(f, " "), iptComment(r)) {
			st.Detail = fmt.Sprintf("chain %s holds rules of another configuration", chain)
			return st
		}
	}
	for _, hook := range []string{"INPUT", "FORWARD"} {
		want := strings.Join(append([]string{"-A", hook}, r.jumpSpec(chain)...), " ")
		found := false
		for _, f := range s.rules[hook] {
			if strings.Join(f, " ") == want {
				found = true
				break
			}
		}
		if !found {
			st.Detail = fmt.Sprintf("%s does not jump to %s for %s", hook, chain, r.Dest)
			return st
		}
	}
	st.Action = InSync
	return st
}

// target is the word after -j.
func target(f []string) string {
	for i := len(f) - 2; i >= 0; i-- {
		if f[i] == "-j" {
			return f[i+1]
		}
	}
	return ""
}
