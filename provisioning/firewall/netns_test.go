package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// twoHosts makes a server namespace (10.99.x.1, and the endpoint address
// 10.99.x.21) and a peer namespace (10.99.x.2, the allowed peer, and
// 10.99.x.3, a stranger) joined by a veth pair.
func twoHosts(t *testing.T, n int) (srv, peer string) {
	t.Helper()
	srv = testenv.Netns(t, fmt.Sprintf("vxfw-srv-%d-%d", n, os.Getpid()))
	peer = testenv.Netns(t, fmt.Sprintf("vxfw-peer-%d-%d", n, os.Getpid()))
	ip := func(ns string, args ...string) { testenv.Run(t, "ip", append([]string{"-n", ns}, args...)...) }
	ip(srv, "link", "add", "v-srv", "type", "veth", "peer", "name", "v-peer", "netns", peer)
	net := fmt.Sprintf("10.99.%d.", n)
	ip(srv, "addr", "add", net+"1/24", "dev", "v-srv")
	ip(srv, "addr", "add", net+"21/24", "dev", "v-srv")
	ip(peer, "addr", "add", net+"2/24", "dev", "v-peer")
	ip(peer, "addr", "add", net+"3/24", "dev", "v-peer")
	for _, ns := range []string{srv, peer} {
		ip(ns, "link", "set", "lo", "up")
	}
	ip(srv, "link", "set", "v-srv", "up")
	ip(peer, "link", "set", "v-peer", "up")
	return srv, peer
}

// probe sends a datagram from each source to dst:5060 and returns the
// sources the server heard.
func probe(t *testing.T, srv, peer, dst string, sources ...string) map[string]bool {
	t.Helper()
	var conn net.PacketConn
	var err error
	testenv.InNetns(t, srv, func() { conn, err = net.ListenPacket("udp", dst+":5060") })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sendErr error
	testenv.InNetns(t, peer, func() {
		for _, src := range sources {
			d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("udp", dst+":5060")
			if err != nil {
				sendErr = err
				return
			}
			for range 3 {
				c.Write([]byte("OPTIONS sip:probe SIP/2.0\r\n\r\n"))
			}
			c.Close()
		}
	})
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	heard := map[string]bool{}
	buf := make([]byte, 2048)
	for {
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, from, err := conn.ReadFrom(buf)
		if err != nil {
			return heard
		}
		heard[from.(*net.UDPAddr).IP.String()] = true
	}
}

