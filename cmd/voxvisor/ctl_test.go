package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/softswitch"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/sip/location"
)

// TestCtlAgainstARunningServer runs `voxvisor ctl` against a switch.
func TestCtlAgainstARunningServer(t *testing.T) {
	sw, run := ctlSwitch(t, func(cfg *config.Config) {
		cfg.Trunks = []config.Trunk{{Name: "carrier", Peers: []config.Peer{{Host: "127.0.0.1", Port: 9, Transport: "udp"}}, MaxChannels: 4, RegExpires: 600}}
	})
	sw.Store.Update("1001@voxvisor.local", func([]location.Binding) ([]location.Binding, error) {
		return []location.Binding{{AOR: "1001@voxvisor.local", Contact: "sip:1001@192.0.2.5:5062", Source: "192.0.2.5:5062",
			Transport: "udp", Expires: time.Now().Add(time.Hour)}}, nil
	})
	if out := run("registrations"); !strings.Contains(out, "1001@voxvisor.local") || !strings.Contains(out, "AOR") {
		t.Errorf("ctl registrations:\n%s", out)
	}
	if out := run("registrations", "-o", "json"); !strings.Contains(out, `"contact": "sip:1001@192.0.2.5:5062"`) {
		t.Errorf("ctl registrations -o json:\n%s", out)
	}
	if out := run("trunks"); !strings.Contains(out, "carrier") || !strings.Contains(out, "0/4") {
		t.Errorf("ctl trunks:\n%s", out)
	}
	if out := run("calls"); !strings.Contains(out, "CALL-ID") {
		t.Errorf("ctl calls:\n%s", out)
	}
	if out := run("unregister", "1001@voxvisor.local"); !strings.Contains(out, "removed 1") {
		t.Errorf("ctl unregister:\n%s", out)
	}
}

// ctlSwitch serves a switch on loopback (the embedded config, changed by
// mutate) until the test ends, and returns it with a runner of
// `voxvisor ctl` against its admin API.
func ctlSwitch(t *testing.T, mutate func(*config.Config)) (*softswitch.Switch, func(args ...string) string) {
	t.Helper()
	cfg, err := config.Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.SIP.Listen = []config.Listener{{Transport: "udp", Address: "127.0.0.1:0"}}
	if mutate != nil {
		mutate(cfg)
	}
	sw, err := softswitch.New(cfg, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		root := newRoot(&out, &out)
		root.SetArgs(append([]string{"ctl", "--admin", "http://" + sw.Admin.Addr()}, args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("ctl %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	return sw, run
}

// TestCtlCluster: `voxvisor ctl cluster` lists the live nodes of the
// switch's cluster (a real redis-server), this one marked, with what
// each holds; alone, it says it is not in a cluster.
func TestCtlCluster(t *testing.T) {
	redis := testenv.Redis(t)
	sw, run := ctlSwitch(t, func(cfg *config.Config) {
		cfg.Cluster = config.Cluster{Node: "sbc-a", Redis: config.Redis{Address: redis.Addr(), Prefix: "voxvisor:"}}
	})
	sw.Store.Update("1001@voxvisor.local", func([]location.Binding) ([]location.Binding, error) {
		return []location.Binding{{AOR: "1001@voxvisor.local", Contact: "sip:1001@192.0.2.5:5062", Source: "192.0.2.5:5062",
			Transport: "udp", Expires: time.Now().Add(time.Hour)}}, nil
	})
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if out = run("cluster"); strings.Contains(out, "sbc-a (this)") && strings.Contains(out, "udp:127.0.0.1:") && regexp.MustCompile(`\s1\s+0\s*$`).MatchString(strings.TrimSpace(out)) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(out, "NODE") || !strings.Contains(out, "sbc-a (this)") || !regexp.MustCompile(`\s1\s+0\s*$`).MatchString(strings.TrimSpace(out)) {
		t.Fatalf("ctl cluster:\n%s", out)
	}
	single, _ := ctlSwitch(t, nil)
	var buf bytes.Buffer
	root := newRoot(&buf, &buf)
	root.SetArgs([]string{"ctl", "--admin", "http://" + single.Admin.Addr(), "cluster"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "not in a cluster (no cluster.redis.address)") {
		t.Fatalf("ctl cluster on a single node: %v\n%s", err, buf.String())
	}
}
