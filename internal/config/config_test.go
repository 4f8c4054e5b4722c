package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/testenv"
)

func TestDefaultConfigLoads(t *testing.T) {
	c, err := Load(configs.DefaultName, configs.Default)
	if err != nil {
		t.Fatalf("embedded default does not load: %v", err)
	}
	if c.SIP.Domain != "voxvisor.local" {
		t.Errorf("domain = %q, want voxvisor.local", c.SIP.Domain)
	}
	if len(c.Users) != 3 || c.Users[0].Username != "1001" || c.Users[2].Password != "demo1003" {
		t.Errorf("demo users wrong: %v", c.Users)
	}
	if len(c.SIP.Listen) != 2 {
		t.Fatalf("listeners = %d, want udp and tcp", len(c.SIP.Listen))
	}
	for _, l := range c.SIP.Listen {
		if !l.AddrPort().Addr().IsLoopback() || l.AddrPort().Port() != 5060 {
			t.Errorf("default listener %v is not 127.0.0.1:5060", l)
		}
	}
	if err := c.CheckExposure(); err != nil {
		t.Errorf("default config must be allowed to run: %v", err)
	}
}

func TestDemoPasswordRefusedOffLoopback(t *testing.T) {
	c, err := Load("x.yaml", []byte("sip:\n  listen:\n    - {transport: udp, address: 0.0.0.0:5060}\nusers:\n  - {username: \"1001\", password: demo1001}\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckExposure()
	if err == nil || !strings.Contains(err.Error(), "demo password") {
		t.Fatalf("CheckExposure = %v, want a demo password refusal", err)
	}
}

func TestUserStringHidesSecrets(t *testing.T) {
	u := User{Username: "1001", Password: "hunter2", HA1: "abc"}
	if s := u.String(); strings.Contains(s, "hunter2") || strings.Contains(s, "abc") {
		t.Fatalf("User.String leaks a secret: %q", s)
	}
}

// TestErrorsGolden checks the exact messages an operator sees: file, line, key.
func TestErrorsGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := LoadFile(f)
			if err == nil {
				t.Fatal("loaded a bad config without error")
			}
			testenv.Golden(t, strings.TrimSuffix(f, ".yaml")+".golden", err.Error()+"\n")
		})
	}
}

func TestGatewayExampleLoads(t *testing.T) {
	c, err := LoadFile("../../configs/gateway-example.yaml")
	if err != nil {
		t.Fatalf("the sample gateway config does not load: %v", err)
	}
	if e := c.Trunks[0].Endpoint; e == nil || e.MemoryBytes != 1<<30 || e.Disk.SizeBytes != 8<<30 || !*e.Autostart {
		t.Fatalf("carrier-a's endpoint: %+v", e)
	}
	if len(c.Trunks) != 2 || len(c.DialPlan) != 4 || c.Trunks[0].Peers[0].Port != 5060 {
		t.Fatalf("trunks %d, rules %d", len(c.Trunks), len(c.DialPlan))
	}
}
