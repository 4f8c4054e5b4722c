// Package softswitch assembles voxvisor from its parts for `serve`: the
// SIP server, the pipeline (flood guard → sanity → OPTIONS → registrar →
// drain → auth → proxy, with a recover around it in the server), the
// location store and the authenticator, with one explicit lifecycle:
// New (load, validate, bind) → Serve → stop by cancelling the context.
// Tests use it to run the whole switch in-process on port 0.
package softswitch

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/internal/admin"
	"github.com/voxvisor/voxvisor/internal/anchor"
	"github.com/voxvisor/voxvisor/internal/cluster"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/media/kernel"
	"github.com/voxvisor/voxvisor/provisioning"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/sdp"
	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/auth"
	"github.com/voxvisor/voxvisor/sip/capture"
	"github.com/voxvisor/voxvisor/sip/dialog"
	"github.com/voxvisor/voxvisor/sip/guard"
	"github.com/voxvisor/voxvisor/sip/keepalive"
	"github.com/voxvisor/voxvisor/sip/location"
	"github.com/voxvisor/voxvisor/sip/proxy"
	"github.com/voxvisor/voxvisor/sip/registrar"
	"github.com/voxvisor/voxvisor/sip/server"
)

// Switch is a running voxvisor.
type Switch struct {
	Config    *config.Config
	Self      *sip.Self
	Server    *server.Server
	Store     *location.Store
	Auth      *auth.Authenticator
	Registrar *registrar.Registrar
	Proxy     *proxy.Proxy
	Pinger    *keepalive.Pinger // keeps NATed UDP contacts reachable (nat.*)
	Relay     *media.Relay
	Anchor    *anchor.Anchor
	Guard     *guard.Guard
	// Dialogs is the one table of calls: every way a call ends goes
	// through it (CDR first, then the media).
	Dialogs *dialog.Table
	CDRs    *gateway.CDRs
	CDR     *gateway.CDRWriter
	// Registrations keeps trunks registered to their carriers, following
	// reloads.
	Registrations *gateway.Registrations
	// Health pings the peers of trunks with health.interval and tells
	// failover which are down, following reloads.
	Health *gateway.Health
	// Members is the cluster's membership (cluster.redis); nil alone.
	Members *cluster.Members
	// Capture holds recent calls' SIP messages, for their ladders.
	Capture       *capture.Ring
	detachCapture func()
	// Admin serves /metrics and the JSON API; nil with admin.listen: off.
	Admin *admin.Server

	// Reloader reads the configuration again for SIGHUP and the admin API
	// (set by the command before serving); nil: reload unavailable.
	Reloader func() (*config.Config, error)

	draining atomic.Bool
	gw       atomic.Pointer[gateway.Gateway] // the current trunks and dial plan; nil without trunks
	registry *prometheus.Registry
	firewall *trunkFirewall    // nil: no provisioned endpoint firewall to read
	kernel   *kernel.Forwarder // nil: RTP forwarded by the relay's sockets only
	// locationBackend is where registrations persist (bbolt, or Redis).
	locationBackend location.Backend
	log             *slog.Logger
}

