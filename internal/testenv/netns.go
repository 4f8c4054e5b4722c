package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NetnsCommand is exec.CommandContext for a program that runs inside the
// named network namespace (through `ip netns exec`, which execs the
// program: the process's pid is the program's own).
func NetnsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Sysctl sets kernel parameters (key=value) inside a namespace; the
// network ones (net.*) are the namespace's own.
func Sysctl(t testing.TB, ns string, settings ...string) {
	t.Helper()
	Run(t, "ip", append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, settings...)...)
}

// Nft loads an nftables ruleset (nft -f syntax) into a namespace. Rules
// live and die with the namespace.
func Nft(t testing.TB, ns, ruleset string) {
	t.Helper()
	Need(t, "nft")
	f := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(f, []byte(ruleset), 0o644); err != nil {
		t.Fatal(err)
	}
	Run(t, "ip", "netns", "exec", ns, "nft", "-f", f)
}

// NftCounter returns the packets a named nftables counter has counted.
func NftCounter(ns, family, table, name string) (uint64, error) {
	out, err := Try("ip", "netns", "exec", ns, "nft", "-j", "list", "counter", family, table, name)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, fmt.Errorf("nft counter %s %s %s in %s: %w: %s", family, table, name, ns, err, strings.TrimSpace(out))
	}
	for _, o := range doc.Nftables {
		if o.Counter != nil {
			return o.Counter.Packets, nil
		}
	}
	return 0, fmt.Errorf("nft counter %s %s %s in %s: not in %s", family, table, name, ns, strings.TrimSpace(out))
}

// UDPPortsBound lists the local UDP ports of the sockets open in the
// network namespace process pid lives in (from /proc/PID/net/udp and
// udp6): a way to see what a program in a namespace has bound without
// binding anything there.
func UDPPortsBound(pid int) (map[int]bool, error) {
	ports := map[int]bool{}
	for _, f := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			var port int
			if _, err := fmt.Sscanf(fields[1][i+1:], "%X", &port); err == nil {
				ports[port] = true
			}
		}
	}
	return ports, nil
}
