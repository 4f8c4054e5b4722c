package softswitch

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/media"
	"github.com/voxvisor/voxvisor/media/kernel"
)

// openKernelPath loads the eBPF forwarding path as media.kernel says and
// says at startup which path RTP takes: nil means the relay's sockets.
func openKernelPath(m config.Media, log *slog.Logger) (*kernel.Forwarder, error) {
	if m.Kernel == config.KernelOff {
		log.Info("media forwarding: userspace (media.kernel: off)")
		return nil, nil
	}
	f, err := kernel.Open(m.KernelInterfaces)
	if err != nil {
		if m.Kernel == config.KernelOn {
			return nil, fmt.Errorf("media.kernel: on, but %w (set media.kernel: auto to fall back to userspace)", err)
		}
		log.Warn("media forwarding: userspace; the kernel path could not be loaded (media.kernel: auto)", "reason", err.Error())
		return nil, nil
	}
	log.Info("media forwarding: kernel (eBPF) for latched RTP, userspace for learning and RTCP", "interfaces", strings.Join(f.Interfaces(), ","))
	return f, nil
}

// offloadOf is f as the relay's offload; a nil f is no offload (not a
// non-nil interface holding a nil pointer).
func offloadOf(f *kernel.Forwarder) media.Offload {
	if f == nil {
		return nil
	}
	return f
}
