// Command vxbench runs voxvisor side by side with Kamailio 5.6 and
// rtpengine 10.5 on this machine and writes BENCHMARKS.md: call rate and
// CPU per call through a record-routing proxy, digest registrations,
// anchored media, and memory. It starts every process it measures and
// stops each by PID; all traffic stays on loopback.
//
//	go run ./bench/vxbench -mode full -bin bin/voxvisor -out BENCHMARKS.md
//
// -mode smoke runs the same steps briefly, so CI keeps the harness
// working; its figures mean nothing and are never asserted.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

type plan struct {
	fixedRate              int
	fixedFor, stepFor      time.Duration
	steps                  []int
	regUsers, regRate      int
	mediaCalls             []int
	mediaFor               time.Duration
	callLimit, regLimitDur time.Duration
	soakFor, soakEvery     time.Duration // the memory soak at fixedRate, sampled every soakEvery
}

var plans = map[string]plan{
	"smoke": {fixedRate: 100, fixedFor: 4 * time.Second, stepFor: 3 * time.Second, steps: []int{100, 200},
		regUsers: 300, regRate: 300, mediaCalls: []int{20}, mediaFor: 3 * time.Second,
		soakFor: 6 * time.Second, soakEvery: time.Second},
	"full": {fixedRate: 800, fixedFor: 20 * time.Second, stepFor: 10 * time.Second,
		steps:    []int{400, 800, 1200, 1600, 2000, 2500, 3000, 3500},
		regUsers: 10000, regRate: 2000, mediaCalls: []int{500, 1000, 2000}, mediaFor: 20 * time.Second,
		soakFor: 5 * time.Minute, soakEvery: 10 * time.Second},
}

