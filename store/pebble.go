package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// Embedded is the store of a single node: a Pebble database (a log-structured
// merge tree: an append is one write to its write-ahead log, fsync-ed before
// the append returns, so a crash or kill -9 loses nothing acknowledged and
// leaves no torn state: the log is replayed on open) in the data directory.
// Nodes of a cluster cannot share it.
//
// Appends from all rooms go through one writer goroutine that commits
// whatever queued while the previous commit was syncing as one batch (group
// commit): one fsync when idle, many appends per fsync under load.
//
// Keys: "m" + room -> the room's meta (top, first retained offset, time of
// the last append, epoch); "s" + len(room) + room + offset (8-byte
// big-endian) -> time (Unix ms, 8-byte big-endian) + the protobuf Message.
// Trimming deletes the oldest messages one by one and moves "first", so
// reads start at a live key and never wade through deleted ones.
type Embedded struct {
	log *slog.Logger
	db  *pebble.DB
	ret Retention

	fsCloser io.Closer
	q        *queue[*embeddedOp]
	// metas caches committed room metas; only the writer goroutine uses it.
	metas map[string]meta
	once  sync.Once
}

// embeddedOp is one room's change, committed by the writer with others in
// one indexed batch (so it reads what the ops before it wrote). It returns
// ErrConflict without writing anything, or another error that fails the
// whole batch.
type embeddedOp struct {
	apply func(w *wtx) error
	err   chan error
}

func (op *embeddedOp) answer() chan error { return op.err }

// wtx is the writer's view of one batch: reads and writes of room metas go
// through it, so the metas of rooms that keep publishing are read from
// memory, not from the database (the writer is their only writer).
type wtx struct {
	b       *pebble.Batch
	now     time.Time
	cache   map[string]meta // committed metas
	overlay map[string]meta // metas written by this batch
	reset   bool            // the batch changed metas behind the overlay: drop the cache
}

func (w *wtx) getMeta(room string) (meta, bool, error) {
	if m, ok := w.overlay[room]; ok {
		return m, true, nil
	}
	if m, ok := w.cache[room]; ok {
		return m, true, nil
	}
	return getMeta(w.b, room)
}

func (w *wtx) putMeta(room string, m meta) error {
	w.overlay[room] = m
	return w.b.Set(metaKey(room), m.encode(), nil)
}

// maxCachedMetas bounds the writer's meta cache; past it the cache starts over.
const maxCachedMetas = 100_000

// sweepEvery is how often the store sweeps rooms that no longer publish.
const sweepEvery = 10 * time.Minute

