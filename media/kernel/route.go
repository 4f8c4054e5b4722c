package kernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// router asks the kernel's routing table, over rtnetlink, how this host
// reaches an address: `ip route get DST from SRC`. Its socket is opened
// in the network namespace of Open's caller and answers for that one,
// whichever thread asks later.
type router struct {
	mu  sync.Mutex
	fd  int // guarded by mu
	seq uint32
}

func openRouter() (*router, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("kernel forwarding: rtnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kernel forwarding: rtnetlink bind: %w", err)
	}
	tv := unix.Timeval{Sec: 2}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &router{fd: fd}, nil
}

func (r *router) close() { unix.Close(r.fd) }

// route returns the interface out of which src reaches dst, and whether
// dst is this host (a local route).
func (r *router) route(src, dst netip.Addr) (ifindex uint32, local bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	attr := func(typ uint16, a netip.Addr) []byte {
		b := make([]byte, 8)
		binary.NativeEndian.PutUint16(b[0:], 8)
		binary.NativeEndian.PutUint16(b[2:], typ)
		v := a.As4()
		copy(b[4:], v[:])
		return b
	}
	body := make([]byte, unix.SizeofRtMsg)
	body[0] = unix.AF_INET
	body[1] = 32 // rtm_dst_len
	body = append(body, attr(unix.RTA_DST, dst)...)
	body = append(body, attr(unix.RTA_SRC, src)...)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_GETROUTE)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:], r.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, false, fmt.Errorf("kernel forwarding: route to %s: %w", dst, err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			return 0, false, fmt.Errorf("kernel forwarding: route to %s: %w", dst, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, false, fmt.Errorf("kernel forwarding: route to %s: %w", dst, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != r.seq {
				continue // an answer to an earlier, timed-out question
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return 0, false, fmt.Errorf("kernel forwarding: no route from %s to %s: %w", src, dst, syscall.Errno(-errno))
					}
				}
				return 0, false, fmt.Errorf("kernel forwarding: no route from %s to %s", src, dst)
			case unix.RTM_NEWROUTE:
				if len(m.Data) < unix.SizeofRtMsg {
					continue
				}
				local = m.Data[7] == unix.RTN_LOCAL
				attrs, err := syscall.ParseNetlinkRouteAttr(&m)
				if err != nil {
					return 0, false, fmt.Errorf("kernel forwarding: route to %s: %w", dst, err)
				}
				for _, a := range attrs {
					if a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4 {
						ifindex = binary.NativeEndian.Uint32(a.Value)
					}
				}
				if ifindex == 0 && !local {
					return 0, false, fmt.Errorf("kernel forwarding: the route from %s to %s names no interface", src, dst)
				}
				return ifindex, local, nil
			}
		}
	}
}
