package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// TableName is voxvisor's own nftables table, in the inet family.
const TableName = "voxvisor"

const tableComment = "voxvisor: per-trunk rules, managed by voxvisor provision"

// NFT is the nftables backend.
type NFT struct {
	nft  knftables.Interface
	path string      // the nft command, for reading the table at once; "" with a Fake
	snap *tableState // from Snapshot, until Release, Add or Del
}

// NewNFT connects to nftables (the nft command), or to a knftables.Fake.
func NewNFT(nft knftables.Interface) *NFT { return &NFT{nft: nft} }

// OpenNFT checks that nft works on this host and returns the backend.
func OpenNFT() (*NFT, error) {
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w (install the nftables package, and run as root)", err)
	}
	n := NewNFT(nft)
	if n.path, err = exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return n, nil
}

func (n *NFT) Name() string { return "nftables" }

func chainName(trunk string) string  { return "trunk-" + ident(trunk) }
func setName(trunk, v string) string { return "peers" + v + "-" + ident(trunk) }
func counterName(trunk, what string) string {
	return what + "-" + ident(trunk)
}
func ruleComment(r *Rules) string { return "voxvisor " + r.Trunk + " " + r.Hash() }

// rules are the trunk chain's rules, in order.
func (r *Rules) nftRules() []string {
	udp := "udp dport { " + joinPorts(r.UDPPorts, PortRange.nft) + " }"
	tcp := "tcp dport { " + joinPorts(r.TCPPorts, PortRange.nft) + " }"
	acc := fmt.Sprintf("counter name %q accept", counterName(r.Trunk, "accepted"))
	var out []string
	for _, v := range []struct{ ip, set string }{{"ip", "4"}, {"ip6", "6"}} {
		s := "@" + setName(r.Trunk, v.set)
		if len(r.UDPPorts) > 0 {
			out = append(out, fmt.Sprintf("%s saddr %s %s %s", v.ip, s, udp, acc))
		}
		if len(r.TCPPorts) > 0 {
			out = append(out, fmt.Sprintf("%s saddr %s %s %s", v.ip, s, tcp, acc))
		}
	}
	logv := fmt.Sprintf("limit rate %d/minute burst 5 packets log prefix %q level warn", r.LogRate, LogPrefix(r.Trunk))
	drop := fmt.Sprintf("counter name %q drop", counterName(r.Trunk, "dropped"))
	for _, m := range []struct {
		match string
		ok    bool
	}{{udp, len(r.UDPPorts) > 0}, {tcp, len(r.TCPPorts) > 0}} {
		if m.ok {
			out = append(out, m.match+" "+logv, m.match+" "+drop)
		}
	}
	return out
}

func elems(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		if p.IsSingleIP() {
			out = append(out, p.Addr().String())
		} else {
			out = append(out, p.String())
		}
	}
	slices.Sort(out)
	return out
}

func dispatchMap(a netip.Addr) string {
	if a.Is6() {
		return "dispatch6"
	}
	return "dispatch4"
}

// Check compares the kernel's table with the trunk's rules.
func (n *NFT) Check(ctx context.Context, r *Rules) (Status, error) {
	st := Status{Trunk: r.Trunk}
	tbl, err := n.state(ctx)
	if err != nil {
		return st, err
	}
	rules := tbl.rules[chainName(r.Trunk)]
	if len(rules) == 0 {
		st.Action = Missing
		return st, nil
	}
	drift := func(format string, args ...any) (Status, error) {
		st.Action = Drifted
		st.Detail = fmt.Sprintf(format, args...)
		return st, nil
	}
	st.Accepted = tbl.counters[counterName(r.Trunk, "accepted")]
	st.Dropped = tbl.counters[counterName(r.Trunk, "dropped")]
	want := r.nftRules()
	if len(rules) != len(want) {
		return drift("chain %s has %d rules, want %d", chainName(r.Trunk), len(rules), len(want))
	}
	for _, c := range rules {
		if c != ruleComment(r) {
			return drift("chain %s holds rules of another configuration", chainName(r.Trunk))
		}
	}
	for _, v := range []string{"4", "6"} {
		name := setName(r.Trunk, v)
		got, ok := tbl.sets[name]
		if !ok {
			return drift("set %s is missing", name)
		}
		got = slices.Clone(got)
		slices.Sort(got)
		if w := elems(family(r.Peers, v == "6")); !slices.Equal(got, w) {
			return drift("set %s holds %v, want %v", name, got, w)
		}
	}
	switch v, ok := tbl.maps[dispatchMap(r.Dest)][r.Dest.String()]; {
	case !ok:
		return drift("no traffic to %s is sent to chain %s", r.Dest, chainName(r.Trunk))
	case v != "goto "+chainName(r.Trunk):
		return drift("traffic to %s goes to %v", r.Dest, v)
	}
	return st, nil
}

// base adds the table, its base chains and dispatch maps to tx. The base
// chains are flushed and written again, so repeating it changes nothing.
func base(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo(tableComment)})
	for _, m := range []struct{ name, typ string }{{"dispatch4", "ipv4_addr : verdict"}, {"dispatch6", "ipv6_addr : verdict"}} {
		tx.Add(&knftables.Map{Name: m.name, Type: m.typ, Comment: knftables.PtrTo("endpoint address to its trunk's chain")})
	}
	for _, h := range []knftables.BaseChainHook{knftables.InputHook, knftables.ForwardHook} {
		c := &knftables.Chain{
			Name:     string(h),
			Type:     knftables.PtrTo(knftables.FilterType),
			Hook:     knftables.PtrTo(h),
			Priority: knftables.PtrTo(knftables.FilterPriority),
		}
		tx.Add(c)
		tx.Flush(c)
		tx.Add(&knftables.Rule{Chain: c.Name, Rule: "ip daddr vmap @dispatch4"})
		tx.Add(&knftables.Rule{Chain: c.Name, Rule: "ip6 daddr vmap @dispatch6"})
	}
}

