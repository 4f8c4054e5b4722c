package capture

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

func msg(first, callID string, extra ...string) []byte {
	h := []string{first, "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1", "From: <sip:1001@example.com>;tag=a", "To: <sip:1002@example.com>", "Call-ID: " + callID, "CSeq: 1 INVITE"}
	return []byte(strings.Join(append(h, extra...), "\r\n") + "\r\nContent-Length: 0\r\n\r\n")
}

// TestRing: a call is recorded from its INVITE, with every message of its
// Call-ID (the compact i: too); other traffic is not; each call keeps at
// most Messages, the ring at most Calls, and a call goes after Retention.
func TestRing(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r := New(Options{Calls: 2, Messages: 3, Retention: time.Minute})
	r.now = func() time.Time { return now }
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("REGISTER sip:example.com SIP/2.0", "reg-1"))
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("SIP/2.0 200 OK", "stray"))
	if r.Len() != 0 {
		t.Fatalf("kept %d calls from a REGISTER and a stray response", r.Len())
	}
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("INVITE sip:1002@example.com SIP/2.0", "call-1"))
	r.Record(true, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", []byte("SIP/2.0 407 Proxy Authentication Required\r\ni: call-1\r\n\r\n"))
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("ACK sip:1002@example.com SIP/2.0", "call-1"))
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("INVITE sip:1002@example.com SIP/2.0", "call-1"))
	msgs, dropped, ok := r.Ladder("call-1")
	if !ok || len(msgs) != 3 || dropped != 1 || msgs[1].First != "SIP/2.0 407 Proxy Authentication Required" || !msgs[1].Sent || msgs[0].Sent {
		t.Fatalf("call-1: %d messages, %d dropped, %v: %+v", len(msgs), dropped, ok, msgs)
	}
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("INVITE sip:1 SIP/2.0", "call-2"))
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("INVITE sip:1 SIP/2.0", "call-3"))
	if _, _, ok := r.Ladder("call-1"); ok || r.Len() != 2 {
		t.Fatalf("the oldest call was not pushed out by the third (kept %d)", r.Len())
	}
	now = now.Add(2 * time.Minute)
	if _, _, ok := r.Ladder("call-3"); ok {
		t.Fatal("a call past its retention is still kept")
	}
	var off *Ring
	off.Record(false, "UDP", "", "", msg("INVITE sip:1 SIP/2.0", "x"))
	if _, _, ok := off.Ladder("x"); ok {
		t.Fatal("a nil ring kept a call")
	}
}

// TestRedact: digest credentials never reach the ring; the username and
// realm stay, so the ladder still says who tried.
func TestRedact(t *testing.T) {
	r := New(Options{Calls: 1, Messages: 10, Retention: time.Minute})
	r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", msg("INVITE sip:1002@example.com SIP/2.0", "c",
		`Proxy-Authorization: Digest username="1001", realm="example.com", nonce="abc,def", uri="sip:1002@example.com", response="0123456789abcdef0123456789abcdef", cnonce="xyz", nc=00000001, qop=auth, algorithm=MD5`,
		`authorization: Digest username="1001",realm="example.com",response="fedcba"`))
	msgs, _, _ := r.Ladder("c")
	raw := msgs[0].Raw
	for _, secret := range []string{"0123456789abcdef", "fedcba", "xyz", "abc,def"} {
		if strings.Contains(raw, secret) {
			t.Fatalf("%q left in the capture:\n%s", secret, raw)
		}
	}
	if !strings.Contains(raw, `Proxy-Authorization: Digest username="1001", realm="example.com", [redacted]`) {
		t.Fatalf("redacted header lost the username and realm:\n%s", raw)
	}
}

