package firewall

import (
	"strings"
	"testing"
)

func TestConflicts(t *testing.T) {
	js := `{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "inet", "name": "firewalld"}},
 {"chain": {"family": "inet", "table": "firewalld", "name": "filter_INPUT", "hook": "input", "prio": 10, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "firewalld", "chain": "filter_INPUT", "expr": [{"reject": {"type": "icmpx"}}]}},
 {"chain": {"family": "ip", "table": "filter", "name": "OUTPUT", "hook": "output", "policy": "drop"}},
 {"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "hook": "prerouting", "policy": "accept"}},
 {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "accept"}},
 {"chain": {"family": "inet", "table": "voxvisor", "name": "input", "hook": "input", "policy": "accept"}},
 {"rule": {"family": "inet", "table": "voxvisor", "chain": "input", "expr": [{"drop": null}]}}
]}`
	got, err := conflicts([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.Contains(got[0], "inet firewalld, chain filter_INPUT (hook input)") {
		t.Fatalf("conflicts = %q", got)
	}
}
