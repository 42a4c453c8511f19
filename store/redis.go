package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// Redis keeps each room's history in a Redis stream shared by every node of a
// cluster: "<prefix>{<room>}:s" holds the messages (entry id "<offset>-0",
// fields t = time in Unix ms, m = the protobuf Message) and
// "<prefix>{<room>}:m" is a hash of the room's epoch and top offset. Both
// keys share a hash tag, so they live in one slot of a Redis Cluster.
//
// Appends and epoch creation are Lua scripts, atomic in Redis: an append is
// refused (ErrConflict) unless it continues the stored top at the stored
// epoch, so two activations of one room can never write the same offset.
// Durability is Redis's: with appendonly yes and appendfsync always an
// acknowledged append is on disk; with everysec up to a second can be lost
// on a crash of the Redis host (not of a Hubbub node).
//
// Appends from all rooms are pipelined: a few writers each send whatever
// queued while their previous pipeline was in flight as one pipeline, so
// Redis answers (and, with appendfsync always, syncs) many rooms' appends at
// once instead of one round trip per append.
type Redis struct {
	client redis.UniversalClient
	wait   int           // replicas each pipeline waits for (0: none)
	waitT  time.Duration // how long it waits
	prefix string
	ret    Retention
	q      *queue[*redisAppend]
	once   sync.Once
}

type redisAppend struct {
	keys []string
	args []any
	err  chan error
}

func (r *redisAppend) answer() chan error { return r.err }

// redisWriters is how many pipelines may be in flight at once.
const redisWriters = 4

// RedisOptions configure the Redis store.
type RedisOptions struct {
	// URL is redis://[user:password@]host:port[/db]. Default redis://127.0.0.1:6379/0.
	URL string
	// Prefix starts every key. Default "hubbub:".
	Prefix string
	// SentinelMaster, when set, finds the primary through Redis Sentinel
	// (SentinelAddrs) under this master name and follows its failovers; the
	// URL then gives only the password and database.
	SentinelMaster string
	SentinelAddrs  []string
	// WaitReplicas makes every append wait until that many replicas have it
	// (Redis WAIT) before it is acknowledged, so a failover to a replica
	// loses no acknowledged message. An append that reaches fewer within
	// WaitTimeout fails (temporarily). Default 0: the primary alone.
	WaitReplicas int
	// WaitTimeout bounds the wait for replicas. Default 1s.
	WaitTimeout time.Duration
}

// SetRedisLogger sends the Redis client's own messages (failed dials, pool
// trouble) to log at WARN instead of the standard logger. It is process-wide.
func SetRedisLogger(log *slog.Logger) { redis.SetLogger(redisLogger{log}) }

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// OpenRedis connects to Redis and checks that it answers.
func OpenRedis(ctx context.Context, o RedisOptions, ret Retention) (*Redis, error) {
	if o.URL == "" {
		o.URL = "redis://127.0.0.1:6379/0"
	}
	if o.Prefix == "" {
		o.Prefix = "hubbub:"
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = time.Second
	}
	opts, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("store: redis url: %w", err)
	}
	var c redis.UniversalClient
	where := opts.Addr
	if o.SentinelMaster != "" {
		if len(o.SentinelAddrs) == 0 {
			return nil, errors.New("store: redis sentinel master without sentinel addresses")
		}
		c = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: o.SentinelMaster, SentinelAddrs: o.SentinelAddrs,
			Username: opts.Username, Password: opts.Password, DB: opts.DB})
		where = "sentinel master " + o.SentinelMaster
	} else {
		c = redis.NewClient(opts)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("store: redis %s: %w", where, err)
	}
	if err := appendScript.Load(ctx, c).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("store: redis %s: load script: %w", where, err)
	}
	s := &Redis{client: c, wait: o.WaitReplicas, waitT: o.WaitTimeout, prefix: o.Prefix, ret: ret.withDefaults(),
		q: newQueue[*redisAppend]()}
	s.q.start(redisWriters, s.send)
	return s, nil
}

