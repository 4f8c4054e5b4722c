package server

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	siplib "github.com/emiago/sipgo/sip"

	"github.com/voxvisor/voxvisor/sip/guard"
)

// Accept backoff after a temporary failure (out of file descriptors,
// buffers or memory), as net/http does it: 5 ms, doubling, at most 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// fdReserve is how many file descriptors the connection cap leaves for
// everything else (standard streams, the store, the CDR file, the poller,
// a few media sockets) under the process's open-file limit. One more is
// kept per listener. The media relay's sockets (two per port pair) are not
// counted: size RLIMIT_NOFILE for them.
const fdReserve = 64

// streamListener accepts TCP connections (plain, or under TLS when tls is
// set) within the per-source and total connection limits, and keeps
// accepting through temporary failures such as EMFILE. The connections it
// returns close themselves when silent or too slow (see streamConn).
type streamListener struct {
	// set once
	ln        net.Listener
	tls       *tls.Config // nil: plain TCP
	transport string      // "tcp" or "tls"
	name      string      // the transport as sipgo names it: "TCP" or "TLS"
	idle      time.Duration
	slots     *guard.Slots // per-source limit; may be nil
	streams   *streams
	stats     *Stats
	open      *atomic.Int64 // connections of this transport open now
	log       *slog.Logger
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	failing bool // touched only by the accepting goroutine: in an accept-failure episode
}

func (l *streamListener) Addr() net.Addr { return l.ln.Addr() }

// Close stops Accept, also one waiting out a backoff.
func (l *streamListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.ln.Close()
}

// Accept returns the next connection within the limits. Connections over
// a limit are accepted and closed at once, so they do not fill the listen
// backlog. A temporary failure is counted, logged once per episode and
// retried after a backoff; only a closed listener or a permanent error
// ends it (which stops sipgo's Serve).
func (l *streamListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if !temporaryAccept(err) {
				return nil, err
			}
			l.stats.AcceptErrors.Add(1)
			if !l.failing {
				l.failing = true
				l.log.Warn("accept failing, backing off", "transport", l.transport, "listener", l.ln.Addr().String(), "error", err)
				if errors.Is(err, syscall.EMFILE) {
					l.streams.clampToFDs() // the open-file limit may have been lowered under us
				}
			}
			if delay == 0 {
				delay = acceptBackoffMin
			} else {
				delay = min(2*delay, acceptBackoffMax)
			}
			t := time.NewTimer(delay)
			select {
			case <-l.done:
				t.Stop()
				return nil, net.ErrClosed
			case <-t.C:
			}
			continue
		}
		if l.failing {
			l.failing = false
			l.log.Info("accepting again", "transport", l.transport, "listener", l.ln.Addr().String(), "failures", l.stats.AcceptErrors.Load())
		}
		delay = 0
		if sc := l.admit(c); sc != nil {
			return sc, nil
		}
	}
}

// admit applies the limits to c: it returns c wrapped, or nil with c
// closed.
func (l *streamListener) admit(c net.Conn) *streamConn {
	src := remoteIP(c)
	if !l.streams.take() {
		l.stats.ConnsOverCap.Add(1)
		if l.streams.full.CompareAndSwap(false, true) {
			l.log.Warn("at the total connection cap, closing new connections", "transport", l.transport, "cap", l.streams.limit())
		}
		c.Close()
		return nil
	}
	l.streams.full.Store(false)
	ok, first := l.slots.Take(src)
	if !ok {
		l.streams.give()
		if first {
			l.log.Warn("source at its connection limit", "source", src.String(), "transport", l.transport, "limit", l.slots.Max)
		}
		c.Close()
		return nil
	}
	l.open.Add(1)
	sc := &streamConn{Conn: c, l: l, src: src, born: time.Now(), idle: l.idle}
	sc.msgStart.Store(-1)
	sc.key = connKey{transport: l.name, addr: c.RemoteAddr().String()}
	if l.tls != nil {
		sc.Conn = tls.Server(c, l.tls)
	}
	l.streams.add(sc)
	return sc
}

func remoteIP(c net.Conn) (ip netip.Addr) {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return ip
}

