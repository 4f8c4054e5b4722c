package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	siplib "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip"
)

// RegState is a trunk's registration to its carrier, as the logs and the
// admin API show it.
type RegState struct {
	Registered bool      `json:"registered"`
	Expires    time.Time `json:"expires,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	Since      time.Time `json:"since"`
}

// Registrations keeps every trunk with register: true registered: it
// refreshes at 80% of the granted expiry and retries with exponential
// backoff (1 s to 60 s, with jitter) when the carrier fails.
type Registrations struct {
	from map[string]regListener // by transport
	log  *slog.Logger

	// Timeout bounds one REGISTER transaction (default 8 s).
	Timeout time.Duration
	// Leases, in a cluster, let one node at a time register each trunk;
	// nil: this node registers every trunk. Set before Start.
	Leases Leases

	wg     sync.WaitGroup
	states sync.Map // trunk name -> *atomic.Pointer[RegState]

	latest   atomic.Pointer[Gateway] // the gateway Update was last given
	updating sync.Mutex              // one Update at a time, applying latest

	mu     sync.Mutex
	parent context.Context     // guarded by mu; set by Start
	loops  map[string]*regLoop // guarded by mu; by trunk name
	closed bool                // guarded by mu; set by Wait: no loop starts after
}

// regLoop is one trunk's registration goroutine.
type regLoop struct {
	key    string // what the registration depends on: a change restarts it
	cancel context.CancelFunc
	done   chan struct{}
}

// regListener is where REGISTERs over one transport come from.
type regListener struct {
	client  *sipgo.Client
	contact siplib.Uri // our address, in Contact
	laddr   siplib.Addr
}

// NewRegistrations prepares registrations sent through ua from the first
// listener of each transport: a trunk registers over its first peer's
// transport, with that listener in Via and Contact.
func NewRegistrations(ua *sipgo.UserAgent, listeners []sip.Listener, log *slog.Logger) (*Registrations, error) {
	rg := &Registrations{from: map[string]regListener{}, log: log, Timeout: 8 * time.Second, loops: map[string]*regLoop{}}
	for _, l := range listeners {
		if _, ok := rg.from[l.Transport]; ok {
			continue
		}
		c, err := sipgo.NewClient(ua, sipgo.WithClientHostname(l.Host), sipgo.WithClientPort(l.Port))
		if err != nil {
			return nil, fmt.Errorf("registration client: %w", err)
		}
		contact := siplib.Uri{Scheme: "sip", Host: l.Host, Port: l.Port, UriParams: siplib.NewParams()}
		if l.Transport != "udp" {
			contact.UriParams.Add("transport", l.Transport)
		}
		rg.from[l.Transport] = regListener{client: c, contact: contact,
			laddr: siplib.Addr{IP: l.Bound.Addr().AsSlice(), Port: int(l.Bound.Port())}}
	}
	return rg, nil
}

// CanRegister checks that every registration g asks for has a listener
// to go from.
func (rg *Registrations) CanRegister(g *Gateway) error {
	if g == nil {
		return nil
	}
	for _, t := range g.Trunks() {
		if !t.Register {
			continue
		}
		if err := rg.canRegister(t); err != nil {
			return err
		}
	}
	return nil
}

func (rg *Registrations) canRegister(t *Trunk) error {
	if len(t.Peers) == 0 {
		return fmt.Errorf("trunk %s has no peer to register to", t.Name)
	}
	if _, ok := rg.from[t.Peers[0].Transport]; !ok {
		return fmt.Errorf("trunk %s registers over %s, and there is no %s listener in sip.listen", t.Name, t.Peers[0].Transport, t.Peers[0].Transport)
	}
	return nil
}

// Start registers each trunk of g that asks for it until ctx ends, then
// unregisters. Wait waits for that.
func (rg *Registrations) Start(ctx context.Context, g *Gateway) {
	rg.mu.Lock()
	rg.parent = ctx
	rg.mu.Unlock()
	rg.Update(g)
}

// Update makes the running registrations those of g (a reload): a trunk
// whose registration is unchanged keeps it; a new one registers; a
// removed or changed one unregisters (and a changed one registers
// again). It returns once the unregistrations are sent. Before Start it
// does nothing. Updates run one at a time, each applying the newest
// gateway given, so reloads in quick succession end in the last one.
func (rg *Registrations) Update(g *Gateway) {
	rg.latest.Store(g)
	rg.updating.Lock()
	defer rg.updating.Unlock()
	g = rg.latest.Load()
	want := map[string]*Trunk{}
	if g != nil {
		for _, t := range g.Trunks() {
			if t.Register && len(t.Peers) > 0 && t.Credentials != nil {
				want[t.Name] = t
			}
		}
	}
	rg.mu.Lock()
	if rg.parent == nil || rg.closed || rg.parent.Err() != nil {
		rg.mu.Unlock()
		return
	}
	var stopped []*regLoop
	for name, l := range rg.loops {
		if t, ok := want[name]; !ok || regKey(t) != l.key {
			l.cancel()
			stopped = append(stopped, l)
			delete(rg.loops, name)
			if !ok {
				rg.states.Delete(name)
			}
		}
	}
	rg.mu.Unlock()
	for _, l := range stopped {
		<-l.done // unregistered: a changed trunk registers afresh below
	}
	rg.mu.Lock()
	defer rg.mu.Unlock()
	if rg.closed || rg.parent.Err() != nil {
		return
	}
	for name, t := range want {
		if _, ok := rg.loops[name]; ok {
			continue
		}
		st := &atomic.Pointer[RegState]{}
		st.Store(&RegState{Since: time.Now(), LastError: "not yet registered"})
		rg.states.Store(name, st)
		ctx, cancel := context.WithCancel(rg.parent)
		l := &regLoop{key: regKey(t), cancel: cancel, done: make(chan struct{})}
		rg.loops[name] = l
		rg.wg.Add(1)
		go func() {
			defer rg.wg.Done()
			defer close(l.done)
			defer cancel()
			rg.run(ctx, t, st)
		}()
	}
}

// regKey is what a trunk's registration depends on.
func regKey(t *Trunk) string {
	p, c := t.Peers[0], t.Credentials
	return fmt.Sprintf("%s|%d|%s|%s|%s|%s|%d", p.Host, p.Port, p.Transport, c.Username, c.Password, c.Realm, t.RegExpires)
}

// Wait waits for every registration loop to end (after Start's context
// did); no loop starts after it is called.
func (rg *Registrations) Wait() {
	rg.mu.Lock()
	rg.closed = true
	rg.mu.Unlock()
	rg.wg.Wait()
}

// State returns a trunk's registration state.
func (rg *Registrations) State(trunk string) (RegState, bool) {
	v, ok := rg.states.Load(trunk)
	if !ok {
		return RegState{}, false
	}
	return *v.(*atomic.Pointer[RegState]).Load(), true
}

// Leases give one node of a cluster a named right at a time (the
// trunk's registration at its carrier): Hold takes or renews it for this
// node and reports whether this node has it; an error says the cluster
// cannot be asked.
type Leases interface {
	Hold(ctx context.Context, name string) (bool, error)
}

// TrunkLease prefixes the name of a trunk's registration lease: the
// lease "trunkreg:carrier" is the right to register trunk carrier.
const TrunkLease = "trunkreg:"

// byAnother is the registration state of a trunk another node registers.
const byAnother = "registered by another node of the cluster"

// leaseEvery is how often a registration loop renews (or tries to take)
// its trunk's lease in a cluster: well inside the lease's lifetime.
const leaseEvery = 2 * time.Second

func (rg *Registrations) run(ctx context.Context, t *Trunk, st *atomic.Pointer[RegState]) {
	backoff := time.Second
	callID := fmt.Sprintf("vxreg-%s-%d", t.Name, rand.Int64())
	cseq := uint32(1)
	due := time.Now() // the next REGISTER
	holder := rg.Leases == nil
	for {
		if rg.Leases != nil {
			// Exactly one node registers a trunk: the lease's holder. When
			// the cluster cannot be asked, each node keeps doing what it did.
			held, err := rg.Leases.Hold(ctx, TrunkLease+t.Name)
			switch {
			case err != nil:
			case held && !holder:
				holder, due = true, time.Now()
				rg.log.Info("trunk registration: this node holds it now", "trunk", t.Name)
			case !held && (holder || st.Load().LastError != byAnother):
				if holder {
					rg.log.Info("trunk registration: another node holds it", "trunk", t.Name)
				}
				holder = false
				rg.unregister(t, callID, &cseq, st)
				st.Store(&RegState{LastError: byAnother, Since: time.Now()})
			}
		}
		if holder && !time.Now().Before(due) {
			granted, err := rg.register(ctx, t, callID, &cseq, t.RegExpires)
			prev := st.Load()
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				if prev.Registered || prev.LastError != err.Error() {
					rg.log.Warn("trunk registration failing", "trunk", t.Name, "error", err, "retry_in", backoff)
				}
				st.Store(&RegState{LastError: err.Error(), Since: time.Now()})
				due = time.Now().Add(backoff + time.Duration(rand.Int64N(int64(backoff/4)+1)))
				backoff = min(backoff*2, time.Minute)
			} else {
				if !prev.Registered {
					rg.log.Info("trunk registered", "trunk", t.Name, "expires", granted)
				}
				st.Store(&RegState{Registered: true, Expires: time.Now().Add(granted), Since: time.Now()})
				backoff = time.Second
				due = time.Now().Add(granted * 8 / 10)
			}
		}
		wait := time.Until(due)
		if rg.Leases != nil {
			wait = min(max(wait, 0), leaseEvery)
			if !holder {
				wait = leaseEvery
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			continue
		}
		break
	}
	rg.unregister(t, callID, &cseq, st)
}

// unregister removes this node's registration of t at the carrier, if it
// has one.
func (rg *Registrations) unregister(t *Trunk, callID string, cseq *uint32, st *atomic.Pointer[RegState]) {
	if !st.Load().Registered {
		return
	}
	uctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	rg.register(uctx, t, callID, cseq, 0)
	cancel()
	st.Store(&RegState{Since: time.Now(), LastError: "unregistered"})
}

// ErrRegistration wraps a carrier's refusal.
var ErrRegistration = errors.New("registration refused")

// register sends one REGISTER (answering a digest challenge) and returns
// the expiry the carrier granted.
func (rg *Registrations) register(ctx context.Context, t *Trunk, callID string, cseq *uint32, expires int) (time.Duration, error) {
	if len(t.Peers) == 0 || t.Credentials == nil {
		return 0, errors.New("trunk has no peer or no credentials")
	}
	peer := t.Peers[0]
	via, ok := rg.from[peer.Transport]
	if !ok {
		return 0, rg.canRegister(t)
	}
	host := peer.Host
	if t.Credentials.Realm != "" {
		host = t.Credentials.Realm
	}
	aor := siplib.Uri{Scheme: "sip", User: t.Credentials.Username, Host: host}
	req := siplib.NewRequest(siplib.REGISTER, siplib.Uri{Scheme: "sip", Host: peer.Host, Port: peer.Port})
	from := &siplib.FromHeader{Address: aor, Params: siplib.NewParams()}
	from.Params.Add("tag", callID)
	req.AppendHeader(from)
	req.AppendHeader(&siplib.ToHeader{Address: aor, Params: siplib.NewParams()})
	cid := siplib.CallIDHeader(callID)
	req.AppendHeader(&cid)
	*cseq++
	req.AppendHeader(&siplib.CSeqHeader{SeqNo: *cseq, MethodName: siplib.REGISTER})
	contact := via.contact
	contact.User = t.Credentials.Username
	req.AppendHeader(&siplib.ContactHeader{Address: contact})
	exp := siplib.ExpiresHeader(expires)
	req.AppendHeader(&exp)
	req.SetTransport(strings.ToUpper(peer.Transport))
	req.SetDestination(fmt.Sprintf("%s:%d", peer.Host, peer.Port))
	if peer.Transport == "udp" {
		req.Laddr = via.laddr
	}

	ctx, cancel := context.WithTimeout(ctx, rg.Timeout)
	defer cancel()
	res, err := via.client.Do(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("REGISTER to %s:%d: %w", peer.Host, peer.Port, err)
	}
	if res.StatusCode == 401 || res.StatusCode == 407 {
		res, err = via.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: t.Credentials.Username, Password: t.Credentials.Password})
		if err != nil {
			return 0, fmt.Errorf("REGISTER to %s:%d with credentials: %w", peer.Host, peer.Port, err)
		}
		*cseq = req.CSeq().SeqNo
	}
	if res.StatusCode != 200 {
		return 0, fmt.Errorf("%w: %d %s", ErrRegistration, res.StatusCode, res.Reason)
	}
	return grantedExpiry(res, expires), nil
}

// grantedExpiry reads the expiry the registrar granted our contact.
func grantedExpiry(res *siplib.Response, asked int) time.Duration {
	secs := asked
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
			secs = n
		}
	}
	for _, h := range res.GetHeaders("Contact") {
		if c, ok := h.(*siplib.ContactHeader); ok {
			if v, ok := c.Params.Get("expires"); ok {
				if n, err := strconv.Atoi(v); err == nil {
					secs = n
				}
			}
		}
	}
	if secs < 2 {
		secs = 2
	}
	return time.Duration(secs) * time.Second
}

var (
	trunkChannelsDesc = prometheus.NewDesc(metrics.Namespace+"_trunk_channels", "Channels in use on a trunk.", []string{"trunk"}, nil)
	trunkRegDesc      = prometheus.NewDesc(metrics.Namespace+"_trunk_registered", "1 when the trunk is registered to its carrier (trunks with register: true).", []string{"trunk"}, nil)
)

// TrunkCollector reports each trunk of the running gateway (current is
// read at each scrape, so trunks a reload adds or removes appear or go):
// its channels, and for a registering trunk whether regs has it
// registered.
func TrunkCollector(current func() *Gateway, regs *Registrations) prometheus.Collector {
	return trunkCollector{current, regs}
}

type trunkCollector struct {
	current func() *Gateway
	regs    *Registrations
}

func (trunkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- trunkChannelsDesc
	ch <- trunkRegDesc
}

func (c trunkCollector) Collect(ch chan<- prometheus.Metric) {
	gw := c.current()
	if gw == nil {
		return
	}
	for _, t := range gw.Trunks() {
		ch <- prometheus.MustNewConstMetric(trunkChannelsDesc, prometheus.GaugeValue, float64(t.Channels()), t.Name)
		if !t.Register {
			continue
		}
		v := 0.0
		if st, _ := c.regs.State(t.Name); st.Registered {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(trunkRegDesc, prometheus.GaugeValue, v, t.Name)
	}
}
