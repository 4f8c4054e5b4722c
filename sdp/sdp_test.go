package sdp

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

var relay = netip.MustParseAddr("203.0.113.1")

// endpoints gives stream i the relay ports 20000+2i / +1, muxed when the
// stream offered rtcp-mux.
func endpoints(streams []Stream, addr netip.Addr) []Endpoint {
	eps := make([]Endpoint, len(streams))
	for i, s := range streams {
		p := 20000 + 2*i
		eps[i] = Endpoint{Addr: addr, RTPPort: p, RTCPPort: p + 1, Mux: s.Mux}
		if s.Mux {
			eps[i].RTCPPort = p
		}
	}
	return eps
}

// TestRewriteGolden rewrites every testdata/*.sdp for the relay and
// compares with testdata/*.golden (go test ./sdp -update rewrites them).
func TestRewriteGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.sdp")
	if len(files) < 10 {
		t.Fatalf("only %d golden inputs", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, _ := os.ReadFile(f)
			d, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			addr := relay
			if strings.Contains(f, "ipv6") {
				addr = netip.MustParseAddr("2001:db8::1")
			}
			var o Origin
			out, err := Rewrite(d, endpoints(Streams(d), addr), Policy{}, &o)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Golden(t, strings.TrimSuffix(f, ".sdp")+".golden", string(out))
			if _, err := Parse(out); err != nil {
				t.Fatalf("rewritten SDP does not parse: %v", err)
			}
		})
	}
}

func TestStreamsAndHold(t *testing.T) {
	for _, tc := range []struct {
		file      string
		idx       int
		port      int
		addr      string
		rtcp      int
		mux, held bool
	}{
		{"linphone.sdp", 0, 7078, "192.168.1.20", 7079, false, false},
		{"linphone.sdp", 1, 9078, "192.168.1.20", 9079, false, false},
		{"baresip.sdp", 0, 10124, "10.0.0.10", 10124, true, false},
		{"hold_sendonly.sdp", 0, 49170, "192.0.2.101", 49171, false, true},
		{"hold_legacy.sdp", 0, 3456, "0.0.0.0", 3457, false, true},
		{"ipv6.sdp", 0, 5004, "2001:db8::10", 5005, false, true},
		{"rfc4317_answer.sdp", 1, 0, "192.0.2.201", 1, false, false},
		{"out_of_order.sdp", 0, 4000, "198.51.100.9", 4001, false, false},
	} {
		raw, _ := os.ReadFile(filepath.Join("testdata", tc.file))
		d, err := Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		s := Streams(d)[tc.idx]
		if s.Port != tc.port || s.Addr.String() != tc.addr || s.RTCPPort != tc.rtcp || s.Mux != tc.mux || s.Held() != tc.held {
			t.Errorf("%s[%d] = %+v (held %v)", tc.file, tc.idx, s, s.Held())
		}
	}
}

func TestRejectedStreamStaysRejected(t *testing.T) {
	raw, _ := os.ReadFile("testdata/rfc4317_answer.sdp")
	d, _ := Parse(raw)
	out, err := Rewrite(d, endpoints(Streams(d), relay), Policy{}, &Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "m=video 0 ") {
		t.Fatalf("rejected video stream was given a port:\n%s", out)
	}
}

