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
	"strings"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/digest"
	"github.com/voxvisor/voxvisor/sip/guard"
)

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
}

// New returns an authenticator for realm over users.
func New(realm string, algs []string, nonceTTL time.Duration, users []config.User, log *slog.Logger) (*Authenticator, error) {
	a := &Authenticator{realm: realm, algs: algs, nonces: digest.NewNonces(nonceTTL), log: log}
	if err := a.SetUsers(users); err != nil {
		return nil, err
	}
	return a, nil
}

// SetUsers replaces the user set.
func (a *Authenticator) SetUsers(users []config.User) error {
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

// fail records a failed login and builds the 403.
func (a *Authenticator) fail(r *siplib.Request, user string, err error) error {
	a.Failures.Add(1)
	if a.guard != nil {
		if src, perr := netip.ParseAddrPort(r.Source()); perr == nil && a.guard.AuthFailed(user, src.Addr().Unmap()) {
			a.log.Warn("locked out after failed logins", "user", user, "source", src.Addr().Unmap().String())
		}
	}
	return &sip.StatusError{Code: 403, Reason: "Forbidden", Err: err}
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
)

// Check authenticates r as the user identity (the To user for REGISTER,
// the From user otherwise). With proxy true it uses Proxy-Authorization
// and 407, otherwise Authorization and 401. It returns the user, or a
// *sip.StatusError to send.
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
	if a.guard != nil {
		if src, err := netip.ParseAddrPort(r.Source()); err == nil && a.guard.Locked(creds.Username, src.Addr().Unmap()) {
			return "", &sip.StatusError{Code: 403, Reason: "Locked Out", Err: fmt.Errorf("user %s or its source is locked out", creds.Username)}
		}
	}
	switch err := a.nonces.Check(creds.Nonce); {
	case errors.Is(err, digest.ErrStaleNonce):
		return "", a.challenge(code, reason, chName, true, err)
	case err != nil:
		return "", a.challenge(code, reason, chName, false, err)
	}
	sec, ok := (*a.users.Load())[creds.Username]
	if !ok {
		return "", a.fail(r, creds.Username, fmt.Errorf("%w %q", ErrUnknownUser, creds.Username))
	}
	alg := strings.ToUpper(creds.Algorithm)
	if alg == "" {
		alg = digest.MD5
	}
	ha1, ok := sec[alg]
	if !ok {
		return "", a.fail(r, creds.Username, fmt.Errorf("user %s: %w %s", creds.Username, ErrNoAlgorithm, alg))
	}
	if err := digest.Verify(creds, ha1, string(r.Method)); err != nil {
		return "", a.fail(r, creds.Username, fmt.Errorf("user %s: %w", creds.Username, err))
	}
	if identity != "" && identity != creds.Username {
		a.Failures.Add(1)
		return "", &sip.StatusError{Code: 403, Reason: "Forbidden", Err: fmt.Errorf("%w: %s as %s", ErrIdentity, creds.Username, identity)}
	}
	return creds.Username, nil
}

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
