package proxy

import (
	"context"
	"errors"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
)

// Hook sees every request the proxy forwards and every response it
// relays: media anchoring (internal/anchor) rewrites SDP through it, the
// gateway keeps CDRs and channels with it. The proxy never reads a body.
type Hook interface {
	// Request is called once before r is forwarded as out; it may rewrite
	// out's body (an offer, or the answer in an ACK). A *sip.StatusError
	// (488, 503) rejects the request.
	Request(r *sip.Request, out *siplib.Request) error
	// Response is called for each response to r before it goes upstream;
	// it may rewrite res's body.
	Response(r *sip.Request, res *siplib.Response) error
	// Done is called when r's transaction is over, with the final status
	// sent upstream (487 when the caller cancelled).
	Done(r *sip.Request, status int)
}

// AddHook installs a hook. Hooks run in the order added; Done runs in
// the order added too, so a hook that reads media statistics goes before
// the anchor that releases them. Call before serving.
func (p *Proxy) AddHook(h Hook) { p.hooks = append(p.hooks, h) }

func (p *Proxy) hookRequest(r *sip.Request, out *siplib.Request) error {
	if r.Hop {
		return nil // the node the call came from anchors it
	}
	for _, h := range p.hooks {
		if err := h.Request(r, out); err != nil {
			return err
		}
	}
	return nil
}

func (p *Proxy) hookResponse(r *sip.Request, res *siplib.Response) error {
	if r.Hop {
		return nil
	}
	for _, h := range p.hooks {
		if err := h.Response(r, res); err != nil {
			return err
		}
	}
	return nil
}

func (p *Proxy) hookDone(r *sip.Request, status int) {
	if r.Hop {
		return
	}
	for _, h := range p.hooks {
		h.Done(r, status)
	}
}

// Originate sends a request the proxy itself creates (a BYE ending a
// dead call) to dest over transport, and waits for its final response.
func (p *Proxy) Originate(ctx context.Context, req *siplib.Request, dest, transport string) (int, error) {
	outL, ok := p.self.Listener(transport)
	if !ok {
		return 0, errors.New("no " + transport + " listener")
	}
	via := &siplib.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transportUpper(transport),
		Host: outL.Host, Port: outL.Port, Params: siplib.NewParams()}
	via.Params.Add("branch", newBranchID("o"))
	via.Params.Add("rport", "")
	req.PrependHeader(via)
	if req.MaxForwards() == nil {
		mf := siplib.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
	}
	req.SetDestination(dest)
	req.SetTransport(transportUpper(transport))
	if transport == "udp" {
		req.Laddr = siplib.Addr{IP: outL.Bound.Addr().AsSlice(), Port: int(outL.Bound.Port())}
	}
	ctx, cancel := context.WithTimeout(ctx, 32*time.Second)
	defer cancel()
	tx, err := p.client.Request(ctx, req)
	if err != nil {
		return 0, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res.StatusCode, nil
			}
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return 0, err
			}
			return 0, siplib.ErrTransactionTerminated
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
