package digest

import (
	"errors"
	"testing"
	"time"
)

// RFC 7616 §3.9.1 (the test vectors RFC 8760 points to for SHA-256).
func TestRFC7616Vectors(t *testing.T) {
	const (
		user   = "Mufasa"
		realm  = "http-auth@example.org"
		pass   = "Circle of Life"
		nonce  = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
		cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
		uri    = "/dir/index.html"
	)
	for _, tc := range []struct{ alg, want string }{
		{MD5, "8ca523f5e9506fed4657c9700eebdbec"},
		{SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
	} {
		ha1, err := HA1(tc.alg, user, realm, pass)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := Response(tc.alg, ha1, "GET", uri, nonce, "00000001", cnonce, "auth")
		if got != tc.want {
			t.Errorf("%s response = %s, want %s", tc.alg, got, tc.want)
		}
		creds := Credentials{Username: user, Realm: realm, Nonce: nonce, URI: uri, Response: tc.want,
			Algorithm: tc.alg, CNonce: cnonce, NC: "00000001", QOP: "auth"}
		if err := Verify(creds, ha1, "GET"); err != nil {
			t.Errorf("%s Verify: %v", tc.alg, err)
		}
		creds.Response = tc.want[:len(tc.want)-1] + "0"
		if err := Verify(creds, ha1, "GET"); !errors.Is(err, ErrWrongAnswer) {
			t.Errorf("%s Verify with wrong response = %v", tc.alg, err)
		}
	}
}

// RFC 2617 §3.5 (MD5, qop=auth) as a second, independent vector.
func TestRFC2617Vector(t *testing.T) {
	ha1, _ := HA1(MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
	got, _ := Response(MD5, ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth")
	if got != "6629fae49393a05397450978507c4ef1" {
		t.Fatalf("response = %s", got)
	}
}

func TestParse(t *testing.T) {
	v := `Digest username="1001", realm="voxvisor.local", nonce="abc", uri="sip:voxvisor.local", ` +
		`response="00ff", algorithm=SHA-256, cnonce="x\"y", nc=00000001, qop=auth`
	c, err := Parse(v)
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "1001" || c.Algorithm != "SHA-256" || c.CNonce != `x"y` || c.NC != "00000001" || c.QOP != "auth" {
		t.Fatalf("parsed %+v", c)
	}
	for _, bad := range []string{"", "Basic abc", `Digest username="1001`, `Digest username="a", username="b", nonce="n", uri="u", response="r"`, `Digest =x`} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestNonces(t *testing.T) {
	n := NewNonces(time.Minute)
	now := time.Now()
	n.now = func() time.Time { return now }
	nonce := n.New()
	if err := n.Check(nonce); err != nil {
		t.Fatalf("fresh nonce: %v", err)
	}
	n.now = func() time.Time { return now.Add(2 * time.Minute) }
	if err := n.Check(nonce); !errors.Is(err, ErrStaleNonce) {
		t.Fatalf("old nonce: %v, want stale", err)
	}
	other := NewNonces(time.Minute)
	if err := other.Check(nonce); !errors.Is(err, ErrBadNonce) {
		t.Fatalf("foreign nonce: %v, want bad", err)
	}
	if err := n.Check("garbage"); !errors.Is(err, ErrBadNonce) {
		t.Fatalf("garbage nonce: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`Digest username="1001", realm="r", nonce="n", uri="sip:x", response="00"`)
	f.Add(`Digest a="\`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err == nil && (c.Username == "" || c.Nonce == "") {
			t.Fatalf("accepted without username/nonce: %q", s)
		}
	})
}

func TestAuthorizeRoundTrip(t *testing.T) {
	n := NewNonces(time.Minute)
	ch := Challenge{Realm: "carrier.example", Nonce: n.New(), Algorithm: SHA256}
	sc, err := ParseChallenge(ch.String())
	if err != nil || sc.QOP != "auth" || sc.Algorithm != SHA256 {
		t.Fatalf("parse challenge: %+v %v", sc, err)
	}
	v, err := Authorize(sc, "acct", "s3cret", "INVITE", "sip:+4930@carrier.example")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := Parse(v)
	if err != nil {
		t.Fatal(err)
	}
	ha1, _ := HA1(SHA256, "acct", "carrier.example", "s3cret")
	if err := Verify(creds, ha1, "INVITE"); err != nil {
		t.Fatalf("our own answer does not verify: %v", err)
	}
}