func TestCodecPolicy(t *testing.T) {
	raw, _ := os.ReadFile("testdata/linphone.sdp")
	d, _ := Parse(raw)
	out, err := Rewrite(d, endpoints(Streams(d), relay), Policy{Allow: []string{"PCMA", "opus", "VP8"}}, &Origin{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"m=audio 20000 RTP/AVP 96 8 101 99 100", "a=rtpmap:96 opus/48000/2", "a=rtpmap:101 telephone-event/48000", "m=video 20002 RTP/AVP 96\r\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	for _, gone := range []string{"speex", "H264", "a=fmtp:18", "profile-level-id"} {
		if strings.Contains(s, gone) {
			t.Errorf("%q should be filtered out:\n%s", gone, s)
		}
	}
	d, _ = Parse(raw)
	if _, err := Rewrite(d, endpoints(Streams(d), relay), Policy{Allow: []string{"AMR"}}, &Origin{}); !errors.Is(err, ErrNoCodec) {
		t.Fatalf("no allowed codec: err = %v, want ErrNoCodec", err)
	}
}

func TestOriginStableAndBumped(t *testing.T) {
	raw, _ := os.ReadFile("testdata/big_origin.sdp")
	var o Origin
	rewrite := func(port int) string {
		d, _ := Parse(raw)
		out, err := Rewrite(d, []Endpoint{{Addr: relay, RTPPort: port, RTCPPort: port + 1}}, Policy{}, &o)
		if err != nil {
			t.Fatal(err)
		}
		line, _, _ := strings.Cut(strings.SplitN(string(out), "\r\n", 3)[1], "\r\n")
		return line
	}
	first := rewrite(20000)
	same := rewrite(20000)
	changed := rewrite(20002)
	if first != same {
		t.Errorf("unchanged description changed o=: %q then %q", first, same)
	}
	f1, f3 := strings.Fields(first), strings.Fields(changed)
	if f1[1] != f3[1] || f1[2] == f3[2] {
		t.Errorf("o= id must stay and version bump: %q then %q", first, changed)
	}
	if f1[1] != "9223372036854775807" {
		t.Errorf("session id not within int64: %q", first)
	}
}

func FuzzParseRewrite(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.sdp")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := Parse(raw)
		if err != nil {
			return
		}
		out, err := Rewrite(d, endpoints(Streams(d), relay), Policy{Allow: []string{"PCMU", "opus"}}, &Origin{})
		if err != nil {
			return
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("rewrite wrote SDP that does not parse: %v\n%q", err, out)
		}
	})
}

// TestSRTPNeverDowngraded: an SDES offer keeps its SRTP profile and every
// a=crypto line, byte for byte, through the rewrite, also when the codec
// policy trims formats; the relay learns the stream is secure.
func TestSRTPNeverDowngraded(t *testing.T) {
	raw, err := os.ReadFile("testdata/srtp_sdes.sdp")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	st := Streams(d)
	if !st[0].Secure() || st[0].Proto != "RTP/SAVP" {
		t.Fatalf("stream 0: proto %q, secure %v", st[0].Proto, st[0].Secure())
	}
	var o Origin
	out, err := Rewrite(d, endpoints(st, netip.MustParseAddr("203.0.113.1")), Policy{Allow: []string{"PCMA"}}, &o)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\r\n") {
		if strings.HasPrefix(line, "a=crypto:") && !strings.Contains(string(out), line+"\r\n") {
			t.Errorf("lost or changed %q", line)
		}
	}
	if !strings.Contains(string(out), "m=audio ") || !strings.Contains(string(out), " RTP/SAVP 8 101\r\n") {
		t.Errorf("audio line downgraded or codecs wrong:\n%s", out)
	}
	if !strings.Contains(string(out), "m=video 0 RTP/SAVPF 96") {
		t.Errorf("rejected video stream changed:\n%s", out)
	}
}

