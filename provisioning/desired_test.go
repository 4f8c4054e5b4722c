package provisioning

import (
	"testing"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
)

// TestPorts: every listener's port is opened on its protocol — TLS on
// TCP — once, with the relay's range on UDP.
func TestPorts(t *testing.T) {
	cfg := &config.Config{SIP: config.SIP{Listen: []config.Listener{
		{Transport: "udp", Address: "10.0.0.1:5060"},
		{Transport: "tcp", Address: "10.0.0.1:5060"},
		{Transport: "tls", Address: "10.0.0.1:5061"},
		{Transport: "tcp", Address: "10.0.0.2:5060"},
	}}, Media: config.Media{PortMin: 20000, PortMax: 29999}}
	udp, tcp := ports(cfg)
	want := func(got []firewall.PortRange, w ...firewall.PortRange) {
		t.Helper()
		if len(got) != len(w) {
			t.Fatalf("ports %v, want %v", got, w)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Fatalf("ports %v, want %v", got, w)
			}
		}
	}
	want(udp, firewall.PortRange{Lo: 5060, Hi: 5060}, firewall.PortRange{Lo: 20000, Hi: 29999})
	want(tcp, firewall.PortRange{Lo: 5060, Hi: 5060}, firewall.PortRange{Lo: 5061, Hi: 5061})
}

// A trunk's seeds are its own: trunk a's are not trunk a-seed-b's.
func TestSeedsOfOneDomain(t *testing.T) {
	got := seedsOf("vox-a", []string{
		"/s/vox-a-seed-0123456789abcdef.iso",
		"/s/vox-a-seed-b-seed-0123456789abcdef.iso",
		"/s/vox-a-seed-0123456789abcdef.iso.tmp",
		"/s/vox-a-seed-XYZ.iso",
	})
	if len(got) != 1 || got[0] != "/s/vox-a-seed-0123456789abcdef.iso" {
		t.Fatalf("vox-a's seeds: %v", got)
	}
}
