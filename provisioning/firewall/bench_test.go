package firewall

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// BenchmarkNFTCheck100 checks 100 trunks against real nftables in a
// network namespace, as a plan does: one snapshot of the table, then the
// comparisons.
func BenchmarkNFTCheck100(b *testing.B) {
	testenv.NeedRoot(b)
	testenv.Need(b, "nft")
	ns := testenv.Netns(b, fmt.Sprintf("vxfw-bench-%d", os.Getpid()))
	ctx := context.Background()
	var rules []*Rules
	for i := range 100 {
		rules = append(rules, testRules(fmt.Sprintf("carrier-%d", i), fmt.Sprintf("10.20.%d.%d", i/200, i%200+1), fmt.Sprintf("192.0.2.%d/32", i+1)))
	}
	var err error
	testenv.InNetns(b, ns, func() {
		var fw *NFT
		if fw, err = OpenNFT(); err != nil {
			return
		}
		for _, r := range rules {
			if err = fw.Add(ctx, r); err != nil {
				return
			}
		}
		b.ResetTimer()
		for b.Loop() {
			if err = fw.Snapshot(ctx); err != nil {
				return
			}
			for _, r := range rules {
				st, cerr := fw.Check(ctx, r)
				if cerr != nil || st.Action != InSync {
					err = fmt.Errorf("check %s: %+v %v", r.Trunk, st, cerr)
					return
				}
			}
			fw.Release()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
}
