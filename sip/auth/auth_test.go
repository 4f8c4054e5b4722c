package auth

import (
	"strings"
	"testing"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/digest"
	"github.com/voxvisor/voxvisor/sip/guard"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

const realm = "voxvisor.local"

func newAuth(t *testing.T, algs ...string) *Authenticator {
	t.Helper()
	if len(algs) == 0 {
		algs = []string{digest.MD5, digest.SHA256}
	}
	a, err := New(realm, algs, time.Minute, []User{{Username: "1001", Password: "secret1001"}}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// invite is an INVITE to ruri from 1001 at source with header lines.
func invite(t *testing.T, ruri, source string, hdrs ...string) *siplib.Request {
	t.Helper()
	lines := append([]string{
		"INVITE " + ruri + " SIP/2.0",
		"Via: SIP/2.0/UDP " + source + ";branch=z9hG4bK1",
		"From: <sip:1001@voxvisor.local>;tag=1", "To: <" + ruri + ">",
		"Call-ID: c1", "CSeq: 2 INVITE", "Max-Forwards: 70",
	}, hdrs...)
	r, _, err := siptest.Request(strings.Join(append(lines, "Content-Length: 0"), "\n"), source, "udp")
	if err != nil {
		t.Fatal(err)
	}
	return r.Request
}

// challenge returns a fresh challenge of a for alg.
func challenge(t *testing.T, a *Authenticator, alg string) digest.Challenge {
	t.Helper()
	_, err := a.Check(invite(t, "sip:1002@voxvisor.local", "192.0.2.7:5060"), "1001", true)
	for _, h := range sip.StatusOf(err).Headers {
		ch, perr := digest.ParseChallenge(h.Value())
		if perr == nil && strings.EqualFold(ch.Algorithm, alg) {
			return ch
		}
	}
	t.Fatalf("no %s challenge in %v", alg, err)
	return digest.Challenge{}
}

func answer(t *testing.T, ch digest.Challenge, password, uri string) string {
	t.Helper()
	v, err := digest.Authorize(ch, "1001", password, "INVITE", uri)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func code(err error) int {
	if err == nil {
		return 200
	}
	return sip.StatusOf(err).Code
}

// TestReplayRefused: credentials sniffed from one request do not work a
// second time, from anywhere, nor for another Request-URI.
func TestReplayRefused(t *testing.T) {
	a := newAuth(t)
	ch := challenge(t, a, digest.MD5)
	const local = "sip:1002@voxvisor.local"
	authz := answer(t, ch, "secret1001", local)
	if _, err := a.Check(invite(t, local, "192.0.2.7:5060", "Proxy-Authorization: "+authz), "1001", true); err != nil {
		t.Fatalf("the real request was refused: %v", err)
	}
	_, err := a.Check(invite(t, local, "203.0.113.66:5060", "Proxy-Authorization: "+authz), "1001", true)
	if code(err) != 407 || !strings.Contains(sip.StatusOf(err).Headers[0].Value(), "stale=true") {
		t.Fatalf("replay from another address: %d (%v), want a new challenge with stale=true", code(err), err)
	}
	if a.Replays.Load() != 1 {
		t.Fatalf("replays counted %d, want 1", a.Replays.Load())
	}
	_, err = a.Check(invite(t, "sip:+4930123456@voxvisor.local", "203.0.113.66:5060", "Proxy-Authorization: "+authz), "1001", true)
	if code(err) != 403 {
		t.Fatalf("credentials for %s used for another Request-URI: %d, want 403", local, code(err))
	}
	// The next nonce count with the same nonce is the client's right.
	next := answerNC(t, ch, local, "00000002")
	if _, err := a.Check(invite(t, local, "192.0.2.7:5060", "Proxy-Authorization: "+next), "1001", true); err != nil {
		t.Fatalf("nonce count 2 after 1 refused: %v", err)
	}
}

// answerNC answers ch with an explicit nonce count.
func answerNC(t *testing.T, ch digest.Challenge, uri, nc string) string {
	t.Helper()
	ha1, _ := digest.HA1(digest.MD5, "1001", realm, "secret1001")
	resp, _ := digest.Response(digest.MD5, ha1, "INVITE", uri, ch.Nonce, nc, "abc", "auth")
	return `Digest username="1001", realm="` + realm + `", nonce="` + ch.Nonce + `", uri="` + uri +
		`", response="` + resp + `", algorithm=MD5, qop=auth, nc=` + nc + `, cnonce="abc"`
}

// TestDigestRules: RFC 2069 answers (no qop) and algorithms not offered
// are challenged again, never accepted.
func TestDigestRules(t *testing.T) {
	a := newAuth(t, digest.SHA256)
	ch := challenge(t, a, digest.SHA256)
	const uri = "sip:1002@voxvisor.local"

	md5 := ch
	md5.Algorithm = digest.MD5
	if _, err := a.Check(invite(t, uri, "192.0.2.7:5060", "Proxy-Authorization: "+answer(t, md5, "secret1001", uri)), "1001", true); code(err) != 407 {
		t.Fatalf("MD5 answer with only SHA-256 offered: %d, want 407", code(err))
	}
	noQOP := ch
	noQOP.QOP = ""
	if _, err := a.Check(invite(t, uri, "192.0.2.7:5060", "Proxy-Authorization: "+answer(t, noQOP, "secret1001", uri)), "1001", true); code(err) != 407 {
		t.Fatalf("RFC 2069 answer: %d, want 407", code(err))
	}
	if _, err := a.Check(invite(t, uri, "192.0.2.7:5060", "Proxy-Authorization: "+answer(t, ch, "secret1001", uri)), "1001", true); err != nil {
		t.Fatalf("a proper SHA-256 answer was refused: %v", err)
	}
}

// TestUnknownUserLooksLikeWrongPassword: the same answer, and the same
// lockout accounting, for a user that does not exist as for a wrong
// password; the guessing source is locked out, the user is not.
func TestUnknownUserLooksLikeWrongPassword(t *testing.T) {
	a := newAuth(t)
	g := guard.New(guard.Config{AuthFailures: 3, AuthWindow: time.Minute, Lockout: time.Minute})
	a.SetGuard(g)
	const uri = "sip:1002@voxvisor.local"
	try := func(user, password, src string) *sip.StatusError {
		ch := challenge(t, a, digest.MD5)
		v, _ := digest.Authorize(ch, user, password, "INVITE", uri)
		_, err := a.Check(invite(t, uri, src, "Proxy-Authorization: "+v), "", true)
		return sip.StatusOf(err)
	}
	wrong, unknown := try("1001", "guess", "198.51.100.1:5060"), try("9999", "guess", "198.51.100.2:5060")
	if wrong.Code != unknown.Code || wrong.Reason != unknown.Reason || len(wrong.Headers) != len(unknown.Headers) {
		t.Fatalf("wrong password %d %s, unknown user %d %s: must not differ", wrong.Code, wrong.Reason, unknown.Code, unknown.Reason)
	}
	for i := 0; i < 3; i++ {
		try("1001", "guess", "203.0.113.66:5060")
	}
	if se := try("1001", "secret1001", "203.0.113.66:5060"); se.Code != 403 {
		t.Fatalf("the guessing source logged in after its lockout: %d", se.Code)
	}
	if se := try("1001", "secret1001", "192.0.2.7:5060"); se.Code != 200 && se.Err != nil {
		t.Fatalf("the real user was locked out from elsewhere: %d %v", se.Code, se.Err)
	}
}
