// Package digest is server-side HTTP digest authentication for SIP
// (RFC 3261 §22, RFC 7616, RFC 8760): challenges offering MD5 and SHA-256,
// credential parsing, response verification and stateless expiring nonces.
//
// It knows nothing about users or transports; the caller looks up the
// user's HA1 and decides what a failure means for the request.
package digest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Algorithms.
const (
	MD5    = "MD5"
	SHA256 = "SHA-256"
)

// Errors returned by Verify and Nonces.Check.
var (
	ErrMalformed    = errors.New("digest: malformed credentials")
	ErrAlgorithm    = errors.New("digest: unsupported algorithm")
	ErrStaleNonce   = errors.New("digest: nonce expired")
	ErrBadNonce     = errors.New("digest: nonce not issued by this server")
	ErrWrongAnswer  = errors.New("digest: wrong response")
	ErrQOPMalformed = errors.New("digest: qop=auth without cnonce or nc")
	ErrReplay       = errors.New("digest: nonce count not above the last one used (replay)")
)

func newHash(alg string) (func() hash.Hash, error) {
	switch strings.ToUpper(alg) {
	case "", MD5:
		return md5.New, nil
	case SHA256:
		return sha256.New, nil
	}
	return nil, ErrAlgorithm
}

func h(newH func() hash.Hash, parts ...string) string {
	hh := newH()
	for i, p := range parts {
		if i > 0 {
			hh.Write([]byte{':'})
		}
		hh.Write([]byte(p))
	}
	return hex.EncodeToString(hh.Sum(nil))
}

// HA1 returns H(username:realm:password) in hex for alg.
func HA1(alg, username, realm, password string) (string, error) {
	nh, err := newHash(alg)
	if err != nil {
		return "", err
	}
	return h(nh, username, realm, password), nil
}

// Response computes the expected request-digest (RFC 7616 §3.4.1) for
// qop "auth" or, when qop is empty, the RFC 2069 form.
func Response(alg, ha1, method, uri, nonce, nc, cnonce, qop string) (string, error) {
	nh, err := newHash(alg)
	if err != nil {
		return "", err
	}
	ha2 := h(nh, method, uri)
	if qop == "" {
		return h(nh, ha1, nonce, ha2), nil
	}
	return h(nh, ha1, nonce, nc, cnonce, qop, ha2), nil
}

// Challenge is one WWW-Authenticate or Proxy-Authenticate value: the one
// this server sends (always offering qop=auth), or one parsed from a next
// hop (QOP is "auth" when offered, else empty).
type Challenge struct {
	Realm     string
	Nonce     string
	Opaque    string
	Algorithm string
	QOP       string
	Stale     bool
}

// String renders the challenge as a header value.
func (c Challenge) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, `Digest realm=%q, nonce=%q, algorithm=%s, qop="auth"`, c.Realm, c.Nonce, c.Algorithm)
	if c.Opaque != "" {
		fmt.Fprintf(&b, `, opaque=%q`, c.Opaque)
	}
	if c.Stale {
		b.WriteString(", stale=true")
	}
	return b.String()
}

// Credentials are the parsed fields of an Authorization or
// Proxy-Authorization header.
type Credentials struct {
	Username, Realm, Nonce, URI, Response string
	Algorithm, CNonce, NC, QOP, Opaque    string
}

// Parse parses a "Digest k=v, k2="v2"" header value.
func Parse(v string) (Credentials, error) {
	var c Credentials
	v = strings.TrimSpace(v)
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return c, ErrMalformed
	}
	params, err := parseParams(rest)
	if err != nil {
		return c, err
	}
	c.Username = params["username"]
	c.Realm = params["realm"]
	c.Nonce = params["nonce"]
	c.URI = params["uri"]
	c.Response = params["response"]
	c.Algorithm = params["algorithm"]
	c.CNonce = params["cnonce"]
	c.NC = params["nc"]
	c.QOP = params["qop"]
	c.Opaque = params["opaque"]
	if c.Username == "" || c.Nonce == "" || c.Response == "" || c.URI == "" {
		return c, ErrMalformed
	}
	return c, nil
}

// parseParams splits comma-separated auth-params, honouring quoted strings.
func parseParams(s string) (map[string]string, error) {
	out := make(map[string]string, 10)
	for {
		s = strings.TrimLeft(s, " \t\r\n,")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, ErrMalformed
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s); i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
					b.WriteByte(s[i])
					continue
				}
				if s[i] == '"' {
					break
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, ErrMalformed
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := out[key]; dup {
			return nil, ErrMalformed
		}
		out[key] = val
	}
}

// Verify checks creds against the user's ha1 for method. It compares in
// constant time and never reveals which part was wrong beyond the error.
func Verify(creds Credentials, ha1, method string) error {
	if creds.QOP != "" && (creds.QOP != "auth" || creds.CNonce == "" || creds.NC == "") {
		return ErrQOPMalformed
	}
	want, err := Response(creds.Algorithm, ha1, method, creds.URI, creds.Nonce, creds.NC, creds.CNonce, creds.QOP)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(creds.Response)), []byte(want)) != 1 {
		return ErrWrongAnswer
	}
	return nil
}

// Nonces issues and checks nonces: a timestamp and random bytes sealed
// with an HMAC, so a forged one is refused and an expired one is told
// apart (stale=true) without state; and, for the nonces actually used,
// the highest nonce count seen, so each (nonce, nc) is accepted once
// (RFC 7616 §3.3, the replay protection Kamailio's nonce_count gives).
type Nonces struct {
	key []byte        // set once
	ttl time.Duration // set once
	max int           // set once; nonces remembered at most
	now func() time.Time

	mu    sync.Mutex
	used  map[string]usedNonce // guarded by mu
	floor time.Time            // guarded by mu; nonces issued before it are stale (forgotten early)
}

