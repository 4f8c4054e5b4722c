package admin

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/sip/capture"
)

// The console (/ui): server-rendered pages over the same backend as the
// JSON API, under the same access rules (loopback, else the token: given
// once to a login form that sets a session cookie). Every action is a
// POST carrying the page's CSRF token, and cross-origin POSTs are refused
// before they reach it.

//go:embed ui
var uiFiles embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"since": func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
	"clock": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"mos": func(m float64) string {
		if m == 0 {
			return "–"
		}
		return strconv.FormatFloat(m, 'f', 2, 64)
	},
	"pct":   func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) + "%" },
	"ms":    func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) + " ms" },
	"grade": grade,
	"add":   func(a, b int) int { return a + b },
	"mul":   func(a, b int) int { return a * b },
}).ParseFS(uiFiles, "ui/*.html"))

// grade names a MOS band for its colour: good (≥ 4), fair (≥ 3.6),
// poor, or none.
func grade(m float64) string {
	switch {
	case m == 0:
		return "none"
	case m >= 4:
		return "good"
	case m >= 3.6:
		return "fair"
	}
	return "poor"
}

// sessions are the console's logins (token mode): random IDs in cookies.
type sessions struct {
	mu  sync.Mutex
	ids map[string]time.Time // guarded by mu; ID -> expiry
}

const (
	sessionCookie = "voxvisor_session"
	sessionTTL    = 12 * time.Hour
)

func (s *sessions) new() string {
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]time.Time{}
	}
	now := time.Now()
	for k, exp := range s.ids {
		if now.After(exp) {
			delete(s.ids, k)
		}
	}
	s.ids[id] = now.Add(sessionTTL)
	return id
}

func (s *sessions) valid(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.ids[id]
	return ok && time.Now().Before(exp)
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.ids, id)
	s.mu.Unlock()
}

// session returns r's valid session ID, or "".
func (s *Server) session(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil || !s.logins.valid(c.Value) {
		return ""
	}
	return c.Value
}

// csrfToken is the token the console's forms carry: bound to the
// session (or, on loopback without a token, to this process).
func (s *Server) csrfToken(r *http.Request) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("csrf|" + s.session(r)))
	return hex.EncodeToString(m.Sum(nil))
}

// form reads a console POST's urlencoded form, at most 4 KiB (no
// multipart: nothing the console posts needs it).
func form(w http.ResponseWriter, r *http.Request) url.Values {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.ParseForm() != nil {
		return url.Values{}
	}
	return r.PostForm
}

func (s *Server) checkCSRF(w http.ResponseWriter, r *http.Request, f url.Values) bool {
	if subtle.ConstantTimeCompare([]byte(f.Get("csrf")), []byte(s.csrfToken(r))) != 1 {
		http.Error(w, "the form's CSRF token is missing or stale: reload the page and try again", http.StatusForbidden)
		return false
	}
	return true
}

func (s *Server) uiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui/static/style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=3600")
		b, _ := uiFiles.ReadFile("ui/style.css")
		w.Write(b)
	})
	mux.HandleFunc("GET /ui/login", s.uiLogin)
	mux.HandleFunc("POST /ui/login", s.uiLogin)
	mux.HandleFunc("POST /ui/logout", s.uiLogout)
	mux.HandleFunc("GET /ui", s.uiDashboard)
	mux.HandleFunc("GET /ui/{$}", s.uiDashboard)
	mux.HandleFunc("GET /ui/registrations", s.uiRegistrations)
	mux.HandleFunc("GET /ui/calls", s.uiCalls)
	// A Call-ID is the caller's to choose (RFC 3261 allows / ? % in it):
	// it travels in the query or the form, never in the path.
	mux.HandleFunc("GET /ui/call", s.uiCall)
	mux.HandleFunc("POST /ui/hangup", s.uiHangup)
	mux.HandleFunc("GET /ui/ladder.txt", s.uiLadderFile)
	mux.HandleFunc("GET /ui/ladder.pcap", s.uiLadderFile)
	mux.HandleFunc("GET /ui/trunks", s.uiTrunks)
	mux.HandleFunc("GET /ui/cdrs", s.uiCDRs)
	mux.HandleFunc("GET /ui/cdrs.csv", s.uiCDRs)
	mux.HandleFunc("GET /ui/provisioning", s.uiProvisioning)
}

func (s *Server) uiProvisioning(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	rows, err := s.backend.Provisioning(ctx)
	data := map[string]any{"Rows": rows, "Err": ""}
	if err != nil {
		data["Err"] = err.Error()
	}
	s.render(w, r, http.StatusOK, "provisioning", "Provisioning", data)
}

// page is what every template gets.
type page struct {
	Title, Nav string
	CSRF       string
	LoggedIn   bool
	Data       any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	p := page{Title: title, Nav: name, CSRF: s.csrfToken(r), LoggedIn: s.session(r) != "", Data: data}
	if err := pages.ExecuteTemplate(w, name+".html", p); err != nil {
		s.log.Error("console page", "page", name, "error", err)
	}
}

