package softswitch_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
	"github.com/voxvisor/voxvisor/sip/dialog"
	"github.com/voxvisor/voxvisor/sip/siptest"
)

func (r *running) api(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.Admin.Addr()+path, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestMetricsAfterACall scrapes /metrics after a SIPp call.
func TestMetricsAfterACall(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	calleePort, callerPort := freePort(t), freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	sw.register(t, "1001", "udp", callerPort)
	wait := sippAsync(t, "uas.xml", calleePort, "udp")
	sipp(t, sw.udp, "uac_call.xml", callerPort, "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	wait()
	readCDRs(t, sw, 1)
	code, body := sw.api(t, "GET", "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`voxvisor_calls_total{direction="local",status="200"} 1`,
		"voxvisor_registrations 2",
		"voxvisor_calls_active 0",
		"voxvisor_relay_sessions 0",
		"voxvisor_relay_port_pairs 5000",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if m := metric(body, "voxvisor_sip_requests_total"); m < 8 {
		t.Errorf("sip requests = %v, want the call's and registrations' (>= 8)", m)
	}
	if m := metric(body, "voxvisor_auth_failures_total"); m != 0 {
		t.Errorf("auth failures = %v", m)
	}
}

func metric(body, name string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(l, name+" "), 64)
			return v
		}
	}
	return -1
}

// TestAdminAPI lists registrations and a live call, hangs the call up
// (BYE to both sides), and unregisters a contact.
func TestAdminAPI(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	done, wait := sw.callUntilBYE(t)
	code, body := sw.api(t, "GET", "/api/v1/registrations")
	if code != 200 || !strings.Contains(body, `"aor": "1002@voxvisor.local"`) {
		t.Fatalf("registrations: %d %s", code, body)
	}
	var calls []struct {
		CallID string `json:"call_id"`
		Answer *time.Time
	}
	waitFor(t, 10*time.Second, "the call to be up", func() bool {
		_, body := sw.api(t, "GET", "/api/v1/calls")
		json.Unmarshal([]byte(body), &calls)
		return len(calls) == 1 && calls[0].Answer != nil
	})
	if code, body := sw.api(t, "DELETE", "/api/v1/calls/"+calls[0].CallID); code != 200 {
		t.Fatalf("hangup: %d %s", code, body)
	}
	caller, callee := <-done, wait()
	for who, tr := range map[string]string{"caller": caller, "callee": callee} {
		if !strings.Contains(tr, "hung up by the operator") {
			t.Errorf("%s got no operator BYE:\n%s", who, tr)
		}
	}
	if code, _ := sw.api(t, "DELETE", "/api/v1/calls/nope"); code != 404 {
		t.Errorf("hangup of an unknown call: %d", code)
	}
	if code, body := sw.api(t, "DELETE", "/api/v1/registrations?aor=1002@voxvisor.local"); code != 200 || !strings.Contains(body, `"removed": 1`) {
		t.Fatalf("unregister: %d %s", code, body)
	}
	if n := len(sw.Store.Lookup("1002@voxvisor.local")); n != 0 {
		t.Fatalf("bindings after unregister: %d", n)
	}
	cdrs := readCDRs(t, sw, 1)
	if cdrs[0].HangupBy != "operator" || len(cdrs[0].Media) != 1 {
		t.Errorf("CDR hangup_by = %q, media %+v; want operator, with the stream's statistics", cdrs[0].HangupBy, cdrs[0].Media)
	}
	sw.expectNoMedia(t)
}

// TestDrainTimeHangsUp: a call still up when sip.drain_time is over gets
// a BYE to both sides and its CDR (hung up by the system) before the
// process stops.
func TestDrainTimeHangsUp(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) { c.SIP.DrainTime = time.Second })
	done, wait := sw.callUntilBYE(t)
	waitFor(t, 10*time.Second, "the call to be up", func() bool {
		var cs []struct{ Answer *time.Time }
		_, body := sw.api(t, "GET", "/api/v1/calls")
		json.Unmarshal([]byte(body), &cs)
		return len(cs) == 1 && cs[0].Answer != nil
	})
	sw.stop()
	caller, callee := <-done, wait()
	for who, tr := range map[string]string{"caller": caller, "callee": callee} {
		if !strings.Contains(tr, "shutting down") {
			t.Errorf("%s got no BYE at the end of the drain:\n%s", who, tr)
		}
	}
	cdrs, err := gatewayCDRs(sw)
	if err != nil || len(cdrs) != 1 || cdrs[0].HangupBy != "system" || cdrs[0].Status != 200 || len(cdrs[0].Media) != 1 {
		t.Fatalf("CDRs after the drain: %+v %v", cdrs, err)
	}
}

