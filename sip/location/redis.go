package location

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/voxvisor/voxvisor/internal/metrics"
)

// Redis is a Backend shared by the nodes of a cluster: each AOR's
// bindings are one key (prefix + "aor:" + AOR, JSON) that Redis expires
// with its last binding, and every change is announced on a channel so
// that the other nodes reload that AOR into memory. Bindings written by
// this node are stamped with its name (Binding.Node): the node that
// received the REGISTER holds the contact's flow (its NAT pinhole or TCP
// connection).
//
// When Redis cannot be reached, writes are kept (the newest state of each
// AOR) and retried every second; lookups go on from memory; the outage
// and the return are logged once each; on return the kept writes go out
// first, then the node reloads what the others wrote meanwhile.
type Redis struct {
	c      *redis.Client
	prefix string
	node   string
	log    *slog.Logger

	down     atomic.Bool
	failures atomic.Uint64 // writes that found Redis unreachable
	mu       sync.Mutex
	dirty    map[string][]Binding // guarded by mu; writes not yet in Redis
}

// NewRedisClient is a client for the cluster's Redis with voxvisor's
// timeouts (2 s), its TLS verified against the system roots.
func NewRedisClient(o RedisOptions) *redis.Client {
	quietRedisLog()
	opts := &redis.Options{Addr: o.Addr, Password: o.Password, DialTimeout: 2 * time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: 1}
	if o.TLS {
		host, _, err := net.SplitHostPort(o.Addr)
		if err != nil {
			host = o.Addr
		}
		opts.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return redis.NewClient(opts)
}

// ErrUnavailable says the shared store cannot be read now.
var ErrUnavailable = errors.New("the cluster's Redis is unreachable")

// RedisOptions say where the shared store is.
type RedisOptions struct {
	Addr     string // host:port
	Password string
	TLS      bool
	Prefix   string // key prefix; default "voxvisor:"
	Node     string // this node's name
}

// OpenRedis connects to Redis; it fails only when the options are
// unusable or Redis refuses them (a wrong password): an unreachable Redis
// is waited for in the background.
func OpenRedis(o RedisOptions, log *slog.Logger) (*Redis, error) {
	quietRedisLog()
	if o.Prefix == "" {
		o.Prefix = "voxvisor:"
	}
	r := &Redis{c: NewRedisClient(o), prefix: o.Prefix, node: o.Node, log: log, dirty: map[string][]Binding{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := r.c.Ping(ctx).Err(); err != nil {
		if isAuthErr(err) {
			r.c.Close()
			return nil, fmt.Errorf("cluster.redis %s: %w (check cluster.redis.password)", o.Addr, err)
		}
		r.markDown(err)
	}
	return r, nil
}

// quietRedisLog silences go-redis's own logger (its pool logs every failed
// dial): this package says once that Redis is gone, and once that it is back.
var quietRedisLog = sync.OnceFunc(func() { redis.SetLogger(discardLogger{}) })

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

func isAuthErr(err error) bool {
	s := err.Error()
	return strings.Contains(s, "WRONGPASS") || strings.Contains(s, "NOAUTH") || strings.Contains(s, "invalid password")
}

func (r *Redis) key(aor string) string { return r.prefix + "aor:" + aor }
func (r *Redis) channel() string       { return r.prefix + "changes" }

// Node is this node's name.
func (r *Redis) Node() string { return r.node }

// Down reports whether Redis was unreachable at the last try.
func (r *Redis) Down() bool { return r.down.Load() }

// Failures counts writes that found Redis unreachable.
func (r *Redis) Failures() uint64 { return r.failures.Load() }

func (r *Redis) markDown(err error) {
	if r.down.CompareAndSwap(false, true) {
		r.log.Error("location: Redis unreachable; registrations are kept in memory and written when it is back", "error", err)
	}
}

// Put implements Backend. Bindings without a node are this node's.
func (r *Redis) Put(changes map[string][]Binding) error {
	r.mu.Lock()
	for aor, bs := range changes {
		bs = slices.Clone(bs) // the store's memory shares the array
		for i := range bs {
			if bs[i].Node == "" {
				bs[i].Node = r.node
			}
		}
		r.dirty[aor] = bs
	}
	r.mu.Unlock()
	if r.down.Load() {
		r.failures.Add(1)
		return nil // the retry loop writes it
	}
	if err := r.flush(context.Background()); err != nil {
		r.failures.Add(1)
		r.markDown(err)
	}
	return nil
}

// flush writes the dirty AORs in one pipeline and announces them.
func (r *Redis) flush(ctx context.Context) error {
	r.mu.Lock()
	batch := r.dirty
	r.dirty = map[string][]Binding{}
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for aor, bs := range batch {
			if len(bs) == 0 {
				p.Del(ctx, r.key(aor))
			} else {
				v, err := json.Marshal(bs)
				if err != nil {
					return err
				}
				last := bs[0].Expires
				for _, b := range bs {
					if b.Expires.After(last) {
						last = b.Expires
					}
				}
				p.Set(ctx, r.key(aor), v, 0)
				p.PExpireAt(ctx, r.key(aor), last)
			}
			p.Publish(ctx, r.channel(), r.node+"\x00"+aor)
		}
		return nil
	})
	if err != nil {
		r.mu.Lock()
		for aor, bs := range batch {
			if _, newer := r.dirty[aor]; !newer {
				r.dirty[aor] = bs
			}
		}
		r.mu.Unlock()
	}
	return err
}

// All implements Backend: every AOR in Redis.
func (r *Redis) All() (map[string][]Binding, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string][]Binding{}
	if r.down.Load() {
		return nil, ErrUnavailable
	}
	iter := r.c.Scan(ctx, 0, r.prefix+"aor:*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		r.markDown(err)
		return nil, ErrUnavailable
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		vals, err := r.c.MGet(ctx, keys[:n]...).Result()
		if err != nil {
			r.markDown(err)
			return nil, ErrUnavailable
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // expired between SCAN and MGET
			}
			var bs []Binding
			if err := json.Unmarshal([]byte(s), &bs); err != nil {
				return nil, fmt.Errorf("binding %s in Redis: %w", keys[i], err)
			}
			out[strings.TrimPrefix(keys[i], r.prefix+"aor:")] = bs
		}
		keys = keys[n:]
	}
	return out, nil
}

