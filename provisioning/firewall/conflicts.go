package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// Conflicts looks through the host's whole nftables ruleset (which holds
// iptables-nft's and firewalld's rules too) for base chains on the input
// or forward hook, outside voxvisor's table, that drop or reject. An
// accept in our table does not stop them: every base chain on a hook
// sees the packet. Each finding is a sentence for the operator.
func Conflicts(ctx context.Context) ([]string, error) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return nil, nil // no nftables: nothing to compare
	}
	out, err := exec.CommandContext(ctx, nft, "-j", "list", "ruleset").Output()
	if err != nil {
		return nil, fmt.Errorf("nft list ruleset: %w", err)
	}
	return conflicts(out)
}

func conflicts(js []byte) ([]string, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("nft ruleset: %w", err)
	}
	type chainKey struct{ family, table, name string }
	hooked := map[chainKey]string{}
	var order []chainKey
	drops := map[chainKey]bool{}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["chain"]; ok {
			var c struct {
				Family, Table, Name, Hook, Policy string
			}
			json.Unmarshal(raw, &c)
			k := chainKey{c.Family, c.Table, c.Name}
			if (c.Hook == "input" || c.Hook == "forward") && !(c.Family == "inet" && c.Table == TableName) {
				hooked[k] = c.Hook
				order = append(order, k)
				if c.Policy == "drop" {
					drops[k] = true
				}
			}
		}
		if raw, ok := obj["rule"]; ok {
			var r struct {
				Family, Table, Chain string
				Expr                 json.RawMessage
			}
			json.Unmarshal(raw, &r)
			e := string(r.Expr)
			if strings.Contains(e, `"drop"`) || strings.Contains(e, `"reject"`) {
				drops[chainKey{r.Family, r.Table, r.Chain}] = true
			}
		}
	}
	var out []string
	for _, k := range order {
		if drops[k] {
			out = append(out, fmt.Sprintf("table %s %s, chain %s (hook %s) drops or rejects packets: an accept in voxvisor's table does not override it, so make sure it lets the trunks' peers reach the SIP ports and the relay range", k.family, k.table, k.name, hooked[k]))
		}
	}
	return out, nil
}
