package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/dialog"
)

// branchEvent is what a branch's reader reports to the call loop.
type branchEvent struct {
	b   *branch
	res *siplib.Response // nil with err
	err error            // the transaction ended without a final response
}

// branch is one forwarded copy of a request and its client transaction.
// Its fields are owned by the call loop goroutine.
type branch struct {
	req           *siplib.Request
	tx            siplib.ClientTransaction
	target        target
	authed        bool // already answered the next hop's challenge
	provisional   bool // a 1xx arrived: CANCEL may be sent
	cancelPending bool // cancel as soon as a 1xx arrives
	cancelled     bool
	done          bool
}

// newBranchID returns a branch for a copy of a request whose loop key
// (sip.LoopKey of the request as received) is key, so the copy is
// recognised if it ever comes back unchanged.
func newBranchID(key string) string {
	var b [10]byte
	rand.Read(b[:])
	return sip.BranchPrefix + key + "." + hex.EncodeToString(b[:])
}

// maxHops caps Max-Forwards on what we forward (as Kamailio's maxfwd
// max_limit does): a loop the Via check misses still ends quickly.
const maxHops = 70

// setMaxForwards gives out its own Max-Forwards header, one less than
// in (sipgo shares the parsed header between clones, so decrementing it
// in place would count every branch against the others), at most maxHops.
func setMaxForwards(out *siplib.Request, in uint32) {
	for _, h := range out.Headers() {
		if strings.EqualFold(h.Name(), "Max-Forwards") {
			out.RemoveHeader(h.Name())
			break
		}
	}
	n := min(in, maxHops+1) - 1
	v := siplib.MaxForwardsHeader(n)
	out.AppendHeader(&v)
}

// prepare turns fwd into the copy sent to t: Request-URI, Max-Forwards,
// Record-Route, our Via, destination and local address (RFC 3261 §16.6).
func (p *Proxy) prepare(r *sip.Request, fwd *siplib.Request, t target, addRR bool, share bool) (*siplib.Request, error) {
	out := fwd
	if share {
		// Several branches: each gets its own copy.
		out = fwd.Clone()
		out.SetBody(fwd.Body())
	}
	if t.uri.Host != "" {
		out.Recipient = t.uri
	}
	hops := uint32(maxHops + 1)
	if mf := r.MaxForwards(); mf != nil {
		hops = mf.Val()
	}
	if hops == 0 {
		// Only an ACK gets here with none left (Sanity answers the rest 483).
		return nil, errDrop
	}
	setMaxForwards(out, hops)
	outL, ok := p.self.Listener(t.transport)
	if t.transport == "udp" && t.local.IsValid() {
		// A NATed contact's router lets in only what comes from the
		// socket the contact registered to.
		if l, found := p.self.ListenerAt("udp", t.local); found {
			outL = l
		}
	}
	if !ok {
		return nil, &sip.StatusError{Code: 503, Reason: "No " + t.transport + " Listener", Err: errors.New("no listener for transport " + t.transport)}
	}
	if len(t.route) > 0 {
		// The contact's Path (RFC 3327) leads to it: that Route set,
		// first hop on top, replaces whatever Route the request carried.
		for out.RemoveHeader("Route") {
		}
		hs := t.routeHeaders()
		for i := len(hs) - 1; i >= 0; i-- {
			out.PrependHeader(hs[i])
		}
	}
	if addRR {
		inL, _ := p.self.Listener(r.Transport)
		dest, _ := netip.ParseAddrPort(t.dest)
		// Double Record-Route (RFC 5658): the top entry faces the callee,
		// the one below it faces the caller; each remembers its side's flow.
		secure := r.Recipient.IsEncrypted()
		callID := r.CallID().Value()
		out.PrependHeader(p.recordRoute(inL, flowToken{transport: r.Transport, addr: r.Source}, callID, secure))
		out.PrependHeader(p.recordRoute(outL, flowToken{transport: t.transport, addr: dest}, callID, secure))
	}
	via := &siplib.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transportUpper(t.transport),
		Host: outL.Host, Port: outL.Port, Params: siplib.NewParams(),
	}
	via.Params.Add("branch", newBranchID(r.LoopKey()))
	via.Params.Add("rport", "")
	out.PrependHeader(via)
	out.SetDestination(t.dest)
	out.SetTransport(transportUpper(t.transport))
	if t.transport == "udp" {
		out.Laddr = siplib.Addr{IP: outL.Bound.Addr().AsSlice(), Port: int(outL.Bound.Port())}
	}
	return out, nil
}

