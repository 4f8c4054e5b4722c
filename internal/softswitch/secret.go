package softswitch

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// nodeSecret returns the switch's secret from path, making it (32 random
// bytes, mode 0600) the first time. It signs the flow tokens in
// Record-Route, so it must outlive restarts: calls set up before a
// restart can still be hung up after it.
func nodeSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) >= 32:
		return b, nil
	case err == nil:
		return nil, fmt.Errorf("%s: %d bytes, want at least 32; delete it to make a new one (calls in progress then lose their in-dialog requests)", path, len(b))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read node secret: %w", err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nodeSecret(path) // made meanwhile by another process
		}
		return nil, fmt.Errorf("create node secret: %w (data_dir must be writable)", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write node secret: %w", err)
	}
	return b, f.Close()
}