func TestFirewallInNetns(t *testing.T) {
	testenv.NeedRoot(t)
	for i, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			testenv.Need(t, map[string]string{"nftables": "nft", "iptables": "iptables"}[backend])
			srv, peer := twoHosts(t, 10+i)
			net := fmt.Sprintf("10.99.%d.", 10+i)
			r := testRules("carrier-a", net+"21", net+"2/32")
			ctx := context.Background()
			var fw Backend
			var err error
			do := func(f func()) { testenv.InNetns(t, srv, f) }
			do(func() {
				if backend == "nftables" {
					fw, err = OpenNFT()
				} else {
					fw, err = OpenIPTables()
				}
				if err == nil {
					err = fw.Add(ctx, r)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			heard := probe(t, srv, peer, net+"21", net+"2", net+"3")
			if !heard[net+"2"] || heard[net+"3"] {
				t.Fatalf("heard %v: want the peer %s2 and not the stranger %s3", heard, net, net)
			}
			// The address that is not the endpoint's is not ours to filter.
			if h := probe(t, srv, peer, net+"1", net+"3"); !h[net+"3"] {
				t.Errorf("traffic to another address was filtered: %v", h)
			}
			// check asks the kernel, then asks again from a snapshot of the
			// table, as a plan does; both must say the same.
			check := func(r *Rules) (Status, error) {
				var st, snapped Status
				var err error
				do(func() {
					st, err = fw.Check(ctx, r)
					s := fw.(interface {
						Snapshot(context.Context) error
						Release()
					})
					if err == nil {
						if err = s.Snapshot(ctx); err == nil {
							snapped, err = fw.Check(ctx, r)
							s.Release()
						}
					}
				})
				if err == nil && st != snapped {
					err = fmt.Errorf("Check says %+v, from a snapshot %+v", st, snapped)
				}
				return st, err
			}
			if st, err := check(testRules("carrier-b", net+"22", net+"2/32")); err != nil || st.Action != Missing {
				t.Fatalf("Check of a trunk without rules: %+v %v", st, err)
			}
			st, err := check(r)
			if err != nil || st.Action != InSync {
				t.Fatalf("Check: %+v %v", st, err)
			}
			if st.Accepted < 3 || st.Dropped < 3 {
				t.Errorf("counters: accepted %d dropped %d, want at least 3 each", st.Accepted, st.Dropped)
			}
			// The same counters, and the rules' state, as metrics; a trunk
			// whose rules are missing shows as not in sync.
			// (Prometheus collects on goroutines of its own: each Check
			// is taken into the namespace.)
			got, err := gather(Collector(inNetns{fw, do}, []*Rules{r, testRules("carrier-b", net+"22", net+"2/32")}, slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			for name, ok := range map[string]bool{
				`voxvisor_firewall_packets_total{trunk="carrier-a",verdict="accepted"}`: got[`voxvisor_firewall_packets_total{trunk="carrier-a",verdict="accepted"}`] >= 3,
				`voxvisor_firewall_packets_total{trunk="carrier-a",verdict="dropped"}`:  got[`voxvisor_firewall_packets_total{trunk="carrier-a",verdict="dropped"}`] >= 3,
				`voxvisor_firewall_rules_in_sync{trunk="carrier-a"} 1`:                  got[`voxvisor_firewall_rules_in_sync{trunk="carrier-a"}`] == 1,
				`voxvisor_firewall_rules_in_sync{trunk="carrier-b"} 0`:                  got[`voxvisor_firewall_rules_in_sync{trunk="carrier-b"}`] == 0,
			} {
				if !ok {
					t.Errorf("metrics: want %s; got %v", name, got)
				}
			}
			// A changed peer list is drift, and Add fixes it in place.
			r2 := testRules("carrier-a", net+"21", net+"3/32")
			if st, err = check(r2); err == nil && st.Action == Drifted {
				do(func() { err = fw.Add(ctx, r2) })
			}
			if err != nil || st.Action != Drifted {
				t.Fatalf("Check with new peers: %+v %v", st, err)
			}
			if heard := probe(t, srv, peer, net+"21", net+"2", net+"3"); heard[net+"2"] || !heard[net+"3"] {
				t.Fatalf("after the update heard %v", heard)
			}
			var trunks []string
			do(func() { trunks, err = fw.Trunks(ctx) })
			if err == nil {
				st, err = check(r2)
			}
			if err != nil || len(trunks) != 1 || trunks[0] != "carrier-a" || st.Action != InSync {
				t.Fatalf("Trunks %v, Check %+v, %v", trunks, st, err)
			}
			var dump string
			do(func() {
				if err = fw.Del(ctx, "carrier-a"); err == nil {
					err = fw.Del(ctx, "carrier-a")
				}
				if backend == "nftables" {
					dump, _ = testenv.Try("nft", "list", "ruleset")
				} else {
					dump, _ = testenv.Try("iptables", "-S")
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			// Del of the last trunk leaves nothing of voxvisor's: no table
			// inet voxvisor with its base chains hooked and empty maps.
			if backend == "nftables" && strings.TrimSpace(dump) != "" {
				t.Errorf("after Del of the last trunk the ruleset is not empty:\n%s", dump)
			}
			if backend == "iptables" && strings.TrimSpace(dump) != "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT" {
				t.Errorf("after Del of the last trunk iptables has more than its policies:\n%s", dump)
			}
			if heard := probe(t, srv, peer, net+"21", net+"3"); !heard[net+"3"] {
				t.Error("after Del traffic is still dropped")
			}
		})
	}
}

// inNetns is a backend whose Checks run in a test's namespace.
type inNetns struct {
	Backend
	do func(func())
}

func (b inNetns) Check(ctx context.Context, r *Rules) (st Status, err error) {
	b.do(func() { st, err = b.Backend.Check(ctx, r) })
	return st, err
}

// gather collects c once: each sample as name{label="value",...} to its
// value, labels in name order.
func gather(c prometheus.Collector) (map[string]float64, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	families, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out[f.GetName()+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	return out, nil
}

// TestCleanLeftovers: Clean removes what an older voxvisor left after its
// last trunk (nftables: the table, base chains hooked, empty maps) and
// what an Add that failed half-way left (iptables: a VOX-...~N chain and
// its jump), and nothing while a trunk has rules.
func TestCleanLeftovers(t *testing.T) {
	testenv.NeedRoot(t)
	ctx := context.Background()
	for i, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			testenv.Need(t, map[string]string{"nftables": "nft", "iptables": "iptables"}[backend])
			ns := testenv.Netns(t, fmt.Sprintf("vxfw-clean-%d-%d", i, os.Getpid()))
			var removed, keep, after string
			var err error
			testenv.InNetns(t, ns, func() {
				var fw Backend
				if backend == "nftables" {
					if fw, err = OpenNFT(); err != nil {
						return
					}
					// A trunk's rules are kept, and so is the table.
					if err = fw.Add(ctx, testRules("carrier-a", "10.10.0.21", "192.0.2.1/32")); err != nil {
						return
					}
					if keep, err = fw.Clean(ctx); err != nil {
						return
					}
					testenv.Try("nft", "delete", "table", "inet", TableName)
					f := filepath.Join(t.TempDir(), "old.nft")
					os.WriteFile(f, []byte(`table inet voxvisor {
	map dispatch4 { type ipv4_addr : verdict; }
	map dispatch6 { type ipv6_addr : verdict; }
	chain input { type filter hook input priority 0; ip daddr vmap @dispatch4; ip6 daddr vmap @dispatch6; }
	chain forward { type filter hook forward priority 0; ip daddr vmap @dispatch4; ip6 daddr vmap @dispatch6; }
}
`), 0o644)
					if _, err = testenv.Try("nft", "-f", f); err != nil {
						return
					}
				} else {
					if fw, err = OpenIPTables(); err != nil {
						return
					}
					if err = fw.Add(ctx, testRules("carrier-a", "10.10.0.21", "192.0.2.1/32")); err != nil {
						return
					}
					if keep, err = fw.Clean(ctx); err != nil {
						return
					}
					if err = fw.Del(ctx, "carrier-a"); err != nil {
						return
					}
					testenv.Try("iptables", "-N", "VOX-carrier-b~N")
					testenv.Try("iptables", "-A", "VOX-carrier-b~N", "-j", "DROP")
					testenv.Try("iptables", "-I", "INPUT", "-d", "10.10.0.22/32", "-j", "VOX-carrier-b~N")
				}
				if removed, err = fw.Clean(ctx); err != nil {
					return
				}
				if backend == "nftables" {
					after, _ = testenv.Try("nft", "list", "ruleset")
				} else {
					after, _ = testenv.Try("iptables", "-S")
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if keep != "" {
				t.Errorf("Clean with a trunk's rules in place removed %q", keep)
			}
			want := map[string]string{"nftables": "table inet voxvisor", "iptables": "chain VOX-carrier-b~N"}[backend]
			if removed != want {
				t.Errorf("Clean removed %q, want %q", removed, want)
			}
			if strings.Contains(after, "voxvisor") || strings.Contains(after, "VOX-") {
				t.Errorf("after Clean:\n%s", after)
			}
		})
	}
}