// TestPCAPReadByTshark: the pcap export opens in tshark, which decodes
// every message as SIP, in order, with its addresses (IPv4 and IPv6).
func TestPCAPReadByTshark(t *testing.T) {
	bin := testenv.Need(t, "tshark")
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	msgs := []Message{
		{Time: base, Local: "192.0.2.1:5060", Remote: "192.0.2.10:5070", Raw: string(msg("INVITE sip:1002@example.com SIP/2.0", "p"))},
		{Time: base.Add(time.Millisecond), Sent: true, Local: "192.0.2.1:5060", Remote: "192.0.2.10:5070", Raw: "SIP/2.0 100 Trying\r\nCall-ID: p\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"},
		{Time: base.Add(2 * time.Millisecond), Sent: true, Local: "[2001:db8::1]:5060", Remote: "[2001:db8::2]:5060", Raw: string(msg("BYE sip:1002@example.com SIP/2.0", "p"))},
	}
	path := filepath.Join(t.TempDir(), "call.pcap")
	if err := os.WriteFile(path, PCAP(msgs), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-r", path, "-d", "udp.port==5070,sip", "-T", "fields", "-E", "separator=|",
		"-e", "ip.src", "-e", "ipv6.src", "-e", "udp.dstport", "-e", "sip.Method", "-e", "sip.Status-Code", "-o", "udp.check_checksum:TRUE").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	want := "192.0.2.10||5060|INVITE|\n192.0.2.1||5070||100\n|2001:db8::1|5060|BYE|\n"
	if got := string(out); got != want {
		t.Fatalf("tshark read:\n%s\nwant:\n%s", got, want)
	}
	if txt := string(Text(msgs)); !strings.Contains(txt, " 192.0.2.10:5070 -> 192.0.2.1:5060\nINVITE sip:1002@example.com SIP/2.0\n") ||
		!strings.Contains(txt, " 192.0.2.1:5060 -> 192.0.2.10:5070\nSIP/2.0 100 Trying\n") {
		t.Fatalf("text export:\n%s", txt)
	}
}

// TestCauseBeforeEffect: sipgo traces a sent message after its write
// returns, so the answer to it can be traced first; the ladder still
// shows the 407 before its ACK, and our INVITE before the callee's 180.
func TestCauseBeforeEffect(t *testing.T) {
	r := New(Options{Calls: 1, Messages: 10, Retention: time.Minute})
	const caller, callee, me = "192.0.2.10:5060", "192.0.2.20:5060", "192.0.2.1:5060"
	in := func(from, text string) { r.Record(false, "UDP", me, from, []byte(text)) }
	out := func(to, text string) { r.Record(true, "UDP", me, to, []byte(text)) }
	in(caller, "INVITE sip:1002@x SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n")
	in(caller, "ACK sip:1002@x SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n")
	out(caller, "SIP/2.0 407 Proxy Authentication Required\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n")
	in(caller, "INVITE sip:1002@x SIP/2.0\r\nCall-ID: c\r\nCSeq: 2 INVITE\r\n\r\n")
	in(callee, "SIP/2.0 180 Ringing\r\nCall-ID: c\r\nCSeq:  2 INVITE\r\n\r\n")
	out(callee, "INVITE sip:1002@y SIP/2.0\r\nCall-ID: c\r\nCSeq: 2 INVITE\r\n\r\n")
	out(caller, "SIP/2.0 180 Ringing\r\nCall-ID: c\r\nCSeq: 2 INVITE\r\n\r\n")
	msgs, _, _ := r.Ladder("c")
	var got []string
	for _, m := range msgs {
		got = append(got, m.First[:strings.Index(m.First, " ")+4])
	}
	want := "INVITE sip|SIP/2.0 407|ACK sip|INVITE sip|INVITE sip|SIP/2.0 180|SIP/2.0 180"
	if strings.Join(got, "|") != want {
		t.Fatalf("ladder %s\nwant   %s", strings.Join(got, "|"), want)
	}
	if !msgs[4].Sent || msgs[5].Sent {
		t.Fatal("our INVITE to the callee is not before its 180")
	}
}

