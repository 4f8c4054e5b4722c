// Package cluster is the membership of a voxvisor cluster: each node
// writes a heartbeat into the cluster's Redis (a key that expires when
// the node stops writing it) with its addresses and what it holds, and
// any node lists them. It is what `voxvisor ctl cluster` and the admin
// API show; the location store (sip/location) shares the registrations.
package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/voxvisor/voxvisor/sip/dialog"
	"github.com/voxvisor/voxvisor/sip/location"
)

// Node is one member as its last heartbeat described it.
type Node struct {
	Name      string    `json:"name"`
	SIP       []string  `json:"sip"` // its listeners: transport:ip:port
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"heartbeat"`
	Bindings  int       `json:"bindings"` // registrations whose flow it holds
	Calls     int       `json:"calls"`    // dialogs it follows
	// Registrations are the trunks this node keeps registered at their
	// carriers (it holds their leases).
	Registrations []string `json:"trunk_registrations,omitempty"`
	Self          bool     `json:"self,omitempty"`
}

// Heartbeat and Dead are the membership's timing: a node writes its
// heartbeat every Heartbeat and is gone from the list Dead after its last.
const (
	HeartbeatEvery = 2 * time.Second
	Dead           = 10 * time.Second
)

// Members writes this node's heartbeat and lists the cluster's nodes.
type Members struct {
	c      *redis.Client
	prefix string
	self   Node
	counts func() (bindings, calls int)
	log    *slog.Logger
	leases leases

	onLockout func(src netip.Addr, until time.Time) // set once, before Run
	onLive    func(addrs []netip.Addr)              // set once, before Run

	live  atomic.Pointer[map[string]bool] // the live nodes at the last heartbeat; nil: not known yet
	beats int                             // heartbeats written in a row; Run's goroutine only

	dialogs     *dialog.Table    // set once, before Run; nil: calls are not shared
	writes      chan dialogWrite // to writeDialogs
	DialogStats DialogStats

	// probe asks a node without a heartbeat whether it still answers
	// SIP (set once, before Run; nil: no one is asked).
	probe func(ctx context.Context, sip []string) bool
	seen  map[string][]string // each node's listeners at its last heartbeat; Run's goroutine only
	held  map[string]bool     // nodes whose calls were left to them, logged; Run's goroutine only
}

// Options say where the cluster is and who this node is.
type Options struct {
	Addr, Password string
	TLS            bool
	Prefix         string
	Node           string
	SIP            []string
	// Counts gives what the node holds, for its heartbeat.
	Counts func() (bindings, calls int)
}

// New returns the membership; Run writes the heartbeat.
func New(o Options, log *slog.Logger) *Members {
	c := location.NewRedisClient(location.RedisOptions{Addr: o.Addr, Password: o.Password, TLS: o.TLS})
	return &Members{c: c, prefix: cmp.Or(o.Prefix, "voxvisor:"), log: log, counts: o.Counts,
		self: Node{Name: o.Node, SIP: o.SIP, Started: time.Now().UTC()}}
}

func (m *Members) key(name string) string { return m.prefix + "node:" + name }

// SetSIP records the node's listeners for its heartbeat; call it before Run.
func (m *Members) SetSIP(sip []string) { m.self.SIP = sip }

// Run writes the heartbeat every HeartbeatEvery until ctx ends, then
// removes it (a clean stop leaves at once; a crash after Dead).
func (m *Members) Run(ctx context.Context) {
	watched := make(chan struct{})
	go func() { defer close(watched); m.watchLockouts(ctx) }()
	written := make(chan struct{})
	if m.dialogs != nil {
		m.reapDialogs(ctx, true) // before this run's own calls are written
		go func() { defer close(written); m.writeDialogs(ctx) }()
	} else {
		close(written)
	}
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		m.beat(ctx)
		select {
		case <-ctx.Done():
			<-watched
			<-written
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m.releaseLeases(dctx)
			// The calls were ended here (the drain): nothing to take
			// over. Gone before the heartbeat, so no one tries.
			m.c.Del(dctx, m.dialogsKey(m.self.Name))
			m.c.Del(dctx, m.key(m.self.Name))
			cancel()
			m.c.Close()
			return
		case <-t.C:
			m.reapDialogs(ctx, false)
		}
		m.refreshLive(ctx)
	}
}

func (m *Members) beat(ctx context.Context) {
	n := m.self
	n.Heartbeat = time.Now().UTC()
	if m.counts != nil {
		n.Bindings, n.Calls = m.counts()
	}
	n.Registrations = m.heldTrunks()
	v, _ := json.Marshal(n)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// An error is the location store's to report; here it restarts the
	// count of beats written in a row (see reapDialogs).
	if m.c.Set(ctx, m.key(n.Name), v, Dead).Err() != nil {
		m.beats = 0
	} else {
		m.beats++
	}
}

// Alive reports whether node had a heartbeat at this node's last one, or
// without one still answered SIP (see SetProbe). While that is not known
// (Redis unreachable from the start) every node counts as alive.
func (m *Members) Alive(node string) bool {
	live := m.live.Load()
	return live == nil || (*live)[node]
}

// refreshLive notes the live nodes for Alive; when Redis cannot say, the
// last answer stands.
func (m *Members) refreshLive(ctx context.Context) {
	nodes, err := m.List(ctx)
	if err != nil {
		return
	}
	live := make(map[string]bool, len(nodes))
	if m.seen == nil {
		m.seen = map[string][]string{}
	}
	for _, n := range nodes {
		live[n.Name] = true
		m.seen[n.Name] = n.SIP
		delete(m.held, n.Name) // its heartbeat is back: live without the probe
	}
	// A node cut off from Redis that still answers SIP still holds its
	// phones' flows.
	for n := range m.held {
		live[n] = true
	}
	m.live.Store(&live)
	if m.onLive != nil {
		var addrs []netip.Addr
		for n := range live {
			if n != m.self.Name {
				addrs = append(addrs, nodeAddrs(m.seen[n])...)
			}
		}
		m.onLive(addrs)
	}
}

// OnLive gives the other live nodes' addresses (of their listeners, as
// their heartbeats name them; not wildcard ones) at each heartbeat: the
// guard trusts them. Call it before Run.
func (m *Members) OnLive(f func(addrs []netip.Addr)) { m.onLive = f }

// nodeAddrs are the IP addresses of a node's listeners (transport:ip:port),
// once each, without wildcard ones.
func nodeAddrs(sip []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range sip {
		_, hp, _ := strings.Cut(s, ":")
		ap, err := netip.ParseAddrPort(hp)
		if a := ap.Addr().Unmap(); err == nil && !a.IsUnspecified() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// List returns the live nodes, this one first, then by name.
func (m *Members) List(ctx context.Context) ([]Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var keys []string
	iter := m.c.Scan(ctx, 0, m.prefix+"node:*", 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("cluster: listing nodes in Redis: %w", err)
	}
	var out []Node
	if len(keys) > 0 {
		vals, err := m.c.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("cluster: reading nodes in Redis: %w", err)
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			var n Node
			if json.Unmarshal([]byte(s), &n) == nil && time.Since(n.Heartbeat) < Dead {
				n.Self = n.Name == m.self.Name
				out = append(out, n)
			}
		}
	}
	slices.SortFunc(out, func(a, b Node) int {
		if a.Self != b.Self {
			if a.Self {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out, nil
}