// New builds and binds a switch for cfg. Nothing runs until Serve.
// Components are made in order; when one fails, those made before it are
// closed again, last first.
func New(cfg *config.Config, log *slog.Logger) (_ *Switch, err error) {
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	// The capture sees every message, so it is attached before any
	// listener or client of this switch runs.
	ring := capture.New(capture.Options{Calls: cfg.SIP.Capture.Calls, Messages: cfg.SIP.Capture.Messages, Retention: cfg.SIP.Capture.Retention})
	detach := capture.Attach(ring)
	undo = append(undo, func() error { detach(); return nil })
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data_dir %s: %w (set data_dir to a writable folder)", cfg.DataDir, err)
	}
	be, err := openLocation(cfg, log)
	if err != nil {
		return nil, err
	}
	store, err := location.New(be)
	if err != nil {
		be.Close()
		return nil, err
	}
	undo = append(undo, store.Close)
	a, err := auth.New(cfg.Auth.Realm, cfg.Auth.Algorithms, cfg.Auth.NonceTTL, authUsers(cfg), log)
	if err != nil {
		return nil, err
	}
	var an *anchor.Anchor
	var dialogs *dialog.Table
	learning, err := media.ParseLearning(cfg.Media.Learning)
	if err != nil {
		return nil, err
	}
	if cfg.Media.NATLatching {
		log.Warn("media.nat_latching is deprecated: it means media.learning: any (any source may be learned while a stream starts); say learning: any, or drop it for the safer default heuristic")
	}
	offload, err := openKernelPath(cfg.Media, log)
	if err != nil {
		return nil, err
	}
	if offload != nil {
		undo = append(undo, offload.Close)
	}
	relay, err := media.New(media.Config{
		Offload: offloadOf(offload),
		Addr:    netip.MustParseAddr(cfg.Media.Address),
		PortMin: cfg.Media.PortMin, PortMax: cfg.Media.PortMax,
		Quarantine: media.DefaultQuarantine,
		Timeout:    cfg.Media.Timeout, HoldTimeout: cfg.Media.HoldTimeout,
		Learning: learning, LearnWindow: media.DefaultLearnWindow, LockAfter: media.DefaultLockAfter,
	}, log, func(id string) {
		// A BYE each way; the CDR reads the media statistics before the
		// anchor releases them.
		if !dialogs.Hangup(id, dialog.Ending{By: "system", Reason: "media timeout", Cause: 408}) {
			an.Release(id)
		}
	})
	if err != nil {
		return nil, err
	}
	var gw *gateway.Gateway
	health := gateway.NewHealth(log)
	var members *cluster.Members
	if r := cfg.Cluster.Redis; r.Address != "" {
		node := cfg.Cluster.Node
		members = cluster.New(cluster.Options{Addr: r.Address, Password: r.Password, TLS: r.TLS, Prefix: r.Prefix, Node: node,
			Counts: func() (bindings, calls int) {
				for _, bs := range store.All() {
					for _, b := range bs {
						if b.Node == node {
							bindings++
						}
					}
				}
				return bindings, dialogs.Len()
			}}, log)
	}
	if len(cfg.Trunks) > 0 {
		if gw, err = gateway.New(gatewayOptions(cfg, health, channelCounter(members)), nil); err != nil {
			return nil, err
		}
	}
	cdrPath := cfg.CDR.Path
	if cdrPath == "" {
		cdrPath = filepath.Join(cfg.DataDir, "cdr.jsonl")
	}
	cdr, err := gateway.OpenCDR(cdrPath, cfg.CDR.MaxBytes, cfg.CDR.Keep)
	if err != nil {
		return nil, err
	}
	undo = append(undo, cdr.Close)
	cdrs := gateway.NewCDRs(cdr, mediaStats(relay), log)
	an = anchor.New(relay, anchor.Options{Mode: anchor.Mode(cfg.Media.Anchor), Policy: sdp.Policy{Allow: cfg.Media.Codecs}, MaxStreams: cfg.Media.MaxStreams}, log)
	srvOpts, err := serverOptions(cfg)
	if err != nil {
		return nil, err
	}
	srv := server.New(srvOpts, log)
	g := guard.New(guard.Config{Rate: cfg.Limits.Rate, Burst: cfg.Limits.Burst, Block: cfg.Limits.Block,
		AuthFailures: cfg.Limits.AuthFailures, AuthWindow: cfg.Limits.AuthWindow, Lockout: cfg.Limits.Lockout, AuthDelay: guard.DefaultAuthDelay,
		Connections: cfg.Limits.Connections, Transactions: cfg.Limits.Transactions, Dialogs: cfg.Limits.Dialogs, Streams: cfg.Limits.Streams})
	g.SetTrusted(cfg.TrustedSources())
	if members != nil {
		// A guesser locked out on one node is locked out on all.
		g.SetShared(members)
		members.OnLockout(g.LockOut)
		// The other nodes are trusted as limits.trusted are.
		members.OnLive(g.SetMembers)
	}
	srv.SetGuard(g)
	srv.SetConnectionLimit(cfg.Limits.TotalConnections)
	a.SetGuard(g)
	dialogs = dialog.New(dialog.Options{SessionExpires: orOff(cfg.Dialog.SessionExpires), MinSE: cfg.Dialog.MinSE,
		MaxAge: orOff(cfg.Dialog.MaxAge), MaxEarly: cfg.SIP.RingTimeout + time.Minute, PerSource: g.Dialogs}, log)
	dialogs.Subscribe(cdrs) // first: it reads the media statistics
	dialogs.Subscribe(an)   // then the media goes
	dialogs.Subscribe(captureKeeper{ring})
	if members != nil {
		// Answered calls in Redis, so a survivor ends them if this node dies.
		members.SetDialogs(dialogs)
		dialogs.Subscribe(members)
	}
	an.PerSource = g.Streams
	self, err := srv.Listen()
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { srv.Close(); return nil })
	sw := &Switch{Config: cfg, Self: self, Server: srv, Store: store, Auth: a, Relay: relay, Anchor: an, kernel: offload, Health: health,
		locationBackend: be,
		Capture:         ring, detachCapture: detach, Members: members,
		Dialogs: dialogs, CDRs: cdrs, CDR: cdr, Guard: g, log: log}
	if sw.Members != nil {
		var sips []string
		for _, l := range self.Listeners {
			sips = append(sips, l.Transport+":"+l.Bound.String())
		}
		sw.Members.SetSIP(sips)
	}
	sw.Registrar = registrar.New(registrarRules(cfg), cfg.SIP.Domain, self.IsLocal, a, store, log)
	sw.Registrar.SetContactPolicy(contactPolicy(cfg, self))
	pings := keepalive.NewSIPSender(srv.TransactionLayer(), self)
	if members != nil {
		members.SetProbe(probeNode(pings))
	}
	sw.Registrar.SetNAT(registrar.NAT{MaxExpires: cfg.NAT.MaxExpires})
	sw.Registrar.SetLocalAddr(pings.LocalAddr)
	sw.Pinger = keepalive.New(store, pings, keepalive.Options{Interval: cfg.NAT.PingInterval, Timeout: cfg.NAT.PingTimeout, Node: clusterNode(cfg)}, log)
	secret, err := nodeSecret(filepath.Join(cfg.DataDir, "node.key"))
	if err != nil {
		return nil, err
	}
	pcfg := proxy.Config{RingTimeout: cfg.SIP.RingTimeout, Secret: secret, Node: clusterNode(cfg)}
	if members != nil {
		pcfg.NodeAlive = members.Alive
	}
	sw.Proxy = proxy.New(srv.TransactionLayer(), self, store, a, pcfg, log)
	if members != nil {
		// Calls reach a contact through the node that holds its flow.
		sw.Registrar.SetHop(sw.Proxy.HopURI)
	}
	if sw.Registrations, err = gateway.NewRegistrations(srv.UA(), self.Listeners, log); err == nil {
		err = sw.Registrations.CanRegister(gw)
	}
	if err == nil && members != nil {
		sw.Registrations.Leases = members // one node registers each trunk
	}
	if err != nil {
		return nil, err
	}
	sw.Proxy.SetRouting(gw.Routing())
	sw.Proxy.SetDialogs(dialogs)
	dialogs.SetSender(sw.Proxy)
	sw.gw.Store(gw)
	sw.Proxy.AddHook(an)
	sw.firewall = openFirewall(cfg, log)
	sw.registry = sw.metrics()
	if cfg.Admin.Listen != "off" {
		adm, err := admin.New(cfg.Admin.Listen, cfg.Admin.Token, backend{sw}, sw.registry, log)
		if err == nil {
			err = adm.Listen()
		}
		if err != nil {
			return nil, err
		}
		sw.Admin = adm
	}
	srv.SetHandler(sip.Chain(
		sw.streamGuard,
		sip.Sanity(self),
		sw.options,
		sw.Registrar.Middleware,
		sw.drainGate,
		a.Middleware(self.IsLocal, func(r *sip.Request) bool { return sw.fromCarrier(r) || sw.Proxy.IsHop(r.Request) }),
	)(sip.HandlerFunc(sw.route)))
	return sw, nil
}