// TestDrainOnShutdown: with a call up, stopping refuses new INVITEs with
// 503 and lets the call finish; then Serve returns.
func TestDrainOnShutdown(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) { c.SIP.DrainTime = 15 * time.Second })
	calleePort := freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas_slow.xml", calleePort, "udp") // rings 3 s, then answers and takes the BYE
	first := sippGo(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	waitFor(t, 5*time.Second, "the call to start", func() bool { return sw.Dialogs.Len() == 1 })
	stopped := make(chan struct{})
	go func() { sw.stop(); close(stopped) }()
	waitFor(t, 2*time.Second, "draining", sw.Draining)
	second := sipp(t, sw.udp, "uac_503.xml", freePort(t), "udp", "-s", "1002")
	if !strings.Contains(second, "SIP/2.0 503 Shutting Down") || !strings.Contains(second, "Retry-After") {
		t.Errorf("new INVITE while draining: want 503 with Retry-After\n%s", second)
	}
	if tr := <-first; !strings.Contains(tr, "SIP/2.0 200 OK") {
		t.Errorf("the call in progress did not complete:\n%s", tr)
	}
	wait()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	if cdrs, _ := gatewayCDRs(sw); len(cdrs) == 0 {
		t.Error("the drained call's CDR was not flushed")
	}
}

// TestReloadUnderLoad: SIPp places calls across a reload that adds a user
// and a trunk; none fails. A broken configuration is rejected and the
// running one kept.
func TestReloadUnderLoad(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	next := func() (*config.Config, error) {
		c := *sw.Config
		c.Users = append(append([]config.User(nil), c.Users...), config.User{Username: "1004", Password: "demo1004"})
		c.Trunks = []config.Trunk{{Name: "late", Peers: []config.Peer{{Host: "127.0.0.1", Port: 9, Transport: "udp"}}, RegExpires: 600}}
		c.DialPlan = []config.Rule{{Prefix: "0", Trunks: []string{"late"}}}
		return &c, nil
	}
	sw.Reloader = next
	calleePort := freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas.xml", calleePort, "udp", "-m", "30")
	calls := sippGo(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "1002", "-key", "user", "1001",
		"-au", "1001", "-ap", "demo1001", "-m", "30", "-r", "10")
	// The reload happens with calls up, and more calls begin after it.
	waitFor(t, 5*time.Second, "calls to be up", func() bool { return sw.Dialogs.Len() > 0 && sw.Dialogs.Begun.Load() >= 5 })
	up, begun := sw.Dialogs.Len(), sw.Dialogs.Begun.Load()
	if err := sw.ReloadNow(); err != nil {
		t.Fatal(err)
	}
	<-calls // fails the test if any of the 30 calls failed
	wait()
	if after := sw.Dialogs.Begun.Load(); up == 0 || after != 30 || begun >= after {
		t.Fatalf("the reload did not overlap the calls: %d up and %d begun at the reload, %d begun in all", up, begun, after)
	}
	if !sw.Auth.Known("1004") || sw.Gateway().Trunk("late") == nil {
		t.Fatal("reload did not apply the new user and trunk")
	}
	sw.register(t, "1004", "udp", freePort(t))

	sw.Reloader = func() (*config.Config, error) {
		return config.Load("broken.yaml", []byte("users:\n  - {username: \"1005\"}\n"))
	}
	code, body := sw.api(t, "POST", "/api/v1/reload")
	if code != 422 || !strings.Contains(body, "broken.yaml:2") {
		t.Fatalf("broken reload: %d %s", code, body)
	}
	if !sw.Auth.Known("1004") {
		t.Fatal("a rejected reload changed the running configuration")
	}
	if n := len(sw.Store.Lookup("1002@voxvisor.local")); n != 1 {
		t.Fatalf("registrations lost across reloads: %d", n)
	}
}