func transportUpper(t string) string {
	switch t {
	case "tcp":
		return "TCP"
	case "tls":
		return "TLS"
	}
	return "UDP"
}

func isDialogCreating(m siplib.RequestMethod) bool {
	switch m {
	case siplib.INVITE, siplib.SUBSCRIBE, siplib.REFER, siplib.NOTIFY:
		return true
	}
	return false
}

// forwardStateless sends an ACK (or anything without a transaction) on.
func (p *Proxy) forwardStateless(r *sip.Request, fwd *siplib.Request, t target) error {
	out, err := p.prepare(r, fwd, t, false, false)
	if err != nil {
		return err
	}
	p.Stateless.Add(1)
	if err := p.txl.Transport().WriteMsg(out); err != nil {
		p.log.Debug("stateless forward failed", "method", string(r.Method), "dest", t.dest, "error", err)
	}
	return errDrop
}

// forward sends fwd to every target on its own client transaction and
// relays responses upstream until the request is finished (§16.7).
//
// With relayFinal false a failed final response is returned rather than
// sent, so the caller can fail over to the next target.
func (p *Proxy) forward(ctx context.Context, r *sip.Request, fwd *siplib.Request, targets []target, relayFinal bool, c *call) (int, *siplib.Response, error) {
	rr := isDialogCreating(r.Method) && !hasToTag(r.Request)
	isInvite := r.Method == siplib.INVITE
	events := make(chan branchEvent, 4*len(targets)+4)
	bctx, cancelAll := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAll()

	var branches []*branch
	var lastErr error
	for _, t := range targets {
		switched := false
		if t.transport == "udp" && !t.flow && len(fwd.Body()) > 600 && len(fwd.String())+400 > 1300 {
			// RFC 3261 §18.1.1: too big for UDP once our headers are in.
			// Not for a phone's UDP flow: behind NAT only that reaches it.
			t.transport, switched = "tcp", true
		}
		out, err := p.prepare(r, fwd, t, rr, len(targets) > 1 || switched)
		var tx siplib.ClientTransaction
		if err == nil {
			tx, err = p.client.Request(bctx, out)
		}
		if err != nil && switched {
			// The next hop takes no TCP (many phones listen on UDP only):
			// §18.1.1 allows the request to go over UDP after all,
			// fragmented by IP, rather than not at all.
			p.log.Debug("large request: TCP failed, sending over UDP", "dest", t.dest, "error", err)
			t.transport = "udp"
			if out, err = p.prepare(r, fwd, t, rr, len(targets) > 1); err == nil {
				tx, err = p.client.Request(bctx, out)
			}
		}
		if err != nil {
			lastErr = err
			p.log.Debug("forward failed", "method", string(r.Method), "dest", t.dest, "error", err)
			continue
		}
		b := &branch{req: out, tx: tx, target: t}
		branches = append(branches, b)
		if isInvite {
			tx.OnRetransmission(func(res *siplib.Response) { p.relayStateless(r, res) })
		}
		go readBranch(b, events)
	}
	p.Forwarded.Add(1)
	if len(branches) == 0 {
		return 503, nil, &sip.StatusError{Code: 503, Reason: "Service Unavailable", Err: lastErr}
	}

	var (
		upstreamCancel = make(chan struct{})
		cancelledUp    bool
		answered       bool
		finals         []*siplib.Response
		pending        = len(branches)
		timerC         <-chan time.Time
	)
	var ended atomic.Bool // the switch ended the call while it rang
	if isInvite && r.Tx != nil {
		once := make(chan struct{}, 1)
		cancel := func() {
			select {
			case once <- struct{}{}:
				close(upstreamCancel)
			default:
			}
		}
		r.Tx.OnCancel(func(*siplib.Request) { cancel() })
		if c.dlg != nil && !hasToTag(r.Request) {
			// An operator, a drain or an expiry ending the call while it
			// rings cancels it as the caller's CANCEL would.
			c.dlg.OnEarlyEnd(func() {
				ended.Store(true)
				cancel()
			})
		}
		if p.cfg.RingTimeout > 0 {
			t := time.NewTimer(p.cfg.RingTimeout)
			defer t.Stop()
			timerC = t.C
		}
	}
	cancelBranches := func(except *branch) {
		for _, b := range branches {
			if b != except && !b.done && !b.cancelled {
				p.cancelBranch(b)
			}
		}
	}
	timedOut := false
	for pending > 0 {
		select {
		case <-upstreamCancel:
			upstreamCancel = nil
			cancelledUp = true
			cancelBranches(nil)
		case <-timerC:
			timerC = nil
			timedOut = true
			for _, b := range branches {
				if !b.done && !b.provisional {
					// Nothing heard from this branch: a CANCEL may not be
					// sent (§9.1), so it ends here, as Kamailio's fr_timer
					// does, instead of ringing on until Timer B.
					b.tx.Terminate()
				}
			}
			cancelBranches(nil)
		case ev := <-events:
			b := ev.b
			if ev.err != nil {
				b.done = true
				pending--
				code, reason := 408, "Request Timeout"
				if errors.Is(ev.err, siplib.ErrTransactionTransport) {
					code, reason = 503, "Service Unavailable"
				}
				// As if from the branch's next hop: built on the request
				// it was sent, so it carries our Via on top, which
				// upstream removes like any downstream response's.
				finals = append(finals, siplib.NewResponseFromRequest(b.req, code, reason, nil))
				continue
			}
			code := ev.res.StatusCode
			if code < 200 {
				b.provisional = true
				if b.cancelPending {
					p.cancelBranch(b)
				}
				if code > 100 && !answered && !cancelledUp {
					p.relay(r, ev.res)
				}
				continue
			}
			if (code == 401 || code == 407) && !b.authed && !cancelledUp && p.authRetry(r, b, ev.res, events, c) {
				continue // the branch goes on with credentials
			}
			b.done = true
			pending--
			if code < 300 {
				if !answered {
					p.answered(r, b, ev.res, c)
				}
				if !cancelledUp || !answered {
					p.relay(r, ev.res)
				}
				answered = true
				cancelBranches(b)
				continue
			}
			finals = append(finals, ev.res)
			if code >= 600 {
				cancelBranches(b)
			}
		}
	}
	switch {
	case answered:
		return 200, nil, nil
	case cancelledUp && ended.Load():
		// No CANCEL came from the caller: it is told here.
		return 487, nil, sip.Status(487, "Request Terminated")
	case cancelledUp:
		return 487, nil, nil // sipgo answered the caller's CANCEL with 487
	}
	best := bestResponse(finals)
	if best == nil || (timedOut && best.StatusCode == 487) {
		return 408, nil, sip.Status(408, "Request Timeout")
	}
	if relayFinal {
		p.relay(r, best)
	}
	return best.StatusCode, best, nil
}