// temporaryAccept reports an accept error worth retrying: the process or
// the system is out of a resource, or one connection failed before it was
// accepted.
func temporaryAccept(err error) bool {
	for _, e := range [...]syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// connKey names an accepted connection the way sipgo names the source of
// the messages read from it. Two listeners of one transport could see the
// same remote address at once; the later connection then takes the index
// entry, and the earlier one is kept open by keep-alives only.
type connKey struct{ transport, addr string }

// streams are the connections accepted on all stream listeners: their
// count against the total cap, and an index by remote address, so a
// complete message read from one counts as activity on it.
type streams struct {
	n     atomic.Int64 // connections open now, all listeners
	max   atomic.Int64 // cap set by the owner; 0: none
	fdMax atomic.Int64 // cap from the open-file limit; 0: none
	full  atomic.Bool  // refusing since a connection was last admitted (logged once)

	reserve int // set once: descriptors kept free under the open-file limit

	mu sync.RWMutex
	m  map[connKey]*streamConn // guarded by mu
}

// limit is the effective cap, 0 for none.
func (s *streams) limit() int64 {
	a, b := s.max.Load(), s.fdMax.Load()
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

func (s *streams) take() bool {
	n := s.n.Add(1)
	if max := s.limit(); max > 0 && n > max {
		s.n.Add(-1)
		return false
	}
	return true
}

func (s *streams) give() { s.n.Add(-1) }

// clampToFDs sets the cap that keeps reserve descriptors free under the
// process's soft RLIMIT_NOFILE, and returns it (0: no such limit).
func (s *streams) clampToFDs() int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == ^uint64(0) || rl.Cur > 1<<40 {
		s.fdMax.Store(0)
		return 0
	}
	n := int64(rl.Cur) - int64(s.reserve)
	if n < 1 {
		n = 1
	}
	s.fdMax.Store(n)
	return n
}

func (s *streams) add(c *streamConn) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[connKey]*streamConn{}
	}
	s.m[c.key] = c
	s.mu.Unlock()
}

func (s *streams) remove(c *streamConn) {
	s.mu.Lock()
	if s.m[c.key] == c {
		delete(s.m, c.key)
	}
	s.mu.Unlock()
}

// touch records a complete message read from the connection transport
// names addr, if it is one of ours.
func (s *streams) touch(transport, addr string) {
	s.mu.RLock()
	c := s.m[connKey{transport, addr}]
	s.mu.RUnlock()
	if c != nil {
		c.touch()
	}
}

// onMessage runs on the reading goroutine of the connection a message came
// from, after sipgo parsed it and before the next read: a complete request
// or response is activity on that connection.
func (s *Server) onMessage(msg siplib.Message) {
	switch tp := msg.Transport(); tp {
	case "TCP", "TLS":
		s.streams.touch(tp, msg.Source())
	}
}

// streamConn is an accepted connection that closes itself when it stays
// silent or is too slow. Its read deadline is idle after the last
// complete message read from it (or after accept), where a CRLF
// keep-alive between messages (RFC 5626 §4.4.1) counts as a message; and
// once a message's first byte has arrived, the message must be complete
// within idle of it. Trickling bytes therefore cannot hold it open.
type streamConn struct {
	net.Conn // the TCP connection, or the TLS connection over it

	// set once
	l    *streamListener
	key  connKey
	src  netip.Addr
	born time.Time // monotonic base of the offsets below
	idle time.Duration

	last     atomic.Int64  // since born: the last complete message or keep-alive
	msgStart atomic.Int64  // since born: the first byte of the message being read; -1 between messages
	deadline time.Duration // since born: the read deadline set last; touched only by Read
	closed   sync.Once
}

func (c *streamConn) touch() {
	c.last.Store(int64(time.Since(c.born)))
	c.msgStart.Store(-1)
}

// Read reads with the deadline described on streamConn. It allocates
// nothing and sets the deadline only when it moved.
func (c *streamConn) Read(b []byte) (int, error) {
	if c.idle <= 0 {
		return c.Conn.Read(b)
	}
	from := c.msgStart.Load()
	if from < 0 {
		from = c.last.Load()
	}
	if d := time.Duration(from) + c.idle; d != c.deadline {
		c.deadline = d
		if err := c.Conn.SetReadDeadline(c.born.Add(d)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(b)
	if n > 0 && c.msgStart.Load() < 0 {
		now := int64(time.Since(c.born))
		if onlyCRLF(b[:n]) {
			c.last.Store(now)
		} else {
			c.msgStart.Store(now)
		}
		if n > 4 && bytes.HasPrefix(b[:n], doubleCRLF) {
			// A keep-alive ping (RFC 5626 §4.4.1) that arrived together
			// with more (another ping, or the next message): sipgo
			// answers a ping only when it is alone in a read, so the
			// pong goes here. (Should a message's own blank line ever
			// start a read, the stray CRLF this sends lands between our
			// messages, where every stream parser skips it: §7.5.)
			if _, werr := c.Conn.Write(crlf); werr != nil {
				c.l.log.Debug("keep-alive pong failed", "transport", c.l.transport, "remote", c.key.addr, "error", werr)
			}
		}
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.l.stats.ConnsTimedOut.Add(1)
		c.l.log.Debug("closing a silent or slow connection", "transport", c.l.transport, "remote", c.key.addr, "idle", c.idle)
		return n, net.ErrClosed // sipgo closes the connection quietly
	}
	return n, err
}

func onlyCRLF(b []byte) bool {
	for _, x := range b {
		if x != '\r' && x != '\n' {
			return false
		}
	}
	return true
}

func (c *streamConn) Close() error {
	c.closed.Do(func() {
		c.l.streams.remove(c)
		c.l.streams.give()
		c.l.slots.Give(c.src)
		c.l.open.Add(-1)
	})
	return c.Conn.Close()
}
