package softswitch_test

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
)

// optionsPeer is a carrier peer that answers OPTIONS with 200 while
// answering is set, and INVITEs with 486 Busy Here.
type optionsPeer struct {
	*sipPeer
	answering atomic.Bool
}

func newOptionsPeer(t *testing.T) *optionsPeer {
	t.Helper()
	p := &optionsPeer{}
	p.answering.Store(true)
	p.sipPeer = newSIPPeer(t, func(req string, _ *net.UDPAddr) (string, []string) {
		switch sipMethod(req) {
		case "INVITE":
			return "486 Busy Here", nil
		case "OPTIONS":
			if p.answering.Load() {
				return "200 OK", nil
			}
		}
		return "", nil
	})
	return p
}

// TestTrunkHealthFailover: a trunk's two peers are pinged with OPTIONS;
// the first stops answering and turns down (in the API and the metrics),
// a call then goes straight to the second (busy) without trying the
// first, and the first comes
// back up when it answers again. (SIPp cannot be the second peer: its
// UAS answers OPTIONS, -aa, only inside a call it counts.)
func TestTrunkHealthFailover(t *testing.T) {
	first, busy := newOptionsPeer(t), newOptionsPeer(t)
	second := busy.port()
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", RegExpires: 600,
			Peers: []config.Peer{
				{Host: "127.0.0.1", Port: first.port(), Transport: "udp"},
				{Host: "127.0.0.1", Port: second, Transport: "udp"},
			},
			Health: config.Health{Interval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond, DownAfter: 2, UpAfter: 2}}}
		c.DialPlan = []config.Rule{{Prefix: "0", Strip: 1, Prepend: "+49", Trunks: []string{"carrier"}}}
	})
	peerUp := func(port int) (up, known bool) {
		for _, p := range sw.Health.Peers() {
			if p.Peer == fmt.Sprintf("127.0.0.1:%d/udp", port) {
				return p.Up, !p.Checked.IsZero()
			}
		}
		return false, false
	}
	waitFor(t, 5*time.Second, "both peers pinged and up", func() bool {
		up, known := peerUp(first.port())
		up2, known2 := peerUp(second)
		return up && known && up2 && known2 && first.count("OPTIONS") >= 2
	})

	first.answering.Store(false)
	waitFor(t, 5*time.Second, "the first peer down", func() bool { up, known := peerUp(first.port()); return known && !up })
	_, body := sw.api(t, "GET", "/metrics")
	if !strings.Contains(body, fmt.Sprintf(`voxvisor_trunk_peer_up{peer="127.0.0.1:%d/udp",trunk="carrier"} 0`, first.port())) ||
		metric(body, `voxvisor_trunk_peer_state_changes_total{state="down"}`) != 1 {
		t.Fatalf("metrics do not show the first peer down:\n%s", grepLines(body, "trunk_peer"))
	}
	_, trunks := sw.api(t, "GET", "/api/v1/trunks")
	var infos []struct {
		Name  string `json:"name"`
		Peers []struct {
			Peer      string `json:"peer"`
			Up        bool   `json:"up"`
			LastError string `json:"last_error"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(trunks), &infos); err != nil || len(infos) != 1 || len(infos[0].Peers) != 2 ||
		infos[0].Peers[0].Up == infos[0].Peers[1].Up {
		t.Fatalf("GET /api/v1/trunks: %v\n%s", err, trunks)
	}

	if up, known := peerUp(second); !up || !known {
		t.Fatal("the second peer is not up")
	}
	sipp(t, sw.udp, "uac_busy.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if n := busy.count("INVITE"); n != 1 {
		t.Fatalf("the second peer got %d INVITEs, want the call", n)
	}
	if n := first.count("INVITE"); n != 0 {
		t.Fatalf("the down peer got %d INVITEs; failover should skip it", n)
	}

	first.answering.Store(true)
	waitFor(t, 5*time.Second, "the first peer up again", func() bool { up, _ := peerUp(first.port()); return up })
}
