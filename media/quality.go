package media

import "time"

// Quality is how one side of a stream sounds, estimated as rtpengine
// does from what the relay and the side's RTCP measured.
type Quality struct {
	LossPct  float64 // packets lost, percent: the worse of the side's reports and the relay's count
	JitterMS float64 // interarrival jitter, the worse of the two
	RTTMS    float64 // round trip between the relay and the side
	// MOS is the simplified E-model's mean opinion score, 1 (bad) to 4.5
	// (best); 0 when neither loss nor jitter was measured.
	MOS float64
	// Missing names the inputs that were not measured (and counted as
	// perfect): "rtcp_reports" (the side sent no RTCP receiver report:
	// loss and jitter are the relay's count of its RTP only), "relay_count"
	// (the kernel forwarded the side's RTP, the relay saw too little of it
	// to count: loss and jitter are the side's reports only), "rtt" (no
	// SR/RR round trip).
	Missing []string
}

// Quality estimates the side's call quality from its statistics.
func (s LegStats) Quality() Quality {
	var q Quality
	measured := false
	if s.Reports > 0 {
		q.LossPct, q.JitterMS = 100*s.ReportedFraction, s.ReportedJitterSecs*1000
		measured = true
	} else {
		q.Missing = append(q.Missing, "rtcp_reports")
	}
	// The relay's own count of the side's RTP: sequence gaps and jitter,
	// on the packets its sockets saw. Offloaded RTP goes past them.
	if s.Kernel == 0 && !s.UDPTL && s.Packets > 0 {
		lost := max(s.Lost, 0)
		q.LossPct = max(q.LossPct, 100*float64(lost)/float64(s.Packets+uint64(lost)))
		q.JitterMS = max(q.JitterMS, s.Jitter*1000)
		measured = true
	} else if s.Kernel > 0 {
		q.Missing = append(q.Missing, "relay_count")
	}
	if s.RTTKnown {
		q.RTTMS = float64(s.RTT) / float64(time.Millisecond)
	} else {
		q.Missing = append(q.Missing, "rtt")
	}
	if measured {
		q.MOS = MOS(q.RTTMS, q.JitterMS, q.LossPct)
	}
	return q
}

// MOS is the simplified E-model rtpengine uses: the effective latency is
// the round trip plus twice the jitter plus 10 ms (codec), R falls by
// 1/40 per ms below 160 ms and 1/10 per ms above, and by 2.5 per percent
// of loss; MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R), R held in 0..100.
func MOS(rttMS, jitterMS, lossPct float64) float64 {
	eff := rttMS + 2*jitterMS + 10
	var r float64
	if eff < 160 {
		r = 93.2 - eff/40
	} else {
		r = 93.2 - (eff-120)/10
	}
	r = min(max(r-2.5*lossPct, 0), 100)
	return 1 + 0.035*r + 0.000007*r*(r-60)*(100-r)
}