// get reads one AOR's bindings (nil when it has none).
func (r *Redis) get(ctx context.Context, aor string) ([]Binding, error) {
	v, err := r.c.Get(ctx, r.key(aor)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var bs []Binding
	err = json.Unmarshal([]byte(v), &bs)
	return bs, err
}

// Watch applies the other nodes' changes with apply until ctx ends; each
// time its subscription is (re)established (at start, and when Redis
// comes back) it reloads everything with reload, to catch what it
// missed; and it retries the writes kept while Redis was unreachable.
func (r *Redis) Watch(ctx context.Context, apply func(aor string, bs []Binding), reload func(all map[string][]Binding)) {
	sub := r.c.Subscribe(ctx, r.channel())
	defer sub.Close()
	events := make(chan any)
	go func() {
		defer close(events)
		for ctx.Err() == nil {
			ev, err := sub.ReceiveTimeout(ctx, 5*time.Second)
			if err != nil {
				var ne interface{ Timeout() bool }
				if errors.As(err, &ne) && ne.Timeout() {
					continue // quiet; the next Receive pings
				}
				ev = err
			}
			select {
			case events <- ev:
			case <-ctx.Done():
				return
			}
			if err != nil {
				time.Sleep(time.Second) // the next Receive reconnects
			}
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// Once more a while after each (re)subscription: the other nodes
	// write back what a restarted Redis lost when they notice, maybe
	// after this node's reload and before its subscription took.
	var again <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-again:
			again = nil
			if all, err := r.All(); err == nil {
				reload(all)
			}
		case ev, ok := <-events:
			if !ok {
				return
			}
			switch ev := ev.(type) {
			case *redis.Subscription:
				r.log.Debug("location: subscribed", "node", r.node, "kind", ev.Kind)
				// (Re)subscribed: first the writes kept meanwhile, then
				// what the others wrote.
				if r.flush(ctx) == nil && r.down.CompareAndSwap(true, false) {
					r.log.Info("location: Redis is back; kept registrations written")
				}
				if all, err := r.All(); err == nil {
					reload(all)
				}
				again = time.After(3 * time.Second)
			case *redis.Message:
				node, aor, _ := strings.Cut(ev.Payload, "\x00")
				if node == r.node {
					continue
				}
				bs, err := r.get(ctx, aor)
				if err != nil {
					r.markDown(err)
					continue
				}
				r.log.Debug("location: change", "node", r.node, "aor", aor, "bindings", len(bs))
				apply(aor, bs)
			case error:
				if ctx.Err() == nil {
					r.markDown(ev)
				}
			}
		case <-tick.C:
			if !r.down.Load() {
				continue
			}
			if err := r.c.Ping(ctx).Err(); err != nil {
				continue
			}
			if err := r.flush(ctx); err != nil {
				continue
			}
			r.down.Store(false)
			r.log.Info("location: Redis is back; kept registrations written")
			if all, err := r.All(); err == nil {
				reload(all)
			}
			again = time.After(3 * time.Second)
		}
	}
}

// Collector exports the shared store's state: whether Redis answers, and
// the writes that found it unreachable.
func (r *Redis) Collector() prometheus.Collector {
	var m metrics.Set
	m.Gauge("cluster_redis_up", "1 while the cluster's Redis answers; 0 while registrations are kept in memory for it.", func() float64 {
		if r.down.Load() {
			return 0
		}
		return 1
	})
	m.Counter("cluster_redis_write_failures_total", "Location writes that found Redis unreachable (kept and written when it is back).",
		func() float64 { return float64(r.failures.Load()) })
	return &m
}

// Close implements Backend, writing what it can of the kept writes.
func (r *Redis) Close() error {
	if !r.down.Load() {
		r.flush(context.Background())
	}
	return r.c.Close()
}