// answered follows the first 2xx to r on branch b in r's dialog: an
// initial INVITE's answer (the callee, the session timer agreed, the
// CSeqs added on the way), or a session refresh (a re-INVITE or UPDATE).
func (p *Proxy) answered(r *sip.Request, b *branch, res *siplib.Response, c *call) {
	switch {
	case c.dlg != nil && r.Method == siplib.INVITE:
		dialog.AnswerTimer(b.req, res) // before it goes upstream
		if route := p.calleeRoute(res); len(route) > 0 {
			c.dlg.SetRoute(dialog.Callee, route)
		}
		// Known before the answer is told (its record, for another node
		// of a cluster to end the call with, names the trunk).
		if b.target.egress != nil {
			c.dlg.SetTrunk(b.target.egress.Name())
		}
		if c.dlg.Answered(res, time.Now()) {
			c.dlg.Shift.Store(b.req.CSeq().SeqNo - r.CSeq().SeqNo)
		}
	case hasToTag(r.Request) && (r.Method == siplib.INVITE || r.Method == siplib.UPDATE):
		if d, _ := p.dialogOf(r); d != nil {
			d.Refreshed(res, time.Now())
		}
	}
}

// calleeRoute is the route set from this switch towards the callee of a
// 2xx: its Record-Route entries in reverse order (RFC 3261 §12.1.2),
// past ours: the proxies on the callee's side, another node's hop.
func (p *Proxy) calleeRoute(res *siplib.Response) []siplib.Uri {
	hs := res.GetHeaders("Record-Route")
	var route []siplib.Uri
	for i := len(hs) - 1; i >= 0; i-- {
		rr, ok := hs[i].(*siplib.RecordRouteHeader)
		if !ok {
			return nil // one we cannot read: no route set rather than a wrong one
		}
		if len(route) == 0 && p.self.IsMe(rr.Address) {
			continue
		}
		route = append(route, *rr.Address.Clone())
	}
	return route
}

