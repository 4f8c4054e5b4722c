package softswitch_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/gateway"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/sip/digest"
)

// carriers configures two trunks on loopback SIPp carriers: "down" (the
// first choice, answering 503) and "up", with a dial plan that turns
// national numbers (0...) into E.164 (+49...). The carrier calling in is
// 127.0.0.2.
func carriers(down, up, endpoint int, upChannels int) func(*config.Config) {
	return func(c *config.Config) {
		c.Trunks = []config.Trunk{
			{Name: "down", Peers: []config.Peer{{Host: "127.0.0.1", Port: down, Transport: "udp"}}},
			{Name: "up", Peers: []config.Peer{{Host: "127.0.0.1", Port: up, Transport: "udp"}}, MaxChannels: upChannels,
				CallerID: config.CallerID{FromUser: "+4930999000", PAI: "sip:+4930999000@carrier.example"},
				Inbound:  config.Inbound{CIDRs: []string{"127.0.0.2/32"}},
				DIDs: []config.DID{
					{Number: "+4930999002", User: "1002"},
					{Pattern: `^\+4930777\d+$`, URI: "sip:{did}@127.0.0.1:" + strconv.Itoa(endpoint)},
				}},
		}
		c.DialPlan = []config.Rule{{Prefix: "0", Strip: 1, Prepend: "+49", Trunks: []string{"down", "up"}}}
		for i := range c.Trunks {
			c.Trunks[i].RegExpires = 600
		}
	}
}

func readCDRs(t *testing.T, sw *running, want int) []gateway.CDR {
	t.Helper()
	path := filepath.Join(sw.Config.DataDir, "cdr.jsonl")
	var cdrs []gateway.CDR
	waitFor(t, 5*time.Second, "CDRs", func() bool {
		cdrs, _ = gateway.ReadCDRs(path)
		return len(cdrs) >= want
	})
	return cdrs
}

// TestOutboundFailoverNormalisationAndCDR: 1001 dials 030123456; the dial
// plan makes it +4930123456; the first carrier answers 503, the second
// takes the call; the CDR says so, field by field.
func TestOutboundFailoverNormalisationAndCDR(t *testing.T) {
	down, up := freePort(t), freePort(t)
	sw := start(t, t.TempDir(), carriers(down, up, freePort(t), 0))
	waitDown := sippAsync(t, "carrier_503.xml", down, "udp")
	waitUp := sippAsync(t, "uas.xml", up, "udp")
	trace := sipp(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	downTrace, upTrace := waitDown(), waitUp()
	if !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Fatalf("caller not connected:\n%s", trace)
	}
	for name, tr := range map[string]string{"down": downTrace, "up": upTrace} {
		if !strings.Contains(tr, "INVITE sip:+4930123456@127.0.0.1:") {
			t.Errorf("carrier %s did not get the E.164 number:\n%s", name, tr)
		}
	}
	if strings.Contains(upTrace, "Proxy-Authorization") {
		t.Error("the caller's credentials leaked to the carrier")
	}
	if !strings.Contains(upTrace, "From: <sip:+4930999000@") || !strings.Contains(upTrace, "P-Asserted-Identity: <sip:+4930999000@carrier.example>") {
		t.Errorf("caller-ID rules not applied:\n%s", upTrace)
	}
	cdrs := readCDRs(t, sw, 1)
	c := cdrs[0]
	if c.Direction != "outbound" || c.Trunk != "up" || c.To != "+4930123456" || c.From != "1001@127.0.0.1" ||
		c.Status != 200 || c.Reason != "OK" || c.HangupBy != "caller" || c.Answer == nil ||
		!c.End.After(*c.Answer) || c.DurationSec <= 0 || c.Start.After(*c.Answer) || len(c.Media) != 1 {
		t.Fatalf("CDR = %+v", c)
	}
	if sw.Gateway().Trunk("up").Channels() != 0 || sw.Gateway().Trunk("down").Channels() != 0 {
		t.Fatal("a channel was not given back")
	}
	sw.expectNoMedia(t)
}

