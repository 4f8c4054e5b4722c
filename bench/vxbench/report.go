package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }
func mib(b int64) string        { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// met marks a target met or not.
func met(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func (b *bench) report(took time.Duration) string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format+"\n", args...) }
	p("# voxvisor benchmarks")
	p("")
	if b.mode == "smoke" {
		p("**Smoke run**: every step, briefly, to keep the harness working. These figures mean nothing.")
		p("")
	}
	p("Written by `make bench` (`go run ./bench/vxbench -mode %s`) on %s, in %s.", b.mode, time.Now().UTC().Format("2006-01-02 15:04 MST"), took.Round(time.Second))
	p("")
	p("| machine | |")
	p("|---|---|")
	p("| CPU | %s, %d cores |", cpuModel(), runtime.NumCPU())
	p("| voxvisor | %s |", version(b.bin, "version"))
	p("| Kamailio | %s |", version("kamailio", "-v"))
	p("| rtpengine | %s |", version("rtpengine", "--version"))
	p("| SIPp | %s |", version("sipp", "-v"))
	p("| Go | %s |", runtime.Version())
	p("")
	p("Everything runs on this one machine over loopback: the load generators compete with the")
	p("process measured for the same %d cores. CPU is user+system time of the measured process and", runtime.NumCPU())
	p("all its children (Kamailio's workers) from /proc; memory is PSS, so Kamailio's shared")
	p("memory is counted once.")
	p("")
	p("## Call rate through a record-routing proxy")
	p("")
	p("SIPp UAC → proxy → SIPp UAS: INVITE, 180, 200, ACK, BYE; the callee registered with digest")
	p("and found by registrar lookup, media not anchored (`media.anchor: never`; media is measured")
	p("below). Two paths, each proxy measured alone:")
	p("")
	p("- **plain relay path**: the caller is outside the domain, nothing is authenticated;")
	p("- **registrar path**: the caller is a subscriber, every INVITE is answered 407 and sent")
	p("  again with credentials (INVITE, 407, ACK, INVITE, 100, 180, 200, ACK, BYE, 200).")
	p("")
	p("Kamailio runs tm + rr + t_relay + registrar, and auth_db (`proxy_authorize`) on the registrar")
	p("path, with `-m 256` and 2 workers (`bench/kamailio/kamailio.cfg`).")
	p("")
	p("| figure | voxvisor | Kamailio | voxvisor / Kamailio | target |")
	p("|---|---|---|---|---|")
	for path, name := range pathNames {
		v, k := b.rate[path][0], b.rate[path][1]
		p("| CPU per call at %d calls/s, %s | %s | %s | %s | ≤ 0.6× (stretch 0.5×) %s |", b.plan.fixedRate, name, ms(v.cpuPerCall), ms(k.cpuPerCall),
			ratio(float64(v.cpuPerCall), float64(k.cpuPerCall)), met(float64(v.cpuPerCall) <= 0.6*float64(k.cpuPerCall) && v.cpuPerCall > 0))
	}
	for path, name := range pathNames {
		v, k := b.rate[path][0], b.rate[path][1]
		p("| calls at the fixed rate (ok / failed), %s | %d / %d | %d / %d | | |", name, v.fixed.Successful, v.fixed.Failed, k.fixed.Successful, k.fixed.Failed)
	}
	for path, name := range pathNames {
		v, k := b.rate[path][0], b.rate[path][1]
		p("| highest rate with < 0.1%% failed, no retransmission storm, %s | %d calls/s | %d calls/s | %s | ≥ 1.5× %s |", name, v.maxRate, k.maxRate,
			ratio(float64(v.maxRate), float64(k.maxRate)), met(float64(v.maxRate) >= 1.5*float64(k.maxRate) && v.maxRate > 0))
	}
	v, k := b.rate[plainPath][0], b.rate[plainPath][1]
	p("| peak memory (PSS) over the plain relay path run, overload steps included | %s | %s | %s | (at 800 calls/s: the soak below) |", mib(v.peak), mib(k.peak), ratio(float64(v.peak), float64(k.peak)))
	p("")
	p("How calls are counted, the same for both peers: a call succeeds when its 200 came and its")
	p("BYE was answered. The callee rings 50 ms before it answers and the call lasts 50 ms, as calls")
	p("do: back to back, Kamailio's two workers could pass a 200 on before the 180 sent just ahead of")
	p("it, or a BYE before its ACK, and SIPp failed those calls (up to 1%%, which zeroed its highest")
	p("rate); a BYE that still overtakes its ACK ends the call at the callee, as on a phone.")
	p("A call whose next message does not come within 5 s fails (SIPp `-recv_timeout`), so a")
	p("lost or reordered message costs one call, not the step. A step passes with under 0.1%% failed")
	p("calls, retransmissions under 1%% of messages, and the rate achieved (the step took at most 25%%")
	p("longer than planned).")
	p("")
	p("Steps (rate: created / failed / retransmissions / seconds):")
	p("")
	for path, pname := range pathNames {
		for i, name := range []string{"voxvisor", "Kamailio"} {
			var parts []string
			for _, s := range b.rate[path][i].steps {
				mark := ""
				if !s.ok {
					mark = " ✗"
				}
				parts = append(parts, fmt.Sprintf("%d: %d/%d/%d/%.1fs%s", s.rate, s.res.Created, s.res.Failed, s.res.Retransmissions, s.res.Elapsed.Seconds(), mark))
			}
			p("- %s, %s: %s", name, pname, strings.Join(parts, "; "))
		}
	}
	p("")
	b.soakReport(p)
	rv, rk := b.reg[0], b.reg[1]
	p("## Registrations with digest authentication")
	p("")
	p("SIPp registers %d users from a CSV once each (REGISTER, 401, REGISTER with credentials,", b.plan.regUsers)
	p("200) at up to %d/s. Kamailio: auth_db on db_text with `calculate_ha1`, usrloc in memory.", b.plan.regRate)
	p("voxvisor writes every binding through to bbolt.")
	p("")
	p("| figure | voxvisor | Kamailio | voxvisor / Kamailio | target |")
	p("|---|---|---|---|---|")
	p("| registrations per CPU second | %.0f | %.0f | %s | ≥ 1.0× |", rv.perCPUSec, rk.perCPUSec, ratio(rv.perCPUSec, rk.perCPUSec))
	p("| CPU per registration | %s | %s | | |", ms(perOp(rv.cpu, rv.registered)), ms(perOp(rk.cpu, rk.registered)))
	p("| achieved rate | %.0f/s | %.0f/s | | |", rv.rate, rk.rate)
	p("| registered (ok / failed) | %d / %d | %d / %d | | |", rv.res.Successful, rv.res.Failed, rk.res.Successful, rk.res.Failed)
	p("| memory per registration | %.0f B | %.0f B | | |", rv.memPerReg, rk.memPerReg)
	p("")
	b.clusterReport(p)
	p("## Anchored media")
	p("")
	p("N calls, RTP at 50 packets/s in each direction (2N streams), through the relay for %s.", b.plan.mediaFor)
	p("voxvisor's calls are set up over SIP, once with the relay's sockets only (`media.kernel: off`)")
	p("and once with the kernel path (`media.kernel: on`: latched RTP forwarded by the eBPF program at")
	p("lo's tcx ingress); rtpengine 10.5 runs in userspace (`--table=-1`, 2 threads), driven over ng.")
	p("Delay is one-way, generator to generator, so it includes the generator's own scheduling.")
	p("")
	p("*Relay CPU* is the relay process's. The kernel path's work is done in softirq context and")
	p("charged to the process that sent the packet (here the generator), so it is not in the relay's")
	p("figure: *added host CPU per stream* is the host's busy time (/proc/stat, every process and the")
	p("kernel) per packet delivered, less the same for the generator sending straight to itself (the")
	p("baseline row), times 50 packets/s: the fair figure for comparing the three relays. Per packet,")
	p("because a generator that runs short of CPU sends fewer packets than asked.")
	if b.pinned {
		p("The generator runs on core 1 and each relay on core 0 (`taskset`).")
	}
	p("")
	p("| N calls | relay | loss | p50 | p99 | p99 − baseline's | relay CPU | added host CPU per stream | vs rtpengine |")
	p("|---|---|---|---|---|---|---|---|---|")
	for i, n := range b.plan.mediaCalls {
		var base mediaResult
		if i < len(b.base) {
			base = b.base[i]
			p("| %d | baseline (no relay) | | %s | %s | | | | |", n, us(base.P50), us(base.P99))
		}
		// Host CPU per packet delivered, less the generator's own per
		// packet, at 50 packets/s: a fraction of a core per stream. Per
		// packet, because a saturated generator sends fewer of them.
		perPkt := func(m mediaResult) float64 { return m.HostCPU.Seconds() / max(float64(m.Recv), 1) }
		added := func(m mediaResult) float64 { return max(perPkt(m)-perPkt(base), 0) * 50 }
		for j, name := range mediaRelays {
			if i >= len(b.media[j]) {
				continue
			}
			m := b.media[j][i]
			loss := 0.0
			if m.Sent > 0 {
				loss = 100 * float64(int64(m.Sent)-int64(m.Recv)) / float64(m.Sent)
			}
			util := m.CPU.Seconds() / m.Window.Seconds()
			cmp := ""
			if j < 2 && len(b.media[2]) > i {
				cmp = ratio(added(m), added(b.media[2][i]))
			}
			p("| %d | %s | %.3f%% (%d of %d) | %s | %s | %s | %.1f%% of a core | %.4f%% | %s |", n, name, loss, int64(m.Sent)-int64(m.Recv), m.Sent, us(m.P50), us(m.P99), us(max(m.P99-base.P99, 0)), 100*util, 100*added(m), cmp)
		}
	}
	p("")
	p("Targets: no loss at 4,000 streams on both paths; p99 added one-way delay < 1 ms (userspace)")
	p("and < 200 µs (kernel path); added CPU per stream ≤ 0.2× rtpengine on the kernel path.")
	p("On loopback the kernel path still crosses the stack twice per packet (the generator's send")
	p("and the far socket's receive are in every row, the baseline's too).")
	p("")
	if len(b.notes) > 0 {
		p("## Memory")
		p("")
		for _, n := range b.notes {
			p("- %s", n)
		}
		p("- memory per registration: see the registration table (%d users registered).", b.plan.regUsers)
		p("")
	}
	p("## What limits voxvisor")
	p("")
	p("Read against CPU profiles of the same loads (`VOXVISOR_CPUPROFILE=cpu.prof`, then")
	p("`go tool pprof bin/voxvisor cpu.prof`; `VOXVISOR_MEMPROFILE=mem.prof` and")
	p("`-sample_index=alloc_space` for what a run allocates):")
	p("")
	p("- **Call rate.** About a fifth of the CPU is `sendto`/`recvfrom` system calls, which")
	p("  Kamailio pays too. The rest that Kamailio does not pay is sipgo's model: a goroutine and")
	p("  a `context.WithTimeout` per message, several `time.AfterFunc` timers per transaction, and")
	p("  the garbage of parsing every message and cloning every forwarded request — together the")
	p("  garbage collector (a quarter of the CPU), the Go scheduler (~10%%) and goroutine stack")
	p("  growth (~6%%). Fixed so far: the pipeline runs on workers that keep their grown stacks")
	p("  (stack growth was 13%%); a relayed response shares its header values instead of a deep")
	p("  copy; flow tokens signed with pooled HMAC states and the loop key hashed from one pooled")
	p("  buffer (no fmt); a client INVITE transaction lets its 2xx go after 1 s (Timer M) and the")
	p("  later retransmissions are forwarded statelessly; finished transactions linger 5 s")
	p("  (Kamailio's tm wait timer) instead of RFC 3261's 32 s; CDRs encoded without reflection.")
	p("  Together these took CPU per call at 800 calls/s from about 1.05 to 0.84 ms and the peak")
	p("  RSS from 220 to 170 MB. A higher GOGC buys CPU only with memory (GOGC 400: -12%% CPU,")
	p("  +130%% memory). Next: a transaction layer of our own on sipgo's messages, with one timer")
	p("  wheel, no goroutine per message and the finished transactions kept as bytes.")
	p("- **Registrations.** Every binding is written through to bbolt; writes are group-committed")
	p("  outside the store's lock (one fsync per batch), which took the achieved rate from 81/s to")
	p("  the 2,000/s asked. Kamailio keeps usrloc in memory only (`db_mode 0`).")
	p("- **Media.** One goroutine per socket, one `recvfrom` and one `sendto` per packet, no")
	p("  allocation — the same work as rtpengine in userspace, and about the same CPU. On this")
	p("  2-core machine the load generator and the relay share the cores: from about 1,000 calls")
	p("  (100,000 packets/s each way) the box is saturated, the generator cannot keep 50 packets/s")
	p("  (compare packets sent with 2 × N × 50 × seconds) and the delays are queueing, for both")
	p("  relays. The p99 target of 1 ms added latency is not met here even at 500 calls; a")
	p("  measurement with the generator on other cores, and batching (recvmmsg) per leg, are next.")
	return w.String()
}

