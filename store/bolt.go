package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// Bolt is the embedded store: one bbolt file (a copy-on-write B+tree whose
// every commit is fsync-ed, so a crash or kill -9 leaves either the old or the
// new state, never a torn one) under the data directory. It serves a single
// node: nodes of a cluster cannot share it.
//
// Appends from all rooms go through one writer goroutine that commits
// whatever queued while the previous commit was syncing in one transaction
// (group commit): one fsync when idle, many appends per fsync under load.
//
// Layout: bucket "rooms" / bucket <room> holds "epoch", "top" (8-byte
// big-endian) and bucket "msgs": 8-byte big-endian offset -> 8-byte
// big-endian time (Unix ms) followed by the protobuf Message.
type Bolt struct {
	log  *slog.Logger
	db   *bolt.DB
	ret  Retention
	reqs chan *boltOp
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

// boltOp is one room's change, committed by the writer with others. It
// returns ErrConflict without changing anything, or another error that fails
// the whole transaction.
type boltOp struct {
	apply func(tx *bolt.Tx, now time.Time) error
	err   chan error
}

var (
	bucketRooms = []byte("rooms")
	bucketMsgs  = []byte("msgs")
	keyEpoch    = []byte("epoch")
	keyTop      = []byte("top")
	keyAt       = []byte("at") // 8-byte big-endian Unix ms of the last append (or creation)
)

// maxGroup bounds the appends committed in one transaction.
const maxGroup = 512

// OpenBolt opens (creating it if needed) the store in dir/history.db. Another
// process holding the file makes it fail after a second.
func OpenBolt(dir string, ret Retention) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: data dir: %w", err)
	}
	path := filepath.Join(dir, "history.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true, // rebuilt on open: cheaper commits
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketRooms)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Bolt{log: slog.Default(), db: db, ret: ret.withDefaults(), reqs: make(chan *boltOp, maxGroup),
		quit: make(chan struct{}), done: make(chan struct{})}
	go s.writer()
	return s, nil
}

// Path is the store's file.
func (s *Bolt) Path() string { return s.db.Path() }

// Load implements Store.
func (s *Bolt) Load(_ context.Context, room string, limit int) (Position, []*hubbubv1.Message, error) {
	var pos Position
	var msgs []*hubbubv1.Message
	read := func(tx *bolt.Tx) (bool, error) {
		b := tx.Bucket(bucketRooms).Bucket([]byte(room))
		if b == nil {
			return false, nil
		}
		pos.Epoch = string(b.Get(keyEpoch))
		pos.Offset = decodeTop(b.Get(keyTop))
		var err error
		msgs, err = newestMessages(b.Bucket(bucketMsgs), limit, s.ret.cutoffMs(time.Now()))
		return true, err
	}
	var found bool
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		found, err = read(tx)
		return err
	})
	if err != nil || found {
		return pos, msgs, wrapErr(err)
	}
	// A new room: created through the writer, in a commit shared with others.
	err = s.do(context.Background(), func(tx *bolt.Tx, _ time.Time) error {
		if found, err := read(tx); found || err != nil {
			return err
		}
		b, err := tx.Bucket(bucketRooms).CreateBucket([]byte(room))
		if err != nil {
			return err
		}
		if _, err := b.CreateBucket(bucketMsgs); err != nil {
			return err
		}
		pos = Position{Epoch: NewEpoch()}
		if err := b.Put(keyEpoch, []byte(pos.Epoch)); err != nil {
			return err
		}
		if err := b.Put(keyAt, encodeTop(uint64(time.Now().UnixMilli()))); err != nil {
			return err
		}
		return b.Put(keyTop, encodeTop(0))
	})
	return pos, msgs, wrapErr(err)
}

func newestMessages(b *bolt.Bucket, limit int, cutoff int64) ([]*hubbubv1.Message, error) {
	if b == nil || limit <= 0 {
		return nil, nil
	}
	var rev []*hubbubv1.Message
	c := b.Cursor()
	for k, v := c.Last(); k != nil && len(rev) < limit; k, v = c.Prev() {
		if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) < cutoff {
			break
		}
		m := &hubbubv1.Message{}
		if err := proto.Unmarshal(v[8:], m); err != nil {
			return nil, fmt.Errorf("offset %d: %w", binary.BigEndian.Uint64(k), err)
		}
		rev = append(rev, m)
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev, nil
}

// Append implements Store.
func (s *Bolt) Append(ctx context.Context, room, epoch string, msgs []*hubbubv1.Message) error {
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
	return s.do(ctx, func(tx *bolt.Tx, now time.Time) error { return s.apply(tx, room, epoch, msgs, vals, now) })
}

// do hands an operation to the writer and waits for its commit.
func (s *Bolt) do(ctx context.Context, apply func(*bolt.Tx, time.Time) error) error {
	req := &boltOp{apply: apply, err: make(chan error, 1)}
	select {
	case s.reqs <- req:
	case <-s.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.err:
		return err
	case <-s.done:
		select {
		case err := <-req.err:
			return err
		default:
			return errClosed
		}
	case <-ctx.Done():
		return ctx.Err() // the append may still commit: the room reloads
	}
}

var errClosed = errors.New("store: closed")

