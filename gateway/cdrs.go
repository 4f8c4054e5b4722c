package gateway

import (
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip/dialog"
)

// CDRs writes the CDR of every call when its dialog ends: it observes
// the dialog table (sip/dialog), which owns the call; subscribe it before
// the media anchor, so that the relay's statistics are still there.
type CDRs struct {
	w     *CDRWriter                   // may be nil: no CDRs
	media func(callID string) []Stream // the relay's statistics; may be nil
	log   *slog.Logger
	now   func() time.Time

	outcomes *prometheus.CounterVec // finished calls by status and direction
	started  *prometheus.CounterVec // calls begun, by direction
	answered *prometheus.CounterVec // calls answered, by direction
	// Each ended call's sides, where measured: sums and counts, so that
	// a dashboard divides one rate by the other for an average.
	mos, loss, jitter, rtt prometheus.Summary
}

var (
	_ dialog.Observer       = (*CDRs)(nil)
	_ dialog.StartObserver  = (*CDRs)(nil)
	_ dialog.AnswerObserver = (*CDRs)(nil)
)

// NewCDRs returns a CDR writer for the dialog table, reading each call's
// media statistics with media.
func NewCDRs(w *CDRWriter, media func(string) []Stream, log *slog.Logger) *CDRs {
	return &CDRs{w: w, media: media, log: log, now: time.Now,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "calls_total",
			Help: "Finished call attempts by final status and direction."}, []string{"status", "direction"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "calls_started_total",
			Help: "Call attempts begun (routed and accepted), by direction: with calls_answered_total, the answer-seizure ratio as it happens."}, []string{"direction"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "calls_answered_total",
			Help: "Calls answered (their first 2xx), by direction."}, []string{"direction"}),
		mos:    quality("call_mos", "MOS of each side of the ended calls' streams (simplified E-model; sides where nothing was measured are left out)."),
		loss:   quality("call_loss_percent", "Packet loss, percent, of each side of the ended calls' streams (the worse of its RTCP reports and the relay's count)."),
		jitter: quality("call_jitter_ms", "Interarrival jitter, ms, of each side of the ended calls' streams."),
		rtt:    quality("call_rtt_ms", "Round trip, ms, between the relay and each side of the ended calls' streams, where RTCP measured it."),
	}
}

func quality(name, help string) prometheus.Summary {
	return prometheus.NewSummary(prometheus.SummaryOpts{Namespace: metrics.Namespace, Name: name, Help: help})
}

// observeQuality adds the ended call's measured sides to the summaries.
func (c *CDRs) observeQuality(streams []Stream) {
	for _, s := range streams {
		for _, l := range []LegStats{s.Caller, s.Callee} {
			if l.MOS == 0 {
				continue // nothing measured
			}
			c.mos.Observe(l.MOS)
			c.loss.Observe(l.LossPct)
			c.jitter.Observe(l.JitterMS)
			if !slices.Contains(l.Missing, "rtt") {
				c.rtt.Observe(l.RTTMS)
			}
		}
	}
}

// Collector exports the calls begun, answered, and finished by status,
// by direction.
func (c *CDRs) Collector() prometheus.Collector {
	var m metrics.Set
	m.Add(c.outcomes)
	m.Add(c.started)
	m.Add(c.answered)
	m.Add(c.mos)
	m.Add(c.loss)
	m.Add(c.jitter)
	m.Add(c.rtt)
	return &m
}

// DialogStarted counts a call begun.
func (c *CDRs) DialogStarted(d *dialog.Dialog) { c.started.WithLabelValues(d.Direction).Inc() }

// DialogAnswered counts a call answered.
func (c *CDRs) DialogAnswered(d *dialog.Dialog) { c.answered.WithLabelValues(d.Direction).Inc() }

// DialogEnded writes d's CDR.
func (c *CDRs) DialogEnded(d *dialog.Dialog, e dialog.Ending) {
	cdr := c.Record(d)
	cdr.End = c.now()
	cdr.HangupBy, cdr.EndReason = e.By, e.Reason
	if cdr.Answer != nil {
		cdr.DurationSec = cdr.End.Sub(*cdr.Answer).Seconds()
	}
	c.outcomes.WithLabelValues(strconv.Itoa(cdr.Status), cdr.Direction).Inc()
	c.observeQuality(cdr.Media)
	if c.w == nil {
		return
	}
	if err := c.w.Write(cdr); err != nil {
		c.log.Error("CDR not written", "call", cdr.CallID, "error", err)
	}
}

// Record is d's CDR so far, with the relay's statistics now.
func (c *CDRs) Record(d *dialog.Dialog) CDR {
	in := d.Info()
	cdr := CDR{CallID: in.ID, From: in.From, To: in.Dialed, Direction: in.Direction, Trunk: in.Trunk,
		Start: in.Created, Status: in.Status, Reason: reason(in.Status)}
	if !in.Answered.IsZero() {
		at := in.Answered
		cdr.Answer = &at
	}
	if c.media != nil {
		cdr.Media = c.media(in.ID)
	}
	return cdr
}

// reason is the standard reason phrase of a final status.
func reason(code int) string {
	switch code {
	case 200:
		return "OK"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 480:
		return "Temporarily Unavailable"
	case 486:
		return "Busy Here"
	case 487:
		return "Request Terminated"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	case 503:
		return "Service Unavailable"
	case 603:
		return "Decline"
	}
	switch code / 100 {
	case 2:
		return "Success"
	case 4:
		return "Client Error"
	case 5:
		return "Server Error"
	case 6:
		return "Global Failure"
	}
	return ""
}
