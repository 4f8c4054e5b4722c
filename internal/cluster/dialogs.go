package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/voxvisor/voxvisor/internal/metrics"
	"github.com/voxvisor/voxvisor/sip/dialog"
)

// Calls outlive their node's death, not its clean-up: each node keeps its
// answered calls in Redis (a hash per node, field Call-ID, value the
// dialog's Record), written when a call is answered or refreshed and
// deleted when it ends, in batches (writeBatch). At every heartbeat each
// node looks for the hash of a node without a heartbeat (dead for Dead);
// the first to claim it adopts its calls into its own dialog table and
// hangs each up: a BYE to both sides (to the addresses they used; one
// behind the dead node's NAT pinhole may not hear it), the CDR with the
// reason, written here. What the dead node held in the cluster (trunk
// channels, registration lease) lapses with its heartbeat. A node that
// restarts before anyone reaped it hangs up what its previous run left.

// DialogStats counts the shared calls' writes and takeovers.
type DialogStats struct {
	Adopted       atomic.Uint64 // calls of dead nodes ended here
	WriteFailures atomic.Uint64 // records not written or deleted (Redis down, queue full)
	Held          atomic.Uint64 // takeovers not done: the node answered SIP
}

// dialogWrite is one change to this node's hash: a record, or a deletion.
type dialogWrite struct {
	id  string
	rec []byte // nil: delete
}

func (m *Members) dialogsKey(node string) string { return m.prefix + "dialogs:" + node }

// SetDialogs shares table's answered calls and makes this node one that
// takes over the calls of dead nodes. Call before Run; subscribe m to
// table as well.
func (m *Members) SetDialogs(table *dialog.Table) {
	m.dialogs = table
	m.writes = make(chan dialogWrite, 4096)
}

// DialogAnswered writes the call's record.
func (m *Members) DialogAnswered(d *dialog.Dialog) { m.putDialog(d) }

// DialogRefreshed writes it again: the sides' CSeqs have moved on.
func (m *Members) DialogRefreshed(d *dialog.Dialog) { m.putDialog(d) }

// DialogEnded deletes the call's record.
func (m *Members) DialogEnded(d *dialog.Dialog, _ dialog.Ending) {
	if d.IsAnswered() {
		m.queue(dialogWrite{id: d.ID})
	}
}

func (m *Members) putDialog(d *dialog.Dialog) {
	if d.Ended() {
		return // a refresh that crossed the BYE: its deletion is queued
	}
	rec, err := json.Marshal(d.Record())
	if err == nil {
		m.queue(dialogWrite{id: d.ID, rec: rec})
	}
}

// queue hands a write to the writer without ever holding up a call.
func (m *Members) queue(w dialogWrite) {
	if m.writes == nil {
		return
	}
	select {
	case m.writes <- w:
	default:
		m.DialogStats.WriteFailures.Add(1)
	}
}

// writeBatch is how long the writer gathers writes before it sends
// them, in one pipeline: a call answered and ended within it (most short
// calls) costs Redis nothing, and the rest one round trip per batch, not
// two per call. A node dying within it loses those calls' records: a
// survivor does not end them (their sides time out on their own).
const writeBatch = 100 * time.Millisecond

// writeDialogs applies the queued writes, in order, in batches, until
// ctx ends.
func (m *Members) writeDialogs(ctx context.Context) {
	key := m.dialogsKey(m.self.Name)
	stored := map[string]bool{} // the calls written to Redis and not deleted since
	for {
		var batch []dialogWrite
		select {
		case <-ctx.Done():
			return
		case w := <-m.writes:
			batch = append(batch, w)
		}
		gather := time.After(writeBatch)
	gathering:
		for {
			select {
			case w := <-m.writes:
				batch = append(batch, w)
			case <-gather:
				break gathering
			case <-ctx.Done():
				return
			}
		}
		// The last write of each call is the one that counts; a call
		// that ends before it was ever written needs nothing.
		last := make(map[string]dialogWrite, len(batch))
		for _, w := range batch {
			last[w.id] = w
		}
		pipe := m.c.Pipeline()
		n := 0
		var dels []dialogWrite
		for id, w := range last {
			switch {
			case w.rec != nil:
				pipe.HSet(ctx, key, id, w.rec)
				stored[id] = true
			case stored[id]:
				pipe.HDel(ctx, key, id)
				delete(stored, id)
				dels = append(dels, w)
			default:
				continue
			}
			n++
		}
		if n == 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := pipe.Exec(wctx); err != nil {
			m.DialogStats.WriteFailures.Add(uint64(n))
			// The deletions are tried again with the next batch: a record
			// left behind would be a call a survivor ends (and bills) again.
			for _, w := range dels {
				stored[w.id] = true
				m.queue(w)
			}
		}
		cancel()
	}
}

