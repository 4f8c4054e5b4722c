package seed

import (
	"net/netip"
	"os"
	"testing"
)

func TestSeedRoundTrip(t *testing.T) {
	n := Network{
		MAC:     "52:54:00:AA:BB:CC",
		Address: netip.MustParsePrefix("10.10.0.21/24"),
		Gateway: netip.MustParseAddr("10.10.0.1"),
		DNS:     []netip.Addr{netip.MustParseAddr("10.10.0.1")},
	}
	s := New("vox-a-1234", "vox-a", n, nil)
	dir := t.TempDir()
	path, wrote, err := s.Write(dir, "vox-a")
	if err != nil || !wrote {
		t.Fatalf("Write: %v wrote=%v", err, wrote)
	}
	again, wrote, err := s.Write(dir, "vox-a")
	if err != nil || wrote || again != path {
		t.Fatalf("second Write: %v wrote=%v path=%s", err, wrote, again)
	}
	files, label, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if label != "cidata" {
		t.Errorf("label %q, want cidata", label)
	}
	for name, want := range map[string][]byte{"meta-data": s.MetaData, "network-config": s.NetworkConfig, "user-data": s.UserData} {
		if got := files[name]; string(got) != string(want) {
			t.Errorf("%s = %q, want %q (files %v)", name, got, want, keys(files))
		}
	}
	wantNC := "version: 2\nethernets:\n  uplink:\n    match:\n      macaddress: \"52:54:00:aa:bb:cc\"\n    set-name: eth0\n    addresses:\n      - 10.10.0.21/24\n    gateway4: 10.10.0.1\n    nameservers:\n      addresses:\n        - 10.10.0.1\n"
	if string(s.NetworkConfig) != wantNC {
		t.Errorf("network-config:\n%s\nwant:\n%s", s.NetworkConfig, wantNC)
	}
	// Another user-data is another file; the hash names it.
	s2 := New("vox-a-1234", "vox-a", n, []byte("#cloud-config\npackages: [sngrep]\n"))
	if s2.Hash() == s.Hash() {
		t.Error("a changed user-data kept the hash")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("seed dir holds %d files, want 1 (no temporary left)", len(ents))
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