func main() {
	mode := flag.String("mode", "full", "smoke or full")
	bin := flag.String("bin", "bin/voxvisor", "the voxvisor binary")
	out := flag.String("out", "BENCHMARKS.md", "where to write the report")
	root := flag.String("root", ".", "the repository root (for bench/ files)")
	only := flag.String("only", "rate,soak,reg,cluster,media", "which measurements to run")
	flag.Parse()
	p, ok := plans[*mode]
	if !ok {
		log.Fatalf("unknown -mode %q", *mode)
	}
	dir, err := os.MkdirTemp("", "vxbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	absBin, _ := filepath.Abs(*bin)
	absRoot, _ := filepath.Abs(*root)
	b := &bench{plan: p, dir: dir, bin: absBin, root: absRoot, mode: *mode, only: *only}
	start := time.Now()
	if err := b.run(); err != nil {
		log.Fatalf("bench failed: %v", err)
	}
	if err := os.WriteFile(*out, []byte(b.report(time.Since(start))), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("wrote %s in %s\n", *out, time.Since(start).Round(time.Second))
}

type bench struct {
	plan plan
	mode string
	only string
	dir  string
	bin  string
	root string

	rate [2][2]rateResult // by path (plain, registrar), then voxvisor, kamailio
	soak soakResult
	// One voxvisor with its location in Redis (a cluster of one): the
	// same registrations and fixed-rate calls; redis is the server while
	// they run (its CPU counts with voxvisor's).
	regRedis  regResult
	rateRedis rateResult
	three     rateResult // three nodes on one Redis, a generator each
	threeReg  regResult
	redis     *proc
	reg       [2]regResult
	media     [3][]mediaResult // voxvisor userspace, voxvisor kernel path, rtpengine
	base      []mediaResult    // the generator alone, per N
	// pinned: the media generator ran on core 1, the relays on core 0.
	pinned bool
	notes  []string
}

type rateResult struct {
	fixed       sippResult
	cpuPerCall  time.Duration
	peak        int64
	maxRate     int
	steps       []stepResult
	fixedFailed bool
}

type stepResult struct {
	rate int
	res  sippResult
	ok   bool
}

// soakResult is voxvisor's memory over a long run at the fixed rate.
type soakResult struct {
	res        sippResult
	every      time.Duration
	pss        []int64 // sampled every `every` from the start of the load
	cpuPerCall time.Duration
}

type regResult struct {
	res        sippResult
	cpu        time.Duration
	perCPUSec  float64
	rate       float64
	memPerReg  float64
	registered int
}

func (b *bench) sippDir(name string) string { return filepath.Join(b.root, "bench", "sipp", name) }

func (b *bench) run() error {
	if strings.Contains(b.only, "rate") {
		if err := b.rates(); err != nil {
			return err
		}
	}
	if strings.Contains(b.only, "soak") {
		log.Printf("memory soak: voxvisor, %s at %d calls/s", b.plan.soakFor, b.plan.fixedRate)
		if err := b.soakRun(); err != nil {
			return fmt.Errorf("memory soak: %w", err)
		}
	}
	if strings.Contains(b.only, "reg") {
		for i := range b.reg {
			log.Printf("registrations: %s", []string{"voxvisor", "kamailio"}[i])
			if err := b.registrations(i, &b.reg[i]); err != nil {
				return fmt.Errorf("registrations: %w", err)
			}
		}
	}
	if strings.Contains(b.only, "cluster") {
		if err := b.clusterRuns(); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if !strings.Contains(b.only, "media") {
		return nil
	}
	// The generator on the second core, each relay on the first (where
	// there are two): they no longer take each other's time slices.
	if pinned := pinSelf("1"); pinned {
		defer pinSelf(allCPUs())
		b.pinned = true
	}
	for _, n := range b.plan.mediaCalls {
		base, err := baseline(n, b.plan.mediaFor)
		if err != nil {
			return err
		}
		b.base = append(b.base, base)
	}
	for i := range b.media {
		log.Printf("media: %s", mediaRelays[i])
		if err := b.mediaRuns(i); err != nil {
			return fmt.Errorf("media: %w", err)
		}
	}
	return nil
}

// A call path the rate is measured on.
const (
	plainPath     = iota // caller outside the domain, no authentication
	registrarPath        // caller a subscriber: every INVITE challenged (407) and authenticated
)

var pathNames = [2]string{"plain relay path", "registrar path"}

func (b *bench) rates() error {
	for path := range b.rate {
		for which, name := range []string{"voxvisor", "kamailio"} {
			log.Printf("call rate, %s: %s", pathNames[path], name)
			if err := b.callRate(path, which, &b.rate[path][which], b.plan.steps); err != nil {
				return fmt.Errorf("%s call rate, %s: %w", name, pathNames[path], err)
			}
		}
	}
	return nil
}

const (
	proxyPort = 15060
	uasPort   = 15072
	uacPort   = 15071
	redisPort = 16379
)

func (b *bench) startProxy(which, users int, anchor string, auth bool) (*proc, error) {
	return b.startProxyKernel(which, users, anchor, "off", auth)
}

// startProxyKernel starts voxvisor (which 0) with media.kernel set, or
// Kamailio (authenticating REGISTERs and INVITEs when auth is set;
// voxvisor always does both for its subscribers).
func (b *bench) startProxyKernel(which, users int, anchor, kernel string, auth bool) (*proc, error) {
	if which == 0 {
		redis := ""
		if b.redis != nil {
			redis = fmt.Sprintf("127.0.0.1:%d", redisPort)
		}
		return startVoxvisor(b.dir, b.bin, proxyPort, users, anchor, kernel, 20000, 29999, redis)
	}
	return startKamailio(b.dir, filepath.Join(b.root, "bench", "kamailio", "kamailio.cfg"), proxyPort, users, auth)
}

// callRate measures CPU per call on a path at a fixed rate, then steps
// the rate up.
func (b *bench) callRate(path, which int, r *rateResult, steps []int) error {
	auth := path == registrarPath
	px, err := b.startProxy(which, 0, "never", auth)
	if err != nil {
		return err
	}
	defer px.stop()
	// The callee registers with digest wherever the proxy asks for it.
	uas, err := b.callee(px, which == 0 || auth)
	if err != nil {
		return err
	}
	defer uas.stop()
	remote := fmt.Sprintf("127.0.0.1:%d", proxyPort)
	uac := []string{"-sf", b.sippDir("uac.xml"), "-s", "1002"}
	if auth {
		uac = []string{"-sf", b.sippDir("uac_auth.xml"), "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "bench1001"}
	}
	peak := samplePeak(px.pid())
	calls := int(float64(b.plan.fixedRate) * b.plan.fixedFor.Seconds())
	c0 := b.cpuOf(px)
	r.fixed, err = runSIPp(b.dir, "fixed", b.plan.fixedFor+60*time.Second, append([]string{remote}, append(uac,
		"-p", fmt.Sprint(uacPort), "-i", "127.0.0.1", "-r", fmt.Sprint(b.plan.fixedRate), "-m", fmt.Sprint(calls), "-l", "20000", "-max_socket", "60000", "-recv_timeout", "5000")...)...)
	if err != nil {
		return err
	}
	if r.fixed.Successful > 0 {
		r.cpuPerCall = (b.cpuOf(px) - c0) / time.Duration(r.fixed.Successful)
	}
	r.fixedFailed = r.fixed.Failed > 0
	err = b.stepUp(r, steps, func(rate int) (sippResult, error) {
		n := int(float64(rate) * b.plan.stepFor.Seconds())
		return runSIPp(b.dir, fmt.Sprintf("step%d", rate), b.plan.stepFor+60*time.Second, append([]string{remote}, append(uac,
			"-p", fmt.Sprint(uacPort), "-i", "127.0.0.1", "-r", fmt.Sprint(rate), "-m", fmt.Sprint(n), "-l", "30000", "-max_socket", "60000", "-recv_timeout", "5000")...)...)
	})
	r.peak = peak.done()
	return err
}

// stepUp runs the rate steps in order until one is not carried; the
// highest carried is r.maxRate.
func (b *bench) stepUp(r *rateResult, steps []int, run func(rate int) (sippResult, error)) error {
	for _, rate := range steps {
		res, err := run(rate)
		if err != nil {
			return err
		}
		ok := b.stepOK(res)
		r.steps = append(r.steps, stepResult{rate: rate, res: res, ok: ok})
		if !ok {
			break
		}
		r.maxRate = rate
		time.Sleep(time.Second)
	}
	return nil
}

// stepOK says a step of the rate was carried: under 0.1% failed, no
// retransmission storm (under 1% of messages), and the rate actually
// achieved (the run took no more than 25% longer).
func (b *bench) stepOK(res sippResult) bool {
	return res.Created > 0 && float64(res.Failed) < 0.001*float64(res.Created) &&
		float64(res.Retransmissions) < 0.01*float64(res.Created*5) &&
		res.Elapsed < time.Duration(float64(b.plan.stepFor)*1.25)+3*time.Second
}

// callee registers 1002 at the proxy px (with digest when digest is
// set) from uasPort and starts the SIPp UAS that answers its calls there.
func (b *bench) callee(px *proc, digest bool) (*proc, error) {
	return b.calleeAt(px, fmt.Sprintf("127.0.0.1:%d", proxyPort), "1002", uasPort, digest)
}

// calleeAt registers user at the proxy px listening on remote, from
// port, and starts the SIPp UAS that answers its calls there.
func (b *bench) calleeAt(px *proc, remote, user string, port int, digest bool) (*proc, error) {
	reg := []string{remote, "-sf", b.sippDir("register_noauth.xml"), "-s", user}
	if digest {
		reg = []string{remote, "-sf", b.sippDir("register_csv.xml"), "-inf", b.csv([]string{user + ";[authentication username=" + user + " password=bench" + user + "]"})}
	}
	res, err := runSIPp(b.dir, "reg"+user, 20*time.Second, append(reg, "-p", fmt.Sprint(port), "-i", "127.0.0.1", "-m", "1")...)
	if err != nil || res.Successful != 1 {
		return nil, fmt.Errorf("register the callee %s: %v (%+v)\n%s", user, err, res, px.tail())
	}
	uas, err := startUAS(b.dir, b.sippDir("uas.xml"), port)
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	return uas, nil
}

// soakRun keeps voxvisor at the fixed rate on the plain path for soakFor
// and samples its PSS: memory must stay flat, not creep.
func (b *bench) soakRun() error {
	px, err := b.startProxy(0, 0, "never", false)
	if err != nil {
		return err
	}
	defer px.stop()
	uas, err := b.callee(px, true)
	if err != nil {
		return err
	}
	defer uas.stop()
	remote := fmt.Sprintf("127.0.0.1:%d", proxyPort)
	s := &b.soak
	s.every = b.plan.soakEvery
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(s.every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.pss = append(s.pss, pss(px.pid()))
			}
		}
	}()
	calls := int(float64(b.plan.fixedRate) * b.plan.soakFor.Seconds())
	c0 := cpu(px.pid())
	s.res, err = runSIPp(b.dir, "soak", b.plan.soakFor+60*time.Second, remote, "-sf", b.sippDir("uac.xml"), "-s", "1002",
		"-p", fmt.Sprint(uacPort), "-i", "127.0.0.1", "-r", fmt.Sprint(b.plan.fixedRate), "-m", fmt.Sprint(calls),
		"-l", "20000", "-max_socket", "60000", "-recv_timeout", "5000")
	close(stop)
	<-sampled
	if s.res.Successful > 0 {
		s.cpuPerCall = (cpu(px.pid()) - c0) / time.Duration(s.res.Successful)
	}
	return err
}

// clusterRuns measures voxvisor as a cluster of one, its location in a
// redis-server started here: registrations and calls at the fixed rate,
// to set beside the figures on its bbolt file.
func (b *bench) clusterRuns() error {
	rp, err := startRedis(b.dir, redisPort)
	if err != nil {
		return err
	}
	defer rp.stop()
	b.redis = rp
	defer func() { b.redis = nil }()
	log.Printf("cluster of one: registrations")
	if err := b.registrations(0, &b.regRedis); err != nil {
		return fmt.Errorf("registrations: %w", err)
	}
	log.Printf("cluster of one: call rate")
	if err := b.callRate(plainPath, 0, &b.rateRedis, b.plan.steps); err != nil {
		return err
	}
	// Redis restarted empty for the three nodes.
	rp.stop()
	b.redis = nil
	log.Printf("three nodes: call rate")
	return b.threeNodes(&b.three)
}

// threeNodes measures three voxvisor nodes on one Redis (127.0.0.11-13),
// each calling a callee registered on itself with a load generator of
// its own: CPU per call at the fixed rate (the three nodes and Redis),
// then the total rate stepped up as for one node.
func (b *bench) threeNodes(r *rateResult) error {
	rp, err := startRedis(b.dir, redisPort)
	if err != nil {
		return err
	}
	defer rp.stop()
	redis := fmt.Sprintf("127.0.0.1:%d", redisPort)
	var nodes []*proc
	var remotes []string
	for i, ip := range []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"} {
		lo := 20000 + 3000*i // each its own relay range
		px, err := startNode(b.dir, b.bin, string(rune('a'+i)), ip, proxyPort, b.plan.regUsers, "never", "off", lo, lo+2999, redis)
		if err != nil {
			return err
		}
		defer px.stop()
		remote := fmt.Sprintf("%s:%d", ip, proxyPort)
		uas, err := b.calleeAt(px, remote, fmt.Sprint(1002+i), uasPort+10*i, true)
		if err != nil {
			return err
		}
		defer uas.stop()
		nodes = append(nodes, px)
		remotes = append(remotes, remote)
	}
	cpuAll := func() time.Duration {
		c := cpu(rp.pid())
		for _, n := range nodes {
			c += cpu(n.pid())
		}
		return c
	}
	// run places total calls/s for d, a third on each node, and sums.
	run := func(name string, total int, d time.Duration, limit int) (sippResult, error) {
		var wg sync.WaitGroup
		res := make([]sippResult, len(remotes))
		errs := make([]error, len(remotes))
		for i, remote := range remotes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := int(float64(total) * d.Seconds() / float64(len(remotes)))
				res[i], errs[i] = runSIPp(b.dir, fmt.Sprintf("%s-%d", name, i), d+60*time.Second, remote, "-sf", b.sippDir("uac.xml"), "-s", fmt.Sprint(1002+i),
					"-p", fmt.Sprint(uacPort+10*i), "-i", "127.0.0.1", "-r", fmt.Sprint(total), "-rp", fmt.Sprint(1000*len(remotes)), "-m", fmt.Sprint(n),
					"-l", fmt.Sprint(limit), "-max_socket", "60000", "-recv_timeout", "5000")
			}()
		}
		wg.Wait()
		var sum sippResult
		for _, x := range res {
			sum.Created += x.Created
			sum.Successful += x.Successful
			sum.Failed += x.Failed
			sum.Retransmissions += x.Retransmissions
			sum.Elapsed = max(sum.Elapsed, x.Elapsed)
		}
		return sum, errors.Join(errs...)
	}
	// Registrations first: the users spread over the nodes, a third each.
	if err := b.threeRegistrations(remotes, cpuAll); err != nil {
		return err
	}
	c0 := cpuAll()
	if r.fixed, err = run("three-fixed", b.plan.fixedRate, b.plan.fixedFor, 20000); err != nil {
		return err
	}
	if r.fixed.Successful > 0 {
		r.cpuPerCall = (cpuAll() - c0) / time.Duration(r.fixed.Successful)
	}
	r.fixedFailed = r.fixed.Failed > 0
	return b.stepUp(r, b.plan.steps, func(rate int) (sippResult, error) {
		return run(fmt.Sprintf("three-step%d", rate), rate, b.plan.stepFor, 30000)
	})
}

