package auth

import (
	"context"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip"
)

// Middleware is the pipeline step that says who the caller is: a request
// outside a dialog whose From claims one of our domains (isLocal) is
// challenged with 407, known user or not, so the answer does not tell
// which users exist; once proved, r.User is set (the proxy then keeps our
// credentials out of what it forwards; r itself is sipgo's and stays as
// it came). skip exempts requests whose
// identity comes from elsewhere (a carrier's INVITEs, known by their
// source). REGISTER is the registrar's, ACK and CANCEL carry no
// credentials: they pass.
func (a *Authenticator) Middleware(isLocal func(host string) bool, skip func(*sip.Request) bool) sip.Middleware {
	return func(next sip.Handler) sip.Handler {
		return sip.HandlerFunc(func(ctx context.Context, r *sip.Request) error {
			switch r.Method {
			case siplib.REGISTER, siplib.ACK, siplib.CANCEL:
				return next.ServeSIP(ctx, r)
			}
			from := r.From()
			if r.User != "" || from == nil || !isLocal(from.Address.Host) || r.To() == nil || r.To().Params.Has("tag") ||
				(skip != nil && skip(r)) {
				return next.ServeSIP(ctx, r)
			}
			user, err := a.Check(r.Request, from.Address.User, true)
			if err != nil {
				return err
			}
			r.User = user
			return next.ServeSIP(ctx, r)
		})
	}
}
