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

// TestCaptureDefaults: the SIP capture is on unless calls: 0 says off.
func TestCaptureDefaults(t *testing.T) {
	const user = "users:\n  - {username: \"1001\", password: secret1001}\n"
	for yaml, calls := range map[string]int{user: 1000, "sip:\n  capture: {calls: 0}\n" + user: 0, "sip:\n  capture: {calls: 50}\n" + user: 50} {
		c, err := Load("capture.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		if c.SIP.Capture.Calls != calls || c.SIP.Capture.Messages != 64 || c.SIP.Capture.Retention != 15*time.Minute {
			t.Fatalf("%q: capture %+v, want %d calls", yaml, c.SIP.Capture, calls)
		}
	}
}
