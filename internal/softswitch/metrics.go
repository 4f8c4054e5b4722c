package softswitch

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/sip/guard"
)

// metrics registers voxvisor's Prometheus metrics. Most read the
// components' own counters when scraped; call outcomes are counted as
// calls end.
func (sw *Switch) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "voxvisor", Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "voxvisor", Name: name, Help: help}, f))
	}
	gauge("registrations", "Registered contacts (bindings).", func() float64 { _, b := sw.Store.Count(); return float64(b) })
	gauge("registered_aors", "Addresses-of-record with at least one binding.", func() float64 { a, _ := sw.Store.Count(); return float64(a) })
	counter("register_requests_total", "REGISTER requests accepted.", func() float64 { return float64(sw.Registrar.Registered.Load()) })
	ka := &sw.Pinger.Stats
	gauge("nat_bindings_pinged", "NATed UDP contacts kept reachable with OPTIONS pings (nat.ping_interval).", func() float64 { return float64(ka.Pinged.Load()) })
	counter("nat_pings_sent_total", "OPTIONS keep-alives sent to NATed UDP contacts.", func() float64 { return float64(ka.Sent.Load()) })
	counter("nat_pings_answered_total", "NAT keep-alives answered, with any status.", func() float64 { return float64(ka.Answered.Load()) })
	counter("nat_pings_failed_total", "NAT keep-alives not answered within nat.ping_interval (or not sendable).", func() float64 { return float64(ka.Failed.Load()) })
	counter("nat_bindings_dropped_total", "NATed contacts removed because they answered no keep-alive (and did not register again) for nat.ping_timeout.", func() float64 { return float64(ka.Dropped.Load()) })
	gauge("calls_active", "Calls in progress (ringing or answered).", func() float64 { return float64(sw.Dialogs.Len()) })
	counter("dialogs_expired_total", "Calls ended by voxvisor because their session timer ran out without a refresh, or they reached dialog.max_age (a BYE each way).", func() float64 { return float64(sw.Dialogs.Expired.Load()) })
	counter("sip_requests_total", "SIP requests handed to the pipeline.", func() float64 { return float64(sw.Server.Stats.Requests.Load()) })
	counter("sip_forwarded_total", "Requests forwarded statefully (transactions created).", func() float64 { return float64(sw.Proxy.Forwarded.Load()) })
	counter("sip_stateless_total", "ACKs and 2xx retransmissions forwarded statelessly.", func() float64 { return float64(sw.Proxy.Stateless.Load()) })
	counter("sip_malformed_rejected_total", "Malformed requests answered 400.", func() float64 { return float64(sw.Server.Stats.Rejected.Load()) })
	counter("sip_malformed_dropped_total", "Malformed datagrams dropped.", func() float64 { return float64(sw.Server.Stats.Dropped.Load()) })
	for tp, n := range map[string]*atomic.Int64{"tcp": &sw.Server.Stats.TCPConns, "tls": &sw.Server.Stats.TLSConns} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "voxvisor", Name: "sip_connections",
			Help: "TCP and TLS connections accepted and open now.", ConstLabels: prometheus.Labels{"transport": tp}},
			func() float64 { return float64(n.Load()) }))
	}
	counter("sip_parse_errors_total", "Messages sipgo could not parse.", func() float64 { return float64(sw.Server.Stats.ParseErrors.N.Load()) })
	counter("auth_failures_total", "Digest authentications that failed (wrong password, unknown user).", func() float64 { return float64(sw.Auth.Failures.Load()) })
	counter("auth_replays_total", "Verified credentials refused because their nonce count was used before (replays), answered with a new challenge.", func() float64 { return float64(sw.Auth.Replays.Load()) })
	counter("sip_indialog_refused_total", "Requests with a To-tag that carried no Record-Route of ours signed for their Call-ID (481), or a forged one (403).", func() float64 { return float64(sw.Proxy.Refused.Load()) })
	counter("sip_accept_errors_total", "TCP/TLS accept failures the listeners backed off from (EMFILE and the like).", func() float64 { return float64(sw.Server.Stats.AcceptErrors.Load()) })
	counter("sip_connections_over_cap_total", "TCP/TLS connections closed at accept because limits.total_connections (or the file limit) was reached.", func() float64 { return float64(sw.Server.Stats.ConnsOverCap.Load()) })
	counter("sip_panics_total", "Requests whose handling panicked: answered 500, stack logged, serving on.", func() float64 { return float64(sw.Server.Stats.Panics.Load()) })
	counter("sip_connections_timed_out_total", "TCP/TLS connections closed for silence or a message not completed within sip.tcp_idle_timeout.", func() float64 { return float64(sw.Server.Stats.ConnsTimedOut.Load()) })
	counter("flood_blocks_total", "Sources blocked for flooding.", func() float64 { return float64(sw.Guard.Blocks.Load()) })
	counter("flood_dropped_total", "Requests dropped from blocked sources.", func() float64 { return float64(sw.Guard.Dropped.Load()) })
	counter("auth_lockouts_total", "Sources locked out after failed logins.", func() float64 { return float64(sw.Guard.Lockouts.Load()) })
	for name, slots := range map[string]*guard.Slots{"connections": sw.Guard.Conns, "transactions": sw.Guard.Txs, "dialogs": sw.Guard.Dialogs, "streams": sw.Guard.Streams} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "voxvisor", Name: "source_limit_refused_total",
			Help: "Connections, requests, calls or media streams refused because their source was at its limit (limits.*).", ConstLabels: prometheus.Labels{"limit": name}},
			func() float64 { return float64(slots.Refused.Load()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "voxvisor", Name: "source_limit_blocks_total",
			Help: "Times a source reached a per-source limit (each logged once).", ConstLabels: prometheus.Labels{"limit": name}},
			func() float64 { return float64(slots.Blocks.Load()) }))
	}
	gauge("relay_sessions", "Anchored calls with relay ports.", func() float64 { return float64(sw.Relay.Len()) })
	gauge("relay_port_pairs_in_use", "RTP/RTCP port pairs allocated.", func() float64 { return float64(sw.Relay.Allocator().InUse()) })
	gauge("relay_port_pairs", "RTP/RTCP port pairs in the range.", func() float64 { return float64(sw.Relay.Allocator().Pairs()) })
	gauge("relay_port_pairs_quarantined", "RTP/RTCP port pairs released moments ago, reused only when no other pair is free.",
		func() float64 { return float64(sw.Relay.Allocator().Quarantined()) })
	counter("relay_port_pairs_reused_early_total", "Port pairs taken before their quarantine ended because no other pair was free (the range is small for the load).",
		func() float64 { return float64(sw.Relay.Allocator().EarlyReuses()) })
	for reason, n := range map[string]*atomic.Uint64{"max_streams": &sw.Anchor.TooManyStreams, "pool_exhausted": &sw.Anchor.PoolExhausted} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "voxvisor", Name: "media_offers_refused_total",
			Help: "Offers refused: more streams than media.max_streams (488), or no relay ports left (503).", ConstLabels: prometheus.Labels{"reason": reason}},
			func() float64 { return float64(n.Load()) }))
	}
	relay := func(f func(s media.LegStats) float64) func() float64 {
		return func() float64 {
			total := 0.0
			for _, sess := range sw.Relay.Sessions() {
				for _, st := range sess.Streams() {
					legs := st.Stats()
					total += f(legs[0]) + f(legs[1])
				}
			}
			return total
		}
	}
	gauge("relay_packets", "RTP packets received by the relay on live calls.", relay(func(s media.LegStats) float64 { return float64(s.Packets) }))
	gauge("relay_bytes", "RTP bytes received by the relay on live calls.", relay(func(s media.LegStats) float64 { return float64(s.Bytes) }))
	gauge("relay_lost_packets", "RTP packets lost before the relay on live calls.", relay(func(s media.LegStats) float64 { return float64(s.Lost) }))
	for rank := media.RankSDPAddress; rank <= media.RankAny; rank++ {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "voxvisor", Name: "media_sources_learned_total",
			Help: "Media sources relay legs locked to, by how they matched (media.learning): sdp_address, sdp_ip, signalling (a NATed side), any.", ConstLabels: prometheus.Labels{"rank": rank.String()}},
			func() float64 { return float64(sw.Relay.LearningStats().Learned[rank]) }))
	}
	for phase, f := range map[string]func(media.LearningStats) uint64{
		"learning": func(s media.LearningStats) uint64 { return s.RejectedLearning },
		"locked":   func(s media.LearningStats) uint64 { return s.RejectedLocked },
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "voxvisor", Name: "media_packets_rejected_total",
			Help: "RTP/RTCP packets the relay dropped because they came from a source that is not the side's: while learning (not allowed by media.learning, or worse-ranked than the candidate) or after the lock.", ConstLabels: prometheus.Labels{"phase": phase}},
			func() float64 { return float64(f(sw.Relay.LearningStats())) }))
	}
	counter("media_relatch_refused_total", "New sources refused after a leg locked that learning would have taken (the side's IP from another port, e.g. a NAT rebinding or a device beside it; any source under learning: any); each counted once in a row.",
		func() float64 { return float64(sw.Relay.LearningStats().RelatchRefused) })

	outcomes := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "voxvisor", Name: "calls_total",
		Help: "Finished call attempts by final status and direction."}, []string{"status", "direction"})
	reg.MustRegister(outcomes)
	sw.CDRs.OnEnd = func(c gateway.CDR) {
		outcomes.WithLabelValues(strconv.Itoa(c.Status), c.Direction).Inc()
	}
	reg.MustRegister(trunkCollector{sw})
	return reg
}

// trunkCollector reports each trunk of the running gateway, so trunks a
// reload adds or removes appear or go.
type trunkCollector struct{ sw *Switch }

var (
	trunkChannelsDesc = prometheus.NewDesc("voxvisor_trunk_channels", "Channels in use on a trunk.", []string{"trunk"}, nil)
	trunkRegDesc      = prometheus.NewDesc("voxvisor_trunk_registered", "1 when the trunk is registered to its carrier (trunks with register: true).", []string{"trunk"}, nil)
)

func (trunkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- trunkChannelsDesc
	ch <- trunkRegDesc
}

func (c trunkCollector) Collect(ch chan<- prometheus.Metric) {
	gw := c.sw.gateway()
	if gw == nil {
		return
	}
	for _, t := range gw.Trunks() {
		ch <- prometheus.MustNewConstMetric(trunkChannelsDesc, prometheus.GaugeValue, float64(t.Channels()), t.Name)
		if !t.Register {
			continue
		}
		v := 0.0
		if st, _ := c.sw.Registrations.State(t.Name); st.Registered {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(trunkRegDesc, prometheus.GaugeValue, v, t.Name)
	}
}
