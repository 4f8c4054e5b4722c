// Package server binds sipgo's transports and transactions to voxvisor's
// request pipeline: it opens the listeners, screens raw input before
// sipgo parses it, runs every request through the handler chain and
// turns handler errors into responses. Routing decisions live in the
// handlers, not here.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/guard"
)

// Stats are the server's counters.
type Stats struct {
	Requests    atomic.Uint64 // requests handed to the pipeline
	Rejected    atomic.Uint64 // malformed input answered 400
	Dropped     atomic.Uint64 // malformed input dropped without an answer
	ParseErrors logging.Counter
	// Connections open now, accepted on the tcp and tls listeners.
	TCPConns, TLSConns atomic.Int64
	// AcceptErrors counts accepts that failed for a temporary reason
	// (EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED, ECONNRESET, EINTR);
	// each is retried after a backoff.
	AcceptErrors atomic.Uint64
	// ConnsOverCap counts connections closed on accept because the
	// total connection cap was reached (see SetConnectionLimit).
	ConnsOverCap atomic.Uint64
	// ConnsTimedOut counts connections closed for silence past the idle
	// timeout, or for a message not complete within it.
	ConnsTimedOut atomic.Uint64
	// Panics counts requests whose handling panicked: each was answered
	// 500 and its stack logged, and the listener served on.
	Panics atomic.Uint64
}

// Server owns the SIP sockets and the sipgo stack.
type Server struct {
	cfg  Options
	log  *slog.Logger
	ua   *sipgo.UserAgent // set in Listen
	self *sip.Self        // set in Listen

	udp []net.PacketConn // set in Listen
	tcp []net.Listener   // set in Listen
	tls []net.Listener   // set in Listen

	guard *guard.Guard // set once, may be nil
	tlsc  *tlsConfigs  // set in Listen

	streams streams  // connections accepted on the tcp and tls listeners
	acks    ackOrder // keeps UDP requests from overtaking the ACK before them
	work    *workers // run the pipeline

	handler atomic.Pointer[sip.Handler] // replaced by SetHandler; read per request

	Stats Stats
}

// SetGuard installs flood protection and the per-source limits. Call
// before Listen.
func (s *Server) SetGuard(g *guard.Guard) { s.guard = g }

// SetConnectionLimit caps the TCP and TLS connections open at once, all
// sources and listeners together (limits.total_connections); 0 for no cap.
// More are accepted and closed at once. Whatever n is, Listen lowers the
// cap to fit under the process's open-file limit (RLIMIT_NOFILE, less a
// reserve), so connections are refused before the kernel refuses accept.
// It may be called at any time; connections already open stay.
func (s *Server) SetConnectionLimit(n int) { s.streams.max.Store(int64(max(n, 0))) }

// ConnectionLimit is the cap in force: the smaller of SetConnectionLimit's
// and the open-file limit's; 0 for none.
func (s *Server) ConnectionLimit() int { return int(s.streams.limit()) }

// conns and txs are the guard's per-source limits (nil: none).
func (s *Server) conns() *guard.Slots {
	if s.guard == nil {
		return nil
	}
	return s.guard.Conns
}

func (s *Server) txs() *guard.Slots {
	if s.guard == nil {
		return nil
	}
	return s.guard.Txs
}

// Options configure a server.
type Options struct {
	Domain string
	Listen []Listener
	// MaxMessageSize bounds a message (larger UDP datagrams are dropped
	// and counted); MaxHeaders its header lines (more: 400).
	MaxMessageSize, MaxHeaders int
	// TCPIdleTimeout closes a TCP/TLS connection with no complete message
	// for this long; a message must also arrive whole within it.
	TCPIdleTimeout time.Duration
	// TransactionLinger is how long a finished transaction absorbs
	// retransmissions.
	TransactionLinger time.Duration
	TLS               TLS
}

// Listener is one socket to listen on.
type Listener struct {
	Transport string         // udp, tcp or tls
	Addr      netip.AddrPort // where to bind
	// Advertise is the host[:port] written into Via and Record-Route in
	// place of the bound address; empty: the bound address.
	Advertise string
}

// TLS is how the tls listeners and the connections sipgo dials use TLS.
type TLS struct {
	// Certificate loads the certificate chain the tls listeners present
	// (and offer to peers that ask); ReloadCertificate calls it again.
	// nil: no certificate, no tls listener.
	Certificate func() (tls.Certificate, error)
	// CAs check client certificates and the peers we dial; nil: the
	// system's roots.
	CAs *x509.CertPool
	// VerifyClient is none, optional or require.
	VerifyClient string
	// VerifyServer checks the certificate of every peer we dial.
	VerifyServer bool
	// MinVersion is "1.2" or "1.3".
	MinVersion string
}

