package firewall

import (
	"context"
	"fmt"
	"os"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/firewall/firewalltest"
)

// TestStrictFakeAgreesWithNft backs the unit tests' fake with the real
// tool (STYLE 16): the same transactions on an interval set go to nft in
// a network namespace and to firewalltest's fake, and both must accept
// or refuse each alike. knftables' own fake accepted overlapping
// elements, which is how the README's example passed the tests and
// failed in apply.
func TestStrictFakeAgreesWithNft(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.Need(t, "nft")
	ns := testenv.Netns(t, fmt.Sprintf("vxfw-fake-%d", os.Getpid()))
	ctx := context.Background()
	const table = "vxfake"
	for _, tc := range []struct {
		name        string
		typ         string
		before, add []string
		ok          bool
	}{
		{"a peer inside a CIDR, one transaction", "ipv4_addr", nil, []string{"198.51.100.10", "198.51.100.0/28"}, false},
		{"a peer inside a CIDR already there", "ipv4_addr", []string{"10.0.0.0/24"}, []string{"10.0.0.5"}, false},
		{"nested prefixes", "ipv4_addr", nil, []string{"10.0.0.0/16", "10.0.3.0/24"}, false},
		{"a range across a prefix", "ipv4_addr", []string{"10.0.0.0/24"}, []string{"10.0.0.200-10.0.1.5"}, false},
		{"adjacent prefixes", "ipv4_addr", nil, []string{"10.0.0.0/25", "10.0.0.128/25"}, true},
		{"the same address twice", "ipv4_addr", nil, []string{"10.1.0.1", "10.1.0.1"}, true},
		{"again what is there", "ipv4_addr", []string{"10.2.0.0/24"}, []string{"10.2.0.0/24"}, true},
		{"apart", "ipv4_addr", []string{"192.0.2.0/24"}, []string{"198.51.100.7", "203.0.113.0/28"}, true},
		{"IPv6 inside a prefix", "ipv6_addr", nil, []string{"2001:db8::/64", "2001:db8::7"}, false},
		{"IPv6 apart", "ipv6_addr", nil, []string{"2001:db8::/64", "2001:db8:1::7"}, true},
		{"IPv6 in an IPv4 set", "ipv4_addr", nil, []string{"2001:db8::1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := func(nft knftables.Interface) error {
				tx := nft.NewTransaction()
				tx.Add(&knftables.Table{})
				tx.Add(&knftables.Set{Name: "s", Type: tc.typ, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
				for _, e := range tc.before {
					tx.Add(&knftables.Element{Set: "s", Key: []string{e}})
				}
				if err := nft.Run(ctx, tx); err != nil {
					return fmt.Errorf("setting up: %w", err)
				}
				tx = nft.NewTransaction()
				for _, e := range tc.add {
					tx.Add(&knftables.Element{Set: "s", Key: []string{e}})
				}
				return nft.Run(ctx, tx)
			}
			var real error
			testenv.InNetns(t, ns, func() {
				testenv.Try("nft", "delete", "table", "inet", table)
				nft, err := knftables.New(knftables.InetFamily, table)
				if err != nil {
					real = err
					return
				}
				real = run(nft)
				testenv.Try("nft", "delete", "table", "inet", table)
			})
			fake := run(firewalltest.NewFake(knftables.InetFamily, table))
			if (real == nil) != tc.ok || (fake == nil) != tc.ok {
				t.Fatalf("want ok=%v:\n nft:  %v\n fake: %v", tc.ok, real, fake)
			}
		})
	}
}
