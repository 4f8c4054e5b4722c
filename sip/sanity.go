package sip

import (
	"context"
	"net/netip"
	"strconv"
	"strings"

	siplib "github.com/emiago/sipgo/sip"
)

// Sanity is the first step of the pipeline (RFC 3261 §16.3): it rejects
// requests a proxy must not process (no hops left, looped, unsupported
// extensions) and records where the request really
// came from in the top Via (RFC 3581).
func Sanity(self *Self) Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, r *Request) error {
			if err := checkRequired(r.Request); err != nil {
				return err
			}
			if mf := r.MaxForwards(); mf != nil && mf.Val() == 0 && r.Method != siplib.ACK {
				// sipgo's own helper would wrap 0 to 4294967295: check here.
				if !(r.Method == siplib.OPTIONS && r.Recipient.User == "" && self.IsLocal(r.Recipient.Host)) {
					return Status(483, "Too Many Hops")
				}
			}
			if r.Method != siplib.ACK && r.Method != siplib.CANCEL && Looped(r.Request, self.SentByMe) {
				// It passed here before with the same Request-URI and
				// dialog identifiers: a loop, not a spiral (§16.3 step 4).
				return Status(482, "Loop Detected")
			}
			if h := r.GetHeader("Proxy-Require"); h != nil && r.Method != siplib.ACK && r.Method != siplib.CANCEL {
				return Status(420, "Bad Extension", siplib.NewHeader("Unsupported", h.Value()))
			}
			return next.ServeSIP(ctx, r)
		})
	}
}

// checkRequired validates the headers every later step relies on.
func checkRequired(r *siplib.Request) error {
	from, to, callID, cseq := r.From(), r.To(), r.CallID(), r.CSeq()
	switch {
	case from == nil:
		return Status(400, "Missing From")
	case to == nil:
		return Status(400, "Missing To")
	case callID == nil || callID.Value() == "":
		return Status(400, "Missing Call-ID")
	case cseq == nil:
		return Status(400, "Missing CSeq")
	case !strings.EqualFold(string(cseq.MethodName), string(r.Method)):
		return Status(400, "CSeq Method Mismatch")
	case r.SipVersion != "SIP/2.0":
		return Status(505, "Version Not Supported")
	}
	if _, ok := from.Params.Get("tag"); !ok && r.Method != siplib.REGISTER {
		// RFC 3261 §8.1.1.3: a From tag is mandatory; RFC 2543 peers omit it.
		// Accept, as most proxies do, but only with a usable Call-ID.
		if strings.TrimSpace(callID.Value()) == "" {
			return Status(400, "Missing From Tag")
		}
	}
	if r.Recipient.Scheme != "sip" && r.Recipient.Scheme != "sips" && r.Recipient.Scheme != "tel" {
		return Status(416, "Unsupported URI Scheme")
	}
	return nil
}

// MarkReceived adds received and rport to via, the top Via of a request
// that came from source (RFC 3581 §4), so responses find their way back.
// It is applied to the copy a proxy forwards, never to the request a
// server transaction holds (sipgo reads that one from its own timers).
func MarkReceived(via *siplib.ViaHeader, source netip.AddrPort) {
	if via == nil || !source.IsValid() {
		return
	}
	src := source.Addr().String()
	if _, ok := via.Params.Get("rport"); ok {
		via.Params.Add("rport", strconv.Itoa(int(source.Port())))
		via.Params.Add("received", src)
		return
	}
	if strings.Trim(via.Host, "[]") != src {
		via.Params.Add("received", src)
	}
}
