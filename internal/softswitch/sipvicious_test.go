package softswitch_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/testenv"
)

// vicious runs one sipvicious tool against the switch's UDP listener from
// 127.0.0.73, and returns what it printed.
func vicious(t *testing.T, sw *running, tool string, args ...string) string {
	t.Helper()
	bin := testenv.Need(t, tool)
	_, port, _ := net.SplitHostPort(sw.udp)
	args = append(args, "-p", port, "-b", "127.0.0.73", "-P", strconv.Itoa(freePort(t)), "127.0.0.1")
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir() // sipvicious keeps its sessions in ./.sipvicious
	cmd.Env = append(os.Environ(), "HOME="+cmd.Dir)
	done := make(chan struct{})
	var out []byte
	go func() {
		defer close(done)
		out, _ = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish:\n%s", tool, out)
	}
	return string(out)
}

// TestSipvicious: the scanner every SIP server on the internet meets.
// svmap finds the switch (it is a SIP server); svwar cannot tell the real
// extensions 1001 and 1002 from unknown ones, whatever method it uses;
// svcrack is locked out after a few guesses, so a dictionary holding the
// right password yields nothing, while the real user registers from
// elsewhere during the attack.
func TestSipvicious(t *testing.T) {
	sw := start(t, t.TempDir(), nil)
	_, port, _ := net.SplitHostPort(sw.udp)

	if out := vicious(t, sw, "svmap"); !strings.Contains(out, "127.0.0.1:"+port) {
		t.Fatalf("svmap did not find the switch:\n%s", out)
	}
	for _, m := range []string{"REGISTER", "INVITE", "OPTIONS"} {
		out := vicious(t, sw, "svwar", "--force", "-e1000-1010", "-m", m)
		for _, ext := range []string{"1001", "1002"} {
			if strings.Contains(out, "| "+ext+" ") {
				t.Fatalf("svwar -m %s told extension %s apart:\n%s", m, ext, out)
			}
		}
	}

	dict := filepath.Join(t.TempDir(), "passwords")
	words := []string{"1234", "0000", "password", "1001", "secret", "admin", "qwerty", "letmein", "demo1001"}
	if err := os.WriteFile(dict, []byte(strings.Join(words, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := vicious(t, sw, "svcrack", "-u1001", "-d", dict)
	if strings.Contains(out, "demo1001") {
		t.Fatalf("svcrack found the password:\n%s", out)
	}
	if sw.Guard.Lockouts.Load() == 0 {
		t.Fatalf("svcrack's source was not locked out:\n%s", out)
	}
	phone := newRawUA(t, "127.0.0.72", sw.udp)
	res := phone.do(phone.request("REGISTER", "sip:voxvisor.local", "sip:1001@voxvisor.local", "", "real-user"))
	res = phone.do(phone.request("REGISTER", "sip:voxvisor.local", "sip:1001@voxvisor.local", "", "real-user",
		authorize(t, res, "1001", "demo1001", "REGISTER", "sip:voxvisor.local")))
	if code(res) != 200 {
		t.Fatalf("the real user, registering during the attack: %d", code(res))
	}
}