// New returns a server for cfg. Call Listen, SetHandler, then Serve.
func New(cfg Options, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, work: newWorkers()}
	s.Stats.ParseErrors.Match = "failed to parse"
	return s
}

// Listen binds every configured listener and builds the sipgo stack. The
// returned Self knows the bound addresses (port 0 resolved).
func (s *Server) Listen() (*sip.Self, error) {
	var ls []sip.Listener
	fail := func(err error) (*sip.Self, error) {
		s.closeSockets()
		return nil, err
	}
	tc, err := newTLSConfigs(s.cfg.TLS)
	if err != nil {
		return nil, err
	}
	s.tlsc = tc
	s.streams.reserve = fdReserve + len(s.cfg.Listen)
	if fd := s.streams.clampToFDs(); fd > 0 {
		if max := s.streams.max.Load(); max <= 0 || fd < max {
			s.log.Info("TCP and TLS connections capped by the open-file limit", "cap", fd, "reserve", s.streams.reserve)
		}
	}
	for _, l := range s.cfg.Listen {
		ap := l.Addr
		var bound netip.AddrPort
		switch l.Transport {
		case "udp":
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				return fail(fmt.Errorf("listen udp %s: %w", ap, err))
			}
			s.udp = append(s.udp, c)
			bound = c.LocalAddr().(*net.UDPAddr).AddrPort()
		case "tcp", "tls":
			ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
			if err != nil {
				return fail(fmt.Errorf("listen %s %s: %w", l.Transport, ap, err))
			}
			sl := &streamListener{ln: ln, transport: l.Transport, name: "TCP", idle: s.cfg.TCPIdleTimeout, slots: s.conns(),
				streams: &s.streams, stats: &s.Stats, open: &s.Stats.TCPConns, log: s.log, done: make(chan struct{})}
			if l.Transport == "tcp" {
				s.tcp = append(s.tcp, sl)
			} else {
				if s.tlsc.server == nil {
					ln.Close()
					return fail(fmt.Errorf("listen tls %s: sip.tls.cert_file and key_file are not set", ap))
				}
				sl.name, sl.tls, sl.open = "TLS", s.tlsc.server, &s.Stats.TLSConns
				s.tls = append(s.tls, sl)
			}
			bound = ln.Addr().(*net.TCPAddr).AddrPort()
		}
		host, port := bound.Addr().Unmap().String(), int(bound.Port())
		if l.Advertise != "" {
			if h, p, err := net.SplitHostPort(l.Advertise); err == nil {
				host = h
				port, _ = strconv.Atoi(p)
			} else {
				host = l.Advertise
			}
		}
		ls = append(ls, sip.Listener{Transport: l.Transport, Bound: bound, Host: host, Port: port})
	}
	s.self = sip.NewSelf(s.cfg.Domain, ls)
	lingerTimers(s.cfg.TransactionLinger)
	// sipgo refuses UDP messages over 1,300 bytes. The proxy itself
	// chooses TCP for large requests where it can (RFC 3261 §18.1.1);
	// where it cannot — a phone's UDP flow behind NAT, a response to a
	// UDP request — the message goes over UDP, fragmented by IP, rather
	// than not at all. Set once, before any message is sent.
	udpLimit.Do(func() { siplib.UDPMTUSize = maxUDPMessage + 200 })

	lib := logging.Library(s.log.With("component", "sipgo"), slog.LevelError+4, &s.Stats.ParseErrors)
	// sipgo's parser bounds every message, over TCP too.
	parser := siplib.NewParser()
	parser.MaxMessageLength = s.cfg.MaxMessageSize
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgenTLSConfig(s.tlsc.client),
		sipgo.WithUserAgentParser(parser),
		sipgo.WithUserAgent("voxvisor"),
		sipgo.WithUserAgentHostname(s.cfg.Domain),
		sipgo.WithUserAgentTransportLayerOptions(
			siplib.WithTransportLayerLogger(lib),
			siplib.WithTransportLayerReadFilter(s.screen),
		),
		sipgo.WithUserAgentTransactionLayerOptions(
			siplib.WithTransactionLayerLogger(lib),
			siplib.WithTransactionLayerUnhandledResponseHandler(s.strayResponse),
		),
	)
	if err != nil {
		return fail(fmt.Errorf("sip stack: %w", err))
	}
	s.ua = ua
	ua.TransactionLayer().OnRequest(s.onRequest)
	// After the transaction layer's own handler, on each connection's
	// reading goroutine: a complete message keeps its connection open.
	ua.TransportLayer().OnMessage(s.onMessage)
	return s.self, nil
}

// maxUDPMessage is the largest SIP message sent over UDP: what one
// datagram can carry.
const maxUDPMessage = 65507

// udpLimit sets sipgo's package-wide UDP limit once per process: servers
// started later (tests run many) must not write it while earlier ones
// read it.
var udpLimit sync.Once

