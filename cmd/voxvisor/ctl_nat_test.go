package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/sip/location"
)

// TestCtlShowsNAT: `ctl registrations` says which contacts are behind
// NAT and which are reached through a Path, and the JSON has the flag.
func TestCtlShowsNAT(t *testing.T) {
	sw, run := ctlSwitch(t, nil)
	exp := time.Now().Add(time.Hour)
	sw.Store.Update("1001@voxvisor.local", func([]location.Binding) ([]location.Binding, error) {
		return []location.Binding{
			{AOR: "1001@voxvisor.local", Contact: "sip:1001@192.168.1.20:5060", Source: "203.0.113.7:40123", Transport: "udp", Expires: exp, NAT: true},
			{AOR: "1001@voxvisor.local", Contact: "sip:1001@192.0.2.5:5062", Source: "192.0.2.5:5062", Transport: "udp", Expires: exp},
			{AOR: "1001@voxvisor.local", Contact: "sip:1001@10.1.1.1:5060", Source: "198.51.100.20:5060", Transport: "udp", Expires: exp,
				Path: []string{"sip:198.51.100.20;lr"}},
		}, nil
	})
	out := run("registrations")
	for _, want := range []string{`(?m)^AOR\s+CONTACT\s+FROM\s+NAT\s+EXPIRES$`, `sip:1001@192\.168\.1\.20:5060\s+udp:203\.0\.113\.7:40123\s+yes\s`,
		`sip:1001@192\.0\.2\.5:5062\s+udp:192\.0\.2\.5:5062\s+no\s`, `sip:1001@10\.1\.1\.1:5060\s+udp:198\.51\.100\.20:5060\s+via sip:198\.51\.100\.20;lr\s`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("ctl registrations lacks %s:\n%s", want, out)
		}
	}
	if out := run("registrations", "-o", "json"); strings.Count(out, `"nat": true`) != 1 || strings.Count(out, `"nat": false`) != 2 {
		t.Errorf("ctl registrations -o json:\n%s", out)
	}
}
