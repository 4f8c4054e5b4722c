package dialog

import (
	"strconv"
	"strings"
	"time"

	siplib "github.com/emiago/sipgo/sip"
)

// RFC 4028 session timers, as a proxy applies them (§8): the phones keep
// their own timers; the proxy asks for one where the INVITE has none and
// learns the interval agreed, so that it can end a dialog whose refreshes
// stopped.

// OfferTimer puts Options.SessionExpires (or the INVITE's own Min-SE, if
// larger) on an initial INVITE that has no Session-Expires (§8.1). The
// phones keep whatever they asked for.
func (t *Table) OfferTimer(out *siplib.Request) {
	if t.opts.SessionExpires <= 0 || out.GetHeader("Session-Expires") != nil || out.GetHeader("x") != nil {
		return
	}
	se := t.opts.SessionExpires
	if min, ok := headerSeconds(out.GetHeader("Min-SE")); ok && min > se {
		se = min // never below what the caller said it takes (§8.1)
	}
	out.AppendHeader(siplib.NewHeader("Session-Expires", strconv.Itoa(int(se/time.Second))))
}

// AnswerTimer completes the 2xx res to the INVITE req (as forwarded, with
// OfferTimer's header): when the callee took no part in the timer (no
// Session-Expires in res) but the caller supports one, res gets the
// interval asked with refresher=uac and Require: timer (§8.2), so the
// caller refreshes and the dialog's end can be told.
func AnswerTimer(req *siplib.Request, res *siplib.Response) {
	if res.GetHeader("Session-Expires") != nil || res.GetHeader("x") != nil || !supports(req, "timer") {
		return
	}
	se, ok := headerSeconds(req.GetHeader("Session-Expires"))
	if !ok {
		se, ok = headerSeconds(req.GetHeader("x"))
	}
	if !ok || se <= 0 {
		return
	}
	res.AppendHeader(siplib.NewHeader("Session-Expires", strconv.Itoa(int(se/time.Second))+";refresher=uac"))
	res.AppendHeader(siplib.NewHeader("Require", "timer"))
}

// supports reports whether m lists option tag in a Supported (or its
// compact form k) header.
func supports(m *siplib.Request, tag string) bool {
	for _, name := range []string{"Supported", "k"} {
		for _, h := range m.GetHeaders(name) {
			for _, v := range strings.Split(h.Value(), ",") {
				if strings.EqualFold(strings.TrimSpace(v), tag) {
					return true
				}
			}
		}
	}
	return false
}
