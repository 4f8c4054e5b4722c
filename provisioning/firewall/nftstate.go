package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

	"sigs.k8s.io/knftables"
)

// tableState is voxvisor's table read at once: the rules' comments per
// chain, the keys of each set, the verdict of each map key, the counters.
type tableState struct {
	rules    map[string][]string          // chain -> rule comments
	sets     map[string][]string          // set -> keys
	maps     map[string]map[string]string // map -> key -> verdict
	counters map[string]uint64
}

// Snapshot reads the whole table once, for the Checks of one plan: with
// real nftables that is one nft command instead of several per trunk.
// Release (or any Add or Del) drops it.
func (n *NFT) Snapshot(ctx context.Context) error {
	st, err := n.read(ctx)
	if err != nil {
		return err
	}
	n.snap = st
	return nil
}

// Release drops the snapshot.
func (n *NFT) Release() { n.snap = nil }

func (n *NFT) state(ctx context.Context) (*tableState, error) {
	if n.snap != nil {
		return n.snap, nil
	}
	return n.read(ctx)
}

func (n *NFT) read(ctx context.Context) (*tableState, error) {
	if n.path != "" {
		return n.readJSON(ctx)
	}
	return n.readAPI(ctx)
}

func newState() *tableState {
	return &tableState{rules: map[string][]string{}, sets: map[string][]string{}, maps: map[string]map[string]string{}, counters: map[string]uint64{}}
}

// readAPI builds the state through the knftables calls (the Fake).
func (n *NFT) readAPI(ctx context.Context) (*tableState, error) {
	st := newState()
	rules, err := n.nft.ListRules(ctx, "")
	if knftables.IsNotFound(err) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	for _, r := range rules {
		c := ""
		if r.Comment != nil {
			c = *r.Comment
		}
		st.rules[r.Chain] = append(st.rules[r.Chain], c)
	}
	for _, kind := range []string{"set", "map"} {
		names, err := n.nft.List(ctx, kind+"s")
		if err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
		for _, name := range names {
			es, err := n.nft.ListElements(ctx, kind, name)
			if err != nil {
				return nil, fmt.Errorf("nftables: %s %s: %w", kind, name, err)
			}
			if kind == "map" {
				st.maps[name] = map[string]string{}
			} else {
				st.sets[name] = []string{}
			}
			for _, e := range es {
				k := strings.Join(e.Key, " ")
				if kind == "set" {
					st.sets[name] = append(st.sets[name], k)
				} else {
					st.maps[name][k] = strings.Join(e.Value, " ")
				}
			}
		}
	}
	cs, err := n.nft.ListCounters(ctx)
	if err == nil {
		for _, c := range cs {
			if c != nil && c.Packets != nil {
				st.counters[c.Name] = *c.Packets
			}
		}
	}
	return st, nil
}

// readJSON reads the table with one `nft -j list table`.
func (n *NFT) readJSON(ctx context.Context) (*tableState, error) {
	st := newState()
	cmd := exec.CommandContext(ctx, n.path, "-j", "list", "table", "inet", TableName)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "No such file or directory") {
			return st, nil // no table yet
		}
		return nil, fmt.Errorf("nftables: nft -j list table inet %s: %v: %s", TableName, err, strings.TrimSpace(stderr.String()))
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("nftables: reading the table: %w", err)
	}
	for _, obj := range doc.Nftables {
		switch {
		case obj["rule"] != nil:
			var r struct{ Chain, Comment string }
			json.Unmarshal(obj["rule"], &r)
			st.rules[r.Chain] = append(st.rules[r.Chain], r.Comment)
		case obj["set"] != nil:
			var s struct {
				Name string
				Elem []json.RawMessage
			}
			json.Unmarshal(obj["set"], &s)
			st.sets[s.Name] = []string{}
			for _, e := range s.Elem {
				st.sets[s.Name] = append(st.sets[s.Name], jsonKey(e))
			}
		case obj["map"] != nil:
			var m struct {
				Name string
				Elem [][2]json.RawMessage
			}
			json.Unmarshal(obj["map"], &m)
			st.maps[m.Name] = map[string]string{}
			for _, e := range m.Elem {
				st.maps[m.Name][jsonKey(e[0])] = jsonVerdict(e[1])
			}
		case obj["counter"] != nil:
			var c struct {
				Name    string
				Packets uint64
			}
			json.Unmarshal(obj["counter"], &c)
			st.counters[c.Name] = c.Packets
		}
	}
	return st, nil
}

// jsonKey turns an element as nft prints it in JSON ("1.2.3.4", or
// {"prefix": {"addr": ..., "len": ...}}) into knftables' text form.
func jsonKey(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var p struct {
		Prefix struct {
			Addr string
			Len  int
		}
	}
	if json.Unmarshal(raw, &p) == nil && p.Prefix.Addr != "" {
		return fmt.Sprintf("%s/%d", p.Prefix.Addr, p.Prefix.Len)
	}
	return string(raw)
}

// jsonVerdict turns {"goto": {"target": "x"}} into "goto x".
func jsonVerdict(raw json.RawMessage) string {
	var v map[string]struct{ Target string }
	if json.Unmarshal(raw, &v) == nil {
		for verb, t := range v {
			return strings.TrimSpace(verb + " " + t.Target)
		}
	}
	return string(raw)
}
