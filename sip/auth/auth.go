// Package auth identifies local users by digest authentication: it
// challenges REGISTER with 401 and other requests with 407, verifies the
// answer against the configured users and rejects wrong credentials with
// 403. It decides who the caller is, not where the request goes.
package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/digest"
	"github.com/voxvisor/voxvisor/sip/guard"
)

// User is one local user and its secret: a password, or precomputed
// HA1s (hex MD5 or SHA-256 of user:realm:password).
type User struct {
	Username, Password, HA1, HA1SHA256 string
}

// String never prints a secret.
func (u User) String() string { return "user " + u.Username }

// secrets holds a user's HA1 per algorithm. It never leaves this package.
type secrets map[string]string

// Authenticator checks digest credentials. Safe for concurrent use; the
// user set can be replaced at run time (reload).
type Authenticator struct {
	realm  string         // set once
	algs   []string       // set once; challenge order
	nonces *digest.Nonces // set once
	log    *slog.Logger   // set once

	users atomic.Pointer[map[string]secrets]
	guard *guard.Guard // set once before serving; may be nil

	// Failures counts rejected credentials (wrong password, unknown user).
	Failures atomic.Uint64
	// Replays counts verified credentials refused because their nonce
	// count was used before (a replay, or a client reusing a count).
	Replays atomic.Uint64
}

// New returns an authenticator for realm over users.
func New(realm string, algs []string, nonceTTL time.Duration, users []User, log *slog.Logger) (*Authenticator, error) {
	a := &Authenticator{realm: realm, algs: algs, nonces: digest.NewNonces(nonceTTL), log: log}
	if err := a.SetUsers(users); err != nil {
		return nil, err
	}
	return a, nil
}

// SetUsers replaces the user set.
func (a *Authenticator) SetUsers(users []User) error {
	m := make(map[string]secrets, len(users))
	for _, u := range users {
		s := secrets{}
		if u.Password != "" {
			for _, alg := range []string{digest.MD5, digest.SHA256} {
				ha1, err := digest.HA1(alg, u.Username, a.realm, u.Password)
				if err != nil {
					return err
				}
				s[alg] = ha1
			}
		}
		if u.HA1 != "" {
			s[digest.MD5] = strings.ToLower(u.HA1)
		}
		if u.HA1SHA256 != "" {
			s[digest.SHA256] = strings.ToLower(u.HA1SHA256)
		}
		m[u.Username] = s
	}
	a.users.Store(&m)
	return nil
}

// SetGuard enables the failed-login lockout. Call before serving.
func (a *Authenticator) SetGuard(g *guard.Guard) { a.guard = g }

// fail records a failed login and builds the 403, the same for an
// unknown user and a wrong password, so the answer tells no one which
// users exist. The answer is held back while the user is under attack.
func (a *Authenticator) fail(r *siplib.Request, user string, err error) error {
	a.Failures.Add(1)
	if a.guard != nil {
		src := source(r)
		if a.guard.AuthFailed(user, src) {
			a.log.Warn("source locked out after failed logins", "user", user, "source", src.String())
		}
		if d := a.guard.FailureDelay(user); d > 0 {
			time.Sleep(d)
		}
	}
	return &sip.StatusError{Code: 403, Reason: "Forbidden", Err: err}
}

func source(r *siplib.Request) netip.Addr {
	ap, _ := netip.ParseAddrPort(r.Source())
	return ap.Addr().Unmap()
}

// Known reports whether username is a local user.
func (a *Authenticator) Known(username string) bool {
	_, ok := (*a.users.Load())[username]
	return ok
}

// Realm returns the realm challenges are issued for.
func (a *Authenticator) Realm() string { return a.realm }

// Errors for the log; the caller gets a *sip.StatusError.
var (
	ErrUnknownUser  = errors.New("unknown user")
	ErrIdentity     = errors.New("authenticated user may not act for this identity")
	ErrNoAlgorithm  = errors.New("no secret stored for the requested algorithm")
	ErrNoCredential = errors.New("no credentials")
	ErrAlgorithm    = errors.New("algorithm not offered")
	ErrNoQOP        = errors.New("qop=auth required (RFC 2069 digest refused)")
	ErrURI          = errors.New("digest uri is not the Request-URI")
)

// dummy is what an unknown user's answer is checked against, so it takes
// as long as a known user's.
var dummy = secrets{digest.MD5: strings.Repeat("0", 32), digest.SHA256: strings.Repeat("0", 64)}