// streamGuard rate-limits requests over TCP (UDP datagrams are limited
// before parsing, in the server).
func (sw *Switch) streamGuard(next sip.Handler) sip.Handler {
	return sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
		if r.Transport != "udp" && r.Source.IsValid() {
			if ok, blocked := sw.Guard.Allow(r.Source.Addr()); !ok {
				if blocked {
					sw.log.Warn("source blocked for flooding", "source", r.Source.Addr().String(), "transport", r.Transport)
				}
				return proxy.Drop()
			}
		}
		return next.ServeSIP(ctx, r)
	})
}

// drainGate refuses new calls while the switch drains to stop.
func (sw *Switch) drainGate(next sip.Handler) sip.Handler {
	return sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
		if sw.draining.Load() && r.Method == siplib.INVITE && r.To() != nil && !r.To().Params.Has("tag") {
			return sip.Status(503, "Shutting Down", siplib.NewHeader("Retry-After", "60"))
		}
		return next.ServeSIP(ctx, r)
	})
}

// fromCarrier reports whether r is an INVITE from a trunk's inbound
// networks: the gateway routes it by its DID, no one authenticates it.
func (sw *Switch) fromCarrier(r *sip.Request) bool {
	return r.Method == siplib.INVITE && sw.Gateway().Identify(r.Source.Addr()) != nil
}