// TestEndpointWithoutPortRejects: a stream the relay gives no ports (a
// cap on streams, an offer that rejected it) goes out with port 0, its
// codecs untouched by policy, and the description still points at the
// relay.
func TestEndpointWithoutPortRejects(t *testing.T) {
	raw, _ := os.ReadFile("testdata/linphone.sdp")
	d, _ := Parse(raw)
	eps := endpoints(Streams(d), relay)
	eps[1] = Endpoint{Addr: relay}
	out, err := Rewrite(d, eps, Policy{Allow: []string{"PCMA"}}, &Origin{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.Contains(s, "m=audio 20000 ") || !strings.Contains(s, "m=video 0 ") {
		t.Fatalf("want audio on the relay and video rejected:\n%s", s)
	}
	// All streams without ports: still no address of the caller's.
	d, _ = Parse(raw)
	out, err = Rewrite(d, []Endpoint{{Addr: relay}, {Addr: relay}}, Policy{}, &Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(out), " 0 RTP/AVP") != 2 || strings.Contains(string(out), "192.168.1.20") {
		t.Fatalf("want every stream rejected and no address but the relay's:\n%s", out)
	}
}

// TestT38Streams: T.38 offers and answers (m=image ... udptl t38, the
// transport in any case) parse, and read as UDPTL streams without RTCP;
// a declined image stream keeps port 0.
func TestT38Streams(t *testing.T) {
	for _, tc := range []struct {
		file  string
		idx   int
		media string
		port  int
		addr  string
		proto string
		udptl bool
	}{
		{"t38_freeswitch.sdp", 0, "image", 30348, "192.0.2.50", "udptl", true},
		{"t38_cisco_reinvite.sdp", 0, "audio", 0, "198.51.100.20", "RTP/AVP", false},
		{"t38_cisco_reinvite.sdp", 1, "image", 17282, "198.51.100.20", "UDPTL", true},
		{"t38_declined.sdp", 0, "audio", 8000, "203.0.113.77", "RTP/AVP", false},
		{"t38_declined.sdp", 1, "image", 0, "203.0.113.77", "udptl", true},
	} {
		raw, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		d, err := Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		s := Streams(d)[tc.idx]
		if s.Media != tc.media || s.Port != tc.port || s.Addr.String() != tc.addr || s.Proto != tc.proto || s.UDPTL() != tc.udptl {
			t.Errorf("%s[%d] = %+v, UDPTL %v", tc.file, tc.idx, s, s.UDPTL())
		}
		if s.UDPTL() && (s.RTCPPort != 0 || s.Mux || s.RTCPAddr.IsValid()) {
			t.Errorf("%s[%d]: a UDPTL stream has RTCP: %+v", tc.file, tc.idx, s)
		}
	}
	// Transports pion refuses that are not UDPTL are still refused.
	if _, err := Parse([]byte("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=image 4000 FOO t38\r\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown transport: err = %v, want ErrMalformed", err)
	}
}

// TestT38Rewrite: an image stream is pointed at the relay (c= and port)
// with no a=rtcp (also when the offer carried one) and no rtcp-mux, its
// m= line and every a=T38Fax line byte for byte, and the audio codec
// policy never refuses or trims it; a rejected image stream stays at 0.
func TestT38Rewrite(t *testing.T) {
	pcmu := Policy{Allow: []string{"PCMU"}}
	for _, tc := range []struct {
		file  string
		mline string // the image m-line written
		keep  []string
	}{
		{"t38_freeswitch.sdp", "m=image 20000 udptl t38\r\nc=IN IP4 203.0.113.1\r\n", nil},
		{"t38_cisco_reinvite.sdp", "m=image 20002 UDPTL t38\r\nc=IN IP4 203.0.113.1\r\n", []string{"m=audio 0 RTP/AVP 0\r\n"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, _ := os.ReadFile(filepath.Join("testdata", tc.file))
			d, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			eps := endpoints(Streams(d), relay)
			eps[len(eps)-1].Mux = true // even asked to, the relay writes no rtcp-mux for UDPTL
			out, err := Rewrite(d, eps, pcmu, &Origin{})
			if err != nil {
				t.Fatalf("policy PCMU refused a T.38 stream: %v", err)
			}
			s := string(out)
			for _, want := range append(tc.keep, tc.mline) {
				if !strings.Contains(s, want) {
					t.Errorf("missing %q in\n%s", want, s)
				}
			}
			for _, line := range strings.Split(string(raw), "\r\n") {
				if strings.HasPrefix(line, "a=T38") && !strings.Contains(s, line+"\r\n") {
					t.Errorf("lost or changed %q", line)
				}
			}
			if strings.Contains(s, "a=rtcp") {
				t.Errorf("a UDPTL stream got a=rtcp or rtcp-mux:\n%s", s)
			}
			for _, far := range []string{"192.0.2.50", "198.51.100.20"} {
				if strings.Contains(s, far) {
					t.Errorf("the far end's address %s left in\n%s", far, s)
				}
			}
			if _, err := Parse(out); err != nil {
				t.Fatalf("rewritten SDP does not parse: %v", err)
			}
		})
	}
	// T.38 declined: the audio answer on the relay under policy, the image
	// line still rejected.
	raw, _ := os.ReadFile("testdata/t38_declined.sdp")
	d, _ := Parse(raw)
	out, err := Rewrite(d, endpoints(Streams(d), relay), Policy{Allow: []string{"PCMA"}}, &Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); !strings.Contains(s, "m=audio 20000 RTP/AVP 8 101\r\n") || !strings.Contains(s, "a=rtcp:20001\r\n") ||
		!strings.Contains(s, "m=image 0 udptl t38\r\na=T38FaxVersion:0\r\n") {
		t.Errorf("declined T.38 answer rewritten wrongly:\n%s", s)
	}
}