// TestFloodAndBruteForce: a flood from one source is blocked while
// another still registers and calls; an auth brute force locks its
// source out, not the user.
func TestFloodAndBruteForce(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Limits = config.Limits{Rate: 20, Burst: 40, Block: 30 * time.Second, AuthFailures: 3, AuthWindow: time.Minute, Lockout: time.Minute}
	})
	// 500 OPTIONS as fast as 127.0.0.2 can send them.
	fl, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	dst, _ := net.ResolveUDPAddr("udp", sw.udp)
	for i := 0; i < 500; i++ {
		msg := "OPTIONS sip:voxvisor.local SIP/2.0\r\nVia: SIP/2.0/UDP " + fl.LocalAddr().String() + ";branch=z9hG4bKflood" + strconv.Itoa(i) + "\r\n" +
			"From: <sip:x@flood>;tag=1\r\nTo: <sip:voxvisor.local>\r\nCall-ID: flood" + strconv.Itoa(i) + "\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
		fl.WriteTo([]byte(msg), dst)
	}
	waitFor(t, 3*time.Second, "the flooding source to be blocked", func() bool { return sw.Guard.Blocks.Load() == 1 })
	// The blocked source gets no more answers; the answers to its first
	// burst are drained first.
	buf := make([]byte, 4096)
	for {
		fl.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := fl.ReadFrom(buf); err != nil {
			break
		}
	}
	probe := "OPTIONS sip:voxvisor.local SIP/2.0\r\nVia: SIP/2.0/UDP " + fl.LocalAddr().String() + ";branch=z9hG4bKprobe\r\n" +
		"From: <sip:x@flood>;tag=1\r\nTo: <sip:voxvisor.local>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	fl.WriteTo([]byte(probe), dst)
	fl.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, _, err := fl.ReadFrom(buf); err == nil {
		t.Error("the blocked source was answered")
	}
	if got := options(t, sw.udp, "sip:voxvisor.local"); got != "200" {
		t.Errorf("another source not served during the block: %q", got)
	}
	// Another source is served: it registers and calls.
	calleePort, callerPort := freePort(t), freePort(t)
	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas.xml", calleePort, "udp")
	sipp(t, sw.udp, "uac_call.xml", callerPort, "udp", "-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	wait()

	// Brute force on 1003 from 127.0.0.3: three wrong passwords lock out.
	for i := 0; i < 3; i++ {
		sippFrom(t, "127.0.0.3", sw.udp, "register_forbidden.xml", freePort(t), "udp", "-key", "user", "1003", "-au", "1003", "-ap", "guess"+strconv.Itoa(i))
	}
	if sw.Guard.Lockouts.Load() == 0 {
		t.Fatal("no lockout after three failures")
	}
	// Now even the right password fails from that source (403 like any
	// wrong password: a locked-out guesser learns nothing); the user,
	// from elsewhere, is not locked out.
	trace := sippFrom(t, "127.0.0.3", sw.udp, "register_forbidden.xml", freePort(t), "udp", "-key", "user", "1003", "-au", "1003", "-ap", "demo1003")
	if !strings.Contains(trace, "403 Forbidden") {
		t.Errorf("locked-out source not refused:\n%s", trace)
	}
	sw.register(t, "1003", "udp", freePort(t))
	// An innocent user from an innocent source is not affected.
	sw.register(t, "1001", "udp", freePort(t))
}

// TestReloadRegistrations: a reload that adds a registering trunk
// registers it (and its metrics appear); one that removes it unregisters
// it at the carrier (and its metrics go).
func TestReloadRegistrations(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	carrier := freePort(t)
	with := *sw.Config
	with.Trunks = []config.Trunk{{Name: "late", Peers: []config.Peer{{Host: "127.0.0.1", Port: carrier, Transport: "udp"}},
		Credentials: &config.Credential{Username: "acct", Password: "s3cret", Realm: "carrier.example"}, Register: true, RegExpires: 600}}
	without := *sw.Config

	wait := sippAsync(t, "carrier_registrar1.xml", carrier, "udp", "-key", "expires", "600")
	if err := sw.Reload(&with); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the added trunk to register", func() bool {
		st, _ := sw.Registrations.State("late")
		return st.Registered
	})
	wait()
	_, m := sw.api(t, "GET", "/metrics")
	if metric(m, `voxvisor_trunk_registered{trunk="late"}`) != 1 || metric(m, `voxvisor_trunk_channels{trunk="late"}`) != 0 {
		t.Errorf("metrics lack the added trunk:\n%s", grepLines(m, "voxvisor_trunk"))
	}

	wait = sippAsync(t, "carrier_registrar1.xml", carrier, "udp", "-key", "expires", "600")
	if err := sw.Reload(&without); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the removed trunk to be forgotten", func() bool {
		_, ok := sw.Registrations.State("late")
		return !ok
	})
	if trace := wait(); !strings.Contains(trace, "Expires: 0") {
		t.Errorf("the removed trunk did not unregister:\n%s", trace)
	}
	if _, m := sw.api(t, "GET", "/metrics"); strings.Contains(m, `trunk="late"`) {
		t.Errorf("metrics still report the removed trunk:\n%s", grepLines(m, "voxvisor_trunk"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricNames: every metric the switch exports, with its type and
// labels, against testdata/metrics.golden (go test -run TestMetricNames
// -args -update rewrites it): a metric moved between components, or
// renamed, shows here.
func TestMetricNames(t *testing.T) {
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Peers: []config.Peer{{Host: "127.0.0.1", Port: 9, Transport: "udp"}}, RegExpires: 600}}
	})
	reg := sw.Metrics()
	// A call begun and ended, so calls_total has a sample.
	r, _, err := siptest.Request("INVITE sip:1002@voxvisor.local SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKm\n"+
		"From: <sip:1001@voxvisor.local>;tag=m\nTo: <sip:1002@voxvisor.local>\nCall-ID: metrics\nCSeq: 1 INVITE\nMax-Forwards: 70\nContent-Length: 0\n", "127.0.0.1:5099", "udp")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := sw.Dialogs.Begin(r); err != nil {
		t.Fatal(err)
	}
	sw.Dialogs.End("metrics", dialog.Ending{Status: 486})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "go_") || strings.HasPrefix(f.GetName(), "process_") {
			continue
		}
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()+"="+l.GetValue()] = true
			}
		}
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		lines = append(lines, fmt.Sprintf("%s %s %s", f.GetName(), f.GetType(), strings.Join(keys, ",")))
	}
	sort.Strings(lines)
	testenv.Golden(t, "testdata/metrics.golden", strings.Join(lines, "\n")+"\n")
}