// forwardSerial tries targets one after another (trunk failover): on 408,
// a 5xx or a transport failure it moves to the next; a 2xx, a 6xx, any
// other 4xx or the caller's CANCEL ends the search. A trunk at its channel
// limit is skipped; 503 when no target is left.
func (p *Proxy) forwardSerial(ctx context.Context, r *sip.Request, fwd *siplib.Request, targets []target, c *call) (int, error) {
	var last *siplib.Response
	lastStatus := 503
	var lastErr error = &sip.StatusError{Code: 503, Reason: "All Trunks Busy", Headers: []siplib.Header{siplib.NewHeader("Retry-After", "10")}}
	for _, t := range targets {
		if t.egress != nil && !t.egress.Acquire() {
			continue
		}
		out := fwd.Clone()
		out.SetBody(fwd.Body())
		if t.egress != nil {
			t.egress.Prepare(out)
		}
		status, best, err := p.forward(ctx, r, out, []target{t}, false, c)
		if status >= 200 && status < 300 {
			if t.egress != nil {
				r.Trunk = t.egress.Name()
				c.hold(t.egress.Release) // until the call ends
			}
			return status, nil
		}
		if t.egress != nil {
			t.egress.Release()
		}
		if status == 487 {
			return status, err
		}
		last, lastStatus, lastErr = best, status, err
		if !(status == 408 || status >= 500 && status < 600 || status == 0) {
			break
		}
		p.log.Debug("failing over", "status", status, "dest", t.dest)
	}
	if last != nil {
		p.relay(r, last)
		return lastStatus, nil
	}
	return lastStatus, lastErr
}

// authRetry answers a trunk carrier's 401/407 with the trunk's
// credentials: the request goes again with one more CSeq, on a new
// transaction, on the same branch. It reports whether it did.
func (p *Proxy) authRetry(r *sip.Request, b *branch, res *siplib.Response, events chan<- branchEvent, c *call) bool {
	t := b.target.egress
	if t == nil {
		return false
	}
	retry := b.req.Clone()
	retry.SetBody(b.req.Body())
	name, value, ok := t.Authorize(res, string(retry.Method), retry.Recipient.String())
	if !ok {
		return false
	}
	retry.AppendHeader(siplib.NewHeader(name, value))
	retry.CSeq().SeqNo++
	if via := retry.Via(); via != nil {
		via.Params.Add("branch", newBranchID(r.LoopKey()))
	}
	retry.SetDestination(b.req.Destination())
	retry.SetTransport(b.req.Transport())
	retry.Laddr = b.req.Laddr
	tx, err := p.client.Request(context.Background(), retry)
	if err != nil {
		p.log.Debug("retry with credentials failed", "trunk", t.Name(), "error", err)
		return false
	}
	if hasToTag(r.Request) {
		if d, side := p.dialogOf(r); d != nil && side == dialog.Caller {
			d.Shift.Add(1) // the caller's later requests follow this one's CSeq
		}
	}
	b.req, b.tx, b.authed, b.provisional = retry, tx, true, false
	if retry.IsInvite() {
		tx.OnRetransmission(func(res *siplib.Response) { p.relayStateless(r, res) })
	}
	go readBranch(b, events)
	return true
}

// readBranch passes a branch's responses to the call loop until its final
// response, or until the transaction ends without one.
func readBranch(b *branch, events chan<- branchEvent) {
	for {
		select {
		case res := <-b.tx.Responses():
			events <- branchEvent{b: b, res: res}
			if res.StatusCode >= 200 {
				return
			}
		case <-b.tx.Done():
			err := b.tx.Err()
			if err == nil {
				err = siplib.ErrTransactionTerminated
			}
			events <- branchEvent{b: b, err: err}
			return
		}
	}
}

// cancelBranch sends CANCEL for an INVITE branch once a 1xx has arrived
// (RFC 3261 §9.1); before that it marks the branch to cancel later.
func (p *Proxy) cancelBranch(b *branch) {
	if !b.req.IsInvite() {
		return
	}
	if !b.provisional {
		b.cancelPending = true
		return
	}
	b.cancelled = true
	cancel := siplib.NewRequest(siplib.CANCEL, *b.req.Recipient.Clone())
	cancel.AppendHeader(b.req.Via().Clone())
	for _, h := range b.req.GetHeaders("Route") {
		cancel.AppendHeader(siplib.HeaderClone(h))
	}
	for _, name := range []string{"From", "To", "Call-ID"} {
		if h := b.req.GetHeader(name); h != nil {
			cancel.AppendHeader(siplib.HeaderClone(h))
		}
	}
	cancel.AppendHeader(&siplib.CSeqHeader{SeqNo: b.req.CSeq().SeqNo, MethodName: siplib.CANCEL})
	mf := siplib.MaxForwardsHeader(70)
	cancel.AppendHeader(&mf)
	cancel.SetDestination(b.req.Destination())
	cancel.SetTransport(b.req.Transport())
	cancel.Laddr = b.req.Laddr
	ctx, done := context.WithTimeout(context.Background(), 32*time.Second)
	tx, err := p.client.Request(ctx, cancel)
	if err != nil {
		done()
		p.log.Debug("CANCEL failed", "error", err)
		return
	}
	go func() {
		defer done()
		defer tx.Terminate()
		for {
			select {
			case res := <-tx.Responses():
				if res.StatusCode >= 200 {
					return
				}
			case <-tx.Done():
				return
			}
		}
	}()
}

