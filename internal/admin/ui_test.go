package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// uiRequest sends one request from off loopback (as a browser across the
// network would) with the cookie and form given.
func uiRequest(h http.Handler, method, path, cookie string, form url.Values, hdr map[string]string) *httptest.ResponseRecorder {
	var r *http.Request
	if form != nil {
		r = httptest.NewRequest(method, "http://voxvisor.example:8060"+path, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		r = httptest.NewRequest(method, "http://voxvisor.example:8060"+path, nil)
	}
	r.RemoteAddr = "198.51.100.7:40000"
	if cookie != "" {
		r.Header.Set("Cookie", sessionCookie+"="+cookie)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestConsoleNeedsTheToken: off loopback, the console serves nothing but
// its sign-in form until the admin token is given there; the session it
// sets works for the pages only; every action needs the page's CSRF token
// and a same-origin request; signing out ends the session.
func TestConsoleNeedsTheToken(t *testing.T) {
	s, b := newServer(t, "0.0.0.0:0", "s3cret-token")
	h := s.Handler()
	for _, p := range []string{"/ui", "/ui/calls", "/ui/cdrs.csv", "/ui/calls/c1"} {
		if w := uiRequest(h, "GET", p, "", nil, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/login" {
			t.Fatalf("GET %s without a session: %d to %q, want a redirect to the sign-in form", p, w.Code, w.Header().Get("Location"))
		}
	}
	if w := uiRequest(h, "POST", "/ui/calls/c1/hangup", "", url.Values{"csrf": {"x"}}, nil); w.Code != http.StatusUnauthorized || len(b.hangups) != 0 {
		t.Fatalf("POST without a session: %d, hangups %v", w.Code, b.hangups)
	}
	if w := uiRequest(h, "GET", "/ui/login", "", nil, nil); w.Code != 200 || !strings.Contains(w.Body.String(), `name="token"`) {
		t.Fatalf("sign-in form: %d", w.Code)
	}
	if w := uiRequest(h, "POST", "/ui/login", "", url.Values{"token": {"guess"}}, nil); w.Code != http.StatusUnauthorized || w.Header().Get("Set-Cookie") != "" {
		t.Fatalf("a wrong token: %d, cookie %q", w.Code, w.Header().Get("Set-Cookie"))
	}
	w := uiRequest(h, "POST", "/ui/login", "", url.Values{"token": {"s3cret-token"}}, nil)
	cookie := regexp.MustCompile(sessionCookie + `=([0-9a-f]{64});`).FindStringSubmatch(w.Header().Get("Set-Cookie"))
	if w.Code != http.StatusSeeOther || cookie == nil || !strings.Contains(w.Header().Get("Set-Cookie"), "HttpOnly") ||
		!strings.Contains(w.Header().Get("Set-Cookie"), "SameSite=Strict") {
		t.Fatalf("the right token: %d, cookie %q", w.Code, w.Header().Get("Set-Cookie"))
	}
	session := cookie[1]
	page := uiRequest(h, "GET", "/ui/calls", session, nil, nil)
	if page.Code != 200 || page.Header().Get("X-Frame-Options") != "DENY" {
		t.Fatalf("a page with the session: %d", page.Code)
	}
	// The session opens the console, not the API (that takes the bearer token).
	if w := uiRequest(h, "GET", "/api/v1/calls", session, nil, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("the API with a console session: %d", w.Code)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page.Body.String())
	if csrf == nil {
		t.Fatal("no CSRF token in the page")
	}
	if w := uiRequest(h, "POST", "/ui/calls/c1/hangup", session, url.Values{"csrf": {"forged"}}, nil); w.Code != http.StatusForbidden {
		t.Fatalf("hang-up with a wrong CSRF token: %d", w.Code)
	}
	if w := uiRequest(h, "POST", "/ui/calls/c1/hangup", session, url.Values{"csrf": {csrf[1]}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); w.Code != http.StatusForbidden {
		t.Fatalf("a cross-site hang-up with the right token: %d", w.Code)
	}
	if len(b.hangups) != 0 {
		t.Fatalf("refused requests hung up %v", b.hangups)
	}
	if w := uiRequest(h, "POST", "/ui/calls/c1/hangup", session, url.Values{"csrf": {csrf[1]}}, map[string]string{"Sec-Fetch-Site": "same-origin"}); w.Code != http.StatusSeeOther || len(b.hangups) != 1 {
		t.Fatalf("the page's hang-up: %d, hangups %v", w.Code, b.hangups)
	}
	if w := uiRequest(h, "POST", "/ui/logout", session, url.Values{"csrf": {csrf[1]}}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("sign out: %d", w.Code)
	}
	if w := uiRequest(h, "GET", "/ui/calls", session, nil, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("a page after signing out: %d", w.Code)
	}
}