// OpenEmbedded opens (creating it if needed) the store in dir. Another
// process using dir makes it fail.
func OpenEmbedded(dir string, ret Retention, log *slog.Logger) (*Embedded, error) {
	if log == nil {
		log = slog.Default()
	}
	// Pebble's default file system checks for stalled disks; it is set up here
	// so its goroutine also ends when opening fails.
	fs, fsCloser := vfs.WithDiskHealthChecks(vfs.Default, 5*time.Second, nil, func(info vfs.DiskSlowInfo) {
		log.Warn("store: slow disk", "path", info.Path, "op", info.OpType.String(), "duration", info.Duration)
	})
	db, err := pebble.Open(dir, &pebble.Options{FS: fs, Logger: pebbleLogger{log}})
	if err != nil {
		_ = fsCloser.Close()
		if errors.Is(err, syscall.EAGAIN) {
			return nil, fmt.Errorf("store: %s is in use by another process (one hubbub serve per --data-dir): %w", dir, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Embedded{log: log, db: db, fsCloser: fsCloser, metas: map[string]meta{}, ret: ret.withDefaults(), q: newQueue[*embeddedOp]()}
	s.q.start(1, s.write) // one writer: the meta cache and the fencing checks rely on it
	s.q.every(sweepEvery, func() {
		if err := s.Sweep(context.Background(), time.Now()); err != nil && !errors.Is(err, errClosed) {
			s.log.Warn("store: sweep", "err", err)
		}
	})
	return s, nil
}

// meta is a room's position and bookkeeping.
type meta struct {
	top, first uint64 // newest offset; lowest offset that may still be stored
	at         int64  // Unix ms of the last append (or creation)
	epoch      string
}

func (m meta) encode() []byte {
	b := make([]byte, 24, 24+len(m.epoch))
	binary.BigEndian.PutUint64(b, m.top)
	binary.BigEndian.PutUint64(b[8:], m.first)
	binary.BigEndian.PutUint64(b[16:], uint64(m.at))
	return append(b, m.epoch...)
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) < 24 {
		return meta{}, errors.New("store: corrupt room meta")
	}
	return meta{top: binary.BigEndian.Uint64(b), first: binary.BigEndian.Uint64(b[8:]),
		at: int64(binary.BigEndian.Uint64(b[16:])), epoch: string(b[24:])}, nil
}

func metaKey(room string) []byte { return append([]byte{'m'}, room...) }

// msgPrefix is the prefix of a room's message keys.
func msgPrefix(room string) []byte {
	k := make([]byte, 0, 1+binary.MaxVarintLen64+len(room)+8)
	k = append(k, 's')
	k = binary.AppendUvarint(k, uint64(len(room)))
	return append(k, room...)
}

func msgKey(prefix []byte, offset uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, offset)
}

// getMeta reads a room's meta from the database or a batch; ok is false
// when the room has none.
func getMeta(r pebble.Reader, room string) (meta, bool, error) {
	v, closer, err := r.Get(metaKey(room))
	if errors.Is(err, pebble.ErrNotFound) {
		return meta{}, false, nil
	}
	if err != nil {
		return meta{}, false, err
	}
	defer closer.Close()
	m, err := decodeMeta(v)
	return m, err == nil, err
}

// Load implements Store.
func (s *Embedded) Load(ctx context.Context, room string, limit int) (Position, []*hubbubv1.Message, error) {
	m, ok, err := getMeta(s.db, room)
	if err != nil {
		return Position{}, nil, wrapErr(err)
	}
	if !ok {
		// A new room: created through the writer, in a commit shared with others.
		err = s.do(ctx, func(w *wtx) error {
			var found bool
			if m, found, err = w.getMeta(room); found || err != nil {
				return err
			}
			m = meta{epoch: NewEpoch(), first: 1, at: w.now.UnixMilli()}
			return w.putMeta(room, m)
		})
		if err != nil {
			return Position{}, nil, err
		}
	}
	pos := Position{Offset: m.top, Epoch: m.epoch}
	if limit <= 0 || m.top == 0 {
		return pos, nil, nil
	}
	from := max(m.first, 1)
	if m.top >= uint64(limit) {
		from = max(from, m.top-uint64(limit)+1)
	}
	msgs, err := s.scan(room, from, m.top, 0)
	return pos, msgs, err
}

// scan reads a room's retained messages with offsets from..to, at most limit (<= 0: all).
func (s *Embedded) scan(room string, from, to uint64, limit int) ([]*hubbubv1.Message, error) {
	prefix := msgPrefix(room)
	upper := msgKey(prefix, to)
	upper = append(upper, 0) // just past offset to
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: msgKey(prefix, from), UpperBound: upper})
	if err != nil {
		return nil, wrapErr(err)
	}
	defer it.Close()
	cutoff := s.ret.cutoffMs(time.Now())
	var out []*hubbubv1.Message
	for ok := it.First(); ok && (limit <= 0 || len(out) < limit); ok = it.Next() {
		v := it.Value()
		if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) < cutoff {
			continue
		}
		m := &hubbubv1.Message{}
		if err := proto.Unmarshal(v[8:], m); err != nil {
			return nil, fmt.Errorf("store: %s offset %d: %w", room, binary.BigEndian.Uint64(it.Key()[len(prefix):]), err)
		}
		out = append(out, m)
	}
	return out, wrapErr(it.Error())
}

// Append implements Store.
func (s *Embedded) Append(ctx context.Context, room, epoch string, msgs []*hubbubv1.Message) error {
	if err := checkBatch(msgs); err != nil {
		return err
	}
	vals := make([][]byte, len(msgs))
	for i, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("store: encode: %w", err)
		}
		v := make([]byte, 8, 8+len(b))
		binary.BigEndian.PutUint64(v, uint64(m.GetTimeUnixMs()))
		vals[i] = append(v, b...)
	}
	return s.do(ctx, func(w *wtx) error { return s.apply(w, room, epoch, msgs, vals) })
}

// apply checks that msgs continue the room's stream, then writes and trims it.
// A conflict writes nothing.
func (s *Embedded) apply(w *wtx, room, epoch string, msgs []*hubbubv1.Message, vals [][]byte) error {
	b := w.b
	m, ok, err := w.getMeta(room)
	if err != nil {
		return err
	}
	if !ok || m.epoch != epoch || msgs[0].GetOffset() != m.top+1 {
		return ErrConflict
	}
	prefix := msgPrefix(room)
	if s.ret.MaxLen > 0 {
		for i, msg := range msgs {
			if err := b.Set(msgKey(prefix, msg.GetOffset()), vals[i], nil); err != nil {
				return err
			}
		}
	}
	m.top = msgs[len(msgs)-1].GetOffset()
	m.at = w.now.UnixMilli()
	if err := s.trimLength(b, prefix, &m); err != nil {
		return err
	}
	return w.putMeta(room, m)
}

// trimLength deletes the messages beyond MaxLen (usually one per appended
// message), moving m.first. Aged messages are skipped by reads and deleted by
// the sweep: checking their age here would read them back on every append.
func (s *Embedded) trimLength(b *pebble.Batch, prefix []byte, m *meta) error {
	keep := uint64(max(s.ret.MaxLen, 0))
	for ; m.top >= keep && m.first < m.top-keep+1; m.first++ {
		if err := b.Delete(msgKey(prefix, m.first), nil); err != nil {
			return err
		}
	}
	return nil
}

