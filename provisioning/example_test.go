package provisioning

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/provisioning/volume"
)

// TestExampleConfigFirewall applies the firewall of the README's own
// example, configs/gateway-example.yaml, to real nftables and iptables in
// a network namespace. carrier-a's peers 198.51.100.10 and .11 are inside
// its inbound CIDR 198.51.100.0/28; in one interval set nft refused them
// ("conflicting intervals specified") while the knftables fake took them.
func TestExampleConfigFirewall(t *testing.T) {
	testenv.NeedRoot(t)
	cfg, err := config.LoadFile("../configs/gateway-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	trunks, _, err := Desired(cfg, &volume.LVM{VG: cfg.Provision.Storage.VolumeGroup}, dirSeeds(cfg.Provision.Storage.Dir), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	var rules []*firewall.Rules
	for _, tr := range trunks {
		if tr.Firewall != nil {
			rules = append(rules, tr.Firewall)
		}
	}
	if len(rules) != 1 || rules[0].Trunk != "carrier-a" {
		t.Fatalf("the example's firewalled trunks: %+v", rules)
	}
	// The CIDR lets the two peer addresses in: one element for the three.
	if got := fmt.Sprint(rules[0].Peers); got != "[198.51.100.0/28]" {
		t.Errorf("carrier-a's peers = %s, want [198.51.100.0/28]", got)
	}
	ctx := context.Background()
	for i, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			testenv.Need(t, map[string]string{"nftables": "nft", "iptables": "iptables"}[backend])
			ns := testenv.Netns(t, fmt.Sprintf("vxex-%d-%d", i, os.Getpid()))
			var dump string
			testenv.InNetns(t, ns, func() {
				var fw firewall.Backend
				if backend == "nftables" {
					fw, err = firewall.OpenNFT()
				} else {
					fw, err = firewall.OpenIPTables()
				}
				for _, r := range rules {
					if err == nil {
						err = fw.Add(ctx, r)
					}
				}
				for _, r := range rules {
					if err != nil {
						break
					}
					var st firewall.Status
					if st, err = fw.Check(ctx, r); err == nil && st.Action != firewall.InSync {
						err = fmt.Errorf("after Add, Check says %+v", st)
					}
				}
				if backend == "nftables" {
					dump, _ = testenv.Try("nft", "list", "set", "inet", firewall.TableName, "peers4-carrier-a")
				} else {
					dump, _ = testenv.Try("iptables", "-S", firewall.IPTChain("carrier-a"))
				}
			})
			if err != nil {
				t.Fatalf("the README's example: %v", err)
			}
			if !strings.Contains(dump, "198.51.100.0/28") || strings.Contains(dump, "198.51.100.10") {
				t.Errorf("carrier-a's peers in %s:\n%s", backend, dump)
			}
		})
	}
}