func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	if s.token == "" {
		http.Redirect(w, r, "/ui", http.StatusSeeOther)
		return
	}
	msg, status := "", http.StatusOK
	if r.Method == http.MethodPost {
		if subtle.ConstantTimeCompare([]byte(form(w, r).Get("token")), []byte(s.token)) == 1 {
			http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.logins.new(), Path: "/ui", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL.Seconds()), Secure: r.TLS != nil})
			http.Redirect(w, r, "/ui", http.StatusSeeOther)
			return
		}
		s.log.Warn("console: wrong token at sign-in", "remote", r.RemoteAddr)
		time.Sleep(time.Second) // a guess a second per connection
		msg, status = "That is not the admin token.", http.StatusUnauthorized
	}
	s.render(w, r, status, "login", "Sign in", msg)
}

func (s *Server) uiLogout(w http.ResponseWriter, r *http.Request) {
	if !s.checkCSRF(w, r, form(w, r)) {
		return
	}
	if id := s.session(r); id != "" {
		s.logins.end(id)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/ui", MaxAge: -1})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

type dashboard struct {
	Registrations, Calls, TrunksUp, Trunks int
	Charts                                 []chart
}

func (s *Server) uiDashboard(w http.ResponseWriter, r *http.Request) {
	d := dashboard{Calls: len(s.backend.Calls())}
	for _, bs := range s.backend.Registrations() {
		d.Registrations += len(bs)
	}
	for _, t := range s.backend.Trunks() {
		d.Trunks++
		if trunkUp(t) {
			d.TrunksUp++
		}
	}
	d.Charts = s.history.charts()
	s.render(w, r, http.StatusOK, "dashboard", "Dashboard", d)
}

// trunkUp: registered when it registers, and some peer up when watched.
func trunkUp(t TrunkInfo) bool {
	if t.Registers && (t.Registration == nil || !t.Registration.Registered) {
		return false
	}
	if len(t.Peers) == 0 {
		return true
	}
	return slices.ContainsFunc(t.Peers, func(p gateway.PeerHealth) bool { return p.Up })
}

func (s *Server) uiRegistrations(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	var out []Binding
	now := time.Now()
	for aor, bs := range s.backend.Registrations() {
		for _, b := range bs {
			row := Binding{AOR: aor, Contact: b.Contact, Source: b.Source, Transport: b.Transport,
				ExpiresIn: int(b.Expires.Sub(now).Seconds()), UserAgent: b.UserAgent, NAT: b.NAT}
			if q == "" || strings.Contains(strings.ToLower(aor+" "+b.Contact+" "+b.UserAgent+" "+b.Source), strings.ToLower(q)) {
				out = append(out, row)
			}
		}
	}
	slices.SortFunc(out, func(a, b Binding) int { return strings.Compare(a.AOR+a.Contact, b.AOR+b.Contact) })
	s.render(w, r, http.StatusOK, "registrations", "Registrations", map[string]any{"Q": q, "Rows": out})
}

func (s *Server) uiCalls(w http.ResponseWriter, r *http.Request) {
	calls := s.backend.Calls()
	slices.SortFunc(calls, func(a, b gateway.CDR) int { return a.Start.Compare(b.Start) })
	s.render(w, r, http.StatusOK, "calls", "Live calls", calls)
}

func (s *Server) uiHangup(w http.ResponseWriter, r *http.Request) {
	f := form(w, r)
	if !s.checkCSRF(w, r, f) {
		return
	}
	id := f.Get("id")
	if !s.backend.Hangup(id) {
		http.Error(w, "no such call (it may have ended)", http.StatusNotFound)
		return
	}
	s.log.Info("console: hung up", "call", id)
	http.Redirect(w, r, "/ui/calls", http.StatusSeeOther)
}

// callPage is a call (live, else from the CDRs) with its ladder.
type callPage struct {
	ID      string
	Live    bool
	CDR     *gateway.CDR
	Ladder  *ladder
	Dropped int
}

func (s *Server) uiCall(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	p := callPage{ID: id}
	for _, c := range s.backend.Calls() {
		if c.CallID == id {
			p.CDR, p.Live = &c, true
		}
	}
	if p.CDR == nil {
		if all, err := s.backend.CDRs(); err == nil {
			for i := range all {
				if all[i].CallID == id {
					p.CDR = &all[i]
				}
			}
		}
	}
	if msgs, dropped, ok := s.backend.Ladder(id); ok {
		p.Ladder, p.Dropped = newLadder(msgs), dropped
	}
	if p.CDR == nil && p.Ladder == nil {
		http.Error(w, "no such call: not live, not in the CDRs, not captured", http.StatusNotFound)
		return
	}
	s.render(w, r, http.StatusOK, "call", "Call "+id, p)
}

// uiLadderFile is a call's ladder as a download, for a console session.
func (s *Server) uiLadderFile(w http.ResponseWriter, r *http.Request) {
	r.SetPathValue("id", r.URL.Query().Get("id"))
	s.ladder(w, r)
}

func (s *Server) uiTrunks(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "trunks", "Trunks", s.backend.Trunks())
}

// cdrQuery is the CDR search: a number (in from or to) and a time range.
type cdrQuery struct {
	Number, Since, Until string
	Rows                 []gateway.CDR
	Err                  string
	More                 bool
}

const cdrPageRows = 500

func (s *Server) uiCDRs(w http.ResponseWriter, r *http.Request) {
	q := cdrQuery{Number: strings.TrimSpace(r.URL.Query().Get("number")),
		Since: r.URL.Query().Get("since"), Until: r.URL.Query().Get("until")}
	since, err1 := parseWhen(q.Since)
	until, err2 := parseWhen(q.Until)
	all, err := s.backend.CDRs()
	switch {
	case err1 != nil || err2 != nil:
		q.Err = "times are YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
	case err != nil:
		q.Err = "reading the CDRs: " + err.Error()
	}
	for i := len(all) - 1; i >= 0; i-- { // newest first
		c := all[i]
		if q.Number != "" && !strings.Contains(c.From, q.Number) && !strings.Contains(c.To, q.Number) {
			continue
		}
		if (!since.IsZero() && c.Start.Before(since)) || (!until.IsZero() && c.Start.After(until)) {
			continue
		}
		q.Rows = append(q.Rows, c)
	}
	if strings.HasSuffix(r.URL.Path, ".csv") {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="cdrs.csv"`)
		cw := quotedCSV{w: w}
		cw.Write([]string{"call_id", "start", "answer", "end", "duration_s", "direction", "trunk", "from", "to", "status", "reason", "hangup_by", "end_reason", "mos_caller", "mos_callee"})
		for _, c := range q.Rows {
			answer := ""
			if c.Answer != nil {
				answer = c.Answer.UTC().Format(time.RFC3339)
			}
			var mc, me string
			if len(c.Media) > 0 {
				mc, me = strconv.FormatFloat(c.Media[0].Caller.MOS, 'f', 2, 64), strconv.FormatFloat(c.Media[0].Callee.MOS, 'f', 2, 64)
			}
			cw.Write([]string{csvSafe(c.CallID), c.Start.UTC().Format(time.RFC3339), answer, c.End.UTC().Format(time.RFC3339),
				strconv.FormatFloat(c.DurationSec, 'f', 1, 64), c.Direction, csvSafe(c.Trunk), csvSafe(c.From), csvSafe(c.To),
				strconv.Itoa(c.Status), csvSafe(c.Reason), c.HangupBy, csvSafe(c.EndReason), mc, me})
		}
		return
	}
	if len(q.Rows) > cdrPageRows {
		q.Rows, q.More = q.Rows[:cdrPageRows], true
	}
	s.render(w, r, http.StatusOK, "cdrs", "CDRs", q)
}

// csvSafe keeps a spreadsheet from reading a caller-chosen field (a
// From user, a Call-ID, a reason phrase) as a formula.
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// quotedCSV writes RFC 4180 records with every field quoted, so that no
// spreadsheet splits one at a ; (the list separator of many locales) and
// reads a formula from its second half.
type quotedCSV struct{ w io.Writer }

func (c quotedCSV) Write(fields []string) {
	var b strings.Builder
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + strings.ReplaceAll(f, `"`, `""`) + `"`)
	}
	b.WriteString("\r\n")
	io.WriteString(c.w, b.String())
}

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad time %q", s)
}

// ladder is a call's messages laid out for the page: one column per
// address, an arrow per message.
type ladder struct {
	Columns []string
	Rows    []ladderRow
	Width   int
	Height  int
}

type ladderRow struct {
	Time             string
	Label            string
	From, To         int // column indexes
	X1, X2, Y, TextX int
	Sent             bool
	Raw              string
}

const (
	ladderCol  = 220
	ladderRowH = 34
	ladderTop  = 40
)

func newLadder(msgs []capture.Message) *ladder {
	l := &ladder{}
	col := func(addr string) int {
		if i := slices.Index(l.Columns, addr); i >= 0 {
			return i
		}
		l.Columns = append(l.Columns, addr)
		return len(l.Columns) - 1
	}
	for i, m := range msgs {
		src, dst := m.Remote, "voxvisor "+m.Local
		if m.Sent {
			src, dst = dst, src
		}
		from, to := col(src), col(dst)
		label := m.First
		if strings.HasPrefix(label, "SIP/2.0 ") {
			label = strings.TrimPrefix(label, "SIP/2.0 ")
		} else if f := strings.Fields(label); len(f) > 0 {
			label = f[0]
		}
		y := ladderTop + i*ladderRowH
		x1, x2 := 110+from*ladderCol, 110+to*ladderCol
		l.Rows = append(l.Rows, ladderRow{Time: m.Time.UTC().Format("15:04:05.000"), Label: label, From: from, To: to,
			X1: x1, X2: x2, Y: y, TextX: (x1 + x2) / 2, Sent: m.Sent, Raw: m.Raw})
	}
	l.Width = 110 + len(l.Columns)*ladderCol
	l.Height = ladderTop + len(msgs)*ladderRowH + 10
	return l
}
