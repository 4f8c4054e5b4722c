// Package metrics lets a component export its own Prometheus metrics
// whose values it already keeps (atomic counters, table sizes): each is
// read when scraped, so the component pays nothing per event. A component
// returns a Set from its Collector method; the composition root registers
// them.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Namespace prefixes every metric name.
const Namespace = "voxvisor"

// Set is a group of metrics read from functions. It is a
// prometheus.Collector.
type Set struct{ cs []prometheus.Collector }

// Gauge adds a gauge read from f; labels are constant name, value pairs.
func (s *Set) Gauge(name, help string, f func() float64, labels ...string) {
	s.cs = append(s.cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: pairs(labels)}, f))
}

// Counter adds a counter read from f; labels are constant name, value
// pairs.
func (s *Set) Counter(name, help string, f func() float64, labels ...string) {
	s.cs = append(s.cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: pairs(labels)}, f))
}

// Add adds any other collector (a vector counted as events happen).
func (s *Set) Add(c prometheus.Collector) { s.cs = append(s.cs, c) }

// Describe implements prometheus.Collector.
func (s *Set) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.cs {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *Set) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.cs {
		c.Collect(ch)
	}
}

func pairs(kv []string) prometheus.Labels {
	if len(kv) == 0 {
		return nil
	}
	l := prometheus.Labels{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}
