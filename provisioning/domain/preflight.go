package domain

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"libvirt.org/go/libvirt"
)

// Host is what Preflight knows of the host the guests run on.
type Host struct {
	// Local: libvirtd runs on this host (qemu:///system or
	// qemu:///session, no remote transport): bridges and /dev/kvm can be
	// looked at here.
	Local bool
	// QEMUUser and QEMUGroup are who QEMU runs as: qemu.conf's user and
	// group for qemu:///system, the connecting user for qemu:///session.
	QEMUUser, QEMUGroup string
	// KVM is the KVM device, /dev/kvm.
	KVM string
}

// QEMUConf is libvirt's QEMU driver configuration, which names the user
// QEMU runs as.
const QEMUConf = "/etc/libvirt/qemu.conf"

// defaultQEMUUser is libvirt's built-in user and group on Debian and
// Ubuntu (others build it as qemu or root), used when qemu.conf sets none.
const defaultQEMUUser = "libvirt-qemu"

// hostOf works out the Host behind a libvirt URI.
func hostOf(uri string) Host {
	h := Host{KVM: "/dev/kvm"}
	u, err := url.Parse(uri)
	if err != nil {
		return h
	}
	driver, transport, _ := strings.Cut(u.Scheme, "+")
	h.Local = driver == "qemu" && u.Host == "" && (transport == "" || transport == "unix")
	if !h.Local {
		return h
	}
	if strings.TrimSuffix(u.Path, "/") == "/session" {
		if me, err := user.Current(); err == nil {
			h.QEMUUser = me.Username
			if g, err := user.LookupGroupId(me.Gid); err == nil {
				h.QEMUGroup = g.Name
			}
		}
		return h
	}
	h.QEMUUser, h.QEMUGroup = qemuConfUser(QEMUConf)
	return h
}

var confRE = regexp.MustCompile(`^\s*(user|group)\s*=\s*"([^"]*)"`)

// qemuConfUser reads user and group from qemu.conf; what it does not set
// is libvirt's default.
func qemuConfUser(path string) (usr, grp string) {
	usr, grp = defaultQEMUUser, defaultQEMUUser
	f, err := os.Open(path)
	if err != nil {
		return usr, grp
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := confRE.FindStringSubmatch(sc.Text()); m != nil {
			if m[1] == "user" {
				usr = m[2]
			} else {
				grp = m[2]
			}
		}
	}
	return usr, grp
}

// Preflight checks what starting the guest s needs that plan can see
// before anything is made, and says for each problem what to do: the
// libvirt network exists and is active; on a local libvirtd, the bridge
// exists (looked up in this process's network namespace, where libvirtd
// runs too) and, for domain_type kvm, QEMU's user can open /dev/kvm.
func (c *Conn) Preflight(s *Spec) error {
	var errs []error
	if s.Network != "" {
		if err := c.checkNetwork(s.Network); err != nil {
			errs = append(errs, err)
		}
	}
	h := c.host
	if h.Local && s.Bridge != "" {
		if _, err := net.InterfaceByName(s.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s does not exist on this host: create it (ip link add %s type bridge; ip link set %s up, or in the host's network configuration) or set endpoint.network.bridge to one that exists", s.Bridge, s.Bridge, s.Bridge))
		}
	}
	if h.Local && s.Type == "kvm" {
		c.kvmOnce.Do(func() { c.kvmErr = CheckKVM(h) })
		if c.kvmErr != nil {
			errs = append(errs, c.kvmErr)
		}
	}
	return errors.Join(errs...)
}

func (c *Conn) checkNetwork(name string) error {
	n, err := c.c.LookupNetworkByName(name)
	if isCode(err, libvirt.ERR_NO_NETWORK) {
		return fmt.Errorf("libvirt network %s does not exist: define and start it (virsh net-define, net-start, net-autostart) or set endpoint.network.network to one that exists", name)
	}
	if err != nil {
		return fmt.Errorf("libvirt network %s: %w", name, err)
	}
	defer n.Free()
	if on, err := n.IsActive(); err != nil {
		return fmt.Errorf("libvirt network %s: %w", name, err)
	} else if !on {
		return fmt.Errorf("libvirt network %s is not active: start it (virsh net-start %s; virsh net-autostart %s to start it at boot)", name, name, name)
	}
	return nil
}

// CheckKVM reports whether QEMU, run as h.QEMUUser, can open h.KVM for
// reading and writing, as a guest of domain_type kvm needs. Its existence
// is not enough: a fresh machine may have it root:root 0600. Run as root
// it asks the kernel itself: a child with the user's uid, gid and groups
// (as libvirt starts QEMU) opens the device. Otherwise it reads the
// device's owner, group and mode.
//
// libvirt's own view (domain capabilities) is not used: libvirt 9.0 on
// such a host reports kvm as supported, and the guest then fails to start
// with "Could not access KVM kernel module: Permission denied".
func CheckKVM(h Host) error {
	fi, err := os.Stat(h.KVM)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("domain_type kvm, and there is no %s on this host: enable virtualisation in the firmware and load the kvm module (modprobe kvm_intel or kvm_amd), or set provision.domain_type: qemu (TCG, much slower)", h.KVM)
	}
	if err != nil {
		return fmt.Errorf("domain_type kvm: %w", err)
	}
	uid, gid, groups, err := ids(h.QEMUUser, h.QEMUGroup)
	if err != nil {
		return fmt.Errorf("domain_type kvm: QEMU's user %s (%s user): %w", h.QEMUUser, QEMUConf, err)
	}
	probe := func() error {
		if h.KVM != "/dev/kvm" {
			return nil // another device (tests): QEMU would open the real one
		}
		return ProbeKVM(uid, gid, groups)
	}
	if uid == 0 {
		return probe()
	}
	var why string
	if os.Geteuid() == 0 {
		why = openAs(h.KVM, uid, gid, groups)
	} else {
		why = modeDenies(fi, uid, gid, groups)
	}
	if why == "" {
		return probe()
	}
	owner := ""
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = name(st.Uid, true) + ":" + name(st.Gid, false) + " "
	}
	return fmt.Errorf("domain_type kvm: QEMU runs as %s (the user libvirt starts it as: %s's user, or libvirt's default) and cannot open %s (%s%04o: %s): give that user read-write access (Debian's udev rule makes %s root:kvm 0660: udevadm trigger --name-match=kvm; or chgrp kvm %s && chmod 0660 %s, with %s in group kvm), or set provision.domain_type: qemu (TCG, much slower)",
		h.QEMUUser, QEMUConf, h.KVM, owner, fi.Mode().Perm(), why, h.KVM, h.KVM, h.KVM, h.QEMUUser)
}