func TestChannelLimit(t *testing.T) {
	down, up := freePort(t), freePort(t)
	sw := start(t, t.TempDir(), func(c *config.Config) {
		carriers(down, up, freePort(t), 1)(c)
		c.DialPlan[0].Trunks = []string{"up"} // only the limited trunk
	})
	waitUp := sippAsync(t, "uas_slow.xml", up, "udp")
	first := sippGo(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	waitFor(t, 5*time.Second, "the first call to take the channel", func() bool { return sw.Gateway().Trunk("up").Channels() == 1 })
	second := sipp(t, sw.udp, "uac_expect.xml", freePort(t), "udp", "-s", "030555", "-key", "user", "1002", "-au", "1002", "-ap", "demo1002")
	if !strings.Contains(second, "SIP/2.0 503 ") {
		t.Fatalf("second call over a full trunk: want 503\n%s", second)
	}
	<-first
	waitUp()
	if n := sw.Gateway().Trunk("up").Channels(); n != 0 {
		t.Fatalf("channels after the calls = %d", n)
	}
}

// TestInboundDIDs: the carrier (127.0.0.2) calls a DID routed to user
// 1002, and one routed to an endpoint URI (a SIPp UAS standing in for the
// trunk's media endpoint guest).
func TestInboundDIDs(t *testing.T) {
	endpoint, calleePort := freePort(t), freePort(t)
	sw := start(t, t.TempDir(), carriers(freePort(t), freePort(t), endpoint, 0))
	sw.register(t, "1002", "udp", calleePort)

	wait := sippAsync(t, "uas.xml", calleePort, "udp")
	trace := sippFrom(t, "127.0.0.2", sw.udp, "carrier_uac.xml", freePort(t), "udp", "-s", "+4930999002")
	callee := wait()
	if !strings.Contains(trace, "SIP/2.0 200 OK") || !strings.Contains(callee, "INVITE sip:1002@127.0.0.1:") {
		t.Fatalf("DID to user 1002 failed:\ncarrier:\n%s\ncallee:\n%s", trace, callee)
	}

	wait = sippAsync(t, "uas.xml", endpoint, "udp")
	trace = sippFrom(t, "127.0.0.2", sw.udp, "carrier_uac.xml", freePort(t), "udp", "-s", "+4930777123")
	guest := wait()
	if !strings.Contains(guest, "INVITE sip:+4930777123@127.0.0.1:") {
		t.Fatalf("DID to the endpoint URI failed:\n%s", guest)
	}
	cdrs := readCDRs(t, sw, 2)
	for _, c := range cdrs {
		if c.Direction != "inbound" || c.Trunk != "up" || c.Status != 200 {
			t.Errorf("inbound CDR = %+v", c)
		}
	}
	sw.expectNoMedia(t)
}

// TestNoOpenRelay: an unknown source calling a number, or a DID, is
// refused with 403; so is an unauthenticated caller dialling out.
func TestNoOpenRelay(t *testing.T) {
	sw := start(t, t.TempDir(), carriers(freePort(t), freePort(t), freePort(t), 0))
	for _, number := range []string{"030123456", "+4930999002", "0049301234"} {
		trace := sippFrom(t, "127.0.0.3", sw.udp, "uac_rejected.xml", freePort(t), "udp", "-s", number)
		if !strings.Contains(trace, "SIP/2.0 403 ") {
			t.Errorf("%s from an unknown source: want 403\n%s", number, trace)
		}
	}
	// A local user must authenticate before reaching a trunk.
	trace := sipp(t, sw.udp, "uac_expect.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "wrong")
	if !strings.Contains(trace, "SIP/2.0 407 ") || !strings.Contains(trace, "SIP/2.0 403 ") {
		t.Errorf("unauthenticated outbound: want 407 then 403\n%s", trace)
	}
}

// TestUpstreamRegistration: a trunk registers to a carrier that demands
// digest, refreshes before the (3 s) expiry, notices the carrier is gone,
// and registers again once it is back.
func TestUpstreamRegistration(t *testing.T) {
	carrier := freePort(t)
	waitCarrier := sippAsync(t, "carrier_registrar.xml", carrier, "udp")
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Peers: []config.Peer{{Host: "127.0.0.1", Port: carrier, Transport: "udp"}},
			Credentials: &config.Credential{Username: "acct", Password: "s3cret", Realm: "carrier.example"},
			Register:    true, RegExpires: 600}}
	})
	state := func() gatewayState {
		st, _ := sw.Registrations.State("carrier")
		return gatewayState{st.Registered, st.LastError}
	}
	waitFor(t, 10*time.Second, "the first registration", func() bool { return state().registered })
	trace := waitCarrier() // the initial REGISTER and the refresh, each answered after a challenge
	if n := strings.Count(trace, "Authorization: Digest"); n < 2 {
		t.Fatalf("want a registration and a refresh with credentials, saw %d:\n%s", n, trace)
	}
	if strings.Contains(trace, "s3cret") {
		t.Fatal("the password went over the wire")
	}
	waitFor(t, 15*time.Second, "the registration to fail with the carrier gone", func() bool { return !state().registered && state().lastError != "" })
	waitCarrier = sippAsync(t, "carrier_registrar1.xml", carrier, "udp", "-key", "expires", "3")
	waitFor(t, 20*time.Second, "registration after the carrier came back", func() bool { return state().registered })
	waitCarrier()
}

