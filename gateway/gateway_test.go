package gateway

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testGateway(t *testing.T) *Gateway {
	t.Helper()
	g, err := New(Options{
		Trunks: []TrunkOptions{
			{Name: "a", Peers: []Peer{{Host: "192.0.2.1", Port: 5060, Transport: "udp"}}, MaxChannels: 2,
				CIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
				DIDs: []DID{
					{Number: "+15551230001", Destination: Destination{User: "1001"}},
					{Pattern: `^\+1555999\d{4}$`, Destination: Destination{URI: "sip:{did}@10.10.0.21:5060"}},
					{Number: "+15557770000", Destination: Destination{Trunk: "b"}},
				}},
			{Name: "b", Peers: []Peer{{Host: "198.51.100.1", Port: 5060, Transport: "tcp"}},
				CIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}},
		},
		DialPlan: []Rule{
			{Prefix: "00", Strip: 2, Prepend: "+", Trunks: []string{"b", "a"}},
			{Match: `^0([1-9]\d+)$`, Replace: "+49$1", Trunks: []string{"a"}},
			{Prefix: "+", Trunks: []string{"a", "b"}},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestDialPlan(t *testing.T) {
	g := testGateway(t)
	for _, tc := range []struct {
		in, out string
		trunks  []string
	}{
		{"0033123456789", "+33123456789", []string{"b", "a"}},
		{"030123456", "+4930123456", []string{"a"}},
		{"+4930123456", "+4930123456", []string{"a", "b"}},
	} {
		out, ts, err := g.Outbound(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		var names []string
		for _, tr := range ts {
			names = append(names, tr.Name)
		}
		if out != tc.out || len(names) != len(tc.trunks) || names[0] != tc.trunks[0] {
			t.Errorf("%s -> %s via %v; want %s via %v", tc.in, out, names, tc.out, tc.trunks)
		}
	}
	if _, _, err := g.Outbound("1234"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("unroutable number: %v", err)
	}
}

func TestInboundIdentifyAndDIDs(t *testing.T) {
	g := testGateway(t)
	if tr := g.Identify(netip.MustParseAddr("192.0.2.77")); tr == nil || tr.Name != "a" {
		t.Fatalf("identify 192.0.2.77 = %v", tr)
	}
	if tr := g.Identify(netip.MustParseAddr("198.51.100.8")); tr != nil {
		t.Fatalf("198.51.100.8 is nobody's, got %s", tr.Name)
	}
	a := g.Trunk("a")
	for _, tc := range []struct {
		number string
		want   Destination
	}{
		{"+15551230001", Destination{User: "1001"}},
		{"+15559990042", Destination{URI: "sip:+15559990042@10.10.0.21:5060"}},
		{"+15557770000", Destination{Trunk: "b"}},
	} {
		got, err := a.Route(tc.number)
		if err != nil || got != tc.want {
			t.Errorf("%s -> %+v, %v; want %+v", tc.number, got, err, tc.want)
		}
	}
	if _, err := a.Route("+15550000000"); !errors.Is(err, ErrNoDID) {
		t.Errorf("unknown DID: %v", err)
	}
}

func TestChannels(t *testing.T) {
	a := testGateway(t).Trunk("a")
	if !a.Acquire() || !a.Acquire() {
		t.Fatal("two channels of two not granted")
	}
	if a.Acquire() {
		t.Fatal("a third channel granted over max_channels 2")
	}
	a.Release()
	if !a.Acquire() {
		t.Fatal("a released channel not granted again")
	}
}

func TestCDRRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdr.jsonl")
	w, err := OpenCDR(path, 400, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := w.Write(CDR{CallID: "c", From: "1001@x", To: "+4930", Start: time.Now(), End: time.Now(), Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	for _, p := range []string{path, path + ".1", path + ".2"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s missing after rotation: %v", p, err)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("kept more rotated files than keep=2")
	}
	cdrs, err := ReadCDRs(path)
	if err != nil || len(cdrs) == 0 || cdrs[0].To != "+4930" {
		t.Fatalf("read back %v, %v", cdrs, err)
	}
}
