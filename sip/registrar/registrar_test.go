package registrar

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/auth"
	"github.com/voxvisor/voxvisor/sip/digest"
	"github.com/voxvisor/voxvisor/sip/location"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

const realm = "voxvisor.local"

var rules = Rules{MinExpires: 60, MaxExpires: 7200, DefaultExpires: 3600, MaxContacts: 2}

type fixture struct {
	g     *Registrar
	a     *auth.Authenticator
	store *location.Store
	cseq  int
}

func newFixture(t *testing.T, nonceTTL time.Duration) *fixture {
	t.Helper()
	a, err := auth.New(realm, []string{"MD5", "SHA-256"}, nonceTTL,
		[]auth.User{{Username: "1001", Password: "secret1001"}}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	store, _ := location.New(nil)
	self := sip.NewSelf(realm, nil)
	isLocal := func(h string) bool { return self.IsLocal(h) || h == "127.0.0.1" }
	return &fixture{g: New(rules, realm, isLocal, a, store, logging.Discard()), a: a, store: store}
}

// register sends one REGISTER with the given extra header lines. With a
// password it first collects a challenge and answers it with alg.
func (f *fixture) register(t *testing.T, password, alg string, extra ...string) *siplib.Response {
	t.Helper()
	return f.registerFrom(t, "192.0.2.7:40000", "udp", "10.0.0.5:5062;rport", password, alg, extra...)
}

// registerFrom is register from source over transport, with via as the
// top Via's sent-by and parameters.
func (f *fixture) registerFrom(t *testing.T, source, transport, via, password, alg string, extra ...string) *siplib.Response {
	t.Helper()
	f.cseq++
	build := func(authz string) string {
		lines := []string{
			"REGISTER sip:voxvisor.local SIP/2.0",
			"Via: SIP/2.0/" + strings.ToUpper(transport) + " " + via + ";branch=z9hG4bK" + fmt.Sprint(time.Now().UnixNano()),
			"From: <sip:1001@voxvisor.local>;tag=abc",
			"To: <sip:1001@voxvisor.local>",
			"Call-ID: reg-1",
			fmt.Sprintf("CSeq: %d REGISTER", f.cseq),
			"Max-Forwards: 70",
		}
		lines = append(lines, extra...)
		if authz != "" {
			lines = append(lines, "Authorization: "+authz)
		}
		return strings.Join(append(lines, "Content-Length: 0"), "\n")
	}
	serve := func(raw string) *siplib.Response {
		r, rec, err := siptest.Request(raw, source, transport)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.g.ServeSIP(context.Background(), r); err != nil {
			se := sip.StatusOf(err)
			res := siplib.NewResponseFromRequest(r.Request, se.Code, se.Reason, nil)
			for _, h := range se.Headers {
				res.AppendHeader(h)
			}
			return res
		}
		return rec.Last()
	}
	res := serve(build(""))
	if password == "" || res.StatusCode != 401 {
		return res
	}
	var nonce string
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		if strings.Contains(h.Value(), "algorithm="+alg) {
			nonce = param(h.Value(), "nonce")
		}
	}
	if nonce == "" {
		t.Fatalf("no %s challenge in %v", alg, res)
	}
	f.cseq++
	ha1, _ := digest.HA1(alg, "1001", realm, password)
	resp, _ := digest.Response(alg, ha1, "REGISTER", "sip:voxvisor.local", nonce, "00000001", "c0ffee", "auth")
	authz := fmt.Sprintf(`Digest username="1001", realm=%q, nonce=%q, uri="sip:voxvisor.local", response=%q, algorithm=%s, cnonce="c0ffee", nc=00000001, qop=auth`,
		realm, nonce, resp, alg)
	return serve(build(authz))
}

func param(v, name string) string {
	i := strings.Index(v, name+`="`)
	if i < 0 {
		return ""
	}
	rest := v[i+len(name)+2:]
	return rest[:strings.IndexByte(rest, '"')]
}

func contacts(res *siplib.Response) []string {
	var out []string
	for _, h := range res.GetHeaders("Contact") {
		out = append(out, h.Value())
	}
	return out
}