// send runs a group of appends as one pipeline, on one connection, ending
// with WAIT when replicas are required. Scripts evicted from Redis (a
// restart, a failover, SCRIPT FLUSH) are loaded again and the group resent
// once: an append refused with NOSCRIPT did nothing.
func (s *Redis) send(group []*redisAppend) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+s.waitT)
	defer cancel()
	errs := make([]error, len(group))
	for attempt := 0; attempt < 2; attempt++ {
		pipe := s.client.Pipeline()
		cmds := make([]*redis.Cmd, len(group))
		for i, r := range group {
			cmds[i] = appendScript.EvalSha(ctx, pipe, r.keys, r.args...)
		}
		var wait *redis.IntCmd
		if s.wait > 0 {
			wait = redis.NewIntCmd(ctx, "wait", s.wait, s.waitT.Milliseconds())
			_ = pipe.Process(ctx, wait)
		}
		_, _ = pipe.Exec(ctx)
		noScript := false
		for i, c := range cmds {
			errs[i] = c.Err()
			if errs[i] != nil && redis.HasErrorPrefix(errs[i], "NOSCRIPT") {
				noScript = true
			}
		}
		if wait != nil {
			if n, err := wait.Result(); err != nil || n < int64(s.wait) {
				// Written on the primary but not safe from its loss: not
				// acknowledged. The room rolls back and reloads; a retry with
				// the same message id finds the message if it survived.
				for i := range errs {
					if errs[i] == nil {
						errs[i] = fmt.Errorf("store: redis: append reached %d of %d replicas in %v (%v)", n, s.wait, s.waitT, err)
					}
				}
			}
		}
		if !noScript || appendScript.Load(ctx, s.client).Err() != nil {
			break
		}
	}
	for i, r := range group {
		r.err <- errs[i]
	}
}

// Client is the underlying connection pool.
func (s *Redis) Client() redis.UniversalClient { return s.client }

func (s *Redis) metaKey(room string) string   { return s.prefix + "{" + room + "}:m" }
func (s *Redis) streamKey(room string) string { return s.prefix + "{" + room + "}:s" }

// StreamKey is the Redis key of a room's stream.
func (s *Redis) StreamKey(room string) string { return s.streamKey(room) }

// loadScript returns the room's epoch and top, creating both (and dropping
// any orphaned stream) when the room has no metadata.
var loadScript = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'top', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {ARGV[1], '0'}
end
return {e, redis.call('HGET', KEYS[1], 'top') or '0'}
`)

// appendScript appends a batch that continues the stream, then trims it.
// ARGV: epoch, first offset, max length, cutoff ms (0: none), meta TTL ms,
// stream TTL ms (0: none), then time and payload of each message.
var appendScript = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'epoch')
if e ~= ARGV[1] then return redis.error_reply('CONFLICT epoch') end
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
local first = tonumber(ARGV[2])
if top + 1 ~= first then return redis.error_reply('CONFLICT top ' .. string.format('%d', top)) end
local n = (#ARGV - 6) / 2
local maxlen = tonumber(ARGV[3])
if maxlen > 0 then
  for i = 0, n - 1 do
    redis.call('XADD', KEYS[2], string.format('%d-0', first + i), 't', ARGV[7 + 2 * i], 'm', ARGV[8 + 2 * i])
  end
end
top = first + n - 1
redis.call('HSET', KEYS[1], 'top', string.format('%d', top))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if maxlen <= 0 then
  redis.call('DEL', KEYS[2])
  return top
end
if top > maxlen then
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', top - maxlen + 1))
end
local cutoff = tonumber(ARGV[4])
if cutoff > 0 then
  local drop = nil
  local old = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
  for _, entry in ipairs(old) do
    local t = tonumber(entry[2][2])
    if t >= cutoff then break end
    drop = entry[1]
  end
  if drop then
    local off = tonumber(string.match(drop, '^(%d+)'))
    redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', off + 1))
  end
end
if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
return top
`)