// route runs the proxy and answers requests that turn out to be for us.
func (sw *Switch) route(ctx context.Context, r *sip.Request) error {
	err := sw.Proxy.ServeSIP(ctx, r)
	if proxy.IsSelf(err) {
		return sw.answerOptions(r)
	}
	return err
}

// Methods the switch handles or forwards.
var allow = []string{"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK", "MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER"}

// options answers OPTIONS addressed to the server itself (no user part,
// or a Route-less request to our own address) with 200, Allow and Accept.
func (sw *Switch) options(next sip.Handler) sip.Handler {
	return sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
		if r.Method == siplib.OPTIONS && r.Recipient.User == "" && sw.Self.IsLocal(r.Recipient.Host) && r.Route() == nil {
			return sw.answerOptions(r)
		}
		return next.ServeSIP(ctx, r)
	})
}

func (sw *Switch) answerOptions(r *sip.Request) error {
	return r.Respond(200, "OK", nil,
		siplib.NewHeader("Allow", strings.Join(allow, ", ")),
		siplib.NewHeader("Accept", "application/sdp"),
		siplib.NewHeader("Accept-Encoding", "identity"),
		siplib.NewHeader("Supported", "path, outbound"),
	)
}

// Serve runs until ctx ends, then stops the listeners and flushes the
// location store.
//
// When ctx ends it drains first: new INVITEs get 503 with Retry-After,
// calls in progress may finish for up to sip.drain_time; then the
// listeners close and the CDRs and the location store are flushed.
func (sw *Switch) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	sweepCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(2)
	go func() {
		defer wg.Done()
		sw.Store.Run(sweepCtx, time.Second)
	}()
	go func() {
		defer wg.Done()
		sw.Relay.Run(sweepCtx, time.Second)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		sw.Dialogs.Run(sweepCtx, time.Second)
	}()
	if sw.Members != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sw.Members.Run(sweepCtx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		sw.Pinger.Run(sweepCtx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-sweepCtx.Done():
				return
			case <-t.C:
				sw.Guard.Sweep()
				sw.Auth.Sweep()
			}
		}
	}()
	if sw.Admin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sw.Admin.Serve(sweepCtx); err != nil {
				sw.log.Error("admin listener stopped", "error", err)
			}
		}()
		sw.log.Info("admin API and metrics", "address", sw.Admin.Addr())
	}
	for _, l := range sw.Self.Listeners {
		sw.log.Info("listening", "transport", l.Transport, "address", l.Bound.String(), "domain", sw.Self.Domain)
	}
	// The listeners outlive the registrations, so trunks can unregister.
	srvCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- sw.Server.Serve(srvCtx) }()
	if gw := sw.Gateway(); gw != nil && gw.Registers() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := sw.Server.WaitReady(rctx); err != nil {
			sw.log.Error("listeners not ready; trunks register anyway", "error", err)
		}
		cancel()
	}
	sw.Registrations.Start(ctx, sw.Gateway())
	sw.Health.Start(ctx, sw.Gateway(), sw.Registrations)
	var err error
	done := false
	select {
	case <-ctx.Done():
	case err = <-served:
		done = true
	}
	if !done {
		sw.drain()
	}
	sw.Registrations.Wait()
	sw.Health.Wait()
	stopServer()
	if !done {
		err = <-served
	}
	// Calls still followed (never answered, or left up with drain_time
	// 0s) get their CDR before the file closes.
	sw.Dialogs.EndAll(dialog.Ending{By: "system", Reason: "node shutdown", Status: 503}, false)
	stop()
	wg.Wait()
	if cerr := sw.Store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if cerr := sw.CDR.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if sw.kernel != nil {
		if cerr := sw.kernel.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	sw.detachCapture()
	return err
}

