package softswitch_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/softswitch"
)

// TestKernelPathStartup: startup says which path RTP takes; media.kernel:
// on refuses to start when the program cannot be attached, auto falls back
// to userspace and says why, off does not try.
func TestKernelPathStartup(t *testing.T) {
	for _, tc := range []struct {
		mode, iface string
		wantErr     string
		wantLog     string
	}{
		{"on", "voxnosuch0", "media.kernel: on, but kernel forwarding: interface voxnosuch0", ""},
		{"auto", "voxnosuch0", "", "media forwarding: userspace; the kernel path could not be loaded"},
		{"off", "", "", "media forwarding: userspace (media.kernel: off)"},
		{"auto", "lo", "", "media forwarding: kernel (eBPF)"},
	} {
		t.Run(tc.mode+"-"+tc.iface, func(t *testing.T) {
			cfg, err := config.Load(configs.DefaultName, configs.Default)
			if err != nil {
				t.Fatal(err)
			}
			cfg.DataDir = t.TempDir()
			cfg.Admin.Listen = "off"
			cfg.SIP.Listen = []config.Listener{{Transport: "udp", Address: "127.0.0.1:0"}}
			cfg.Media.Kernel = tc.mode
			if tc.iface != "" {
				cfg.Media.KernelInterfaces = []string{tc.iface}
			}
			var out bytes.Buffer
			sw, err := softswitch.New(cfg, logging.New(&out, "info", "text"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: %v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := sw.Serve(ctx); err != nil { // serves nothing, closes all (the kernel path too)
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tc.wantLog) {
				t.Fatalf("startup log lacks %q:\n%s", tc.wantLog, out.String())
			}
		})
	}
}
