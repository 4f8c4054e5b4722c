package domain

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// qemuSystem is this host's QEMU for its own architecture, and a machine
// type with a CPU.
func qemuSystem() (bin, machine string, ok bool) {
	switch runtime.GOARCH {
	case "amd64":
		return "qemu-system-x86_64", "q35", true
	case "arm64":
		return "qemu-system-aarch64", "virt", true
	}
	return "", "", false
}

// ProbeKVM starts QEMU as QEMU's user (uid, gid, groups) with KVM and the
// host CPU, as a guest of domain_type kvm runs (host-passthrough), paused
// and without devices, and stops it after a second. Opening /dev/kvm is
// not enough: under some nested hypervisors QEMU aborts while setting up
// the virtual CPU ("failed to set MSR 0x10a"). It reports QEMU's words
// when it fails; nil when it runs, or when it cannot be tried here (no
// QEMU binary, another architecture).
func ProbeKVM(uid, gid int, groups []uint32) error {
	bin, machine, ok := qemuSystem()
	if !ok {
		return nil
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-accel", "kvm", "-cpu", "host", "-machine", machine, "-m", "64",
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "none", "-S")
	if uid != 0 && syscall.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(time.Second):
		cmd.Process.Kill()
		<-exited
		return nil // paused and running: KVM works
	}
	why := strings.TrimSpace(out.String())
	if why == "" && err != nil {
		why = err.Error()
	}
	if why == "" {
		why = "exited at once"
	}
	return fmt.Errorf("domain_type kvm: QEMU cannot run a KVM guest with the host's CPU here (%s -accel kvm -cpu host: %s): the host (often a nested hypervisor) does not give KVM what QEMU needs; set provision.domain_type: qemu (TCG, much slower), or fix KVM on the host",
		bin, strings.ReplaceAll(why, "\n", "; "))
}