// drain refuses new calls and waits, up to sip.drain_time, for the calls
// in progress to end.
func (sw *Switch) drain() {
	sw.draining.Store(true)
	n := sw.Dialogs.Len()
	if n == 0 || sw.Config.SIP.DrainTime <= 0 {
		return
	}
	sw.log.Info("draining: new calls get 503", "calls", n, "for_at_most", sw.Config.SIP.DrainTime)
	deadline := time.Now().Add(sw.Config.SIP.DrainTime)
	for time.Now().Before(deadline) && sw.Dialogs.Len() > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	if n := sw.Dialogs.Len(); n > 0 {
		sw.log.Warn("drain time over: hanging up the calls still up", "calls", n)
		sw.Dialogs.EndAll(dialog.Ending{By: "system", Reason: "shutting down", Status: 503}, true)
		// The BYEs are answered while the listeners are still open.
		sw.Dialogs.WaitByes(5 * time.Second)
	}
}

// Hangup ends call id from voxvisor's side (by: operator, system; why
// goes into the BYEs' Reason and the CDR): its CDR first, while the media
// statistics are still there, then a BYE to both sides and the media
// released. It reports whether the call existed.
func (sw *Switch) Hangup(id, by, why string) bool {
	return sw.Dialogs.Hangup(id, dialog.Ending{By: by, Reason: why})
}

// trunkFirewall is the provisioned endpoint firewall of the trunks, read
// for metrics and the admin API (voxvisor provision puts it in).
type trunkFirewall struct {
	fw    firewall.Backend
	rules []*firewall.Rules
}

// openFirewall opens the firewall backend the configuration provisions
// with, when a trunk has an endpoint; nil (and a warning) when it cannot.
func openFirewall(cfg *config.Config, log *slog.Logger) *trunkFirewall {
	rules := provisioning.FirewallRules(cfg)
	if len(rules) == 0 {
		return nil
	}
	var fw firewall.Backend
	var err error
	switch cfg.Provision.Firewall.Backend {
	case "nftables":
		fw, err = firewall.OpenNFT()
	case "iptables":
		fw, err = firewall.OpenIPTables()
	default:
		return nil
	}
	if err != nil {
		log.Warn("trunk firewall counters unavailable", "backend", cfg.Provision.Firewall.Backend, "error", err)
		return nil
	}
	return &trunkFirewall{fw: fw, rules: rules}
}

