package cluster

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Failed logins and lockouts across the cluster (guard.Shared): a
// source's failures are counted in Redis within the window, and a
// lockout is a key that expires with it, announced so that every node
// locks the source out at once; a node that starts loads the lockouts in
// force.

func (m *Members) lockoutChannel() string { return m.prefix + "lockouts" }

// OnLockout sets what to do when another node locks a source out (call
// it before Run); also called at Run's start for the lockouts in force.
func (m *Members) OnLockout(f func(src netip.Addr, until time.Time)) { m.onLockout = f }

// Failed counts one failed login from src across the cluster and
// returns the count within window.
func (m *Members) Failed(src netip.Addr, window time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	key := m.prefix + "authfail:" + src.String()
	var incr *redis.IntCmd
	_, err := m.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.Incr(ctx, key)
		p.ExpireNX(ctx, key, max(window, time.Second))
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(incr.Val()), nil
}

// Lock records src's lockout for d and tells the other nodes.
func (m *Members) Lock(src netip.Addr, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	until := strconv.FormatInt(time.Now().Add(d).UnixMilli(), 10)
	m.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, m.prefix+"lockout:"+src.String(), until, d)
		p.Publish(ctx, m.lockoutChannel(), m.self.Name+"\x00"+src.String()+"\x00"+until)
		return nil
	})
}

// applyLockout hands one announced or stored lockout to OnLockout's f.
func (m *Members) applyLockout(ip, untilMS string) {
	src, err1 := netip.ParseAddr(ip)
	ms, err2 := strconv.ParseInt(untilMS, 10, 64)
	if err1 != nil || err2 != nil || m.onLockout == nil {
		return
	}
	m.onLockout(src, time.UnixMilli(ms))
}

// watchLockouts applies the other nodes' lockouts until ctx ends: those
// in force when it starts, then each one announced.
func (m *Members) watchLockouts(ctx context.Context) {
	if m.onLockout == nil {
		return
	}
	sub := m.c.Subscribe(ctx, m.lockoutChannel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err == nil {
		iter := m.c.Scan(ctx, 0, m.prefix+"lockout:*", 1000).Iterator()
		for iter.Next(ctx) {
			if v, err := m.c.Get(ctx, iter.Val()).Result(); err == nil {
				m.applyLockout(strings.TrimPrefix(iter.Val(), m.prefix+"lockout:"), v)
			}
		}
	}
	msgs := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-msgs:
			if !ok {
				return
			}
			parts := strings.Split(msg.Payload, "\x00")
			if len(parts) == 3 && parts[0] != m.self.Name {
				m.applyLockout(parts[1], parts[2])
			}
		}
	}
}
