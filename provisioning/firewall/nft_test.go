package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/provisioning/firewall/firewalltest"
)

func testRules(trunk, dest string, peers ...string) *Rules {
	r := &Rules{
		Trunk:    trunk,
		Dest:     netip.MustParseAddr(dest),
		UDPPorts: []PortRange{{5060, 5060}, {20000, 29999}},
		TCPPorts: []PortRange{{5060, 5060}},
		LogRate:  10,
	}
	for _, p := range peers {
		r.Peers = append(r.Peers, netip.MustParsePrefix(p))
	}
	return r
}

func TestNFTFake(t *testing.T) {
	ctx := context.Background()
	fake := firewalltest.NewFake(knftables.InetFamily, TableName)
	fw := NewNFT(fake)
	// 192.0.2.9 is inside 192.0.2.0/24: nft refuses both in one interval
	// set, and so does the fake; Add leaves the address out.
	a := testRules("carrier-a", "10.10.0.21", "192.0.2.0/24", "198.51.100.7/32", "192.0.2.9/32", "2001:db8::7/128")
	b := testRules("carrier-b", "10.10.0.22", "203.0.113.9/32")

	for _, r := range []*Rules{a, b} {
		if st, err := fw.Check(ctx, r); err != nil || st.Action != Missing {
			t.Fatalf("Check before Add: %+v %v", st, err)
		}
		if err := fw.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Repeating changes nothing.
	if err := fw.Add(ctx, a); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "testdata/nft-two-trunks.dump", fake.Dump())
	for _, r := range []*Rules{a, b} {
		if st, err := fw.Check(ctx, r); err != nil || st.Action != InSync {
			t.Fatalf("Check after Add: %+v %v", st, err)
		}
	}
	trunks, err := fw.Trunks(ctx)
	if err != nil || len(trunks) != 2 {
		t.Fatalf("Trunks = %v, %v", trunks, err)
	}

	// Changed peers are drift, and Add brings them back in one transaction.
	a2 := testRules("carrier-a", "10.10.0.21", "192.0.2.0/24")
	if st, _ := fw.Check(ctx, a2); st.Action != Drifted {
		t.Fatalf("Check with other peers: %+v", st)
	}
	// An element added by hand is drift too.
	tx := fake.NewTransaction()
	tx.Add(&knftables.Element{Set: setName("carrier-b", "4"), Key: []string{"10.9.9.9"}})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if st, _ := fw.Check(ctx, b); st.Action != Drifted || st.Detail == "" {
		t.Fatalf("Check after a hand edit: %+v", st)
	}

	if err := fw.Del(ctx, "carrier-a"); err != nil {
		t.Fatal(err)
	}
	if err := fw.Del(ctx, "carrier-a"); err != nil {
		t.Fatalf("second Del: %v", err)
	}
	if err := fw.Add(ctx, b); err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, "testdata/nft-one-trunk.dump", fake.Dump())
}

func TestCover(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"198.51.100.10/32 198.51.100.11/32 198.51.100.0/28", "[198.51.100.0/28]"},
		{"198.51.100.0/28 198.51.100.10/32 203.0.113.20/32", "[198.51.100.0/28 203.0.113.20/32]"},
		{"10.0.0.0/25 10.0.0.128/25", "[10.0.0.0/25 10.0.0.128/25]"},
		{"10.0.0.7/24 10.0.0.0/24 10.0.0.9/32", "[10.0.0.0/24]"},
		{"192.0.2.1/32 192.0.2.1/32", "[192.0.2.1/32]"},
		{"2001:db8::/32 2001:db8:1::5/128 192.0.2.0/24", "[2001:db8::/32 192.0.2.0/24]"},
		{"::ffff:192.0.2.1/128 192.0.2.0/24", "[::ffff:192.0.2.1/128 192.0.2.0/24]"},
	} {
		var in []netip.Prefix
		for _, s := range strings.Fields(tc.in) {
			in = append(in, netip.MustParsePrefix(s))
		}
		if got := fmt.Sprint(Cover(in)); got != tc.want {
			t.Errorf("Cover(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