// Add writes the trunk's sets, counters, chain and dispatch entry in one
// transaction: the kernel has the old rules or the new ones, never half.
func (n *NFT) Add(ctx context.Context, r *Rules) error {
	n.Release()
	old, _ := n.nft.ListElements(ctx, "map", dispatchMap(r.Dest))
	tx := n.nft.NewTransaction()
	base(tx)
	for _, v := range []struct{ v, typ string }{{"4", "ipv4_addr"}, {"6", "ipv6_addr"}} {
		s := &knftables.Set{Name: setName(r.Trunk, v.v), Type: v.typ, Flags: []knftables.SetFlag{knftables.IntervalFlag},
			Comment: knftables.PtrTo("peers of trunk " + r.Trunk)}
		tx.Add(s)
		tx.Flush(s)
		for _, e := range elems(family(r.Peers, v.v == "6")) {
			tx.Add(&knftables.Element{Set: s.Name, Key: []string{e}})
		}
	}
	for _, what := range []string{"accepted", "dropped"} {
		tx.Add(&knftables.Counter{Name: counterName(r.Trunk, what), Comment: knftables.PtrTo(what + " for trunk " + r.Trunk)})
	}
	c := &knftables.Chain{Name: chainName(r.Trunk), Comment: knftables.PtrTo("trunk " + r.Trunk)}
	tx.Add(c)
	tx.Flush(c)
	for _, rule := range r.nftRules() {
		tx.Add(&knftables.Rule{Chain: c.Name, Rule: rule, Comment: knftables.PtrTo(ruleComment(r))})
	}
	// Traffic to the endpoint's address goes to the trunk's chain; an old
	// entry for the address is replaced within the same transaction.
	for _, e := range old {
		if len(e.Key) == 1 && e.Key[0] == r.Dest.String() {
			tx.Delete(&knftables.Element{Map: dispatchMap(r.Dest), Key: e.Key, Value: e.Value})
		}
	}
	tx.Add(&knftables.Element{Map: dispatchMap(r.Dest), Key: []string{r.Dest.String()}, Value: []string{"goto " + c.Name}})
	if err := n.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables: trunk %s: %w", r.Trunk, err)
	}
	return nil
}

// Del removes the trunk's dispatch entries, chain, sets and counters in
// one transaction; when no other trunk has a chain, the whole table goes
// with them (base chains and maps), so nothing of voxvisor's is left. A
// trunk without rules is no error.
func (n *NFT) Del(ctx context.Context, trunk string) error {
	n.Release()
	chains, err := n.nft.List(ctx, "chains")
	if knftables.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tx := n.nft.NewTransaction()
	if !slices.ContainsFunc(chains, func(c string) bool { return isTrunkChain(c) && c != chainName(trunk) }) {
		tx.Delete(&knftables.Table{})
		if err := n.nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("nftables: remove trunk %s and table inet %s: %w", trunk, TableName, err)
		}
		return nil
	}
	for _, m := range []string{"dispatch4", "dispatch6"} {
		es, _ := n.nft.ListElements(ctx, "map", m)
		for _, e := range es {
			if len(e.Value) == 1 && e.Value[0] == "goto "+chainName(trunk) {
				tx.Delete(&knftables.Element{Map: m, Key: e.Key, Value: e.Value})
			}
		}
	}
	if slices.Contains(chains, chainName(trunk)) {
		c := &knftables.Chain{Name: chainName(trunk)}
		tx.Flush(c)
		tx.Delete(c)
	}
	sets, _ := n.nft.List(ctx, "sets")
	for _, v := range []string{"4", "6"} {
		if slices.Contains(sets, setName(trunk, v)) {
			tx.Delete(&knftables.Set{Name: setName(trunk, v)})
		}
	}
	counters, _ := n.nft.List(ctx, "counters")
	for _, what := range []string{"accepted", "dropped"} {
		if slices.Contains(counters, counterName(trunk, what)) {
			tx.Delete(&knftables.Counter{Name: counterName(trunk, what)})
		}
	}
	if tx.NumOperations() == 0 {
		return nil
	}
	if err := n.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables: remove trunk %s: %w", trunk, err)
	}
	return nil
}

func isTrunkChain(c string) bool { return strings.HasPrefix(c, "trunk-") }

// Clean removes voxvisor's table when no trunk has a chain in it: what an
// older voxvisor left after its last trunk's rules went (base chains still
// hooked at input and forward, empty dispatch maps). It says what it
// removed, or "".
func (n *NFT) Clean(ctx context.Context) (string, error) {
	n.Release()
	chains, err := n.nft.List(ctx, "chains")
	if knftables.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("nftables: %w", err)
	}
	if slices.ContainsFunc(chains, isTrunkChain) {
		return "", nil
	}
	tx := n.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := n.nft.Run(ctx, tx); err != nil {
		return "", fmt.Errorf("nftables: remove table inet %s: %w", TableName, err)
	}
	return "table inet " + TableName, nil
}

// Trunks lists the trunks with a chain of ours, by the rules' comments.
func (n *NFT) Trunks(ctx context.Context) ([]string, error) {
	rules, err := n.nft.ListRules(ctx, "")
	if knftables.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	var out []string
	for _, r := range rules {
		if r.Comment == nil || !strings.HasPrefix(*r.Comment, "voxvisor ") {
			continue
		}
		f := strings.Fields(*r.Comment)
		if len(f) == 3 && !slices.Contains(out, f[1]) {
			out = append(out, f[1])
		}
	}
	return out, nil
}