type gatewayState struct {
	registered bool
	lastError  string
}

// TestOutboundDigest: the carrier challenges the INVITE (407) and the BYE
// (401); voxvisor answers with the trunk's credentials, one CSeq higher,
// and keeps the caller's CSeqs consistent on both sides.
func TestOutboundDigest(t *testing.T) {
	carrier := freePort(t)
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Peers: []config.Peer{{Host: "127.0.0.1", Port: carrier, Transport: "udp"}},
			Credentials: &config.Credential{Username: "acct", Password: "s3cret", Realm: "carrier.example"}, RegExpires: 600}}
		c.DialPlan = []config.Rule{{Prefix: "0", Strip: 1, Prepend: "+49", Trunks: []string{"carrier"}}}
	})
	wait := sippAsync(t, "carrier_auth_uas.xml", carrier, "udp")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(wait())
		}
	})
	caller := sipp(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	carrierTrace := wait()
	for _, want := range []string{"CSeq: 2 INVITE", "Authorization: Digest username=\"acct\"", "CSeq: 3 INVITE", "CSeq: 3 ACK",
		"CSeq: 4 BYE", "Proxy-Authorization: Digest username=\"acct\"", "CSeq: 5 BYE"} {
		if !strings.Contains(carrierTrace, want) {
			t.Errorf("carrier did not see %q", want)
		}
	}
	if strings.Contains(carrierTrace, "403 Bad Credentials") {
		t.Error("the carrier refused our credentials")
	}
	// The BYE's Proxy-Authorization answers the 407 correctly.
	i := strings.Index(carrierTrace, "Proxy-Authorization: ")
	if i < 0 {
		t.Fatal("no Proxy-Authorization on the BYE")
	}
	line, _, _ := strings.Cut(carrierTrace[i+len("Proxy-Authorization: "):], "\n")
	creds, err := digest.Parse(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	ha1, _ := digest.HA1(digest.MD5, "acct", "carrier.example", "s3cret")
	if err := digest.Verify(creds, ha1, "BYE"); err != nil {
		t.Errorf("BYE credentials do not verify: %v", err)
	}
	// The caller sees its own CSeqs in every answer.
	if !strings.Contains(caller, "CSeq: 2 INVITE") || !strings.Contains(caller, "CSeq: 3 BYE") || strings.Contains(caller, "CSeq: 5") {
		t.Errorf("caller's CSeqs not restored:\n%s", caller)
	}
	if t.Failed() {
		t.Log(carrierTrace)
	}
}

func gatewayCDRs(sw *running) ([]gateway.CDR, error) {
	return gateway.ReadCDRs(filepath.Join(sw.Config.DataDir, "cdr.jsonl"))
}

// TestTrunkFirewallVisible: a trunk provisioned with an endpoint firewall
// shows its firewall in /metrics and the admin API's trunk list. Here the
// rules were never applied in this namespace (the test changes no host
// firewall), so they show as not in sync; provisioning/firewall's netns
// test reads real counters through the same collector.
func TestTrunkFirewallVisible(t *testing.T) {
	need(t, "nft")
	sw := start(t, t.TempDir(), func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "walled", Peers: []config.Peer{{Host: "192.0.2.10", Port: 5060, Transport: "udp"}},
			RegExpires: 600, Endpoint: &config.Endpoint{Network: config.EndpointNetwork{Address: "10.99.77.21/24"}}}}
		c.Provision.Firewall.Backend = "nftables"
	})
	code, body := sw.api(t, "GET", "/metrics")
	if code != 200 || !strings.Contains(body, `voxvisor_firewall_rules_in_sync{trunk="walled"} 0`) {
		t.Fatalf("/metrics (%d) lacks the trunk's firewall state:\n%s", code, grepLines(body, "firewall"))
	}
	code, body = sw.api(t, "GET", "/api/v1/trunks")
	if code != 200 || !strings.Contains(body, `"firewall"`) || !strings.Contains(body, `"in_sync": false`) {
		t.Fatalf("/api/v1/trunks (%d): %s", code, body)
	}
}