// threeRegistrations registers the plan's users across the nodes at
// remotes, a third on each at a third of the rate, at once; CPU is cpu's
// (the nodes' and Redis's).
func (b *bench) threeRegistrations(remotes []string, cpu func() time.Duration) error {
	r := &b.threeReg
	n := b.plan.regUsers
	var wg sync.WaitGroup
	res := make([]sippResult, len(remotes))
	errs := make([]error, len(remotes))
	c0 := cpu()
	start := time.Now()
	for i, remote := range remotes {
		var lines []string
		for u := i; u < n; u += len(remotes) {
			lines = append(lines, fmt.Sprintf("u%d;[authentication username=u%d password=p%d]", u, u, u))
		}
		csv := b.csv(lines)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = runSIPp(b.dir, fmt.Sprintf("three-register-%d", i), 5*time.Minute, remote, "-sf", b.sippDir("register_csv.xml"),
				"-inf", csv, "-p", fmt.Sprint(uacPort+10*i), "-i", "127.0.0.1", "-r", fmt.Sprint(b.plan.regRate), "-rp", fmt.Sprint(1000*len(remotes)),
				"-m", fmt.Sprint(len(lines)), "-l", "5000")
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, x := range res {
		r.res.Created += x.Created
		r.res.Successful += x.Successful
		r.res.Failed += x.Failed
	}
	r.res.Elapsed = time.Since(start)
	r.cpu = cpu() - c0
	r.registered = r.res.Successful
	if r.cpu > 0 {
		r.perCPUSec = float64(r.registered) / r.cpu.Seconds()
	}
	r.rate = float64(r.registered) / r.res.Elapsed.Seconds()
	return nil
}

// cpuOf is px's CPU time, with the Redis server's when one serves it.
func (b *bench) cpuOf(px *proc) time.Duration {
	c := cpu(px.pid())
	if b.redis != nil {
		c += cpu(b.redis.pid())
	}
	return c
}

func (b *bench) csv(lines []string) string {
	path := filepath.Join(b.dir, fmt.Sprintf("users-%d.csv", time.Now().UnixNano()))
	os.WriteFile(path, []byte("SEQUENTIAL\n"+strings.Join(lines, "\n")+"\n"), 0o644)
	return path
}

// registrations registers every user once with digest at a high rate.
func (b *bench) registrations(which int, r *regResult) error {
	n := b.plan.regUsers
	px, err := b.startProxy(which, n, "never", true)
	if err != nil {
		return err
	}
	defer px.stop()
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("u%d;[authentication username=u%d password=p%d]", i, i, i)
	}
	time.Sleep(500 * time.Millisecond)
	m0 := pss(px.pid())
	c0 := b.cpuOf(px)
	res, err := runSIPp(b.dir, "register", 5*time.Minute, fmt.Sprintf("127.0.0.1:%d", proxyPort), "-sf", b.sippDir("register_csv.xml"),
		"-inf", b.csv(lines), "-p", fmt.Sprint(uacPort), "-i", "127.0.0.1", "-r", fmt.Sprint(b.plan.regRate), "-m", fmt.Sprint(n), "-l", "5000")
	if err != nil {
		return err
	}
	r.res = res
	r.cpu = b.cpuOf(px) - c0
	time.Sleep(300 * time.Millisecond)
	if res.Successful > 0 {
		r.memPerReg = float64(pss(px.pid())-m0) / float64(res.Successful)
	}
	if r.cpu > 0 {
		r.perCPUSec = float64(res.Successful) / r.cpu.Seconds()
	}
	r.rate = float64(res.Successful) / res.Elapsed.Seconds()
	r.registered = res.Successful
	return nil
}

