package keepalive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
	"github.com/voxvisor/voxvisor/sip/location"
)

// SIPSender sends pings as OPTIONS requests on sipgo's transaction layer
// (the server's own, so they leave from its listening sockets).
type SIPSender struct {
	txl  *siplib.TransactionLayer // set once
	self *sip.Self
}

var _ Sender = (*SIPSender)(nil)

// NewSIPSender returns a sender on txl, from self's UDP listeners.
func NewSIPSender(txl *siplib.TransactionLayer, self *sip.Self) *SIPSender {
	return &SIPSender{txl: txl, self: self}
}

// ErrNoListener says there is no UDP socket to ping from.
var ErrNoListener = errors.New("no udp listener")

// Ping implements Sender: an OPTIONS with its own Call-ID and branch, to
// b's Contact as Request-URI, sent to b.Source from the socket b
// registered to.
func (s *SIPSender) Ping(ctx context.Context, b location.Binding) error {
	l, ok := s.listener(b)
	if !ok {
		return ErrNoListener
	}
	var ruri siplib.Uri
	if err := siplib.ParseUri(b.Contact, &ruri); err != nil {
		return err
	}
	req := siplib.NewRequest(siplib.OPTIONS, ruri)
	via := &siplib.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: l.Host, Port: l.Port, Params: siplib.NewParams()}
	via.Params.Add("branch", sip.BranchPrefix+"ka."+token(10))
	via.Params.Add("rport", "")
	req.AppendHeader(via)
	mf := siplib.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	from := &siplib.FromHeader{Address: siplib.Uri{Scheme: "sip", User: "keepalive", Host: s.self.Domain}, Params: siplib.NewParams()}
	from.Params.Add("tag", token(8))
	req.AppendHeader(from)
	req.AppendHeader(&siplib.ToHeader{Address: siplib.Uri{Scheme: ruri.Scheme, User: ruri.User, Host: ruri.Host, Port: ruri.Port}, Params: siplib.NewParams()})
	callID := siplib.CallIDHeader(token(12) + "@" + s.self.Domain)
	req.AppendHeader(&callID)
	req.AppendHeader(&siplib.CSeqHeader{SeqNo: 1, MethodName: siplib.OPTIONS})
	req.AppendHeader(siplib.NewHeader("User-Agent", "voxvisor"))
	cl := siplib.ContentLengthHeader(0)
	req.AppendHeader(&cl)
	req.SetDestination(b.Source)
	req.SetTransport("UDP")
	req.Laddr = siplib.Addr{IP: l.Bound.Addr().AsSlice(), Port: int(l.Bound.Port())}

	tx, err := s.txl.Request(ctx, req)
	if err != nil {
		return err
	}
	defer tx.Terminate()
	select {
	case <-tx.Responses():
		return nil // any status: something answered through the router
	case <-tx.Done():
		if err := tx.Err(); err != nil {
			return err
		}
		return siplib.ErrTransactionTerminated
	case <-ctx.Done():
		return ctx.Err()
	}
}

// listener is the UDP socket to ping b from: the one it registered to,
// else the first of its source's address family, else the first.
func (s *SIPSender) listener(b location.Binding) (sip.Listener, bool) {
	local, _ := netip.ParseAddrPort(b.Local)
	src, _ := netip.ParseAddrPort(b.Source)
	var first, family *sip.Listener
	for i := range s.self.Listeners {
		l := &s.self.Listeners[i]
		if l.Transport != "udp" {
			continue
		}
		if local.IsValid() && sameAddrPort(l.Bound, local) {
			return *l, true
		}
		if first == nil {
			first = l
		}
		if family == nil && l.Bound.Addr().Unmap().Is4() == src.Addr().Unmap().Is4() {
			family = l
		}
	}
	switch {
	case family != nil:
		return *family, true
	case first != nil:
		return *first, true
	}
	return sip.Listener{}, false
}

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
}

// LocalAddr returns the switch's UDP socket that sipgo last received
// from source on ("" when it knows none): for the registrar to record
// the socket a contact registered to (sipgo does not tell a handler).
func (s *SIPSender) LocalAddr(transport string, source netip.AddrPort) string {
	if transport != "udp" || s.txl == nil {
		return ""
	}
	pool := s.txl.Transport().Pool("udp")
	if pool == nil {
		return ""
	}
	c := pool.Get(source.String())
	if c == nil {
		return ""
	}
	defer c.TryClose()
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return ua.AddrPort().String()
	}
	return c.LocalAddr().String()
}

func token(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
