package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the bench started; it is stopped by PID.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed once the process is reaped
}

func startProc(dir, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { cmd.Wait(); lf.Close(); close(p.exited) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process group it leads (Kamailio forks workers).
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	// SIGTERM, then SIGKILL after 5 s; either way wait until it is
	// reaped, so its ports are free for the next peer.
	syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.exited
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// waitUDP waits until something answers an OPTIONS on addr.
func waitSIP(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.Dial("udp", addr)
		if err == nil {
			msg := "OPTIONS sip:" + addr + " SIP/2.0\r\nVia: SIP/2.0/UDP " + c.LocalAddr().String() + ";branch=z9hG4bKprobe" + strconv.FormatInt(time.Now().UnixNano(), 36) + "\r\n" +
				"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:" + addr + ">\r\nCall-ID: probe" + strconv.FormatInt(time.Now().UnixNano(), 36) + "\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
			c.Write([]byte(msg))
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 2048)
			_, err = c.Read(buf)
			c.Close()
			if err == nil {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no SIP answer on %s after %s", addr, d)
}

// voxvisor writes a config and starts the binary.
// With redis set, its location is in that Redis (a cluster of one).
func startVoxvisor(dir, bin string, port int, users int, anchor, kernel string, rtpMin, rtpMax int, redis string) (*proc, error) {
	return startNode(dir, bin, "bench", "127.0.0.1", port, users, anchor, kernel, rtpMin, rtpMax, redis)
}

// startNode starts voxvisor as node (its name in a cluster, with redis
// set) listening on ip:port, with a data directory of its own.
func startNode(dir, bin, node, ip string, port int, users int, anchor, kernel string, rtpMin, rtpMax int, redis string) (*proc, error) {
	var b strings.Builder
	data := filepath.Join(dir, "vxdata-"+node)
	fmt.Fprintf(&b, "log:\n  level: error\ndata_dir: %s\nsip:\n  domain: voxvisor.local\n  capture: {calls: 0}\n  listen:\n    - {transport: udp, address: %s:%d}\n", data, ip, port)
	if redis != "" {
		fmt.Fprintf(&b, "cluster:\n  node: %s\n  redis: {address: %q, prefix: \"vxbench:\"}\n", node, redis)
	}
	fmt.Fprintf(&b, "admin:\n  listen: \"off\"\nlimits:\n  rate: 0\n  auth_failures: 0\n  connections: 0\n  transactions: 0\n  dialogs: 0\n  streams: 0\nauth:\n  algorithms: [MD5]\nregistrar:\n  max_contacts: 5\nmedia:\n  address: %s\n  anchor: %s\n  kernel: %s\n  port_min: %d\n  port_max: %d\n  timeout: 10m\nusers:\n", ip, anchor, kernel, rtpMin, rtpMax)
	for _, u := range []string{"1001", "1002", "1003", "1004"} {
		fmt.Fprintf(&b, "  - {username: \"%s\", password: bench%s}\n", u, u)
	}
	for i := 0; i < users; i++ {
		fmt.Fprintf(&b, "  - {username: u%d, password: p%d}\n", i, i)
	}
	cfg := filepath.Join(dir, "voxvisor-"+node+".yaml")
	os.RemoveAll(data)
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	name := "voxvisor"
	if node != "bench" {
		name += "-" + node
	}
	p, err := startProc(dir, name, bin, "serve", "-c", cfg)
	if err != nil {
		return nil, err
	}
	if err := waitSIP(fmt.Sprintf("%s:%d", ip, port), 10*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("voxvisor: %w\n%s", err, p.tail())
	}
	return p, nil
}

// kamailio writes the bench config and starts it with 256 MB of shared
// memory. With auth it challenges REGISTERs and INVITEs against a db_text
// subscriber table: the bench's 1001 and 1002, and users u0… .
func startKamailio(dir, cfgTemplate string, port, users int, auth bool) (*proc, error) {
	tpl, err := os.ReadFile(cfgTemplate)
	if err != nil {
		return nil, err
	}
	db := filepath.Join(dir, "kamdb")
	os.RemoveAll(db)
	os.MkdirAll(db, 0o755)
	cfg := strings.NewReplacer("LISTEN", fmt.Sprintf("127.0.0.1:%d", port), "CHILDREN", "2", "DBDIR", db).Replace(string(tpl))
	if auth {
		cfg = strings.Replace(cfg, "#!KAMAILIO", "#!KAMAILIO\n#!define WITH_AUTH", 1)
		var sub strings.Builder
		sub.WriteString("id(int,auto) username(str) domain(str,null) password(str) ha1(str,null) ha1b(str,null)\n")
		sub.WriteString("1:1001:127.0.0.1:bench1001:::\n2:1002:127.0.0.1:bench1002:::\n")
		for i := 0; i < users; i++ {
			fmt.Fprintf(&sub, "%d:u%d:127.0.0.1:p%d:::\n", i+3, i, i)
		}
		os.WriteFile(filepath.Join(db, "subscriber"), []byte(sub.String()), 0o644)
		os.WriteFile(filepath.Join(db, "version"), []byte("table_name(str) table_version(int)\nsubscriber:7\n"), 0o644)
	}
	path := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	rt := filepath.Join(dir, "kamrun")
	os.MkdirAll(rt, 0o755)
	p, err := startProc(dir, "kamailio", "kamailio", "-f", path, "-DD", "-E", "-m", "256", "-M", "32", "-Y", rt)
	if err != nil {
		return nil, err
	}
	if err := waitSIP(fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("kamailio: %w\n%s", err, p.tail())
	}
	return p, nil
}

// startRedis starts Debian's redis-server on port, in memory only.
func startRedis(dir string, port int) (*proc, error) {
	p, err := startProc(dir, "redis", "redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return p, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("redis-server did not listen on %d\n%s", port, p.tail())
}

// rtpengine starts rtpengine 10.5 in userspace with an ng control port.
func startRtpengine(dir string, ngPort, rtpMin, rtpMax int) (*proc, error) {
	p, err := startProc(dir, "rtpengine", "rtpengine", "--table=-1", "--interface=127.0.0.1",
		fmt.Sprintf("--listen-ng=127.0.0.1:%d", ngPort), fmt.Sprintf("--port-min=%d", rtpMin), fmt.Sprintf("--port-max=%d", rtpMax),
		"--foreground", "--log-stderr", "--log-level=3", "--num-threads=2", "--delete-delay=0")
	if err != nil {
		return nil, err
	}
	ng := &ngClient{addr: fmt.Sprintf("127.0.0.1:%d", ngPort)}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := ng.call(context.Background(), map[string]any{"command": "ping"}); err == nil {
			return p, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("rtpengine did not answer ng ping\n%s", p.tail())
}