// writer commits queued appends, as many as queued, in one transaction.
func (s *Bolt) writer() {
	defer close(s.done)
	group := make([]*boltOp, 0, maxGroup)
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	for {
		var first *boltOp
		select {
		case <-sweep.C:
			if err := s.Sweep(time.Now()); err != nil {
				s.log.Warn("store: sweep", "err", err)
			}
			continue
		case first = <-s.reqs:
		case <-s.quit:
			for {
				select {
				case r := <-s.reqs:
					r.err <- errClosed
				default:
					return
				}
			}
		}
		group = append(group[:0], first)
	drain:
		for len(group) < maxGroup {
			select {
			case r := <-s.reqs:
				group = append(group, r)
			default:
				break drain
			}
		}
		results := make([]error, len(group))
		err := s.db.Update(func(tx *bolt.Tx) error {
			now := time.Now()
			for i, r := range group {
				results[i] = r.apply(tx, now)
				if results[i] != nil && !errors.Is(results[i], ErrConflict) {
					return results[i]
				}
			}
			return nil
		})
		for i, r := range group {
			if err != nil {
				r.err <- wrapErr(err)
			} else {
				r.err <- results[i]
			}
		}
	}
}

// apply checks that r continues its room's stream, then writes and trims it.
// A conflict changes nothing.
func (s *Bolt) apply(tx *bolt.Tx, room, epoch string, msgs []*hubbubv1.Message, vals [][]byte, now time.Time) error {
	b := tx.Bucket(bucketRooms).Bucket([]byte(room))
	if b == nil || string(b.Get(keyEpoch)) != epoch {
		return ErrConflict
	}
	top := decodeTop(b.Get(keyTop))
	if msgs[0].GetOffset() != top+1 {
		return ErrConflict
	}
	mb := b.Bucket(bucketMsgs)
	if s.ret.MaxLen > 0 {
		for i, m := range msgs {
			if err := mb.Put(encodeTop(m.GetOffset()), vals[i]); err != nil {
				return err
			}
		}
	}
	top = msgs[len(msgs)-1].GetOffset()
	if err := b.Put(keyTop, encodeTop(top)); err != nil {
		return err
	}
	if err := b.Put(keyAt, encodeTop(uint64(now.UnixMilli()))); err != nil {
		return err
	}
	return s.trim(mb, top, now)
}

// trim drops messages beyond MaxLen and older than MaxAge.
func (s *Bolt) trim(mb *bolt.Bucket, top uint64, now time.Time) error {
	var minOffset uint64
	if top > uint64(max(s.ret.MaxLen, 0)) {
		minOffset = top - uint64(max(s.ret.MaxLen, 0)) + 1
	}
	cutoff := s.ret.cutoffMs(now)
	c := mb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		if binary.BigEndian.Uint64(k) >= minOffset && (len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) >= cutoff) {
			return nil
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// sweepEvery is how often the writer sweeps rooms that no longer publish.
const sweepEvery = 10 * time.Minute

// Sweep trims aged messages of every room, including rooms that no longer
// publish (appends trim their own room), and deletes rooms whose last append
// is older than MetaTTL: their next activation starts a new epoch. The
// writer runs it every 10 minutes.
func (s *Bolt) Sweep(now time.Time) error {
	cutoff := s.ret.cutoffMs(now)
	expired := now.Add(-s.ret.MetaTTL).UnixMilli()
	return wrapErr(s.db.Update(func(tx *bolt.Tx) error {
		rooms := tx.Bucket(bucketRooms)
		var drop [][]byte
		err := rooms.ForEachBucket(func(name []byte) error {
			b := rooms.Bucket(name)
			if int64(decodeTop(b.Get(keyAt))) < expired {
				drop = append(drop, append([]byte(nil), name...))
				return nil
			}
			mb := b.Bucket(bucketMsgs)
			if mb == nil || cutoff == 0 {
				return nil
			}
			c := mb.Cursor()
			for k, v := c.First(); k != nil && (len(v) < 8 || int64(binary.BigEndian.Uint64(v)) < cutoff); k, v = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range drop {
			if err := rooms.DeleteBucket(name); err != nil {
				return err
			}
		}
		return nil
	}))
}

// Read implements Store.
func (s *Bolt) Read(_ context.Context, room string, after uint64, limit int) ([]*hubbubv1.Message, error) {
	var out []*hubbubv1.Message
	cutoff := s.ret.cutoffMs(time.Now())
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRooms).Bucket([]byte(room))
		if b == nil || b.Bucket(bucketMsgs) == nil {
			return nil
		}
		c := b.Bucket(bucketMsgs).Cursor()
		for k, v := c.Seek(encodeTop(after + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) < cutoff {
				continue
			}
			m := &hubbubv1.Message{}
			if err := proto.Unmarshal(v[8:], m); err != nil {
				return fmt.Errorf("offset %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, m)
		}
		return nil
	})
	return out, wrapErr(err)
}

// Close implements Store: pending appends fail, then the file is closed.
func (s *Bolt) Close() error {
	var err error
	s.once.Do(func() {
		close(s.quit)
		<-s.done
		err = s.db.Close()
	})
	return err
}

func encodeTop(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func decodeTop(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func wrapErr(err error) error {
	if err == nil || errors.Is(err, ErrConflict) {
		return err
	}
	return fmt.Errorf("store: %w", err)
}

// NewEpoch returns a new random epoch.
func NewEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
