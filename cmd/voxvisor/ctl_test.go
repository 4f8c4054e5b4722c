package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/softswitch"
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