// status is each trunk's firewall state, by trunk name.
func (f *trunkFirewall) status() map[string]firewall.Status {
	out := map[string]firewall.Status{}
	if f == nil {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range f.rules {
		if st, err := f.fw.Check(ctx, r); err == nil {
			out[r.Trunk] = st
		}
	}
	return out
}

// channelCounter is the cluster's trunk channel count; nil on one node
// (a nil interface, not one holding a nil *Members).
func channelCounter(m *cluster.Members) gateway.ChannelCounter {
	if m == nil {
		return nil
	}
	return m
}

// probeNode asks a cluster node whether it is alive: an OPTIONS to each
// of its UDP listeners in turn (a second each) until one answers, with
// any status. A listener on a wildcard address names no host to ask.
func probeNode(pings *keepalive.SIPSender) func(ctx context.Context, sips []string) bool {
	return func(ctx context.Context, sips []string) bool {
		for _, s := range sips {
			transport, addr, _ := strings.Cut(s, ":")
			ap, err := netip.ParseAddrPort(addr)
			if transport != "udp" || err != nil || ap.Addr().IsUnspecified() {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			err = pings.Ping(pctx, location.Binding{Contact: "sip:" + addr, Source: addr})
			cancel()
			if err == nil {
				return true
			}
		}
		return false
	}
}

// clusterNode is this node's name in a cluster; "" on its own.
func clusterNode(cfg *config.Config) string {
	if cfg.Cluster.Redis.Address == "" {
		return ""
	}
	return cfg.Cluster.Node
}

// openLocation is where registrations live: Redis for a cluster
// (cluster.redis.address), else this node's bbolt file.
func openLocation(cfg *config.Config, log *slog.Logger) (location.Backend, error) {
	if r := cfg.Cluster.Redis; r.Address != "" {
		log.Info("cluster: registrations in Redis", "redis", r.Address, "node", cfg.Cluster.Node)
		return location.OpenRedis(location.RedisOptions{Addr: r.Address, Password: r.Password, TLS: r.TLS, Prefix: r.Prefix, Node: cfg.Cluster.Node}, log)
	}
	return location.OpenBolt(filepath.Join(cfg.DataDir, "location.db"))
}

// captureKeeper tells the SIP capture which calls were accepted: their
// ladders are kept before those of INVITEs that went nowhere.
type captureKeeper struct{ ring *capture.Ring }

func (k captureKeeper) DialogStarted(d *dialog.Dialog)            { k.ring.Keep(d.ID) }
func (k captureKeeper) DialogEnded(*dialog.Dialog, dialog.Ending) {}

// orOff maps a configured duration to dialog.Options: 0s there means off.
func orOff(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// Reload applies a new configuration's TLS certificate, users, registrar
// rules, trunks (with their registrations and trusted sources) and dial
// plan without dropping registrations or calls. Listeners and media keep
// their start-up settings. The caller has validated cfg (a bad file never
// gets here).
func (sw *Switch) Reload(cfg *config.Config) error {
	// The certificate first: a renewed one that fails to load leaves
	// everything as it was.
	if err := sw.Server.ReloadCertificate(certificate(cfg.SIP.TLS)); err != nil {
		return fmt.Errorf("reload certificate: %w", err)
	}
	if err := sw.Auth.SetUsers(authUsers(cfg)); err != nil {
		return fmt.Errorf("reload users: %w", err)
	}
	sw.Registrar.SetRules(registrarRules(cfg))
	sw.Registrar.SetNAT(registrar.NAT{MaxExpires: cfg.NAT.MaxExpires})
	var gw *gateway.Gateway
	if len(cfg.Trunks) > 0 {
		var err error
		if gw, err = gateway.New(gatewayOptions(cfg, sw.Health, channelCounter(sw.Members)), sw.Gateway()); err != nil {
			return fmt.Errorf("reload trunks: %w", err)
		}
		if err := sw.Registrations.CanRegister(gw); err != nil {
			return fmt.Errorf("reload trunks: %w", err)
		}
	}
	sw.Proxy.SetRouting(gw.Routing())
	sw.gw.Store(gw)
	sw.Guard.SetTrusted(cfg.TrustedSources())
	sw.Registrar.SetContactPolicy(contactPolicy(cfg, sw.Self))
	// Registrations follow in the background: an unregistration takes a
	// round trip to the carrier.
	go sw.Registrations.Update(gw)
	go sw.Health.Update(gw)
	sw.log.Info("configuration reloaded", "config", cfg.Source, "users", len(cfg.Users), "trunks", len(cfg.Trunks), "rules", len(cfg.DialPlan))
	return nil
}

// Gateway is the running trunks and dial plan (a reload replaces them);
// nil without trunks.
func (sw *Switch) Gateway() *gateway.Gateway { return sw.gw.Load() }

// Metrics is the registry /metrics serves: every component's collector.
func (sw *Switch) Metrics() *prometheus.Registry { return sw.registry }

// ReloadNow reads the configuration with Reloader and applies it. A bad
// file is rejected with its file:line error and the running one is kept.
func (sw *Switch) ReloadNow() error {
	if sw.Reloader == nil {
		return fmt.Errorf("reload: no configuration source")
	}
	cfg, err := sw.Reloader()
	if err != nil {
		sw.log.Error("reload rejected; the running configuration is kept", "error", err)
		return err
	}
	return sw.Reload(cfg)
}

// Draining reports whether the switch is refusing new calls to stop.
func (sw *Switch) Draining() bool { return sw.draining.Load() }

// mediaStats reads a call's relay statistics for its CDR.
func mediaStats(relay *media.Relay) func(string) []gateway.Stream {
	conv := func(s media.LegStats) gateway.LegStats {
		q := s.Quality()
		return gateway.LegStats{Packets: s.Packets, Bytes: s.Bytes, Lost: s.Lost,
			JitterMS: q.JitterMS, RTTMS: q.RTTMS, SRTP: s.SRTP,
			LossPct: q.LossPct, MOS: q.MOS, Missing: q.Missing}
	}
	return func(id string) []gateway.Stream {
		sess := relay.Get(id)
		if sess == nil {
			return nil
		}
		var out []gateway.Stream
		for i, st := range sess.Streams() {
			s := st.Stats()
			out = append(out, gateway.Stream{Index: i, Caller: conv(s[0]), Callee: conv(s[1])})
		}
		return out
	}
}

// serverOptions are cfg's sip section as the server takes it.
func serverOptions(cfg *config.Config) (server.Options, error) {
	c := cfg.SIP
	o := server.Options{Domain: c.Domain, MaxMessageSize: c.MaxMessageSize, MaxHeaders: c.MaxHeaders,
		TCPIdleTimeout: c.TCPIdleTimeout, TransactionLinger: c.TransactionLinger}
	for _, l := range c.Listen {
		o.Listen = append(o.Listen, server.Listener{Transport: l.Transport, Addr: l.AddrPort(), Advertise: l.Advertise})
	}
	cas, err := c.TLS.CAPool()
	if err != nil {
		return o, fmt.Errorf("sip.tls.ca_file: %w", err)
	}
	o.TLS = server.TLS{Certificate: certificate(c.TLS), CAs: cas, VerifyClient: c.TLS.VerifyClient,
		VerifyServer: c.TLS.VerifyServer == nil || *c.TLS.VerifyServer, MinVersion: c.TLS.MinVersion}
	return o, nil
}

// certificate loads t's certificate; nil when none is configured.
func certificate(t config.TLS) func() (tls.Certificate, error) {
	if t.CertFile == "" {
		return nil
	}
	return t.Certificate
}

// gatewayOptions are cfg's trunks and dial plan as the gateway takes them
// (cfg is validated: the CIDRs parse).
func gatewayOptions(cfg *config.Config, health *gateway.Health, channels gateway.ChannelCounter) gateway.Options {
	o := gateway.Options{Health: health, Channels: channels}
	for _, t := range cfg.Trunks {
		to := gateway.TrunkOptions{Name: t.Name, Codecs: t.Codecs, MaxChannels: t.MaxChannels, Register: t.Register,
			Health:     gateway.HealthCheck{Interval: t.Health.Interval, Timeout: t.Health.Timeout, DownAfter: t.Health.DownAfter, UpAfter: t.Health.UpAfter},
			RegExpires: t.RegExpires, CIDRs: config.Prefixes(t.Inbound.CIDRs), Transit: t.Inbound.Transit,
			CallerID: gateway.CallerID{FromUser: t.CallerID.FromUser, PAI: t.CallerID.PAI}}
		for _, p := range t.Peers {
			to.Peers = append(to.Peers, gateway.Peer{Host: p.Host, Port: p.Port, Transport: p.Transport})
		}
		if c := t.Credentials; c != nil {
			to.Credentials = &gateway.Credential{Username: c.Username, Password: c.Password, Realm: c.Realm}
		}
		for _, d := range t.DIDs {
			to.DIDs = append(to.DIDs, gateway.DID{Number: d.Number, Pattern: d.Pattern,
				Destination: gateway.Destination{User: d.User, URI: d.URI, Trunk: d.Trunk}})
		}
		o.Trunks = append(o.Trunks, to)
	}
	for _, r := range cfg.DialPlan {
		o.DialPlan = append(o.DialPlan, gateway.Rule{Prefix: r.Prefix, Match: r.Match, Replace: r.Replace,
			Strip: r.Strip, Prepend: r.Prepend, Trunks: r.Trunks})
	}
	return o
}

// authUsers are cfg's users as the authenticator takes them.
func authUsers(cfg *config.Config) []auth.User {
	out := make([]auth.User, 0, len(cfg.Users))
	for _, u := range cfg.Users {
		out = append(out, auth.User{Username: u.Username, Password: u.Password, HA1: u.HA1, HA1SHA256: u.HA1SHA256})
	}
	return out
}

// registrarRules are cfg's registrar limits as the registrar takes them.
func registrarRules(cfg *config.Config) registrar.Rules {
	r := cfg.Registrar
	return registrar.Rules{MinExpires: r.MinExpires, MaxExpires: r.MaxExpires, DefaultExpires: r.DefaultExpires, MaxContacts: r.MaxContacts}
}

// contactPolicy is where cfg lets registered contacts point: never at the
// switch itself or at a trunk's peers and inbound networks, and only
// into registrar.contact_networks when that is set.
func contactPolicy(cfg *config.Config, self *sip.Self) registrar.ContactPolicy {
	p := registrar.ContactPolicy{IsMe: self.IsMe, Allowed: config.Prefixes(cfg.Registrar.ContactNetworks)}
	for _, t := range cfg.Trunks {
		p.Refused = append(p.Refused, config.Prefixes(t.Inbound.CIDRs)...)
		for _, peer := range t.Peers {
			if a, err := netip.ParseAddr(peer.Host); err == nil {
				p.Peers = append(p.Peers, netip.AddrPortFrom(a.Unmap(), uint16(peer.Port)))
			}
		}
	}
	return p
}