// relay sends a downstream response upstream on the server transaction.
func (p *Proxy) relay(r *sip.Request, res *siplib.Response) {
	if r.Tx == nil {
		return
	}
	out := p.upstream(r, res)
	if err := r.Tx.Respond(out); err != nil {
		p.log.Debug("relay response failed", "status", res.StatusCode, "error", err)
	}
}

// relayStateless sends a 2xx retransmission upstream outside any transaction.
func (p *Proxy) relayStateless(r *sip.Request, res *siplib.Response) {
	p.Stateless.Add(1)
	out := p.upstream(r, res)
	if err := p.txl.Transport().WriteMsg(out); err != nil {
		p.log.Debug("relay retransmission failed", "error", err)
	}
}

// upstream returns the response sent upstream for res: without our Via,
// with its body anchored, addressed to where r came from, with r's CSeq
// (a retry with credentials sent a higher one downstream). The copy
// shares res's header values, which nothing changes in place (a body is
// set, a header replaced, never edited), except the CSeq it copies: a
// deep copy of every header was a fifth of what a call allocated and of
// what lingering transactions held. res itself is left as it is: sipgo
// still reads it on other goroutines.
func (p *Proxy) upstream(r *sip.Request, res *siplib.Response) *siplib.Response {
	out := siplib.NewResponse(res.StatusCode, res.Reason)
	out.SipVersion = res.SipVersion
	topVia := true
	for _, h := range res.Headers() {
		if topVia && h.Name() == "Via" { // ours
			topVia = false
			continue
		}
		switch h := h.(type) {
		case *siplib.CSeqHeader:
			cs := *h
			out.AppendHeader(&cs)
			continue
		}
		out.AppendHeader(h)
	}
	out.SetBody(res.Body())
	out.SetSource(res.Source())
	out.SetTransport(res.Transport())
	if cs, rcs := out.CSeq(), r.CSeq(); cs != nil && rcs != nil {
		cs.SeqNo = rcs.SeqNo
	}
	// Still carries the downstream source and transport here.
	if err := p.hookResponse(r, out); err != nil {
		p.log.Warn("a hook failed on a response", "status", res.StatusCode, "error", err)
	}
	out.SetDestination(r.Source.String())
	out.SetTransport(transportUpper(r.Transport))
	return out
}

// bestResponse picks the final response to send upstream (§16.7 step 6):
// a 6xx if any, else the lowest class, preferring anything to 487 and
// 408; 401/407 challenges are merged and 503 becomes 500.
func bestResponse(finals []*siplib.Response) *siplib.Response {
	var best *siplib.Response
	rank := func(res *siplib.Response) int {
		c := res.StatusCode
		switch {
		case c >= 600:
			return 0
		case c == 487 || c == 408:
			return 10000 + c
		}
		return c
	}
	for _, f := range finals {
		if best == nil || rank(f) < rank(best) {
			best = f
		}
	}
	if best == nil {
		return nil
	}
	if best.StatusCode == 401 || best.StatusCode == 407 {
		merged := best.Clone()
		merged.SetBody(best.Body())
		for _, f := range finals {
			if f == best || (f.StatusCode != 401 && f.StatusCode != 407) {
				continue
			}
			for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
				for _, h := range f.GetHeaders(name) {
					merged.AppendHeader(siplib.HeaderClone(h))
				}
			}
		}
		return merged
	}
	if best.StatusCode == 503 {
		out := best.Clone()
		out.StatusCode, out.Reason = 500, "Server Internal Error"
		out.AppendHeader(siplib.NewHeader("Warning", `399 voxvisor "every branch answered 503 (was `+strconv.Itoa(best.StatusCode)+`)"`))
		return out
	}
	return best
}
