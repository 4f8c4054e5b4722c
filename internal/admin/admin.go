// Package admin is voxvisor's operations listener: Prometheus metrics at
// /metrics and a small JSON API under /api/v1 (registrations, calls,
// trunks; unregister a contact, hang up a call) that `voxvisor ctl` uses.
// It answers only on loopback unless a token is configured; without a
// token it also refuses requests addressed to any name but localhost or a
// loopback address (DNS rebinding), and it refuses a browser's
// cross-origin POST or DELETE (CSRF) in any case.
package admin

import (
	"crypto/rand"
	"github.com/voxvisor/voxvisor/internal/cluster"
	"github.com/voxvisor/voxvisor/sip/capture"

	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/sip/location"
)

// Backend is what the API reads and acts on; softswitch provides it.
type Backend interface {
	Registrations() map[string][]location.Binding
	Unregister(aor, contact string) (int, error)
	Calls() []gateway.CDR
	Hangup(callID string) bool
	Trunks() []TrunkInfo
	Reload() error
	// Ladder is a recent call's SIP messages (sip.capture), how many more
	// were dropped, and whether the call is kept.
	Ladder(callID string) ([]capture.Message, int, bool)
	// CDRs are the written CDRs (the current file), oldest first.
	CDRs() ([]gateway.CDR, error)
	// Provisioning is each provisioned resource as it is on this host
	// (voxvisor provision status); an error when it cannot be read.
	Provisioning(ctx context.Context) ([]ProvisionRow, error)
	// Cluster lists the cluster's live nodes (an error when alone).
	Cluster(ctx context.Context) ([]cluster.Node, error)
}

// ProvisionRow is one trunk resource's state and drift.
type ProvisionRow struct {
	Host            string // with provision.hosts, the hypervisor
	Trunk, Resource string
	State           string // as it is
	Drift           string // what apply would do, "" when nothing
	Error           string // why apply would leave it as it is
}

// TrunkInfo is one trunk's state.
type TrunkInfo struct {
	Name         string            `json:"name"`
	Channels     int               `json:"channels"`
	MaxChannels  int               `json:"max_channels"`
	Registers    bool              `json:"registers"`
	Registration *gateway.RegState `json:"registration,omitempty"`
	// Firewall is the trunk's endpoint firewall, for a trunk provisioned
	// with one (voxvisor provision) that this process can read.
	Firewall *FirewallInfo `json:"firewall,omitempty"`
	// Peers are the trunk's peers as its health check (OPTIONS pings)
	// finds them; absent without health.interval.
	Peers []gateway.PeerHealth `json:"peers,omitempty"`
}

// FirewallInfo is what a trunk's firewall rules let in and kept out.
type FirewallInfo struct {
	Accepted uint64 `json:"accepted_packets"` // from the trunk's peers
	Dropped  uint64 `json:"dropped_packets"`  // from anyone else
	InSync   bool   `json:"in_sync"`          // the rules are as configured
}

// Binding is one registration as the API shows it.
type Binding struct {
	AOR       string `json:"aor"`
	Contact   string `json:"contact"`
	Source    string `json:"source"`
	Transport string `json:"transport"`
	ExpiresIn int    `json:"expires_in"`
	UserAgent string `json:"user_agent,omitempty"`
	// NAT: the registrar judged the contact to be behind NAT (over UDP the
	// switch pings it); Path: it is reached through these proxies.
	NAT  bool     `json:"nat"`
	Path []string `json:"path,omitempty"`
}

// The admin listener's timeouts bound a connection's life, so that
// neither a slow client nor an idle keep-alive connection holds one for
// ever.
const (
	ReadHeaderTimeout = 10 * time.Second // the request line and headers
	ReadTimeout       = 30 * time.Second // the whole request
	WriteTimeout      = 30 * time.Second // the response
	IdleTimeout       = 60 * time.Second // a keep-alive connection between requests
)

type timeouts struct{ readHeader, read, write, idle time.Duration }

// Server serves metrics and the API.
type Server struct {
	addr     string
	token    string
	backend  Backend
	reg      *prometheus.Registry
	log      *slog.Logger
	timeouts timeouts // the constants above; shorter in tests
	csrf     *http.CrossOriginProtection
	ln       net.Listener // set by Listen

	logins  sessions // the console's sign-ins (token mode)
	secret  []byte   // keys the console's CSRF tokens
	history history  // the dashboard's samples
}

// New returns an admin server on addr. A non-loopback addr needs a token.
func New(addr, token string, b Backend, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && token == "" {
		return nil, fmt.Errorf("admin listen %s is not loopback: set admin.token, or listen on 127.0.0.1", addr)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	return &Server{addr: addr, token: token, backend: b, reg: reg, log: log,
		timeouts: timeouts{ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout}, csrf: http.NewCrossOriginProtection(),
		secret: secret, history: history{reg: reg}}, nil
}

// Listen binds the listener; Addr is valid after it.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", s.addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	t := s.timeouts
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: t.readHeader, ReadTimeout: t.read,
		WriteTimeout: t.write, IdleTimeout: t.idle}
	go s.history.run(ctx, historyEvery)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Handler is the HTTP handler, for tests.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/v1/registrations", s.registrations)
	mux.HandleFunc("DELETE /api/v1/registrations", s.unregister)
	mux.HandleFunc("GET /api/v1/calls", s.calls)
	mux.HandleFunc("DELETE /api/v1/calls/{id}", s.hangup)
	mux.HandleFunc("GET /api/v1/calls/{id}/ladder", s.ladder)
	mux.HandleFunc("GET /api/v1/calls/{id}/ladder.txt", s.ladder)
	mux.HandleFunc("GET /api/v1/calls/{id}/ladder.pcap", s.ladder)
	mux.HandleFunc("GET /api/v1/trunks", s.trunks)
	mux.HandleFunc("POST /api/v1/reload", s.reload)
	mux.HandleFunc("GET /api/v1/cluster", s.cluster)
	s.uiRoutes(mux)
	return s.auth(mux)
}

