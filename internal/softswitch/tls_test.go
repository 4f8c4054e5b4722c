package softswitch_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/testenv"
)

// startTLS runs a switch with udp, tcp and tls listeners and the test
// certificates; verify is sip.tls.verify_client.
func startTLS(t *testing.T, certs testenv.TLSFiles, verify string, mutate func(*config.Config)) *running {
	t.Helper()
	return start(t, t.TempDir(), func(c *config.Config) {
		c.SIP.Listen = append(c.SIP.Listen, config.Listener{Transport: "tls", Address: "127.0.0.1:0"})
		c.SIP.TLS = config.TLS{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, VerifyClient: verify, MinVersion: "1.2"}
		if mutate != nil {
			mutate(c)
		}
	})
}

// tlsTunnel starts socat as a TLS client for SIPp, whose Debian build has
// no TLS (-t l1 needs SIPp built with OpenSSL): SIPp speaks TCP to the
// returned loopback port and socat carries each connection over TLS to
// remote, checking the server's certificate against ca and presenting
// clientBoth (certificate and key in one PEM file).
func tlsTunnel(t *testing.T, remote, ca, clientBoth string) int {
	t.Helper()
	host, rport, _ := net.SplitHostPort(remote)
	port := freePort(t)
	socat(t, port, fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork", port),
		fmt.Sprintf("OPENSSL:%s:%s,cafile=%s,cert=%s,verify=1", host, rport, ca, clientBoth))
	return port
}

// socat runs socat between two addresses until the test ends and waits
// until it listens on port.
func socat(t *testing.T, port int, from, to string) {
	t.Helper()
	bin := need(t, "socat")
	logf, err := os.Create(filepath.Join(t.TempDir(), "socat.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-d", from, to)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("socat log:\n%s", tail(b, 30))
		}
	})
	waitListeningTCP(t, port)
}

// TestTLSRegisterAndCall: SIPp registers 1001 over TLS (through a socat
// TLS client holding a client certificate the switch requires) and calls
// 1002, a SIPp UAS on UDP; the route set keeps the caller's side on TLS.
// A client with a certificate from another CA is refused at the
// handshake.
func TestTLSRegisterAndCall(t *testing.T) {
	certs := testenv.TLSCerts(t)
	sw := startTLS(t, certs, "require", nil)
	tunnel := fmt.Sprintf("127.0.0.1:%d", tlsTunnel(t, sw.tls, certs.CA, certs.ClientBoth))

	callerPort, calleePort := freePort(t), freePort(t)
	trace := sipp(t, tunnel, "register.xml", callerPort, "tcp",
		"-key", "user", "1001", "-key", "expires", "3600", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Fatalf("REGISTER over TLS not accepted:\n%s", trace)
	}
	bs := sw.Store.Lookup("1001@voxvisor.local")
	if len(bs) != 1 || bs[0].Transport != "tls" {
		t.Fatalf("binding %+v, want one registered over tls", bs)
	}

	sw.register(t, "1002", "udp", calleePort)
	wait := sippAsync(t, "uas.xml", calleePort, "udp")
	trace = sipp(t, tunnel, "uac_call.xml", callerPort, "tcp",
		"-s", "1002", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	uas := wait()
	if !strings.Contains(trace, "transport=tls") || !strings.Contains(trace, "SIP/2.0 200 OK") {
		t.Errorf("the caller's Record-Route does not keep TLS:\n%s", trace)
	}
	if !strings.Contains(uas, "SIP/2.0/UDP") || !strings.Contains(uas, "BYE sip:") {
		t.Errorf("the callee did not get the call over UDP:\n%s", uas)
	}
	sw.expectNoMedia(t)

	// A certificate the switch's CA did not sign: no session.
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(certs.CA)
	pool.AppendCertsFromPEM(caPEM)
	stranger, err := tls.LoadX509KeyPair(certs.StrangerCert, certs.StrangerKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsProbe(sw.tls, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{stranger}}); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	if err := tlsProbe(sw.tls, &tls.Config{RootCAs: pool}); err == nil {
		t.Fatal("a client without a certificate was accepted with verify_client: require")
	}

	// sips: must be TLS end to end: 1002 is registered over UDP only.
	client, err := tls.LoadX509KeyPair(certs.ClientCert, certs.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tlsRequest(sw.tls, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{client}},
		"INVITE sips:1002@voxvisor.local SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bKsips\r\n"+
			"From: <sips:alice@elsewhere.example>;tag=a\r\nTo: <sips:1002@voxvisor.local>\r\nCall-ID: sips-1\r\n"+
			"CSeq: 1 INVITE\r\nContact: <sips:alice@elsewhere.example>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	if err != nil || !strings.HasPrefix(res, "SIP/2.0 480 ") || !strings.Contains(res, "no contact registered over TLS") {
		t.Fatalf("sips: INVITE to a UDP-only user: %q %v", res, err)
	}
}

// tlsProbe connects, sends an OPTIONS and reads the answer: it fails when
// the handshake or the session fails.
func tlsProbe(addr string, cfg *tls.Config) error {
	res, err := tlsRequest(addr, cfg, "OPTIONS sip:voxvisor.local SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bKprobe\r\n"+
		"From: <sip:probe@voxvisor.local>;tag=p\r\nTo: <sip:voxvisor.local>\r\nCall-ID: tls-probe\r\n"+
		"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(res, "SIP/2.0 200") {
		return fmt.Errorf("answer %q", res)
	}
	return nil
}

// tlsRequest sends one request over a new TLS connection (format gets
// the local address for its Via) and returns the first final response.
func tlsRequest(addr string, cfg *tls.Config, format string) (string, error) {
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, format, c.LocalAddr().String()); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return "", err
		}
		if res := string(buf[:n]); !strings.HasPrefix(res, "SIP/2.0 1") {
			return res, nil
		}
	}
}

