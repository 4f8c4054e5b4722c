package location

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestNATFieldsSurviveRestart: what the registrar learnt about a contact
// behind NAT (the flag, the socket it registered to, its Path and ;ob) is
// written to bbolt and loaded again, so a restarted switch keeps pinging
// it and reaches it the same way.
func TestNATFieldsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loc.db")
	want := Binding{AOR: "1001@d", Contact: "sip:1001@192.168.1.20:5060", Source: "203.0.113.7:40123", Transport: "udp",
		Expires: time.Now().Add(time.Hour).Round(0).UTC(), CallID: "c", CSeq: 2, NAT: true, Local: "198.51.100.1:5060",
		Path: []string{"sip:edge.example.net;lr", "sip:core.example.net;lr"}, Outbound: true}
	be, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(be)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(want.AOR, func([]Binding) ([]Binding, error) { return []Binding{want}, nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	be, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err = New(be)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := s.Lookup(want.AOR)
	if len(got) != 1 {
		t.Fatalf("after restart: %d bindings", len(got))
	}
	got[0].Expires = got[0].Expires.UTC()
	if !reflect.DeepEqual(got[0], want) {
		t.Fatalf("after restart:\n got %+v\nwant %+v", got[0], want)
	}
}
