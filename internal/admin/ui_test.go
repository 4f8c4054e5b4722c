package admin

import (
	"github.com/voxvisor/voxvisor/gateway"
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
	for _, p := range []string{"/ui", "/ui/calls", "/ui/cdrs.csv", "/ui/call?id=c1", "/ui/ladder.pcap?id=c1", "/ui/static/layout.html"} {
		if w := uiRequest(h, "GET", p, "", nil, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/login" {
			t.Fatalf("GET %s without a session: %d to %q, want a redirect to the sign-in form", p, w.Code, w.Header().Get("Location"))
		}
	}
	if w := uiRequest(h, "POST", "/ui/hangup", "", url.Values{"id": {"c1"}, "csrf": {"x"}}, nil); w.Code != http.StatusUnauthorized || len(b.hangups) != 0 {
		t.Fatalf("POST without a session: %d, hangups %v", w.Code, b.hangups)
	}
	if w := uiRequest(h, "GET", "/ui/login", "", nil, nil); w.Code != 200 || !strings.Contains(w.Body.String(), `name="token"`) {
		t.Fatalf("sign-in form: %d", w.Code)
	}
	if w := uiRequest(h, "POST", "/ui/login", "", url.Values{"token": {"guess"}}, nil); w.Code != http.StatusUnauthorized || w.Header().Get("Set-Cookie") != "" ||
		w.Header().Get("Content-Security-Policy") == "" {
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
	if w := uiRequest(h, "POST", "/ui/hangup", session, url.Values{"id": {"c1"}, "csrf": {"forged"}}, nil); w.Code != http.StatusForbidden {
		t.Fatalf("hang-up with a wrong CSRF token: %d", w.Code)
	}
	if w := uiRequest(h, "POST", "/ui/hangup", session, url.Values{"id": {"c1"}, "csrf": {csrf[1]}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); w.Code != http.StatusForbidden {
		t.Fatalf("a cross-site hang-up with the right token: %d", w.Code)
	}
	if len(b.hangups) != 0 {
		t.Fatalf("refused requests hung up %v", b.hangups)
	}
	if w := uiRequest(h, "POST", "/ui/hangup", session, url.Values{"id": {"c1"}, "csrf": {csrf[1]}}, map[string]string{"Sec-Fetch-Site": "same-origin"}); w.Code != http.StatusSeeOther || len(b.hangups) != 1 || b.hangups[0] != "c1" {
		t.Fatalf("the page's hang-up: %d, hangups %v", w.Code, b.hangups)
	}
	if w := uiRequest(h, "POST", "/ui/logout", session, url.Values{"csrf": {csrf[1]}}, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("sign out: %d", w.Code)
	}
	if w := uiRequest(h, "GET", "/ui/calls", session, nil, nil); w.Code != http.StatusSeeOther {
		t.Fatalf("a page after signing out: %d", w.Code)
	}
	// Another site's page loading a console page (an image, a fetch) gets
	// nothing; a link followed from elsewhere (a navigation) is fine.
	if w := uiRequest(h, "GET", "/ui/login", "", nil, map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}); w.Code != http.StatusForbidden {
		t.Fatalf("a cross-site subresource load: %d", w.Code)
	}
	if w := uiRequest(h, "GET", "/ui/login", "", nil, map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}); w.Code != http.StatusOK {
		t.Fatalf("a cross-site navigation: %d", w.Code)
	}
	// A big or multipart sign-in is not read.
	big := url.Values{"token": {strings.Repeat("x", 8<<10)}}
	if w := uiRequest(h, "POST", "/ui/login", "", big, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("an 8 KiB sign-in: %d", w.Code)
	}
}

// TestCallIDsStayInTheQuery: a Call-ID is the caller's to choose; one
// shaped as a path ("x/../../../api/v1/reload?") still names only its
// call in the console's links and forms.
func TestCallIDsStayInTheQuery(t *testing.T) {
	s, b := newServer(t, "127.0.0.1:0", "")
	b.calls = []gateway.CDR{{CallID: "x/../../../api/v1/reload?#"}}
	r := httptest.NewRequest("GET", "http://127.0.0.1/ui/calls", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	body := w.Body.String()
	if !strings.Contains(body, `href="/ui/call?id=x%2f..%2f..%2f..%2fapi%2fv1%2freload%3f%23"`) ||
		!strings.Contains(body, `action="/ui/hangup"><input type="hidden" name="id" value="x/../../../api/v1/reload?#">`) ||
		regexp.MustCompile(`(href|action)="[^"?]*api`).MatchString(body) {
		t.Fatalf("the calls page puts the Call-ID where it can move the link:\n%s", body)
	}
}