// Check authenticates r as the user identity (the To user for REGISTER,
// the From user otherwise). With proxy true it uses Proxy-Authorization
// and 407, otherwise Authorization and 401. It returns the user, or a
// *sip.StatusError to send.
//
// Credentials count only when they answer one of our challenges with an
// algorithm we offered, qop=auth, the request's own Request-URI and a
// nonce count not used before with that nonce: a sniffed header replayed
// for another request, or the same one again, gets a fresh challenge.
func (a *Authenticator) Check(r *siplib.Request, identity string, proxy bool) (string, error) {
	hdrName, chName, code, reason := "Authorization", "WWW-Authenticate", 401, "Unauthorized"
	if proxy {
		hdrName, chName, code, reason = "Proxy-Authorization", "Proxy-Authenticate", 407, "Proxy Authentication Required"
	}
	var creds digest.Credentials
	found := false
	for _, h := range r.GetHeaders(hdrName) {
		c, err := digest.Parse(h.Value())
		if err != nil {
			return "", &sip.StatusError{Code: 400, Reason: "Bad " + hdrName, Err: err}
		}
		if c.Realm == a.realm {
			creds, found = c, true
			break
		}
	}
	if !found {
		return "", a.challenge(code, reason, chName, false, ErrNoCredential)
	}
	if a.guard.Locked(source(r)) {
		return "", &sip.StatusError{Code: 403, Reason: "Forbidden", Err: fmt.Errorf("source %s is locked out after failed logins", source(r))}
	}
	alg := strings.ToUpper(creds.Algorithm)
	if alg == "" {
		alg = digest.MD5
	}
	switch {
	case !slices.Contains(a.algs, alg):
		return "", a.challenge(code, reason, chName, false, fmt.Errorf("%w: %s", ErrAlgorithm, alg))
	case creds.QOP == "":
		return "", a.challenge(code, reason, chName, false, ErrNoQOP)
	}
	switch err := a.nonces.Check(creds.Nonce); {
	case errors.Is(err, digest.ErrStaleNonce):
		return "", a.challenge(code, reason, chName, true, err)
	case err != nil:
		return "", a.challenge(code, reason, chName, false, err)
	}
	if !sameURI(creds.URI, r.Recipient) {
		return "", a.fail(r, creds.Username, fmt.Errorf("user %s: %w (%q)", creds.Username, ErrURI, creds.URI))
	}
	sec, known := (*a.users.Load())[creds.Username]
	if !known {
		sec = dummy
	}
	ha1, ok := sec[alg]
	if !ok {
		return "", a.fail(r, creds.Username, fmt.Errorf("user %s: %w %s", creds.Username, ErrNoAlgorithm, alg))
	}
	err := digest.Verify(creds, ha1, string(r.Method))
	switch {
	case !known:
		return "", a.fail(r, creds.Username, fmt.Errorf("%w %q", ErrUnknownUser, creds.Username))
	case err != nil:
		return "", a.fail(r, creds.Username, fmt.Errorf("user %s: %w", creds.Username, err))
	}
	if err := a.nonces.Use(creds.Nonce, creds.NC); err != nil {
		a.Replays.Add(1)
		a.log.Debug("digest refused", "user", creds.Username, "source", source(r).String(), "error", err)
		return "", a.challenge(code, reason, chName, true, err)
	}
	if identity != "" && identity != creds.Username {
		a.Failures.Add(1)
		return "", &sip.StatusError{Code: 403, Reason: "Forbidden", Err: fmt.Errorf("%w: %s as %s", ErrIdentity, creds.Username, identity)}
	}
	return creds.Username, nil
}

// sameURI reports whether the digest uri names the Request-URI: equal as
// text, or as URIs (scheme, host and port, host case aside, and the same
// user or none: SIPp and some phones answer with the server's address
// alone, "sip:host:port", which still binds the answer to this host).
func sameURI(digestURI string, ruri siplib.Uri) bool {
	if digestURI == ruri.String() {
		return true
	}
	var u siplib.Uri
	if err := siplib.ParseUri(digestURI, &u); err != nil {
		return false
	}
	return strings.EqualFold(u.Scheme, ruri.Scheme) && (u.User == ruri.User || u.User == "") &&
		strings.EqualFold(u.Host, ruri.Host) && sip.DefaultPort(u) == sip.DefaultPort(ruri)
}

// Sweep forgets used nonces past their lifetime.
func (a *Authenticator) Sweep() { a.nonces.Sweep() }

func (a *Authenticator) challenge(code int, reason, name string, stale bool, cause error) error {
	se := &sip.StatusError{Code: code, Reason: reason, Err: cause}
	nonce := a.nonces.New()
	for _, alg := range a.algs {
		ch := digest.Challenge{Realm: a.realm, Nonce: nonce, Algorithm: alg, Stale: stale}
		se.Headers = append(se.Headers, siplib.NewHeader(name, ch.String()))
	}
	return se
}

// StripCredentials removes the Proxy-Authorization headers for our realm,
// so they are not forwarded to the next hop.
func (a *Authenticator) StripCredentials(r *siplib.Request) {
	hs := r.GetHeaders("Proxy-Authorization")
	if len(hs) == 0 {
		return
	}
	keep := make([]siplib.Header, 0, len(hs))
	for _, h := range hs {
		if c, err := digest.Parse(h.Value()); err == nil && c.Realm == a.realm {
			continue
		}
		keep = append(keep, h)
	}
	for r.RemoveHeader("Proxy-Authorization") {
	}
	for _, h := range keep {
		r.AppendHeader(h)
	}
}

// Collector exports the authenticator's counters.
func (a *Authenticator) Collector() prometheus.Collector {
	var m metrics.Set
	m.Counter("auth_failures_total", "Digest authentications that failed (wrong password, unknown user).", func() float64 { return float64(a.Failures.Load()) })
	m.Counter("auth_replays_total", "Verified credentials refused because their nonce count was used before (replays), answered with a new challenge.", func() float64 { return float64(a.Replays.Load()) })
	return &m
}