func TestChallengeOffersBothAlgorithms(t *testing.T) {
	f := newFixture(t, time.Minute)
	res := f.register(t, "", "", "Contact: <sip:1001@10.0.0.5:5062>")
	if res.StatusCode != 401 {
		t.Fatalf("status = %d, want 401", res.StatusCode)
	}
	hs := res.GetHeaders("WWW-Authenticate")
	if len(hs) != 2 || !strings.Contains(hs[0].Value(), "algorithm=MD5") || !strings.Contains(hs[1].Value(), "algorithm=SHA-256") {
		t.Fatalf("challenges = %v", hs)
	}
}

func TestRegistrarRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		steps    [][]string // extra headers per REGISTER, all authenticated
		password string
		alg      string
		want     int
		wantCtc  []string // substrings of the Contact headers in the last 200, in order
		bindings int
	}{
		{name: "md5 default expiry", steps: [][]string{{"Contact: <sip:1001@10.0.0.5:5062>"}}, want: 200,
			wantCtc: []string{"<sip:1001@10.0.0.5:5062>;expires=3600"}, bindings: 1},
		{name: "sha-256", alg: "SHA-256", steps: [][]string{{"Contact: <sip:1001@10.0.0.5:5062>", "Expires: 600"}}, want: 200,
			wantCtc: []string{"expires=600"}, bindings: 1},
		{name: "too brief", steps: [][]string{{"Contact: <sip:1001@10.0.0.5:5062>", "Expires: 30"}}, want: 423},
		{name: "clamped to max", steps: [][]string{{"Contact: <sip:1001@10.0.0.5:5062>;expires=99999"}}, want: 200,
			wantCtc: []string{"expires=7200"}, bindings: 1},
		{name: "two contacts", steps: [][]string{{"Contact: <sip:1001@10.0.0.5:5062>, <sip:1001@10.0.0.6:5062>;expires=120"}}, want: 200,
			wantCtc: []string{"10.0.0.5:5062>;expires=3600", "10.0.0.6:5062>;expires=120"}, bindings: 2},
		{name: "too many contacts", steps: [][]string{
			{"Contact: <sip:1001@10.0.0.5:5062>, <sip:1001@10.0.0.6:5062>"},
			{"Contact: <sip:1001@10.0.0.7:5062>"}}, want: 503, bindings: 2},
		{name: "remove one by expires 0", steps: [][]string{
			{"Contact: <sip:1001@10.0.0.5:5062>, <sip:1001@10.0.0.6:5062>"},
			{"Contact: <sip:1001@10.0.0.5:5062>;expires=0"}}, want: 200,
			wantCtc: []string{"10.0.0.6:5062"}, bindings: 1},
		{name: "wildcard removes all", steps: [][]string{
			{"Contact: <sip:1001@10.0.0.5:5062>, <sip:1001@10.0.0.6:5062>"},
			{"Contact: *", "Expires: 0"}}, want: 200, bindings: 0},
		{name: "wildcard needs expires 0", steps: [][]string{{"Contact: *", "Expires: 60"}}, want: 400},
		{name: "query without contact", steps: [][]string{
			{"Contact: <sip:1001@10.0.0.5:5062>"}, {}}, want: 200, wantCtc: []string{"10.0.0.5:5062"}, bindings: 1},
		{name: "wrong password", password: "nope", steps: [][]string{{"Contact: <sip:1001@10.0.0.5:5062>"}}, want: 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			pw, alg := tc.password, tc.alg
			if pw == "" {
				pw = "secret1001"
			}
			if alg == "" {
				alg = "MD5"
			}
			var res *siplib.Response
			for _, extra := range tc.steps {
				res = f.register(t, pw, alg, extra...)
			}
			if res.StatusCode != tc.want {
				t.Fatalf("status = %d %s, want %d", res.StatusCode, res.Reason, tc.want)
			}
			if tc.want == 423 {
				if h := res.GetHeader("Min-Expires"); h == nil || h.Value() != "60" {
					t.Errorf("423 without Min-Expires: 60: %v", res)
				}
			}
			got := contacts(res)
			if tc.want == 200 && len(got) != len(tc.wantCtc) {
				t.Fatalf("contacts = %v, want %d", got, len(tc.wantCtc))
			}
			for i, w := range tc.wantCtc {
				if !strings.Contains(got[i], w) {
					t.Errorf("contact %d = %q, want %q in it", i, got[i], w)
				}
			}
			if n := len(f.store.Lookup("1001@voxvisor.local")); n != tc.bindings {
				t.Errorf("bindings = %d, want %d", n, tc.bindings)
			}
		})
	}
}

