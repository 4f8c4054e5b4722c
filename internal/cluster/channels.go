package cluster

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Trunk channels across the cluster: per trunk, a Redis hash of how many
// channels each node holds. A node takes one only while the live nodes'
// total (nodes whose heartbeat has lapsed count for nothing, and their
// fields are dropped) is under the trunk's limit, in one script, so two
// nodes cannot both take the last channel; a node that dies gives its
// channels back when its heartbeat lapses.

var acquireScript = redis.NewScript(`
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local node, n = fields[i], tonumber(fields[i + 1])
  if node == ARGV[1] or redis.call('EXISTS', ARGV[3] .. node) == 1 then
    total = total + n
  else
    redis.call('HDEL', KEYS[1], node)
  end
end
if total >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
`)

var releaseScript = redis.NewScript(`
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
end
return 1
`)

func (m *Members) channelsKey(trunk string) string { return m.prefix + "channels:" + trunk }

// Acquire takes one of trunk's max channels across the cluster; ok is
// false when the live nodes hold them all. An error says Redis could not
// be asked: the caller then counts on its own.
func (m *Members) Acquire(trunk string, max int) (ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := acquireScript.Run(ctx, m.c, []string{m.channelsKey(trunk)}, m.self.Name, max, m.prefix+"node:").Int()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// Release gives back one of trunk's channels this node holds.
func (m *Members) Release(trunk string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	releaseScript.Run(ctx, m.c, []string{m.channelsKey(trunk)}, m.self.Name)
}

// Held is how many of trunk's channels each live node holds.
func (m *Members) Held(ctx context.Context, trunk string) (map[string]int, error) {
	vals, err := m.c.HGetAll(ctx, m.channelsKey(trunk)).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for node, v := range vals {
		out[node], _ = strconv.Atoi(v)
	}
	return out, nil
}
