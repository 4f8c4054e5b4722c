package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CDR is one call attempt, written as one JSON line when it ends.
type CDR struct {
	CallID      string     `json:"call_id"`
	From        string     `json:"from"`
	To          string     `json:"to"`        // normalised for trunk calls
	Direction   string     `json:"direction"` // inbound, outbound, local, transit
	Trunk       string     `json:"trunk,omitempty"`
	Start       time.Time  `json:"start"`
	Answer      *time.Time `json:"answer,omitempty"`
	End         time.Time  `json:"end"`
	DurationSec float64    `json:"duration_s"` // answer to end; 0 when not answered
	Status      int        `json:"status"`     // final SIP status of the INVITE
	Reason      string     `json:"reason"`
	HangupBy    string     `json:"hangup_by,omitempty"` // caller, callee, system, operator
	// EndReason says why voxvisor ended the call (media timeout, session
	// expired, maximum dialog age, shutting down, an operator's words).
	EndReason string   `json:"end_reason,omitempty"`
	Media     []Stream `json:"media,omitempty"`
}

// Stream is the relay's statistics of one media stream.
type Stream struct {
	Index  int      `json:"index"`
	Caller LegStats `json:"caller"`
	Callee LegStats `json:"callee"`
}

// LegStats are what the relay saw from one side.
type LegStats struct {
	Packets  uint64  `json:"packets"`
	Bytes    uint64  `json:"bytes"`
	Lost     int64   `json:"lost"`
	JitterMS float64 `json:"jitter_ms"`
	RTTMS    float64 `json:"rtt_ms"`
	SRTP     bool    `json:"srtp,omitempty"` // forwarded untouched, encrypted end to end
	// The side's call quality (media.Quality): loss in percent, a MOS
	// (0: not measured) and the inputs that were not measured.
	LossPct float64  `json:"loss_pct"`
	MOS     float64  `json:"mos"`
	Missing []string `json:"quality_missing,omitempty"`
}

// CDRWriter appends CDRs to a file opened append-only, rotating it by
// size (file, file.1, ... file.N). Every record is flushed to the file
// before Write returns, so nothing is lost on SIGTERM.
type CDRWriter struct {
	path string
	max  int64
	keep int

	mu   sync.Mutex
	f    *os.File // guarded by mu
	size int64    // guarded by mu
}

// Path is the current CDR file.
func (w *CDRWriter) Path() string { return w.path }

// OpenCDR opens (creating) the CDR file at path.
func OpenCDR(path string, maxBytes int64, keep int) (*CDRWriter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("cdr directory: %w", err)
	}
	w := &CDRWriter{path: path, max: maxBytes, keep: keep}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *CDRWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open cdr file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Write appends one record.
func (w *CDRWriter) Write(c CDR) error {
	b := append(c.appendJSON(make([]byte, 0, 512)), '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("cdr writer closed")
	}
	if w.size+int64(len(b)) > w.max && w.size > 0 {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	return err
}

func (w *CDRWriter) rotate() error {
	w.f.Close()
	for i := w.keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", w.path, i), fmt.Sprintf("%s.%d", w.path, i+1))
	}
	if w.keep > 0 {
		os.Rename(w.path, w.path+".1")
	} else {
		os.Remove(w.path)
	}
	return w.open()
}

// Close syncs and closes the file.
func (w *CDRWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	w.f.Sync()
	err := w.f.Close()
	w.f = nil
	return err
}

// ReadCDRs reads a CDR file, for tests and tools.
func ReadCDRs(path string) ([]CDR, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []CDR
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c CDR
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return out, err
		}
		out = append(out, c)
	}
	return out, sc.Err()
}
