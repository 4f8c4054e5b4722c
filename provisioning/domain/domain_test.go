package domain

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

func testSpec() *Spec {
	return &Spec{
		Name: "vox-carrier-a", Trunk: "carrier-a", Type: "qemu", VCPUs: 2, MemoryKiB: 512 << 10,
		DiskType: "block", DiskPath: "/dev/vg0/vox-carrier-a",
		SeedPath: "/var/lib/voxvisor/images/vox-carrier-a-seed-0123456789abcdef.iso",
		MAC:      MAC("carrier-a"), Bridge: "br0", Address: netip.MustParseAddr("10.10.0.21"), Autostart: true,
	}
}

func TestXMLGolden(t *testing.T) {
	for name, s := range map[string]*Spec{
		"lvm-bridge.xml": testSpec(),
		"dir-network.xml": func() *Spec {
			s := testSpec()
			s.Type, s.DiskType, s.DiskPath, s.Bridge, s.Network = "kvm", "file", "/var/lib/voxvisor/images/vox-carrier-a.raw", "", "default"
			return s
		}(),
	} {
		got, err := s.XML()
		if err != nil {
			t.Fatal(err)
		}
		testenv.Golden(t, filepath.Join("testdata", name), got)
		back, err := fromXML(got)
		if err != nil {
			t.Fatal(err)
		}
		back.Trunk, back.Address, back.Autostart = s.Trunk, s.Address, s.Autostart
		if back.Hash() != s.Hash() {
			t.Errorf("%s: read back %+v, want %+v", name, back, *s)
		}
	}
	if MAC("carrier-a") != MAC("carrier-a") || MAC("carrier-a") == MAC("carrier-b") || !strings.HasPrefix(MAC("x"), "52:54:00:") {
		t.Error("MAC is not a stable per-trunk address in 52:54:00")
	}
}

// foreignFixture is a libvirt test driver host with one domain that is
// not voxvisor's.
const foreignFixture = `<node>
  <domain type='test'>
    <name>vox-foreign</name>
    <memory>131072</memory>
    <os><type>hvm</type></os>
  </domain>
</node>`

func TestTestDriverLifecycle(t *testing.T) {
	fixture := filepath.Join(t.TempDir(), "node.xml")
	os.WriteFile(fixture, []byte(foreignFixture), 0o644)
	c, err := Open("test://" + fixture)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Get("vox-foreign"); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("Get of a foreign domain: %v", err)
	}
	for name, op := range map[string]func() error{
		"Start":    func() error { return c.Start("vox-foreign") },
		"Undefine": func() error { return c.Undefine("vox-foreign") },
		"Define": func() error {
			s := testSpec()
			s.Name, s.Type = "vox-foreign", "test"
			return c.Define(s)
		},
	} {
		if err := op(); !errors.Is(err, ErrNotOurs) {
			t.Errorf("%s of a foreign domain: %v, want ErrNotOurs", name, err)
		}
	}

	s := testSpec()
	s.Type = "test"
	if st, err := c.Get(s.Name); st != nil || err != nil {
		t.Fatalf("Get before Define: %+v %v", st, err)
	}
	if err := c.Define(s); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(s.Name); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAutostart(s.Name, true); err != nil {
		t.Fatal(err)
	}
	st, err := c.Get(s.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || !st.Autostart || st.Trunk != "carrier-a" || st.Hash != s.Hash() {
		t.Fatalf("after Define and Start: %+v", st)
	}
	if list, _ := c.List(); len(list) != 1 || list[0].Name != s.Name {
		t.Fatalf("List = %+v", list)
	}
	if err := c.Stop(context.Background(), s.Name, time.Second); err != nil {
		t.Fatal(err)
	}
	if st, _ = c.Get(s.Name); st.Running {
		t.Fatalf("after Stop: %+v", st)
	}
	if err := c.Undefine(s.Name); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Get(s.Name); st != nil || err != nil {
		t.Fatalf("after Undefine: %+v %v", st, err)
	}
}

func TestDHCPHostTestDriver(t *testing.T) {
	c, err := Open("test:///default") // has a network named default
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := testSpec()
	s.Bridge, s.Network, s.Address = "", "default", netip.MustParseAddr("192.168.122.21")
	for i, add := range []bool{true, true, false, false} {
		if err := c.DHCPHost("default", s, add); err != nil {
			t.Fatalf("step %d (add=%v): %v", i, add, err)
		}
		if ok, err := c.HasDHCPHost("default", s); err != nil || ok != add {
			t.Fatalf("step %d: HasDHCPHost = %v, %v; want %v", i, ok, err, add)
		}
	}
	// A new address for the same MAC modifies the entry.
	if err := c.DHCPHost("default", s, true); err != nil {
		t.Fatal(err)
	}
	s.Address = netip.MustParseAddr("192.168.122.22")
	if ok, _ := c.HasDHCPHost("default", s); ok {
		t.Fatal("the old entry matched a new address")
	}
	if err := c.DHCPHost("default", s, true); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.HasDHCPHost("default", s); !ok {
		t.Fatal("the entry was not moved to the new address")
	}
	if err := c.DHCPHost("nosuchnet", s, true); err == nil || !strings.Contains(err.Error(), "libvirt network nosuchnet") {
		t.Fatalf("unknown network: %v", err)
	}
}