// TestTLSServerCertificate: a client checking the switch's certificate
// against the CA and the name voxvisor.local gets a session; the switch
// answers OPTIONS over it, and ReloadCertificate swaps in a new one.
func TestTLSServerCertificate(t *testing.T) {
	certs := testenv.TLSCerts(t)
	sw := startTLS(t, certs, "none", nil)
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(certs.CA)
	pool.AppendCertsFromPEM(caPEM)
	if err := tlsProbe(sw.tls, &tls.Config{RootCAs: pool, ServerName: "voxvisor.local"}); err != nil {
		t.Fatalf("OPTIONS over TLS: %v", err)
	}
	if err := tlsProbe(sw.tls, &tls.Config{ServerName: "voxvisor.local"}); err == nil {
		t.Fatal("the test certificate verified against the system roots")
	}
	// A renewed certificate (from another CA here) is served after a
	// reload; listeners, registrations and calls stay.
	renewed := testenv.TLSCerts(t)
	cfg := *sw.Config
	cfg.SIP.TLS.CertFile, cfg.SIP.TLS.KeyFile = renewed.Cert, renewed.Key
	if err := sw.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	pool2 := x509.NewCertPool()
	ca2, _ := os.ReadFile(renewed.CA)
	pool2.AppendCertsFromPEM(ca2)
	if err := tlsProbe(sw.tls, &tls.Config{RootCAs: pool2, ServerName: "voxvisor.local"}); err != nil {
		t.Fatalf("after reload: %v", err)
	}
}

// TestBaresipTLSWithSRTP: two real softphones register over TLS and call
// each other with SDES-SRTP mandatory (baresip's mediaenc=srtp-mand drops
// a call whose answer has no key): audio flows both ways through the
// relay, which forwards the SRTP untouched and knows the streams are
// secure.
func TestBaresipTLSWithSRTP(t *testing.T) {
	certs := testenv.TLSCerts(t)
	sw := startTLS(t, certs, "none", func(c *config.Config) { c.Auth.Algorithms = []string{"MD5"} })
	_, p, _ := net.SplitHostPort(sw.tls)
	var tlsPort int
	fmt.Sscan(p, &tlsPort)
	ph := func(user string, rtpLow int) phone {
		return phone{user: user, sipPort: tlsPort, transport: "tls", rtpLow: rtpLow,
			params: ";mediaenc=srtp-mand", modules: "srtp.so", config: "sip_cafile " + certs.CA}
	}
	callee := baresipWith(t, ph("1002", 41400), 12*time.Second)
	waitFor(t, 10*time.Second, "1002 registered over TLS", func() bool {
		bs := sw.Store.Lookup("1002@voxvisor.local")
		return len(bs) == 1 && bs[0].Transport == "tls"
	})
	caller := baresipWith(t, ph("1001", 41600), 8*time.Second, fmt.Sprintf("/dial sip:1002@127.0.0.1:%d", tlsPort))

	var a, b uint64
	waitFor(t, 15*time.Second, "SRTP both ways through the relay", func() bool {
		ss := sw.Relay.Sessions()
		if len(ss) != 1 || ss[0].Stream(0) == nil {
			return false
		}
		st := ss[0].Stream(0).Stats()
		a, b = st[0].Packets, st[1].Packets
		return a > 100 && b > 100 && st[0].Sent > 100 && st[1].Sent > 100 && st[0].SRTP && st[1].SRTP
	})
	t.Logf("relay forwarded %d SRTP packets from the caller and %d from the callee", a, b)
	caller()
	waitFor(t, 10*time.Second, "the hang-up to release the media", func() bool { return sw.Relay.Len() == 0 })
	sw.expectNoMedia(t)
	callee()
	cdrs := readCDRs(t, sw, 1)
	if m := cdrs[0].Media; len(m) != 1 || !m[0].Caller.SRTP || !m[0].Callee.SRTP || m[0].Caller.Packets < 100 {
		t.Fatalf("the CDR does not record the SRTP streams: %+v", m)
	}
}