// trimAge deletes the messages older than MaxAge from the oldest, moving m.first.
func (s *Embedded) trimAge(b *pebble.Batch, prefix []byte, m *meta, now time.Time) error {
	cutoff := s.ret.cutoffMs(now)
	for ; cutoff > 0 && m.first <= m.top; m.first++ {
		k := msgKey(prefix, m.first)
		v, closer, err := b.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		young := len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) >= cutoff
		_ = closer.Close()
		if young {
			break
		}
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// do hands an operation to the writer and waits for its commit.
func (s *Embedded) do(ctx context.Context, apply func(*wtx) error) error {
	return s.q.submit(ctx, &embeddedOp{apply: apply, err: make(chan error, 1)})
}

// write commits a group of operations in one synced batch and answers them.
func (s *Embedded) write(group []*embeddedOp) {
	for i, err := range s.commit(group) {
		group[i].err <- err
	}
}

// commit applies a group in one batch. An operation that conflicts is undone
// by replaying the others without it (conflicts are rare: a room move).
func (s *Embedded) commit(group []*embeddedOp) []error {
	results := make([]error, len(group))
	now := time.Now()
	for {
		b := s.db.NewIndexedBatch()
		w := &wtx{b: b, now: now, cache: s.metas, overlay: map[string]meta{}}
		var failed error
		conflict := -1
		for i, r := range group {
			if results[i] != nil {
				continue // refused in an earlier round
			}
			if err := r.apply(w); err != nil {
				if errors.Is(err, ErrConflict) {
					conflict = i
				} else {
					failed = err
				}
				break
			}
		}
		if conflict >= 0 {
			// The batch may hold part of the refused operation: drop it and
			// redo the group without it.
			_ = b.Close()
			results[conflict] = ErrConflict
			continue
		}
		if failed == nil {
			failed = b.Commit(pebble.Sync)
		}
		_ = b.Close()
		if failed == nil && w.reset {
			clear(s.metas)
		} else if failed == nil {
			if len(s.metas)+len(w.overlay) > maxCachedMetas {
				clear(s.metas)
			}
			for room, m := range w.overlay {
				s.metas[room] = m
			}
		} else {
			clear(s.metas) // the database may hold more or less than the cache
		}
		if failed != nil {
			for i := range results {
				if results[i] == nil {
					results[i] = wrapErr(failed)
				}
			}
		}
		return results
	}
}

// Sweep trims aged messages of every room, including rooms that no longer
// publish (appends trim their own room), and deletes rooms whose last append
// is older than MetaTTL: their next activation starts a new epoch. The
// writer runs it every 10 minutes.
func (s *Embedded) Sweep(ctx context.Context, now time.Time) error {
	return s.do(ctx, func(w *wtx) error { return s.sweep(w, now) })
}

func (s *Embedded) sweep(w *wtx, now time.Time) error {
	w.reset = true // metas move or go behind the cache
	w.cache = nil  // later operations in this batch read metas from the batch
	b := w.b
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: []byte{'m'}, UpperBound: []byte{'m' + 1}})
	if err != nil {
		return wrapErr(err)
	}
	type roomMeta struct {
		room string
		m    meta
	}
	var rooms []roomMeta
	for ok := it.First(); ok; ok = it.Next() {
		m, err := decodeMeta(it.Value())
		if err != nil {
			_ = it.Close()
			return err
		}
		rooms = append(rooms, roomMeta{string(it.Key()[1:]), m})
	}
	if err := it.Close(); err != nil {
		return wrapErr(err)
	}
	expired := now.Add(-s.ret.MetaTTL).UnixMilli()
	for _, r := range rooms {
		prefix := msgPrefix(r.room)
		if r.m.at < expired {
			if err := b.DeleteRange(msgKey(prefix, 0), msgKey(prefix, ^uint64(0)), nil); err != nil {
				return wrapErr(err)
			}
			if err := b.Delete(metaKey(r.room), nil); err != nil {
				return wrapErr(err)
			}
			continue
		}
		m := r.m
		if err := s.trimAge(b, prefix, &m, now); err != nil {
			return wrapErr(err)
		}
		if m.first != r.m.first {
			if err := b.Set(metaKey(r.room), m.encode(), nil); err != nil {
				return wrapErr(err)
			}
		}
	}
	return nil
}

// Read implements Store.
func (s *Embedded) Read(_ context.Context, room string, after uint64, limit int) ([]*hubbubv1.Message, error) {
	m, ok, err := getMeta(s.db, room)
	if err != nil || !ok || after >= m.top {
		return nil, wrapErr(err)
	}
	return s.scan(room, max(after+1, m.first), m.top, limit)
}

// Close implements Store: pending appends fail, then the database is closed.
func (s *Embedded) Close() error {
	var err error
	s.once.Do(func() {
		s.q.stop()
		err = s.db.Close()
		_ = s.fsCloser.Close()
	})
	return err
}

// pebbleLogger sends Pebble's messages to slog: its info at DEBUG.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic(msg)
}
