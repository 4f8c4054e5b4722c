package firewall

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/voxvisor/voxvisor/internal/metrics"
)

var (
	packetsDesc = prometheus.NewDesc(metrics.Namespace+"_firewall_packets_total",
		"Packets to a trunk's media endpoint its firewall rules accepted (from the trunk's peers) or dropped (from anyone else, logged with the trunk's prefix).",
		[]string{"trunk", "verdict"}, nil)
	inSyncDesc = prometheus.NewDesc(metrics.Namespace+"_firewall_rules_in_sync",
		"1 when a trunk's firewall rules in the kernel are as configured; 0 when missing or drifted (voxvisor provision apply repairs them).",
		[]string{"trunk"}, nil)
)

// Collector exports, per trunk, the packets its rules accepted and
// dropped and whether the rules are as configured. Each scrape asks the
// kernel through fw (one Check per trunk, changing nothing); a Check that
// fails leaves that trunk out and is logged once in a row.
func Collector(fw Backend, rules []*Rules, log *slog.Logger) prometheus.Collector {
	return &collector{fw: fw, rules: rules, log: log}
}

type collector struct {
	fw     Backend
	rules  []*Rules
	log    *slog.Logger
	failed atomic.Bool
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- inSyncDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, r := range c.rules {
		st, err := c.fw.Check(ctx, r)
		if err != nil {
			if c.failed.CompareAndSwap(false, true) {
				c.log.Warn("firewall counters unavailable", "backend", c.fw.Name(), "trunk", r.Trunk, "error", err)
			}
			continue
		}
		c.failed.Store(false)
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(st.Accepted), r.Trunk, "accepted")
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(st.Dropped), r.Trunk, "dropped")
		in := 0.0
		if st.Action == InSync {
			in = 1
		}
		ch <- prometheus.MustNewConstMetric(inSyncDesc, prometheus.GaugeValue, in, r.Trunk)
	}
}