// lingerTimers caps how long sipgo keeps finished transactions. sipgo
// holds its timers in package variables; they are set here, once, before
// any transaction exists.
func lingerTimers(d time.Duration) {
	if d <= 0 {
		return
	}
	for _, t := range []*time.Duration{&siplib.Timer_D, &siplib.Timer_J, &siplib.Timer_L, &siplib.Timer_M} {
		if *t > d {
			*t = d
		}
	}
	// A client INVITE transaction that saw a 2xx waits (Timer M) only to
	// pass the 2xx's retransmissions up. Past it they arrive without a
	// transaction and the proxy forwards them statelessly all the same
	// (RFC 3261 §16.7, RFC 6026 §7.2), so a short wait loses nothing and
	// frees the forwarded INVITE and its 2xx sooner: at 800 calls/s they
	// were a third of the live heap.
	// Written only when it changes: a process may start several
	// servers (tests do), and the later ones must not write what the
	// earlier ones' transactions read.
	if siplib.Timer_M > acceptedLinger {
		siplib.Timer_M = acceptedLinger
	}
}

// acceptedLinger is how long a client INVITE transaction stays after its
// 2xx (Timer M, capped).
const acceptedLinger = time.Second

// UA is the sipgo user agent, for clients that share the listeners.
func (s *Server) UA() *sipgo.UserAgent { return s.ua }

// TransactionLayer is the sipgo transaction layer, for handlers that send.
func (s *Server) TransactionLayer() *siplib.TransactionLayer { return s.ua.TransactionLayer() }

// SetHandler installs (or replaces) the pipeline.
func (s *Server) SetHandler(h sip.Handler) {
	s.handler.Store(&h)
}

// Serve serves every listener until ctx ends, then closes them and the
// sipgo stack. It returns nil on a clean stop.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(s.udp)+len(s.tcp)+len(s.tls))
	tp := s.ua.TransportLayer()
	serve := func(name string, addr net.Addr, run func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(); err != nil && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s %s: %w", name, addr, err)
			}
		}()
	}
	for _, c := range s.udp {
		serve("udp", c.LocalAddr(), func() error { return tp.ServeUDP(c) })
	}
	for _, ln := range s.tcp {
		serve("tcp", ln.Addr(), func() error { return tp.ServeTCP(ln) })
	}
	for _, ln := range s.tls {
		serve("tls", ln.Addr(), func() error { return tp.ServeTLS(ln) })
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.closeSockets()
	wg.Wait()
	s.ua.Close()
	return err
}

