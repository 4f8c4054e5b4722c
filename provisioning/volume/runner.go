// Package volume keeps the guests' disks: logical volumes through the lvm2
// commands (with JSON reports), or raw files in a directory. Every volume
// carries voxvisor's mark and nothing without it is touched.
package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Runner runs one command and returns its standard output. Tests wrap it.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// Exec runs commands on this host.
type Exec struct{}

// CmdError is a command that failed: the command line, how, and what it
// printed, so an operator can run it again by hand.
type CmdError struct {
	Cmd    string
	Err    error
	Output string
}

func (e *CmdError) Error() string {
	if e.Output == "" {
		return fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, e.Output)
}

func (e *CmdError) Unwrap() error { return e.Err }

// Run runs name with args. LVM's warnings about inherited descriptors are
// silenced; standard error goes into the error only.
func (Exec) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			err = fmt.Errorf("%w (install the package that provides %s)", err, name)
		}
		return stdout.Bytes(), &CmdError{Cmd: name + " " + strings.Join(args, " "), Err: err, Output: cleanOutput(stderr.String() + stdout.String())}
	}
	return stdout.Bytes(), nil
}

// cleanOutput keeps what a person needs from a failed command's output:
// the lines that are not LVM's routine warnings, trimmed.
func cleanOutput(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Contains(l, "Activation disabled") {
			continue
		}
		keep = append(keep, l)
	}
	out := strings.Join(keep, "; ")
	if len(out) > 2000 {
		out = out[:2000] + "..."
	}
	return out
}
