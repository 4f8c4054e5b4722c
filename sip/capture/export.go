package capture

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Text writes msgs as sngrep and `ngrep -W byline` users read them: a
// line with the time, the direction and the addresses, then the message.
func Text(msgs []Message) []byte {
	var b strings.Builder
	for _, m := range msgs {
		src, dst := m.Remote, m.Local
		if m.Sent {
			src, dst = m.Local, m.Remote
		}
		fmt.Fprintf(&b, "%s %s %s -> %s\n%s\n\n", m.Time.UTC().Format("2006-01-02 15:04:05.000000"), strings.ToUpper(m.Transport), src, dst,
			strings.TrimRight(strings.ReplaceAll(m.Raw, "\r\n", "\n"), "\n"))
	}
	return []byte(b.String())
}

// PCAP writes msgs as a pcap file (link type raw IP): each message one
// UDP datagram between its addresses, as Wireshark and sngrep open it.
// Messages that went over TCP or TLS are written as UDP too (one message
// a datagram, the TLS decrypted), so every message is readable.
func PCAP(msgs []Message) []byte {
	b := make([]byte, 24, 24+len(msgs)*600)
	binary.LittleEndian.PutUint32(b[0:], 0xa1b23c4d) // nanosecond timestamps
	binary.LittleEndian.PutUint16(b[4:], 2)
	binary.LittleEndian.PutUint16(b[6:], 4)
	binary.LittleEndian.PutUint32(b[16:], 65535)
	binary.LittleEndian.PutUint32(b[20:], 101) // LINKTYPE_RAW
	for _, m := range msgs {
		src, dst := parse(m.Remote), parse(m.Local)
		if m.Sent {
			src, dst = dst, src
		}
		pkt := datagram(src, dst, []byte(m.Raw))
		var rec [16]byte
		t := m.Time.UnixNano()
		binary.LittleEndian.PutUint32(rec[0:], uint32(t/int64(time.Second)))
		binary.LittleEndian.PutUint32(rec[4:], uint32(t%int64(time.Second)))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(pkt)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(pkt)))
		b = append(b, rec[:]...)
		b = append(b, pkt...)
	}
	return b
}

// parse reads "ip:port" (or "[ip]:port"); an unreadable one is 0.0.0.0:0.
func parse(s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// datagram is an IPv4 (or IPv6) packet holding a UDP datagram.
func datagram(src, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	if src.Addr().Is4() && dst.Addr().Is4() {
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^sum(0, ip))
		return append(ip, udp...) // UDP checksum 0: none, as IPv4 allows
	}
	ip := make([]byte, 40)
	ip[0], ip[6], ip[7] = 0x60, 17, 64
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	// IPv6 requires the UDP checksum: pseudo-header, then the datagram.
	var pseudo [40]byte
	copy(pseudo[0:], s[:])
	copy(pseudo[16:], d[:])
	binary.BigEndian.PutUint32(pseudo[32:], uint32(len(udp)))
	pseudo[39] = 17
	c := ^sum(sum(0, pseudo[:]), udp)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return append(ip, udp...)
}

// sum is the ones' complement sum of b (RFC 1071), folded, added to acc.
func sum(acc uint16, b []byte) uint16 {
	s := uint32(acc)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
