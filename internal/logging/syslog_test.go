package logging

import (
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSyslogPriorities logs through a syslog socket the test creates and
// checks facility, severity and text of what arrives.
func TestSyslogPriorities(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, err := Syslog("unixgram", path, "local5", "voxvisor")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	log := slog.New(NewSyslogHandler(w, slog.LevelDebug))
	read := func() string {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("nothing reached the syslog socket: %v", err)
		}
		return string(buf[:n])
	}
	// local5 is facility 21: priority = 21*8 + severity.
	for _, tc := range []struct {
		level slog.Level
		pri   string
	}{
		{slog.LevelDebug, "<175>"}, {slog.LevelInfo, "<174>"}, {slog.LevelInfo + 2, "<173>"},
		{slog.LevelWarn, "<172>"}, {slog.LevelError, "<171>"}, {slog.LevelError + 4, "<170>"},
	} {
		log.Log(nil, tc.level, "trunk registered", "trunk", "carrier")
		got := read()
		if !strings.HasPrefix(got, tc.pri) || !strings.Contains(got, "voxvisor") || !strings.Contains(got, `msg="trunk registered" trunk=carrier`) {
			t.Errorf("level %v: got %q, want priority %s", tc.level, got, tc.pri)
		}
	}
	if _, err := Syslog("", "", "local9", "x"); err == nil {
		t.Error("an unknown facility was accepted")
	}
}