// TestNoCredentialsKept: the digest response never reaches the ring,
// whatever a stream read holds: two messages (the ACK of a 407 and the
// retried INVITE), keep-alive CRLFs first, a read that starts inside the
// header, a folded header, a tab after the scheme, or a body that quotes
// an Authorization header.
func TestNoCredentialsKept(t *testing.T) {
	const secret = "5ec4e75ec4e75ec4e75ec4e75ec4e7aa"
	auth := `Proxy-Authorization: Digest username="1001", realm="x", nonce="n", uri="sip:1002@x", response="` + secret + `", cnonce="c0ffee"`
	inv := "INVITE sip:1002@x SIP/2.0\r\nCall-ID: k\r\nCSeq: 2 INVITE\r\n"
	for name, data := range map[string]string{
		"two in one read": "ACK sip:1002@x SIP/2.0\r\nCall-ID: k\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n" + inv + auth + "\r\nContent-Length: 0\r\n\r\n",
		"leading CRLF":    "\r\n\r\n" + inv + auth + "\r\nContent-Length: 0\r\n\r\n",
		"split read":      "ation: Digest username=\"1001\", response=\"" + secret + "\"\r\nCall-ID: k\r\nCSeq: 2 INVITE\r\n\r\n",
		"folded":          inv + "Proxy-Authorization: Digest username=\"1001\", nonce=\"n\",\r\n\turi=\"sip:1002@x\", response=\"" + secret + "\"\r\nContent-Length: 0\r\n\r\n",
		"tab":             inv + "Authorization: Digest\tusername=\"1001\",response=\"" + secret + "\"\r\nContent-Length: 0\r\n\r\n",
		"in the body":     inv + "Content-Type: message/sipfrag\r\nContent-Length: 80\r\n\r\nAuthorization: Digest username=\"1001\", response=\"" + secret + "\"",
	} {
		t.Run(name, func(t *testing.T) {
			r := New(Options{Calls: 2, Messages: 10, Retention: time.Minute})
			r.Record(false, "TCP", "192.0.2.1:5060", "192.0.2.10:5060", []byte(inv+"Content-Length: 0\r\n\r\n"))
			r.Record(false, "TCP", "192.0.2.1:5060", "192.0.2.10:5060", []byte(data))
			msgs, _, _ := r.Ladder("k")
			for _, m := range msgs {
				if strings.Contains(m.Raw, secret) || strings.Contains(m.Raw, "c0ffee") {
					t.Fatalf("credentials kept:\n%s", m.Raw)
				}
			}
		})
	}
	// Two messages in one read are two lines of the ladder.
	r := New(Options{Calls: 2, Messages: 10, Retention: time.Minute})
	r.Record(false, "TCP", "a", "b", []byte(inv+"Content-Length: 0\r\n\r\n"))
	r.Record(false, "TCP", "a", "b", []byte("ACK sip:1002@x SIP/2.0\r\nCall-ID: k\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"+inv+"Content-Length: 4\r\n\r\nbody"))
	if msgs, _, _ := r.Ladder("k"); len(msgs) != 3 || !strings.HasSuffix(msgs[2].Raw, "\r\n\r\nbody") {
		t.Fatalf("a read of two messages: %d messages", len(msgs))
	}
}

// TestBounded: a Call-ID too long is not a key, a huge CSeq does not
// hold memory, the bytes of all calls stay under MaxBytes, and INVITEs
// that no dialog accepted go before accepted calls.
func TestBounded(t *testing.T) {
	r := New(Options{Calls: 3, Messages: 64, Retention: time.Hour})
	r.Record(false, "UDP", "a", "b", msg("INVITE sip:1 SIP/2.0", strings.Repeat("x", 300)))
	if r.Len() != 0 {
		t.Fatal("kept a call by a 300-byte Call-ID")
	}
	r.Record(false, "UDP", "a", "b", msg("INVITE sip:1 SIP/2.0", "accepted"))
	r.Keep("accepted")
	big := "CSeq: 1 " + strings.Repeat("X", 30000)
	for i := range 3 {
		id := "flood-" + string(rune('a'+i))
		for range 64 {
			r.Record(false, "UDP", "a", "b", []byte("INVITE sip:1 SIP/2.0\r\nCall-ID: "+id+"\r\n"+big+"\r\n\r\n"))
		}
	}
	if _, _, ok := r.Ladder("accepted"); !ok {
		t.Fatal("tentative INVITEs pushed an accepted call out")
	}
	r.mu.Lock()
	bytes := r.bytes
	r.mu.Unlock()
	if bytes > MaxBytes || bytes > 3*64*(MaxMessage+1024)+4096 {
		t.Fatalf("%d bytes kept for 3 calls of 64 messages cut at %d", bytes, MaxMessage)
	}
	for i := range 5 { // more tentative calls than Calls: the oldest go
		r.Record(false, "UDP", "a", "b", msg("INVITE sip:1 SIP/2.0", "scan-"+string(rune('a'+i))))
	}
	if _, _, ok := r.Ladder("accepted"); !ok || r.Len() != 4 {
		t.Fatalf("after a scan: %d calls kept, accepted kept %v", r.Len(), ok)
	}
}

// BenchmarkRecord: one call's message recorded, as sipgo hands it over.
func BenchmarkRecord(b *testing.B) {
	r := New(Options{Calls: 1000, Messages: 64, Retention: time.Minute})
	invite := msg("INVITE sip:1002@example.com SIP/2.0", "", "Max-Forwards: 70", "Contact: <sip:1001@192.0.2.10:5060>")
	ringing := []byte("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\nFrom: <sip:1001@example.com>;tag=a\r\nTo: <sip:1002@example.com>;tag=b\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
	b.ReportAllocs()
	for i := range b.N {
		id := fmt.Sprintf("bench-%d", i)
		r.Record(false, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", []byte(strings.Replace(string(invite), "Call-ID: ", "Call-ID: "+id, 1)))
		r.Record(true, "UDP", "192.0.2.1:5060", "192.0.2.10:5060", []byte(fmt.Sprintf(string(ringing), id)))
	}
}