func TestBindingRemembersSourceForNAT(t *testing.T) {
	f := newFixture(t, time.Minute)
	if res := f.register(t, "secret1001", "MD5", "Contact: <sip:1001@10.0.0.5:5062>"); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	b := f.store.Lookup("1001@voxvisor.local")[0]
	if b.Source != "192.0.2.7:40000" || b.Transport != "udp" {
		t.Fatalf("binding source = %s/%s, want where the REGISTER came from", b.Source, b.Transport)
	}
}

func TestStaleNonce(t *testing.T) {
	// A nonce that lives 1ns has expired by the time it is answered.
	f := newFixture(t, time.Nanosecond)
	res := f.register(t, "secret1001", "MD5", "Contact: <sip:1001@10.0.0.5:5062>")
	if res.StatusCode != 401 {
		t.Fatalf("status = %d, want 401 stale", res.StatusCode)
	}
	if !strings.Contains(res.GetHeader("WWW-Authenticate").Value(), "stale=true") {
		t.Fatalf("expired nonce not flagged stale: %v", res.GetHeaders("WWW-Authenticate"))
	}
}

// TestContactPolicy: a registration cannot point the switch at itself (a
// forking loop), at a carrier (a transit bypass) or, with
// contact_networks set, anywhere outside them. The REGISTER comes from
// 192.0.2.7:40000.
func TestContactPolicy(t *testing.T) {
	self := sip.NewSelf(realm, []sip.Listener{{Transport: "udp", Bound: netip.MustParseAddrPort("198.51.100.1:5060"), Host: "198.51.100.1", Port: 5060}})
	carrier := netip.MustParseAddrPort("203.0.113.10:5060")
	for _, tc := range []struct {
		name, contact string
		policy        ContactPolicy
		want          int
	}{
		{"a phone", "sip:1001@10.0.0.5:5062", ContactPolicy{IsMe: self.IsMe}, 200},
		{"the switch itself", "sip:1001@198.51.100.1:5060;transport=tcp", ContactPolicy{IsMe: self.IsMe}, 403},
		{"the switch, default port", "sip:1001@198.51.100.1", ContactPolicy{IsMe: self.IsMe}, 403},
		{"the switch's domain", "sip:1001@voxvisor.local", ContactPolicy{IsMe: self.IsMe}, 403},
		{"a carrier", "sip:+4930123456@203.0.113.10", ContactPolicy{Peers: []netip.AddrPort{carrier}}, 403},
		{"a carrier's network", "sip:1001@203.0.113.99", ContactPolicy{Refused: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}, 403},
		{"inside contact_networks", "sip:1001@10.0.0.5:5062", ContactPolicy{Allowed: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")}}, 200},
		{"outside contact_networks", "sip:1001@172.16.0.5", ContactPolicy{Allowed: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")}}, 403},
		{"source outside contact_networks", "sip:1001@10.0.0.5:5062", ContactPolicy{Allowed: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, 403},
		{"a name with contact_networks", "sip:1001@phone.example", ContactPolicy{Allowed: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.g.SetContactPolicy(tc.policy)
			res := f.register(t, "secret1001", "MD5", "Contact: <"+tc.contact+">")
			if res.StatusCode != tc.want {
				t.Fatalf("status %d %s, want %d", res.StatusCode, res.Reason, tc.want)
			}
			if n := len(f.store.Lookup("1001@" + realm)); (tc.want == 200) != (n == 1) {
				t.Fatalf("%d bindings after %d", n, res.StatusCode)
			}
		})
	}
}