// clusterReport sets voxvisor with its location in Redis (a cluster of
// one) beside the same runs on its bbolt file.
func (b *bench) clusterReport(p func(string, ...any)) {
	rr, cr := b.regRedis, b.rateRedis
	if rr.registered == 0 && cr.fixed.Successful == 0 {
		return
	}
	rb, cb := b.reg[0], b.rate[plainPath][0]
	p("## A cluster of one: the location in Redis")
	p("")
	p("The same voxvisor with `cluster.redis` set (a redis-server 7 on loopback, in memory): every")
	p("REGISTER written to Redis and announced to the cluster, every lookup from memory. CPU is")
	p("voxvisor's and redis-server's together.")
	p("")
	p("| figure | bbolt file | Redis | Redis / bbolt | target |")
	p("|---|---|---|---|---|")
	p("| registrations per CPU second | %.0f | %.0f | %s | |", rb.perCPUSec, rr.perCPUSec, ratio(rr.perCPUSec, rb.perCPUSec))
	p("| registered (ok / failed) | %d / %d | %d / %d | | |", rb.res.Successful, rb.res.Failed, rr.res.Successful, rr.res.Failed)
	p("| CPU per call at %d calls/s, plain relay path | %s | %s | %s | ≤ 1.2× %s |", b.plan.fixedRate, ms(cb.cpuPerCall), ms(cr.cpuPerCall),
		ratio(float64(cr.cpuPerCall), float64(cb.cpuPerCall)), met(cr.cpuPerCall > 0 && float64(cr.cpuPerCall) <= 1.2*float64(cb.cpuPerCall)))
	p("| calls at the fixed rate (ok / failed) | %d / %d | %d / %d | | |", cb.fixed.Successful, cb.fixed.Failed, cr.fixed.Successful, cr.fixed.Failed)
	p("| highest rate with < 0.1%% failed | %d calls/s | %d calls/s | %s | |", cb.maxRate, cr.maxRate, ratio(float64(cr.maxRate), float64(cb.maxRate)))
	p("")
	p("How soon a REGISTER on one node is seen on another is in `bench/location-bench.txt` (below).")
	p("")
	t := b.three
	if t.fixed.Created == 0 {
		return
	}
	p("### Three nodes on one Redis")
	p("")
	p("Three voxvisor nodes (127.0.0.11–13) on one redis-server. The same users register, a third")
	p("on each node, from three SIPp generators at once; then each node gets its own callee and")
	p("generator placing a third of the calls (the calls stay on their node; registrations, call")
	p("records and heartbeats go through Redis). CPU is the three nodes' and Redis's together; the")
	p("rate is stepped up as for one node, in total.")
	p("")
	p("| figure | cluster of one | three nodes | three / one | target |")
	p("|---|---|---|---|---|")
	tr := b.threeReg
	p("| registrations per CPU second | %.0f | %.0f | %s | |", rr.perCPUSec, tr.perCPUSec, ratio(tr.perCPUSec, rr.perCPUSec))
	p("| registered (ok / failed) | %d / %d | %d / %d | | |", rr.res.Successful, rr.res.Failed, tr.res.Successful, tr.res.Failed)
	p("| CPU per call at %d calls/s in total | %s | %s | %s | |", b.plan.fixedRate, ms(cr.cpuPerCall), ms(t.cpuPerCall), ratio(float64(t.cpuPerCall), float64(cr.cpuPerCall)))
	p("| calls at the fixed rate (ok / failed) | %d / %d | %d / %d | | |", cr.fixed.Successful, cr.fixed.Failed, t.fixed.Successful, t.fixed.Failed)
	p("| highest total rate with < 0.1%% failed | %d calls/s | %d calls/s | %s | > 2× %s |", cr.maxRate, t.maxRate,
		ratio(float64(t.maxRate), float64(cr.maxRate)), met(cr.maxRate > 0 && t.maxRate > 2*cr.maxRate))
	p("")
	p("Steps of the three nodes: %s.", stepList(t.steps))
	p("")
	p("Where it saturates: this machine has %d cores for three switches, Redis, three SIPp", runtime.NumCPU())
	p("generators and three SIPp callees; the step that fails is where those cores are full, not a")
	p("limit the cluster sets. The CPU per call shows what the cluster costs")
	p("on top (Redis writes per call, heartbeats, three processes' runtimes sharing two cores).")
	if !(cr.maxRate > 0 && t.maxRate > 2*cr.maxRate) {
		p("The > 2× target needs a core per node and per generator (several machines) and is not met")
		p("on this one.")
	}
	p("")
}