// reapAfterBeats is how many heartbeats in a row this node must have
// written before it judges another node dead: one lifetime of a
// heartbeat (Dead) and one more beat, so that after a Redis outage or
// restart every live node has beaten again.
var reapAfterBeats = int(Dead/HeartbeatEvery) + 1

// reapDialogs takes over the calls of every node whose heartbeat is gone
// (self: what this node's previous run left, once, at start).
func (m *Members) reapDialogs(ctx context.Context, self bool) {
	if m.dialogs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if self {
		m.reap(ctx, m.self.Name)
		return
	}
	if m.beats < reapAfterBeats {
		// Just started, or just back from a Redis outage: the others may
		// not have written their heartbeats again yet, and a missing one
		// is no death.
		return
	}
	prefix := m.dialogsKey("")
	iter := m.c.Scan(ctx, 0, prefix+"*", 100).Iterator()
	var nodes []string
	for iter.Next(ctx) {
		if node := strings.TrimPrefix(iter.Val(), prefix); node != m.self.Name {
			nodes = append(nodes, node)
		}
	}
	for _, node := range nodes {
		if n, err := m.c.Exists(ctx, m.key(node)).Result(); err != nil || n > 0 {
			continue // alive, or Redis cannot tell
		}
		if m.answers(ctx, node) {
			continue
		}
		m.reap(ctx, node)
	}
}

// SetProbe gives the last check before a node without a heartbeat is
// taken for dead: whether it still answers SIP at one of its listeners
// (as its last heartbeat named them). A node cut off from Redis while
// its phones still reach it keeps its calls. Call it before Run.
func (m *Members) SetProbe(probe func(ctx context.Context, sip []string) bool) { m.probe = probe }

// answers reports whether node, without a heartbeat, still answers SIP;
// it says so in the log once until it stops answering.
func (m *Members) answers(ctx context.Context, node string) bool {
	sip := m.seen[node]
	if m.probe == nil || len(sip) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if !m.probe(ctx, sip) {
		if m.held[node] {
			m.log.Warn("cluster: a node without a heartbeat stopped answering SIP: taking over its calls", "node", node)
		}
		delete(m.held, node)
		return false
	}
	m.DialogStats.Held.Add(1)
	if !m.held[node] {
		if m.held == nil {
			m.held = map[string]bool{}
		}
		m.held[node] = true
		m.log.Warn("cluster: a node has no heartbeat in Redis but answers SIP (cut off from Redis?): its calls are left to it", "node", node, "sip", sip)
	}
	return true
}

// reap claims node's calls (one node does: the hash is renamed, in one
// step, to a key of this node's) and hangs them up here.
func (m *Members) reap(ctx context.Context, node string) {
	claimed := m.prefix + "reaping:" + node + ":" + m.self.Name
	if err := m.c.Rename(ctx, m.dialogsKey(node), claimed).Err(); err != nil {
		return // gone already (another node claimed it), or Redis cannot say
	}
	m.c.Expire(ctx, claimed, time.Hour) // should this node die now
	defer m.c.Del(context.WithoutCancel(ctx), claimed)
	recs, err := m.c.HGetAll(ctx, claimed).Result()
	if err != nil && err != redis.Nil {
		m.log.Warn("cluster: reading a dead node's calls", "node", node, "error", err)
		return
	}
	if len(recs) == 0 {
		return
	}
	why := "node " + node + " lost"
	if node == m.self.Name {
		why = "node restarted"
	}
	m.log.Warn("cluster: ending the calls of a node that is gone", "node", node, "calls", len(recs))
	for id, v := range recs {
		var r dialog.Record
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			m.log.Warn("cluster: a dead node's call record does not read", "node", node, "call", id, "error", err)
			continue
		}
		if _, err := m.dialogs.Adopt(r); err != nil {
			m.log.Warn("cluster: a dead node's call not taken over", "node", node, "call", id, "error", err)
			continue
		}
		m.DialogStats.Adopted.Add(1)
		m.dialogs.Hangup(r.ID, dialog.Ending{By: "system", Reason: why, Cause: 503})
	}
}

// Collector exports the shared calls' counters.
func (m *Members) Collector() prometheus.Collector {
	var s metrics.Set
	s.Counter("cluster_calls_taken_over_total", "Calls of dead cluster nodes (or of this node's previous run) ended here: a BYE each way and their CDR.",
		func() float64 { return float64(m.DialogStats.Adopted.Load()) })
	s.Counter("cluster_takeovers_held_total", "Heartbeats at which a node without a heartbeat in Redis still answered SIP OPTIONS, so its calls were left to it.",
		func() float64 { return float64(m.DialogStats.Held.Load()) })
	s.Counter("cluster_call_write_failures_total", "Call records not written to or deleted from Redis (Redis unreachable, or the queue full).",
		func() float64 { return float64(m.DialogStats.WriteFailures.Load()) })
	return &s
}
