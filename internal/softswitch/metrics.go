package softswitch

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/provisioning/firewall"
	"github.com/voxvisor/voxvisor/sip/location"
)

// metrics registers voxvisor's Prometheus metrics: each component
// exports its own, read from it when scraped.
func (sw *Switch) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		sw.Server.Collector(),
		sw.Guard.Collector(),
		sw.Auth.Collector(),
		sw.Registrar.Collector(),
		sw.Pinger.Collector(),
		sw.Proxy.Collector(),
		sw.Dialogs.Collector(),
		sw.Relay.Collector(),
		sw.Anchor.Collector(),
		sw.CDRs.Collector(),
		gateway.TrunkCollector(sw.Gateway, sw.Registrations),
		sw.Health.Collector(),
	)
	if r, ok := sw.locationBackend.(*location.Redis); ok {
		reg.MustRegister(r.Collector())
	}
	if sw.Members != nil {
		reg.MustRegister(sw.Members.Collector())
	}
	if f := sw.firewall; f != nil {
		reg.MustRegister(firewall.Collector(f.fw, f.rules, sw.log))
	}
	return reg
}
