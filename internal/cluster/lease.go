package cluster

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/voxvisor/voxvisor/gateway"
)

// Leases: a named right one node holds at a time (a trunk's registration
// at its carrier). The holder renews it every couple of seconds; it
// lapses LeaseTTL after the last renewal (a dead node's), and a clean
// stop gives it up at once, so another node takes it at its next try.

// LeaseTTL is how long a lease outlives its last renewal.
const LeaseTTL = Dead

var holdScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

var releaseLeaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
`)

// leases are the ones this node holds, given up when it stops.
type leases struct {
	mu   sync.Mutex
	held map[string]bool
}

func (m *Members) leaseKey(name string) string { return m.prefix + "lease:" + name }

// Hold takes or renews the lease name for this node and reports whether
// this node holds it.
func (m *Members) Hold(ctx context.Context, name string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	n, err := holdScript.Run(ctx, m.c, []string{m.leaseKey(name)}, m.self.Name, LeaseTTL.Milliseconds()).Int()
	if err != nil {
		return false, err
	}
	m.leases.mu.Lock()
	if m.leases.held == nil {
		m.leases.held = map[string]bool{}
	}
	m.leases.held[name] = n == 1
	m.leases.mu.Unlock()
	return n == 1, nil
}

// Holder is the node holding lease name ("" when none does).
func (m *Members) Holder(ctx context.Context, name string) (string, error) {
	v, err := m.c.Get(ctx, m.leaseKey(name)).Result()
	if err == redis.Nil {
		return "", nil
	}
	return v, err
}

// heldTrunks lists the trunks whose registration lease this node holds.
func (m *Members) heldTrunks() []string {
	m.leases.mu.Lock()
	defer m.leases.mu.Unlock()
	var out []string
	for name, held := range m.leases.held {
		if t, ok := strings.CutPrefix(name, gateway.TrunkLease); ok && held {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// releaseLeases gives up every lease this node holds (a clean stop).
func (m *Members) releaseLeases(ctx context.Context) {
	m.leases.mu.Lock()
	defer m.leases.mu.Unlock()
	for name, held := range m.leases.held {
		if held {
			releaseLeaseScript.Run(ctx, m.c, []string{m.leaseKey(name)}, m.self.Name)
		}
	}
	m.leases.held = nil
}