// auth admits loopback callers, and anyone with the bearer token when a
// token is configured. Without a token, loopback is not enough: a page in
// the operator's browser can reach loopback too, through a name of the
// attacker's that resolves to 127.0.0.1 (DNS rebinding), so the request
// must be addressed to localhost or a loopback address. And no
// state-changing request from another origin (a page's form or fetch:
// CSRF) is obeyed, token or not.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As the mux routes: on the path as sent, not as decoded.
		path := r.URL.EscapedPath()
		ui := path == "/ui" || strings.HasPrefix(path, "/ui/")
		if ui && r.Header.Get("Sec-Fetch-Site") == "cross-site" && r.Header.Get("Sec-Fetch-Mode") != "navigate" {
			// Another site's page loading the console (an image, a fetch):
			// nothing of it, not even a costly read.
			http.Error(w, "the console is not served to other sites' pages", http.StatusForbidden)
			return
		}
		if s.token != "" {
			got := r.Header.Get("Authorization")
			switch {
			case subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+s.token)) == 1:
			case ui && (s.session(r) != "" || path == "/ui/login" || path == "/ui/static/style.css"):
			case ui && r.Method == http.MethodGet:
				http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
				return
			default:
				http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
				return
			}
		} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !net.ParseIP(host).IsLoopback() {
			http.Error(w, "the admin API answers only on loopback without a token", http.StatusForbidden)
			return
		} else if !loopbackHost(r.Host) {
			http.Error(w, fmt.Sprintf("the admin API without a token answers only requests addressed to localhost or a loopback address, not %q: "+
				"use http://127.0.0.1:PORT, or set admin.token to reach it by another name", r.Host), http.StatusMisdirectedRequest)
			return
		}
		if err := s.csrf.Check(r); err != nil {
			http.Error(w, fmt.Sprintf("refused a cross-origin %s from a browser (Origin %q, Sec-Fetch-Site %q): the admin API takes changes from voxvisor ctl, curl and the like only",
				r.Method, r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site")), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a Host header names this host by loopback:
// localhost or a loopback address, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback() && ip.Zone() == ""
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) registrations(w http.ResponseWriter, _ *http.Request) {
	out := []Binding{}
	now := time.Now()
	for aor, bs := range s.backend.Registrations() {
		for _, b := range bs {
			out = append(out, Binding{AOR: aor, Contact: b.Contact, Source: b.Source, Transport: b.Transport,
				ExpiresIn: int(b.Expires.Sub(now).Seconds()), UserAgent: b.UserAgent, NAT: b.NAT, Path: b.Path})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AOR+out[i].Contact < out[j].AOR+out[j].Contact })
	writeJSON(w, out)
}

func (s *Server) unregister(w http.ResponseWriter, r *http.Request) {
	aor := r.URL.Query().Get("aor")
	if aor == "" {
		http.Error(w, "give ?aor=user@domain (and optionally &contact=URI)", http.StatusBadRequest)
		return
	}
	n, err := s.backend.Unregister(aor, r.URL.Query().Get("contact"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if n == 0 {
		http.Error(w, "no such binding", http.StatusNotFound)
		return
	}
	s.log.Info("admin: unregistered", "aor", aor, "bindings", n)
	writeJSON(w, map[string]int{"removed": n})
}

func (s *Server) calls(w http.ResponseWriter, _ *http.Request) {
	out := s.backend.Calls()
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	writeJSON(w, out)
}

func (s *Server) hangup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.backend.Hangup(id) {
		http.Error(w, "no such call", http.StatusNotFound)
		return
	}
	s.log.Info("admin: hung up", "call", id)
	writeJSON(w, map[string]string{"hungup": id})
}

// ladder serves a call's captured SIP messages: JSON, text (.txt, as
// sngrep prints them) or pcap (.pcap, for Wireshark and sngrep -I).
func (s *Server) ladder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	msgs, dropped, ok := s.backend.Ladder(id)
	if !ok {
		http.Error(w, "no capture of that call: unknown, older than sip.capture.retention, pushed out by sip.capture.calls newer calls, or sip.capture.calls is 0", http.StatusNotFound)
		return
	}
	name := strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e || strings.ContainsRune(`"\/;`, r) {
			return '_'
		}
		return r
	}, id)
	switch {
	case strings.HasSuffix(r.URL.Path, ".txt"):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.txt"`)
		w.Write(capture.Text(msgs))
	case strings.HasSuffix(r.URL.Path, ".pcap"):
		w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.pcap"`)
		w.Write(capture.PCAP(msgs))
	default:
		writeJSON(w, map[string]any{"call_id": id, "messages": msgs, "dropped": dropped})
	}
}

func (s *Server) cluster(w http.ResponseWriter, r *http.Request) {
	nodes, err := s.backend.Cluster(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, nodes)
}

func (s *Server) trunks(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, s.backend.Trunks())
}

func (s *Server) reload(w http.ResponseWriter, _ *http.Request) {
	if err := s.backend.Reload(); err != nil {
		http.Error(w, "reload rejected, running configuration kept: "+err.Error(), http.StatusUnprocessableEntity)
		return
	}
	writeJSON(w, map[string]string{"reloaded": "ok"})
}
