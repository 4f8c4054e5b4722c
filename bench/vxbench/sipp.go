package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// sippResult is SIPp's cumulative counters at the end of a run.
type sippResult struct {
	Created, Successful, Failed, Retransmissions int
	Elapsed                                      time.Duration
}

// runSIPp runs one SIPp client to completion (bounded by limit) and reads
// its -trace_stat CSV.
func runSIPp(dir, name string, limit time.Duration, args ...string) (sippResult, error) {
	stat := filepath.Join(dir, name+".csv")
	os.Remove(stat)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	full := append(args, "-nostdin", "-trace_stat", "-stf", stat, "-fd", "1")
	cmd := exec.CommandContext(ctx, "sipp", full...)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res := sippResult{Elapsed: time.Since(start)}
	if perr := parseStat(stat, &res); perr != nil {
		return res, fmt.Errorf("sipp %s: %v (%v)\n%s", name, perr, err, lastLines(string(out), 10))
	}
	// SIPp exits 1 when some calls failed: the counters say how many.
	return res, nil
}

func parseStat(path string, r *sippResult) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return fmt.Errorf("no statistics in %s", path)
	}
	head := strings.Split(lines[0], ";")
	last := strings.Split(lines[len(lines)-1], ";")
	get := func(col string) int {
		for i, h := range head {
			if h == col && i < len(last) {
				n, _ := strconv.Atoi(last[i])
				return n
			}
		}
		return 0
	}
	r.Created = get("TotalCallCreated")
	r.Successful = get("SuccessfulCall(C)")
	r.Failed = get("FailedCall(C)")
	r.Retransmissions = get("Retransmissions(C)")
	return nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// startUAS runs a SIPp UAS on port for the duration of a measurement.
func startUAS(dir, scenario string, port int) (*proc, error) {
	return startProc(dir, fmt.Sprintf("uas-%d", port), "sipp", "-sf", scenario, "-p", strconv.Itoa(port),
		"-i", "127.0.0.1", "-nostdin", "-max_socket", "60000")
}
