// Package testenv lets integration tests ask for the real components they
// drive. Under CI=true a missing component fails the test (make test
// installs it); elsewhere the test is skipped with the reason.
package testenv

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Missing fails (CI=true) or skips the test for a component that is not there.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (make test-deps installs what the tests need)", msg)
	}
	t.Skipf("%s; run make test-deps", msg)
}

// Need returns the path of a tool the test drives.
func Need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		Missing(t, "%s not installed: %v", tool, err)
	}
	return p
}

// NeedRoot is for tests that make namespaces, loop devices or volume groups.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}

// Run runs a command for a test's setup and fails the test when it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Try(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Try runs a command with a time limit, returning its standard output;
// what it wrote to standard error goes into the error only.
func Try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

// Netns creates a network namespace for the test and deletes it, with
// everything in it, when the test ends.
func Netns(t testing.TB, name string) string {
	t.Helper()
	NeedRoot(t)
	Need(t, "ip")
	Try("ip", "netns", "del", name) // left over from a killed run
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { Try("ip", "netns", "del", name) })
	return name
}

// InNetns runs f on an OS thread that has joined the named network
// namespace: sockets f opens and commands it starts live there. The thread
// goes back to its own namespace afterwards; only if that fails is it kept
// locked, and so thrown away with the goroutine. A thread left in the lab's
// namespace is not harmless: when it is the main thread Go cannot end it,
// and /proc/self/net, which follows the main thread, then shows the lab's
// sockets instead of the host's.
func InNetns(t testing.TB, name string, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("own netns: %w", err)
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("netns %s: %w", name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		defer func() {
			if unix.Setns(home, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
			done <- nil
		}()
		f()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// LoopVG makes a volume group on a loop device, with LVM_SYSTEM_DIR set for
// the test to an lvm.conf with activation = 0 (no device-mapper needed),
// and removes both when the test ends, also when it fails.
func LoopVG(t testing.TB) string {
	t.Helper()
	NeedRoot(t)
	for _, tool := range []string{"losetup", "pvcreate", "vgcreate", "lvs"} {
		Need(t, tool)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lvm.conf"), []byte("global { activation = 0 }\ndevices { obtain_device_list_from_udev = 0 }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LVM_SYSTEM_DIR", dir)
	img := filepath.Join(dir, "pv.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	loop := strings.TrimSpace(Run(t, "losetup", "-f", "--show", img))
	vg := fmt.Sprintf("voxtest%d%s", os.Getpid(), strings.TrimPrefix(loop, "/dev/loop"))
	t.Cleanup(func() {
		Try("vgremove", "-f", vg)
		Try("pvremove", "-ff", "-y", loop)
		if _, err := Try("losetup", "-d", loop); err != nil {
			t.Errorf("loop device %s not freed: %v", loop, err)
		}
	})
	Run(t, "pvcreate", "-q", loop)
	Run(t, "vgcreate", "-q", vg, loop)
	return vg
}

var update = flag.Bool("update", false, "rewrite the golden files instead of comparing with them")

// Golden compares got with the golden file at path; with -update it
// writes the file first. The failure says how to rewrite it.
func Golden(t testing.TB, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no golden file (go test -update writes it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
