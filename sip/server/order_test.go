package server

import (
	"testing"
	"time"
)

func ack(callID string) []byte {
	return []byte("ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: " + callID +
		"\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCSeq: 1 ACK\r\n\r\n")
}

// TestAckOrder: a request waits for the ACK its dialog saw first, and
// goes on as soon as that ACK is through; other dialogs, and a dialog
// whose ACK never comes through (sipgo absorbed it), wait no longer than
// ackWait.
func TestAckOrder(t *testing.T) {
	var o ackOrder
	o.seen(ack("c1"))
	o.seen([]byte("BYE sip:a@b SIP/2.0\r\nCall-ID: c1\r\n\r\n")) // not an ACK: no mark

	start := time.Now()
	o.wait("other")
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("a request of another dialog waited")
	}
	go func() {
		time.Sleep(30 * time.Millisecond)
		o.through("c1")
	}()
	start = time.Now()
	o.wait("c1")
	if d := time.Since(start); d < 20*time.Millisecond || d > ackWait {
		t.Fatalf("waited %v for the ACK ahead, want about 30ms", d)
	}
	o.mu.Lock()
	left := len(o.pending)
	o.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d marks left", left)
	}
	o.seen(ack("c2")) // absorbed by sipgo: never through
	start = time.Now()
	o.wait("c2")
	if d := time.Since(start); d < ackWait || d > ackWait+100*time.Millisecond {
		t.Fatalf("waited %v behind an ACK that never came through, want %v", d, ackWait)
	}
	if callIDOf(ack(" spaced ")) != "spaced" {
		t.Fatal("Call-ID not trimmed")
	}
}
