package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// TCPRelay passes TCP connections on to a server, until Cut: then it
// closes them and refuses new ones, as a network cut between one client
// and the server would (the server and its other clients go on).
type TCPRelay struct {
	l     net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

// Relay starts a relay on a free loopback port to the server at to; it
// stops when the test ends.
func Relay(t testing.TB, to string) *TCPRelay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &TCPRelay{l: l, to: to}
	go r.serve()
	t.Cleanup(r.Cut)
	return r
}

// Addr is the relay's host:port, for the client.
func (r *TCPRelay) Addr() string { return r.l.Addr().String() }

func (r *TCPRelay) serve() {
	for {
		c, err := r.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", r.to)
		r.mu.Lock()
		if err != nil || r.cut {
			r.mu.Unlock()
			c.Close()
			if s != nil {
				s.Close()
			}
			continue
		}
		r.conns = append(r.conns, c, s)
		r.mu.Unlock()
		go func() { io.Copy(s, c); s.Close() }()
		go func() { io.Copy(c, s); c.Close() }()
	}
}

// Cut closes every connection and the listener.
func (r *TCPRelay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut {
		return
	}
	r.cut = true
	r.l.Close()
	for _, c := range r.conns {
		c.Close()
	}
}
