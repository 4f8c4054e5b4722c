package sip_test

import (
	"context"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

func TestSanity(t *testing.T) {
	self := sip.NewSelf("voxvisor.local", nil)
	reached := false
	h := sip.Sanity(self)(sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
		reached = true
		return nil
	}))
	base := map[string]string{
		"Via":          "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1;rport",
		"From":         "<sip:1001@voxvisor.local>;tag=1",
		"To":           "<sip:1002@voxvisor.local>",
		"Call-ID":      "c1",
		"CSeq":         "1 INVITE",
		"Max-Forwards": "70",
	}
	order := []string{"Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards"}
	for _, tc := range []struct {
		name   string
		change map[string]string // "" removes
		extra  string
		want   int // 0: passed on
	}{
		{"fine", nil, "", 0},
		{"max-forwards 0", map[string]string{"Max-Forwards": "0"}, "", 483},
		{"cseq method mismatch", map[string]string{"CSeq": "1 BYE"}, "", 400},
		{"proxy-require", nil, "Proxy-Require: foo", 420},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached = false
			lines := []string{"INVITE sip:1002@voxvisor.local SIP/2.0"}
			for _, k := range order {
				v := base[k]
				if nv, ok := tc.change[k]; ok {
					v = nv
				}
				if v != "" {
					lines = append(lines, k+": "+v)
				}
			}
			if tc.extra != "" {
				lines = append(lines, tc.extra)
			}
			lines = append(lines, "Content-Length: 0")
			r, _, err := siptest.Request(strings.Join(lines, "\n"), "192.0.2.1:40000", "udp")
			if err != nil {
				t.Fatal(err)
			}
			err = h.ServeSIP(context.Background(), r)
			if tc.want == 0 {
				if err != nil || !reached {
					t.Fatalf("not passed on: %v", err)
				}
				v := r.Via().Clone()
				sip.MarkReceived(v, r.Source)
				if rp, _ := v.Params.Get("rport"); rp != "40000" {
					t.Errorf("rport = %q, want the source port", rp)
				}
				if rc, _ := v.Params.Get("received"); rc != "192.0.2.1" {
					t.Errorf("received = %q, want the source address", rc)
				}
				return
			}
			if err == nil || sip.StatusOf(err).Code != tc.want {
				t.Fatalf("got %v, want %d", err, tc.want)
			}
		})
	}
}
