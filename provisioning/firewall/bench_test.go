package firewall

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// BenchmarkCheck100 checks 100 trunks against real nftables and real
// iptables in a network namespace, as a plan does: one snapshot of the
// tables, then the comparisons.
func BenchmarkCheck100(b *testing.B) {
	b.Run("nftables", func(b *testing.B) { benchCheck100(b, "nft", func() (snapshotter, error) { return OpenNFT() }) })
	b.Run("iptables", func(b *testing.B) {
		benchCheck100(b, "iptables-save", func() (snapshotter, error) { return OpenIPTables() })
	})
}

type snapshotter interface {
	Backend
	Snapshot(context.Context) error
	Release()
}

func benchCheck100(b *testing.B, tool string, open func() (snapshotter, error)) {
	testenv.NeedRoot(b)
	testenv.Need(b, tool)
	ns := testenv.Netns(b, fmt.Sprintf("vxfw-bench-%d", os.Getpid()))
	ctx := context.Background()
	var rules []*Rules
	for i := range 100 {
		rules = append(rules, testRules(fmt.Sprintf("carrier-%d", i), fmt.Sprintf("10.20.%d.%d", i/200, i%200+1), fmt.Sprintf("192.0.2.%d/32", i+1)))
	}
	var err error
	testenv.InNetns(b, ns, func() {
		var fw snapshotter
		if fw, err = open(); err != nil {
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