// Load implements Store.
func (s *Redis) Load(ctx context.Context, room string, limit int) (Position, []*hubbubv1.Message, error) {
	res, err := loadScript.Run(ctx, s.client, []string{s.metaKey(room), s.streamKey(room)},
		NewEpoch(), s.ret.MetaTTL.Milliseconds()).StringSlice()
	if err != nil {
		return Position{}, nil, fmt.Errorf("store: redis load %q: %w", room, err)
	}
	if len(res) != 2 {
		return Position{}, nil, fmt.Errorf("store: redis load %q: unexpected reply %q", room, res)
	}
	top, err := strconv.ParseUint(res[1], 10, 64)
	if err != nil {
		return Position{}, nil, fmt.Errorf("store: redis load %q: top %q: %w", room, res[1], err)
	}
	pos := Position{Epoch: res[0], Offset: top}
	if limit <= 0 || top == 0 {
		return pos, nil, nil
	}
	entries, err := s.client.XRevRangeN(ctx, s.streamKey(room), strconv.FormatUint(top, 10)+"-0", "-", int64(limit)).Result()
	if err != nil {
		return Position{}, nil, fmt.Errorf("store: redis load %q: %w", room, err)
	}
	cutoff := s.ret.cutoffMs(time.Now())
	msgs := make([]*hubbubv1.Message, 0, len(entries))
	for i := len(entries) - 1; i >= 0; i-- {
		m, t, err := decodeEntry(entries[i])
		if err != nil {
			return Position{}, nil, fmt.Errorf("store: redis load %q: %w", room, err)
		}
		if t >= cutoff {
			msgs = append(msgs, m)
		}
	}
	return pos, msgs, nil
}

// Append implements Store.
func (s *Redis) Append(ctx context.Context, room, epoch string, msgs []*hubbubv1.Message) error {
	if err := checkBatch(msgs); err != nil {
		return err
	}
	args := make([]any, 0, 6+2*len(msgs))
	streamTTL := int64(0)
	if s.ret.MaxAge > 0 {
		streamTTL = s.ret.MaxAge.Milliseconds() + 1000
	}
	args = append(args, epoch, msgs[0].GetOffset(), s.ret.MaxLen, s.ret.cutoffMs(time.Now()), s.ret.MetaTTL.Milliseconds(), streamTTL)
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("store: encode: %w", err)
		}
		args = append(args, m.GetTimeUnixMs(), b)
	}
	err := s.q.submit(ctx, &redisAppend{keys: []string{s.metaKey(room), s.streamKey(room)}, args: args, err: make(chan error, 1)})
	switch {
	case err == nil, errors.Is(err, errClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err // a context error: the append may still happen, and the room reloads
	case strings.HasPrefix(err.Error(), "CONFLICT"):
		return fmt.Errorf("%w (%s)", ErrConflict, err.Error())
	}
	return fmt.Errorf("store: redis append %q: %w", room, err)
}

// Read implements Store.
func (s *Redis) Read(ctx context.Context, room string, after uint64, limit int) ([]*hubbubv1.Message, error) {
	start := strconv.FormatUint(after+1, 10) + "-0"
	var entries []redis.XMessage
	var err error
	if limit > 0 {
		entries, err = s.client.XRangeN(ctx, s.streamKey(room), start, "+", int64(limit)).Result()
	} else {
		entries, err = s.client.XRange(ctx, s.streamKey(room), start, "+").Result()
	}
	if err != nil {
		return nil, fmt.Errorf("store: redis read %q: %w", room, err)
	}
	cutoff := s.ret.cutoffMs(time.Now())
	out := make([]*hubbubv1.Message, 0, len(entries))
	for _, e := range entries {
		m, t, err := decodeEntry(e)
		if err != nil {
			return nil, fmt.Errorf("store: redis read %q: %w", room, err)
		}
		if t >= cutoff {
			out = append(out, m)
		}
	}
	return out, nil
}

func decodeEntry(e redis.XMessage) (*hubbubv1.Message, int64, error) {
	t, _ := e.Values["t"].(string)
	payload, _ := e.Values["m"].(string)
	ms, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("entry %s: time %q", e.ID, t)
	}
	m := &hubbubv1.Message{}
	if err := proto.Unmarshal([]byte(payload), m); err != nil {
		return nil, 0, fmt.Errorf("entry %s: %w", e.ID, err)
	}
	return m, ms, nil
}

// Close implements Store: appends not yet sent fail.
func (s *Redis) Close() error {
	var err error
	s.once.Do(func() {
		s.q.stop()
		err = s.client.Close()
	})
	return err
}