// pin sets the CPU affinity of every thread of process pid (taskset
// -a); it reports whether that worked.
func pin(pid int, cpus string) bool {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, fmt.Sprint(pid)).CombinedOutput()
	if err != nil {
		log.Printf("taskset %s %d: %v: %s", cpus, pid, err, out)
		return false
	}
	return true
}

// pinSelf pins the bench itself (the media generator) to cpus, on a
// machine with two cores or more.
func pinSelf(cpus string) bool {
	return runtime.NumCPU() >= 2 && pin(os.Getpid(), cpus)
}

func allCPUs() string { return fmt.Sprintf("0-%d", runtime.NumCPU()-1) }

// mediaRelays names b.media's relays.
var mediaRelays = [3]string{"voxvisor", "voxvisor kernel", "rtpengine"}

// mediaRuns sets up N anchored calls and pumps RTP through the relay.
func (b *bench) mediaRuns(which int) error {
	for _, n := range b.plan.mediaCalls {
		var px *proc
		var err error
		sd, err := newSides()
		if err != nil {
			return err
		}
		var setup func(sd *sides, i int) (*call, error)
		var cleanup func()
		if which < 2 {
			px, err = b.startProxyKernel(0, 0, "always", []string{"off", "on"}[which], false)
			if err != nil {
				sd.close()
				return err
			}
			ua, err := newVoxUA(fmt.Sprintf("127.0.0.1:%d", proxyPort))
			if err != nil {
				px.stop()
				sd.close()
				return err
			}
			setup, cleanup = ua.setup, ua.close
		} else {
			px, err = startRtpengine(b.dir, 12223, 30000, 39999)
			if err != nil {
				sd.close()
				return err
			}
			ng := &ngClient{addr: "127.0.0.1:12223"}
			setup = func(sd *sides, i int) (*call, error) { return setupRtpengine(ng, sd, i) }
			cleanup = func() {}
		}
		if b.pinned {
			pin(px.pid(), "0")
		}
		m0 := pss(px.pid())
		var calls []*call
		for i := 0; i < n; i++ {
			c, err := setup(sd, i)
			if err != nil {
				cleanup()
				px.stop()
				sd.close()
				return fmt.Errorf("set up call %d of %d: %w", i+1, n, err)
			}
			calls = append(calls, c)
		}
		perCall := float64(pss(px.pid())-m0) / float64(n)
		res := pump(sd, calls, b.plan.mediaFor, func() time.Duration { return cpu(px.pid()) })
		if which == 0 {
			b.notes = append(b.notes, fmt.Sprintf("voxvisor memory per active anchored call at %d calls: %.1f KiB (PSS growth during setup / calls)", n, perCall/1024))
		}
		b.media[which] = append(b.media[which], res)
		cleanup()
		px.stop()
	}
	return nil
}

func version(cmd ...string) string {
	out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown"
	}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return "unknown"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			_, v, _ := strings.Cut(l, ":")
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
