// Package firewalltest gives tests a knftables fake that refuses what the
// nft command refuses, where knftables' own fake lets it through: an
// element of the wrong address family, a prefix in a set without the
// interval flag, and overlapping intervals in one set (nft: "conflicting
// intervals specified", "interval overlaps with an existing one"). It is
// for tests only; a test in package firewall runs the same transactions
// against real nft and this fake and wants the same answers.
package firewalltest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// Fake is knftables' fake with nft's refusals: Run applies a transaction
// only when the table it leaves is one nft accepts. Check is knftables'.
type Fake struct {
	*knftables.Fake
}

var _ knftables.Interface = (*Fake)(nil)

// NewFake is knftables.NewFake with nft's refusals.
func NewFake(family knftables.Family, table string) *Fake {
	return &Fake{Fake: knftables.NewFake(family, table)}
}

// Run runs the transaction, and takes it back when the table it leaves
// is one nft would refuse. (knftables' fake changes copies of its tables
// and swaps them in, so the old ones are whole.)
func (f *Fake) Run(ctx context.Context, tx *knftables.Transaction) error {
	f.RLock()
	tables, table := f.Tables, f.Table
	f.RUnlock()
	if err := f.Fake.Run(ctx, tx); err != nil {
		return err
	}
	f.Lock()
	defer f.Unlock()
	if err := Valid(f.Table); err != nil {
		f.Tables, f.Table = tables, table
		return err
	}
	return nil
}

// Valid reports the first thing in table that nft would refuse.
func Valid(table *knftables.FakeTable) error {
	if table == nil {
		return nil
	}
	names := make([]string, 0, len(table.Sets))
	for n := range table.Sets {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := table.Sets[n]
		interval := slices.Contains(s.Flags, knftables.IntervalFlag)
		var spans []span
		for _, e := range s.Elements {
			sp, err := parseKey(s.Type, strings.Join(e.Key, " "), interval)
			if err != nil {
				return fmt.Errorf("set %s: element %s: %w", n, strings.Join(e.Key, " "), err)
			}
			if sp != nil {
				spans = append(spans, *sp)
			}
		}
		for i := range spans {
			for j := i + 1; j < len(spans); j++ {
				if spans[i].overlaps(spans[j]) {
					return fmt.Errorf("set %s: elements %s and %s: Error: conflicting intervals specified", n, spans[i].text, spans[j].text)
				}
			}
		}
	}
	return nil
}

// span is an address element as the interval it covers.
type span struct {
	lo, hi netip.Addr
	text   string
}

func (a span) overlaps(b span) bool {
	if a.lo == b.lo && a.hi == b.hi {
		return false // the same element twice: nft takes it once
	}
	return a.lo.Compare(b.hi) <= 0 && b.lo.Compare(a.hi) <= 0
}

// parseKey reads an element of an ipv4_addr or ipv6_addr set: an
// address, or with the interval flag a prefix or a range a-b. Other set
// types are not checked (nil, nil).
func parseKey(typ, key string, interval bool) (*span, error) {
	var v6 bool
	switch typ {
	case "ipv4_addr":
	case "ipv6_addr":
		v6 = true
	default:
		return nil, nil
	}
	fam := func(a netip.Addr) error {
		if a.Is6() != v6 || a.Is4In6() {
			return fmt.Errorf("Error: wrong address family for a set of type %s", typ)
		}
		return nil
	}
	if lo, hi, ok := strings.Cut(key, "-"); ok {
		if !interval {
			return nil, fmt.Errorf("Error: a range needs a set with flags interval")
		}
		a, err1 := netip.ParseAddr(strings.TrimSpace(lo))
		b, err2 := netip.ParseAddr(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("Error: not an address range")
		}
		if err := fam(a); err != nil {
			return nil, err
		}
		if err := fam(b); err != nil {
			return nil, err
		}
		if b.Less(a) {
			return nil, fmt.Errorf("Error: range is empty")
		}
		return &span{a, b, key}, nil
	}
	if strings.Contains(key, "/") {
		if !interval {
			return nil, fmt.Errorf("Error: a prefix needs a set with flags interval")
		}
		p, err := netip.ParsePrefix(key)
		if err != nil {
			return nil, fmt.Errorf("Error: not a prefix: %v", err)
		}
		if err := fam(p.Addr()); err != nil {
			return nil, err
		}
		p = p.Masked()
		return &span{p.Addr(), last(p), key}, nil
	}
	a, err := netip.ParseAddr(key)
	if err != nil {
		return nil, fmt.Errorf("Error: not an address")
	}
	if err := fam(a); err != nil {
		return nil, err
	}
	return &span{a, a, key}, nil
}

// last is the highest address of a masked prefix.
func last(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