// tlsFront starts socat as a carrier's TLS front: it accepts TLS on the
// returned port with certificate serverBoth, requires a client
// certificate signed by ca, and hands each connection to SIPp on TCP
// port sippPort.
func tlsFront(t *testing.T, sippPort int, serverBoth, ca string) int {
	t.Helper()
	port := freePort(t)
	socat(t, port, fmt.Sprintf("OPENSSL-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,cert=%s,cafile=%s,verify=1", port, serverBoth, ca),
		fmt.Sprintf("TCP:127.0.0.1:%d", sippPort))
	return port
}

// TestTLSTrunk: a trunk over TLS to a carrier that requires our client
// certificate: voxvisor registers to it and places a call through it,
// checking the carrier's certificate against the CA; a carrier whose
// certificate another CA signed is refused and the call fails over to
// nothing (503).
func TestTLSTrunk(t *testing.T) {
	certs := testenv.TLSCerts(t)
	regSIPp, callSIPp, badSIPp := freePort(t), freePort(t), freePort(t)
	regPort := tlsFront(t, regSIPp, certs.Both, certs.CA)
	callPort := tlsFront(t, callSIPp, certs.Both, certs.CA)
	stranger := filepath.Join(t.TempDir(), "stranger-both.pem")
	sc, _ := os.ReadFile(certs.StrangerCert)
	sk, _ := os.ReadFile(certs.StrangerKey)
	os.WriteFile(stranger, append(sc, sk...), 0o600)
	badPort := tlsFront(t, badSIPp, stranger, certs.CA)

	waitReg := sippAsync(t, "carrier_registrar.xml", regSIPp, "tcp")
	waitCall := sippAsync(t, "uas.xml", callSIPp, "tcp")
	sw := startTLS(t, certs, "none", func(c *config.Config) {
		c.Trunks = []config.Trunk{
			{Name: "reg", Peers: []config.Peer{{Host: "127.0.0.1", Port: regPort, Transport: "tls"}},
				Credentials: &config.Credential{Username: "acct", Password: "s3cret", Realm: "carrier.example"},
				Register:    true, RegExpires: 600},
			{Name: "calls", Peers: []config.Peer{{Host: "127.0.0.1", Port: callPort, Transport: "tls"}}, RegExpires: 600},
			{Name: "impostor", Peers: []config.Peer{{Host: "127.0.0.1", Port: badPort, Transport: "tls"}}, RegExpires: 600},
		}
		c.DialPlan = []config.Rule{
			{Prefix: "0", Strip: 1, Prepend: "+49", Trunks: []string{"calls"}},
			{Prefix: "9", Trunks: []string{"impostor"}},
		}
	})
	waitFor(t, 10*time.Second, "the registration over TLS", func() bool {
		st, _ := sw.Registrations.State("reg")
		return st.Registered
	})
	regTrace := waitReg()
	if !strings.Contains(regTrace, "Contact: <sip:acct@127.0.0.1:") || !strings.Contains(regTrace, "transport=tls>") ||
		!strings.Contains(regTrace, "Via: SIP/2.0/TLS") {
		t.Errorf("REGISTER does not name our TLS listener:\n%s", regTrace)
	}

	trace := sipp(t, sw.udp, "uac_call.xml", freePort(t), "udp", "-s", "030123456", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	carrier := waitCall()
	if !strings.Contains(trace, "SIP/2.0 200 OK") || !strings.Contains(carrier, "INVITE sip:+4930123456@127.0.0.1:") ||
		!strings.Contains(carrier, "Via: SIP/2.0/TLS") || !strings.Contains(carrier, "BYE sip:") {
		t.Errorf("call over the TLS trunk:\ncaller:\n%s\ncarrier:\n%s", trace, carrier)
	}

	trace = sipp(t, sw.udp, "uac_expect.xml", freePort(t), "udp", "-s", "9123", "-key", "user", "1001", "-au", "1001", "-ap", "demo1001")
	if !strings.Contains(trace, "SIP/2.0 503 ") {
		t.Errorf("a carrier with a certificate from another CA was used:\n%s", trace)
	}
	sw.expectNoMedia(t)
}