// ids resolves qemu.conf's user and group as libvirt does ("name", "+id",
// or a number that is not a name), with the user's supplementary groups.
func ids(usr, grp string) (uid, gid int, groups []uint32, err error) {
	uid, err = lookupID(usr, func(s string) (string, error) {
		u, err := user.Lookup(s)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	})
	if err != nil {
		return 0, 0, nil, err
	}
	if pw, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		gid, _ = strconv.Atoi(pw.Gid)
		more, _ := pw.GroupIds()
		for _, s := range more {
			if n, err := strconv.Atoi(s); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	if grp != "" {
		gid, err = lookupID(grp, func(s string) (string, error) {
			g, err := user.LookupGroup(s)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		if err != nil {
			return 0, 0, nil, fmt.Errorf("group %s: %w", grp, err)
		}
	}
	return uid, gid, groups, nil
}

// lookupID reads "+N" as the id N, else a name (through byName), else a
// bare number as the id.
func lookupID(s string, byName func(string) (string, error)) (int, error) {
	if n, err := strconv.Atoi(strings.TrimPrefix(s, "+")); err == nil && strings.HasPrefix(s, "+") {
		return n, nil
	}
	id, err := byName(s)
	if err == nil {
		return strconv.Atoi(id)
	}
	if n, nerr := strconv.Atoi(s); nerr == nil {
		return n, nil
	}
	return 0, err
}

// openAs opens dev for reading and writing in a child running as uid,
// gid and groups; "" when it could, else what the shell said.
func openAs(dev string, uid, gid int, groups []uint32) string {
	cmd := exec.Command("/bin/sh", "-c", `exec 3<>"$1"`, "sh", dev)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return ""
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		if i := strings.LastIndex(s, ": "); i >= 0 {
			s = s[i+2:] // "sh: 1: cannot create /dev/kvm: Permission denied"
		}
		return s
	}
	return err.Error()
}

// modeDenies is the permission bits' answer, for a caller that cannot
// switch users (ACLs are not read).
func modeDenies(fi fs.FileInfo, uid, gid int, groups []uint32) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	perm := fi.Mode().Perm()
	var bits fs.FileMode
	switch {
	case int(st.Uid) == uid:
		bits = perm >> 6
	case int(st.Gid) == gid || containsGid(groups, st.Gid):
		bits = perm >> 3
	default:
		bits = perm
	}
	if bits&6 != 6 {
		return "Permission denied"
	}
	return ""
}

func containsGid(groups []uint32, g uint32) bool {
	for _, x := range groups {
		if x == g {
			return true
		}
	}
	return false
}

// name is a uid's or gid's name, or its number.
func name(id uint32, isUser bool) string {
	s := strconv.FormatUint(uint64(id), 10)
	if isUser {
		if u, err := user.LookupId(s); err == nil {
			return u.Username
		}
	} else if g, err := user.LookupGroupId(s); err == nil {
		return g.Name
	}
	return s
}
