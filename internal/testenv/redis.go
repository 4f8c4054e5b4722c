package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RedisServer is a redis-server of the test's own on a free loopback
// port, without persistence. Stop kills it (as a crash would) and Start
// starts it again, empty, on the same port; it is stopped when the test
// ends.
type RedisServer struct {
	t    testing.TB
	bin  string
	Port int
	cmd  *exec.Cmd
}

// Redis starts a redis-server for the test.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	r := &RedisServer{t: t, bin: Need(t, "redis-server")}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Addr is host:port.
func (r *RedisServer) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// Start starts the server (again) and waits until it accepts connections.
func (r *RedisServer) Start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", fmt.Sprint(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.t.TempDir())
	out, _ := r.cmd.StdoutPipe()
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ready to accept connections") {
				close(ready)
				for sc.Scan() {
				}
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		r.Stop()
		r.t.Fatal("redis-server did not start within 10 s")
	}
}

// Stop kills the server, if it runs, and waits for it.
func (r *RedisServer) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// CLI runs redis-cli against the server and returns its output, trimmed.
func (r *RedisServer) CLI(args ...string) string {
	out, _ := exec.Command("redis-cli", append([]string{"-p", fmt.Sprint(r.Port)}, args...)...).Output()
	return strings.TrimSpace(string(out))
}
