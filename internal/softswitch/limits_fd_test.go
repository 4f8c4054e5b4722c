package softswitch_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/configs"
)

// syncBuf is a process's standard error, read while it runs.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tcpOptions sends an OPTIONS on c and returns the response's status line.
func tcpOptions(c net.Conn, r *bufio.Reader, id string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, optionsMsg("SIP/2.0/TCP "+c.LocalAddr().String(), id)); err != nil {
		return "", err
	}
	status := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return status, err
		}
		line = strings.TrimRight(line, "\r\n")
		if status == "" {
			status = line
		} else if line == "" {
			return status, nil
		}
	}
}

// TestIdleConnectionsUnderLowFDLimit is issue 12's acceptance test for
// descriptor exhaustion, against the real binary: voxvisor under
// `prlimit --nofile=1024:1024` takes 5,000 idle TCP connections from 25
// sources (under the per-source limit of 256 each) and stays up: it caps
// its connections below the open-file limit, answers OPTIONS over UDP and
// on a TCP connection it already had, and when the open-file limit is
// lowered under it at run time, so that accept fails with EMFILE, it backs
// off and keeps serving, and accepts a new TCP connection once the idle
// ones have timed out. SIGTERM then stops it cleanly.
func TestIdleConnectionsUnderLowFDLimit(t *testing.T) {
	prlimit := need(t, "prlimit")
	dir := t.TempDir()
	bin := buildVoxvisor(t)

	const idle = 4 * time.Second
	port := freePort(t)
	cfg := string(configs.Default)
	for _, r := range []struct {
		old, new string
		n        int
	}{
		{"address: 127.0.0.1:5060", fmt.Sprintf("address: 127.0.0.1:%d", port), 2},
		{"data_dir: ./data", "data_dir: " + filepath.Join(dir, "data"), 1},
		{"tcp_idle_timeout: 120s", "tcp_idle_timeout: " + idle.String(), 1},
		{"drain_time: 30s", "drain_time: 1s", 1},
		{"listen: 127.0.0.1:8060", `listen: "off"`, 1},
	} {
		if c := strings.Count(cfg, r.old); c != r.n {
			t.Fatalf("configs/voxvisor.yaml has %q %d times, want %d", r.old, c, r.n)
		}
		cfg = strings.ReplaceAll(cfg, r.old, r.new)
	}
	cfgPath := filepath.Join(dir, "voxvisor.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	stderr := &syncBuf{}
	cmd := exec.Command(prlimit, "--nofile=1024:1024", "--", bin, "serve", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid // prlimit execs voxvisor in place
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("voxvisor's log:\n%s", tail([]byte(stderr.String()), 8000))
		}
	})
	alive := func(when string) {
		t.Helper()
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("voxvisor exited %s: %v", when, err)
		default:
		}
	}
	udp := fmt.Sprintf("127.0.0.1:%d", port)
	tcp := udp
	waitFor(t, 30*time.Second, "voxvisor answering OPTIONS over UDP", func() bool {
		alive("while starting")
		return options(t, udp, "sip:voxvisor.local") == "200"
	})
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil || !strings.Contains(string(limits), "Max open files            1024                 1024") {
		t.Fatalf("voxvisor does not run with 1024 open files: %v\n%s", err, limits)
	}
	// 1024 less a reserve of 64 and one per listener.
	waitFor(t, 5*time.Second, "a connection cap of 958 under the open-file limit logged", func() bool {
		log := stderr.String()
		return strings.Contains(log, "capped by the open-file limit") && strings.Contains(log, "cap=958")
	})

	// A phone's connection, open before the attack, keeps being served.
	keeper, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	kr := bufio.NewReader(keeper)
	var served, failed atomic.Int32
	var lastErr atomic.Value
	stopKeeper := make(chan struct{})
	keeperDone := make(chan struct{})
	go func() {
		defer close(keeperDone)
		for i := 0; ; i++ {
			if st, err := tcpOptions(keeper, kr, fmt.Sprintf("keeper-%d", i)); strings.HasPrefix(st, "SIP/2.0 200") {
				served.Add(1)
			} else {
				failed.Add(1)
				lastErr.Store(fmt.Sprintf("%q %v", st, err))
			}
			select {
			case <-stopKeeper:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	defer func() {
		select {
		case <-stopKeeper:
		default:
			close(stopKeeper)
		}
		<-keeperDone
	}()
	keeperOK := func(when string) {
		t.Helper()
		before := served.Load()
		waitFor(t, 5*time.Second, "the keeper connection answered "+when, func() bool { return served.Load() > before })
		if n := failed.Load(); n > 0 {
			t.Fatalf("the keeper connection failed %d times %s: %v", n, when, lastErr.Load())
		}
	}
	keeperOK("before the attack")

	// The attack: 5,000 idle connections from 127.0.0.2 ... 127.0.0.26.
	var mu sync.Mutex
	var attack []net.Conn
	var dialErrs []error
	defer func() {
		for _, c := range attack {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	start := time.Now()
	for src := 2; src <= 26; src++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: 10 * time.Second}
			for range 200 {
				c, err := d.Dial("tcp", tcp)
				mu.Lock()
				if err != nil {
					dialErrs = append(dialErrs, err)
				} else {
					attack = append(attack, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("5,000 connections dialled in %v", time.Since(start))
	alive("under 5,000 connections")
	if len(attack) != 5000 {
		t.Fatalf("%d connections made, %d failed (first: %v)", len(attack), len(dialErrs), dialErrs[0])
	}
	waitFor(t, 10*time.Second, "the cap logged", func() bool {
		return strings.Contains(stderr.String(), "at the total connection cap")
	})
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	if free := 1024 - len(fds); free < 32 {
		t.Errorf("only %d descriptors free under 5,000 connections: the cap did not keep its reserve", free)
	}
	if st := options(t, udp, "sip:voxvisor.local"); st != "200" {
		t.Fatalf("OPTIONS over UDP under 5,000 connections: %q", st)
	}
	keeperOK("under 5,000 connections")

	// The open-file limit lowered under the running process: accept now
	// fails with EMFILE, which must not stop it.
	out, err := exec.Command(prlimit, "--pid", strconv.Itoa(pid), "--nofile=512:512").CombinedOutput()
	if err != nil {
		t.Fatalf("prlimit --pid: %v: %s", err, out)
	}
	late := make([]net.Conn, 0, 20)
	defer func() {
		for _, c := range late {
			c.Close()
		}
	}()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 27)}, Timeout: 10 * time.Second}
	for range 20 {
		c, err := d.Dial("tcp", tcp)
		if err != nil {
			t.Fatal(err)
		}
		late = append(late, c)
	}
	waitFor(t, 10*time.Second, "accept failing with EMFILE logged", func() bool {
		log := stderr.String()
		return strings.Contains(log, "accept failing, backing off") && strings.Contains(log, "too many open files")
	})
	alive("with accept failing")
	if st := options(t, udp, "sip:voxvisor.local"); st != "200" {
		t.Fatalf("OPTIONS over UDP with accept failing: %q", st)
	}
	keeperOK("with accept failing")

	// Once the idle connections time out, a new TCP connection is served.
	var fresh net.Conn
	waitFor(t, 4*idle, "a new TCP connection answered", func() bool {
		alive("while the idle connections time out")
		c, err := net.DialTimeout("tcp", tcp, 2*time.Second)
		if err != nil {
			return false
		}
		st, _ := tcpOptions(c, bufio.NewReader(c), fmt.Sprintf("fresh-%d", time.Now().UnixNano()))
		if !strings.HasPrefix(st, "SIP/2.0 200") {
			c.Close()
			return false
		}
		fresh = c
		return true
	})
	defer fresh.Close()
	// (the log reaches us through a pipe, a little later)
	waitFor(t, 5*time.Second, "the end of the accept failures logged", func() bool {
		return strings.Contains(stderr.String(), "accepting again")
	})
	keeperOK("after the attack")
	if n := strings.Count(stderr.String(), "accept failing, backing off"); n > 3 {
		t.Errorf("accept failures logged %d times, want once per episode", n)
	}
	close(stopKeeper)
	<-keeperDone

	// SIGTERM stops it cleanly.
	alive("before SIGTERM")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("voxvisor exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("voxvisor still running 15 s after SIGTERM")
	}
}
