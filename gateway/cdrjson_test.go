package gateway

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func sampleCDRs() []CDR {
	t0 := time.Date(2026, 11, 28, 20, 30, 1, 123456789, time.UTC)
	ans := t0.Add(1500 * time.Millisecond)
	berlin := time.FixedZone("CET", 3600)
	return []CDR{
		{CallID: "a84b4c76e66710@pc33.atlanta.com", From: "1001@voxvisor.local", To: "+4930123456", Direction: "outbound",
			Trunk: "carrier-a", Start: t0, Answer: &ans, End: ans.Add(42 * time.Second), DurationSec: 42.000001, Status: 200,
			Reason: "OK", HangupBy: "system", EndReason: "session \"expired\"", Media: []Stream{
				{Index: 0, Caller: LegStats{Packets: 2100, Bytes: 361200, Lost: 3, JitterMS: 0.5625, RTTMS: 12.25, SRTP: true, LossPct: 0.142, MOS: 4.39, Missing: []string{"rtt", "relay_count"}},
					Callee: LegStats{Packets: 2099, Bytes: 361028, Lost: -1, JitterMS: 1e-7, RTTMS: 0}},
				{Index: 1},
			}},
		{CallID: "weird \"quoted\" \\ <tag> & \x01 ünïcode \u2028", From: "x@y", To: "", Direction: "local",
			Start: t0.In(berlin), End: t0.In(berlin), Status: 487, Reason: "Request Terminated"},
		{CallID: "big", Direction: "inbound", DurationSec: 1e21, Start: time.Time{}, End: t0, Status: 503,
			Media: []Stream{{Caller: LegStats{JitterMS: 123456789.5, RTTMS: 2.5e-12}}}},
	}
}

// TestCDRJSONMatchesEncodingJSON: the hand-written encoder writes what
// encoding/json writes, byte for byte.
func TestCDRJSONMatchesEncodingJSON(t *testing.T) {
	for i, c := range sampleCDRs() {
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Errorf("CDR %d:\n got %s\nwant %s", i, got, want)
		}
	}
	nan := CDR{DurationSec: math.NaN()}
	var back CDR
	if err := json.Unmarshal(nan.appendJSON(nil), &back); err != nil || back.DurationSec != 0 {
		t.Fatalf("NaN not written as 0: %v %v", err, back.DurationSec)
	}
}

func BenchmarkCDRJSON(b *testing.B) {
	c := sampleCDRs()[0]
	b.Run("appendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = c.appendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(c)
		}
	})
}