// WaitReady waits until sipgo serves every UDP listener (it registers a
// listener's socket for sending only once it starts reading from it).
func (s *Server) WaitReady(ctx context.Context) error {
	pool := s.ua.TransportLayer().Pool("udp")
	for _, c := range s.udp {
		addr := c.LocalAddr().String()
		for {
			if conn := pool.Get(addr); conn != nil {
				conn.TryClose()
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return nil
}

// Close releases the listeners of a server that will not Serve.
func (s *Server) Close() {
	s.closeSockets()
	if s.ua != nil {
		s.ua.Close()
	}
}

func (s *Server) closeSockets() {
	for _, c := range s.udp {
		c.Close()
	}
	for _, l := range s.tcp {
		l.Close()
	}
	for _, l := range s.tls {
		l.Close()
	}
}

// onRequest hands one request to a worker. sipgo calls it on its own
// goroutine per message.
func (s *Server) onRequest(req *siplib.Request, tx *siplib.ServerTx) {
	s.work.do(func() { s.handle(req, tx) })
}

// handle runs one request through the pipeline.
func (s *Server) handle(req *siplib.Request, tx *siplib.ServerTx) {
	s.Stats.Requests.Add(1)
	h := *s.handler.Load()
	r := &sip.Request{Request: req, Transport: lowerTransport(req.Transport())}
	if tx != nil && !req.IsAck() {
		r.Tx = tx
	}
	if ap, err := netip.ParseAddrPort(req.Source()); err == nil {
		r.Source = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if r.Transport == "udp" {
		if id := req.CallID(); id != nil {
			switch to := req.To(); {
			case req.IsAck():
				defer s.acks.through(id.Value())
			case to != nil && to.Params.Has("tag"):
				s.acks.wait(id.Value())
			}
		}
	}
	var err error
	if r.Tx != nil {
		// A request in progress holds one of its source's slots until the
		// pipeline has answered it.
		src := r.Source.Addr()
		if ok, first := s.txs().Take(src); ok {
			err = s.serve(h, r)
			s.txs().Give(src)
		} else {
			if first {
				s.log.Warn("source at its limit of requests in progress", "source", src.String(), "limit", s.txs().Max)
			}
			err = sip.Status(503, "Too Many Requests In Progress", siplib.NewHeader("Retry-After", "5"))
		}
	} else {
		err = s.serve(h, r)
	}
	if err != nil && !req.IsAck() {
		se := sip.StatusOf(err)
		switch {
		case se.Code == 0: // drop, or handled elsewhere
		default:
			if se.Code == 500 && se.Err != nil {
				s.log.Warn("request failed", "method", string(req.Method), "status", se.Code, "error", se.Err)
			} else if se.Err != nil {
				// 503s for a limit or an exhausted pool: the component
				// logs the condition once, not each request it refuses.
				s.log.Debug("request rejected", "method", string(req.Method), "status", se.Code, "error", se.Err)
			}
			if rerr := r.Respond(se.Code, se.Reason, nil, se.Headers...); rerr != nil {
				s.log.Debug("respond failed", "status", se.Code, "error", rerr)
			}
		}
	}
	if tx == nil {
		return
	}
	if req.IsAck() {
		tx.Terminate()
		return
	}
	tx.TerminateGracefully()
}

// serve runs r through h. A panic on the way is this request's failure,
// not the process's: it is answered 500, its stack logged and counted.
func (s *Server) serve(h sip.Handler, r *sip.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.Stats.Panics.Add(1)
			s.log.Error("request handling panicked; answered 500, serving on (please report this with the stack)",
				"method", string(r.Method), "call", r.CallID().Value(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = &sip.StatusError{Code: 500, Reason: "Server Internal Error"}
		}
	}()
	return h.ServeSIP(context.Background(), r)
}

// strayResponse forwards a response that matches no client transaction
// (a 2xx retransmission after ours ended) statelessly (§16.11), if the
// top Via is ours.
func (s *Server) strayResponse(res *siplib.Response) {
	via := res.Via()
	if via == nil || !s.self.IsLocal(via.Host) || !isOurBranch(via) {
		return
	}
	out := res.Clone()
	out.SetBody(res.Body())
	out.RemoveHeader("Via")
	next := out.Via()
	if next == nil {
		return
	}
	host := next.Host
	if v, ok := next.Params.Get("received"); ok && v != "" {
		host = v
	}
	port := next.Port
	if v, ok := next.Params.Get("rport"); ok && v != "" {
		port, _ = strconv.Atoi(v)
	}
	if port == 0 {
		port = 5060
	}
	out.SetDestination(net.JoinHostPort(host, strconv.Itoa(port)))
	out.SetTransport(next.Transport)
	if err := s.ua.TransportLayer().WriteMsg(out); err != nil {
		s.log.Debug("stray response not forwarded", "error", err)
	}
}

func isOurBranch(v *siplib.ViaHeader) bool {
	b, _ := v.Params.Get("branch")
	return strings.HasPrefix(b, sip.BranchPrefix)
}

func lowerTransport(t string) string {
	switch t {
	case "TCP", "tcp":
		return "tcp"
	case "TLS", "tls":
		return "tls"
	}
	return "udp"
}

// Collector exports the server's counters.
func (s *Server) Collector() prometheus.Collector {
	var m metrics.Set
	st := &s.Stats
	m.Counter("sip_requests_total", "SIP requests handed to the pipeline.", func() float64 { return float64(st.Requests.Load()) })
	m.Counter("sip_malformed_rejected_total", "Malformed requests answered 400.", func() float64 { return float64(st.Rejected.Load()) })
	m.Counter("sip_malformed_dropped_total", "Malformed datagrams dropped.", func() float64 { return float64(st.Dropped.Load()) })
	for tp, n := range map[string]*atomic.Int64{"tcp": &st.TCPConns, "tls": &st.TLSConns} {
		m.Gauge("sip_connections", "TCP and TLS connections accepted and open now.", func() float64 { return float64(n.Load()) }, "transport", tp)
	}
	m.Counter("sip_parse_errors_total", "Messages sipgo could not parse.", func() float64 { return float64(st.ParseErrors.N.Load()) })
	m.Counter("sip_accept_errors_total", "TCP/TLS accept failures the listeners backed off from (EMFILE and the like).", func() float64 { return float64(st.AcceptErrors.Load()) })
	m.Counter("sip_connections_over_cap_total", "TCP/TLS connections closed at accept because limits.total_connections (or the file limit) was reached.", func() float64 { return float64(st.ConnsOverCap.Load()) })
	m.Counter("sip_panics_total", "Requests whose handling panicked: answered 500, stack logged, serving on.", func() float64 { return float64(st.Panics.Load()) })
	m.Counter("sip_connections_timed_out_total", "TCP/TLS connections closed for silence or a message not completed within sip.tcp_idle_timeout.", func() float64 { return float64(st.ConnsTimedOut.Load()) })
	return &m
}