// stepList prints stepped rates as "400 ok, 800 ok, 1200 failed (n of m)".
func stepList(steps []stepResult) string {
	var parts []string
	for _, st := range steps {
		if st.ok {
			parts = append(parts, fmt.Sprintf("%d ok", st.rate))
		} else {
			parts = append(parts, fmt.Sprintf("%d not carried (%d of %d failed, %d retransmissions, %s)", st.rate, st.res.Failed, st.res.Created, st.res.Retransmissions, st.res.Elapsed.Round(100*time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

// soakReport writes the memory soak: peak PSS and whether it stays flat
// (the last quarter's peak within 10% of the first quarter's).
func (b *bench) soakReport(p func(string, ...any)) {
	s := b.soak
	if len(s.pss) == 0 {
		return
	}
	p("## Memory over a long run")
	p("")
	p("voxvisor alone on the plain relay path at %d calls/s for %s (%d calls ok, %d failed), its PSS", b.plan.fixedRate, b.plan.soakFor, s.res.Successful, s.res.Failed)
	p("sampled every %s.", s.every)
	p("")
	q := max(len(s.pss)/4, 1)
	peak := func(v []int64) (m int64) {
		for _, x := range v {
			m = max(m, x)
		}
		return m
	}
	all, first, last := peak(s.pss), peak(s.pss[:q]), peak(s.pss[len(s.pss)-q:])
	p("| figure | voxvisor | target |")
	p("|---|---|---|")
	p("| peak PSS over the run | %s | ≤ 150 MiB %s |", mib(all), met(all > 0 && all <= 150<<20))
	p("| peak PSS, first quarter → last quarter | %s → %s | flat (within 10%%) %s |", mib(first), mib(last), met(first > 0 && float64(last) <= 1.1*float64(first)))
	p("| CPU per call over the run | %s | |", ms(s.cpuPerCall))
	p("")
	var pts []string
	for i, v := range s.pss {
		pts = append(pts, fmt.Sprintf("%s %.0f", (time.Duration(i+1)*s.every).String(), float64(v)/(1<<20)))
	}
	p("PSS in MiB: %s.", strings.Join(pts, ", "))
	p("")
}

func perOp(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}
