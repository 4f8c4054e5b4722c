package admin

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// history samples a few of the switch's metrics for the dashboard's
// charts: the last historyLen samples, one every historyEvery.
type history struct {
	reg *prometheus.Registry

	mu      sync.Mutex
	samples []sample // guarded by mu; oldest first
}

type sample struct {
	at                          time.Time
	started, packets            float64 // counters: charted as rates
	calls, registrations, peers float64 // gauges
}

const (
	historyLen   = 120
	historyEvery = 5 * time.Second
)

// run samples until ctx ends.
func (h *history) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	h.take()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.take()
		}
	}
}

func (h *history) take() {
	if h.reg == nil {
		return
	}
	families, err := h.reg.Gather()
	if err != nil {
		return
	}
	sum := func(name string) float64 {
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
			total := 0.0
			for _, m := range f.GetMetric() {
				switch {
				case m.Counter != nil:
					total += m.Counter.GetValue()
				case m.Gauge != nil:
					total += m.Gauge.GetValue()
				}
			}
			return total
		}
		return 0
	}
	s := sample{at: time.Now(), started: sum("voxvisor_calls_started_total"), packets: sum("voxvisor_relay_packets_total"),
		calls: sum("voxvisor_relay_sessions"), registrations: sum("voxvisor_registrations"), peers: sum("voxvisor_trunk_peer_up")}
	h.mu.Lock()
	h.samples = append(h.samples, s)
	if len(h.samples) > historyLen {
		h.samples = h.samples[len(h.samples)-historyLen:]
	}
	h.mu.Unlock()
}

// chart is one small line chart: an SVG polyline over Width×Height.
type chart struct {
	Title, Now string
	Points     string
	Width      int
	Height     int
}

func (h *history) charts() []chart {
	h.mu.Lock()
	s := append([]sample(nil), h.samples...)
	h.mu.Unlock()
	rate := func(f func(sample) float64) func(i int) float64 {
		return func(i int) float64 {
			if i == 0 {
				return 0
			}
			dt := s[i].at.Sub(s[i-1].at).Seconds()
			if dt <= 0 {
				return 0
			}
			return max(f(s[i])-f(s[i-1]), 0) / dt
		}
	}
	gauge := func(f func(sample) float64) func(i int) float64 { return func(i int) float64 { return f(s[i]) } }
	return []chart{
		line("Calls per second", len(s), rate(func(x sample) float64 { return x.started })),
		line("Active calls (anchored)", len(s), gauge(func(x sample) float64 { return x.calls })),
		line("Registrations", len(s), gauge(func(x sample) float64 { return x.registrations })),
		line("Relay packets per second", len(s), rate(func(x sample) float64 { return x.packets })),
	}
}

func line(title string, n int, v func(i int) float64) chart {
	c := chart{Title: title, Width: 300, Height: 60, Now: "–"}
	if n == 0 {
		return c
	}
	top := 1.0
	for i := range n {
		top = max(top, v(i))
	}
	var b strings.Builder
	for i := range n {
		x := float64(c.Width) * float64(i) / float64(max(historyLen-1, 1))
		y := float64(c.Height-2) - float64(c.Height-4)*v(i)/top
		fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
	}
	c.Points = strings.TrimSpace(b.String())
	c.Now = strconv.FormatFloat(v(n-1), 'f', -1, 64)
	if f := v(n - 1); f != float64(int64(f)) {
		c.Now = strconv.FormatFloat(f, 'f', 1, 64)
	}
	return c
}
