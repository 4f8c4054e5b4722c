package config

import (
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/configs"
)

// TestNATDefaults: pings are on when the file says nothing (the embedded
// default and a file without a nat section alike), an explicit 0 turns
// them off, and a longer interval stretches the default timeout with it.
func TestNATDefaults(t *testing.T) {
	const user = "users:\n  - {username: \"1001\", password: secret1001}\n"
	for _, tc := range []struct {
		name, yaml        string
		interval, timeout time.Duration
		maxExpires        int
	}{
		{"no nat section", user, DefaultNATPingInterval, DefaultNATPingTimeout, 0},
		{"pings off", "nat:\n  ping_interval: 0s\n" + user, 0, DefaultNATPingTimeout, 0},
		{"never remove", "nat:\n  ping_timeout: 0s\n" + user, DefaultNATPingInterval, 0, 0},
		{"slower pings, longer timeout", "nat:\n  ping_interval: 25s\n" + user, 25 * time.Second, 100 * time.Second, 0},
		{"capped expiry", "nat:\n  max_expires: 120\n" + user, DefaultNATPingInterval, DefaultNATPingTimeout, 120},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load("nat.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if c.NAT.PingInterval != tc.interval || c.NAT.PingTimeout != tc.timeout || c.NAT.MaxExpires != tc.maxExpires {
				t.Fatalf("nat = %+v, want interval %s, timeout %s, max_expires %d", c.NAT, tc.interval, tc.timeout, tc.maxExpires)
			}
		})
	}
	c, err := Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	if c.NAT.PingInterval != DefaultNATPingInterval || c.NAT.PingTimeout != DefaultNATPingTimeout || c.NAT.MaxExpires != 0 {
		t.Fatalf("embedded default: nat = %+v", c.NAT)
	}
}