type usedNonce struct {
	nc     uint64
	issued time.Time
}

// DefaultMaxNonces bounds the nonces remembered for replay checks: about
// 100 bytes each. Past it the oldest are forgotten and nonces issued up
// to then answered stale, so none can be replayed.
const DefaultMaxNonces = 500_000

// NewNonces returns a nonce source with a random key and the given lifetime.
func NewNonces(ttl time.Duration) *Nonces {
	key := make([]byte, 32)
	rand.Read(key)
	return &Nonces{key: key, ttl: ttl, max: DefaultMaxNonces, now: time.Now, used: map[string]usedNonce{}}
}

const nonceRaw = 8 + 8 + 16 // time, random, truncated mac

// New returns a fresh nonce.
func (n *Nonces) New() string {
	var b [nonceRaw]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n.now().UnixNano()))
	rand.Read(b[8:16])
	copy(b[16:], n.mac(b[:16]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (n *Nonces) mac(p []byte) []byte {
	m := hmac.New(sha256.New, n.key)
	m.Write(p)
	return m.Sum(nil)[:16]
}

// Check reports whether nonce was issued here (ErrBadNonce if not) and is
// still fresh (ErrStaleNonce if not).
func (n *Nonces) Check(nonce string) error {
	_, err := n.issued(nonce)
	return err
}

func (n *Nonces) issued(nonce string) (time.Time, error) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != nonceRaw {
		return time.Time{}, ErrBadNonce
	}
	if !hmac.Equal(b[16:], n.mac(b[:16])) {
		return time.Time{}, ErrBadNonce
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	age := n.now().Sub(issued)
	if age > n.ttl || age < -time.Minute {
		return issued, ErrStaleNonce
	}
	return issued, nil
}

// Use records that nonce was used with nonce count nc (hex, as sent; ""
// for a request without qop, which may then use the nonce only once). It
// returns ErrReplay when nc is not above every count used before with
// this nonce, and ErrStaleNonce for a nonce forgotten early. Call it only
// after the response was verified, so a stranger cannot burn counts.
func (n *Nonces) Use(nonce, nc string) error {
	count := uint64(0)
	if nc != "" {
		v, err := strconv.ParseUint(nc, 16, 64)
		if err != nil || v == 0 {
			return ErrQOPMalformed
		}
		count = v
	}
	issued, err := n.issued(nonce)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !issued.After(n.floor) {
		return ErrStaleNonce
	}
	if u, ok := n.used[nonce]; ok && (count <= u.nc || nc == "") {
		return ErrReplay
	}
	if len(n.used) >= n.max {
		n.forget()
	}
	n.used[nonce] = usedNonce{nc: count, issued: issued}
	return nil
}

// forget drops expired nonces, then, if still full, the older half,
// raising the floor so those can no longer be used. Holds mu.
func (n *Nonces) forget() {
	now := n.now()
	for k, u := range n.used {
		if now.Sub(u.issued) > n.ttl {
			delete(n.used, k)
		}
	}
	if len(n.used) < n.max*3/4 {
		return
	}
	times := make([]time.Time, 0, len(n.used))
	for _, u := range n.used {
		times = append(times, u.issued)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	n.floor = times[len(times)/2]
	for k, u := range n.used {
		if !u.issued.After(n.floor) {
			delete(n.used, k)
		}
	}
}

// Sweep forgets nonces past their lifetime.
func (n *Nonces) Sweep() {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, u := range n.used {
		if now.Sub(u.issued) > n.ttl {
			delete(n.used, k)
		}
	}
}

// ParseChallenge parses a "Digest realm=..., nonce=..." challenge.
func ParseChallenge(v string) (Challenge, error) {
	var c Challenge
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return c, ErrMalformed
	}
	params, err := parseParams(rest)
	if err != nil {
		return c, err
	}
	c.Realm, c.Nonce, c.Opaque, c.Algorithm = params["realm"], params["nonce"], params["opaque"], params["algorithm"]
	c.Stale = strings.EqualFold(params["stale"], "true")
	for _, q := range strings.Split(params["qop"], ",") {
		if strings.TrimSpace(q) == "auth" {
			c.QOP = "auth"
		}
	}
	if c.Nonce == "" {
		return c, ErrMalformed
	}
	return c, nil
}

// Authorize answers challenge c for method and uri as username/password,
// returning the header value (RFC 7616 §3.4; qop=auth when offered).
func Authorize(c Challenge, username, password, method, uri string) (string, error) {
	alg := c.Algorithm
	if alg == "" {
		alg = MD5
	}
	ha1, err := HA1(alg, username, c.Realm, password)
	if err != nil {
		return "", err
	}
	var cn [8]byte
	rand.Read(cn[:])
	cnonce, nc := hex.EncodeToString(cn[:]), "00000001"
	if c.QOP == "" {
		cnonce, nc = "", ""
	}
	resp, err := Response(alg, ha1, method, uri, c.Nonce, nc, cnonce, c.QOP)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `Digest username=%q, realm=%q, nonce=%q, uri=%q, response=%q, algorithm=%s`, username, c.Realm, c.Nonce, uri, resp, alg)
	if c.QOP != "" {
		fmt.Fprintf(&b, `, qop=auth, nc=%s, cnonce=%q`, nc, cnonce)
	}
	if c.Opaque != "" {
		fmt.Fprintf(&b, `, opaque=%q`, c.Opaque)
	}
	return b.String(), nil
}
