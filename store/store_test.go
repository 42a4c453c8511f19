package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/hubbub-chat/hubbub/internal/testredis"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
)

func TestMain(m *testing.M) {
	// The Redis client's own messages (failed dials, Sentinel switches while
	// tests stop servers) go to a discarded log instead of the test output.
	store.SetRedisLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	goleak.VerifyTestMain(m)
}

// backend opens a store with the retention; reopen opens a second handle on
// the same data (a restarted process, another node).
type backend struct {
	name string
	open func(t *testing.T, ret store.Retention) (s store.Store, reopen func() store.Store)
}

func backends() []backend {
	return []backend{
		{"embedded", func(t *testing.T, ret store.Retention) (store.Store, func() store.Store) {
			dir := t.TempDir()
			s, err := store.OpenEmbedded(dir, ret, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s, func() store.Store {
				_ = s.Close()
				s2, err := store.OpenEmbedded(dir, ret, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s2.Close() })
				return s2
			}
		}},
		{"redis", func(t *testing.T, ret store.Retention) (store.Store, func() store.Store) {
			url := testredis.Start(t)
			open := func() store.Store {
				s, err := store.OpenRedis(context.Background(), store.RedisOptions{URL: url}, ret)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			return open(), open
		}},
	}
}

func msgs(first, n uint64, epoch string, at time.Time) []*hubbubv1.Message {
	out := make([]*hubbubv1.Message, 0, n)
	for i := uint64(0); i < n; i++ {
		off := first + i
		out = append(out, &hubbubv1.Message{
			Room: "r", Offset: off, Epoch: epoch, TimeUnixMs: at.UnixMilli(),
			Body:      &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: fmt.Sprintf("m%d", off)}},
			MessageId: fmt.Sprintf("id-%d", off), Sender: &hubbubv1.ClientInfo{User: "u"},
		})
	}
	return out
}

func offsets(ms []*hubbubv1.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.GetOffset()
	}
	return out
}

func wantOffsets(t *testing.T, what string, got []*hubbubv1.Message, from, to uint64) {
	t.Helper()
	if uint64(len(got)) != to-from+1 {
		t.Fatalf("%s: offsets %v, want %d..%d", what, offsets(got), from, to)
	}
	for i, m := range got {
		if m.GetOffset() != from+uint64(i) || m.GetBody().GetText() != fmt.Sprintf("m%d", m.GetOffset()) {
			t.Fatalf("%s: message %d is %v, want offset %d", what, i, m, from+uint64(i))
		}
	}
}

func TestStores(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Run("positions and reopen", func(t *testing.T) {
				s, reopen := b.open(t, store.Retention{MaxLen: 100})
				pos, got, err := s.Load(ctx, "r", 10)
				if err != nil || pos.Offset != 0 || pos.Epoch == "" || len(got) != 0 {
					t.Fatalf("new room: %+v %v %v", pos, got, err)
				}
				again, _, _ := s.Load(ctx, "r", 10)
				if again != pos {
					t.Fatalf("second load %+v, first %+v", again, pos)
				}
				other, _, _ := s.Load(ctx, "other", 10)
				if other.Epoch == pos.Epoch {
					t.Fatal("two rooms share an epoch")
				}
				now := time.Now()
				if err := s.Append(ctx, "r", pos.Epoch, msgs(1, 3, pos.Epoch, now)); err != nil {
					t.Fatal(err)
				}
				if err := s.Append(ctx, "r", pos.Epoch, msgs(4, 1, pos.Epoch, now)); err != nil {
					t.Fatal(err)
				}
				all, err := s.Read(ctx, "r", 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				wantOffsets(t, "read all", all, 1, 4)
				if !proto.Equal(all[0], msgs(1, 1, pos.Epoch, now)[0]) {
					t.Fatalf("stored %v, appended %v", all[0], msgs(1, 1, pos.Epoch, now)[0])
				}
				part, _ := s.Read(ctx, "r", 2, 1)
				wantOffsets(t, "read after 2 limit 1", part, 3, 3)

				s2 := reopen()
				p2, recent, err := s2.Load(ctx, "r", 2)
				if err != nil || p2.Offset != 4 || p2.Epoch != pos.Epoch {
					t.Fatalf("after reopen: %+v %v, want offset 4 epoch %s", p2, err, pos.Epoch)
				}
				wantOffsets(t, "newest 2 after reopen", recent, 3, 4)
				if err := s2.Append(ctx, "r", pos.Epoch, msgs(5, 1, pos.Epoch, now)); err != nil {
					t.Fatal(err)
				}
			})
			t.Run("conflicts store nothing", func(t *testing.T) {
				s, _ := b.open(t, store.Retention{MaxLen: 100})
				pos, _, _ := s.Load(ctx, "r", 0)
				now := time.Now()
				if err := s.Append(ctx, "r", pos.Epoch, msgs(1, 2, pos.Epoch, now)); err != nil {
					t.Fatal(err)
				}
				for name, err := range map[string]error{
					"same offset again": s.Append(ctx, "r", pos.Epoch, msgs(2, 2, pos.Epoch, now)),
					"gap":               s.Append(ctx, "r", pos.Epoch, msgs(4, 1, pos.Epoch, now)),
					"other epoch":       s.Append(ctx, "r", "feedfeed", msgs(3, 1, pos.Epoch, now)),
					"unknown room":      s.Append(ctx, "never-loaded", pos.Epoch, msgs(1, 1, pos.Epoch, now)),
				} {
					if !errors.Is(err, store.ErrConflict) {
						t.Errorf("%s: %v, want ErrConflict", name, err)
					}
				}
				if err := s.Append(ctx, "r", pos.Epoch, msgs(3, 1, pos.Epoch, now)); err != nil {
					t.Fatal(err)
				}
				all, _ := s.Read(ctx, "r", 0, 0)
				wantOffsets(t, "after conflicts", all, 1, 3)
				if err := s.Append(ctx, "r", pos.Epoch, []*hubbubv1.Message{msgs(4, 1, "", now)[0], msgs(6, 1, "", now)[0]}); err == nil || errors.Is(err, store.ErrConflict) {
					t.Fatalf("non-consecutive batch: %v", err)
				}
			})
			t.Run("racing activations write each offset once", func(t *testing.T) {
				s, reopen := b.open(t, store.Retention{MaxLen: 1000})
				pos, _, _ := s.Load(ctx, "r", 0)
				handles := []store.Store{s}
				if b.name == "redis" {
					handles = append(handles, reopen()) // a second node
				} else {
					handles = append(handles, s)
				}
				// Two writers each believe they own the room and append 1..200;
				// a writer that conflicts reloads the top and goes on after it.
				var mu sync.Mutex
				won := map[uint64]int{}
				var wg sync.WaitGroup
				for w, h := range handles {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next := uint64(1); next <= 200; {
							err := h.Append(ctx, "r", pos.Epoch, msgs(next, 1, pos.Epoch, time.Now()))
							switch {
							case err == nil:
								mu.Lock()
								won[next] = w
								mu.Unlock()
								next++
							case errors.Is(err, store.ErrConflict):
								p, _, _ := h.Load(ctx, "r", 0)
								next = p.Offset + 1
							default:
								t.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				all, _ := s.Read(ctx, "r", 0, 0)
				wantOffsets(t, "raced stream", all, 1, 200)
				if len(won) != 200 {
					t.Fatalf("%d offsets acknowledged, want 200", len(won))
				}
			})
			t.Run("trim by length", func(t *testing.T) {
				s, _ := b.open(t, store.Retention{MaxLen: 5})
				pos, _, _ := s.Load(ctx, "r", 0)
				for off := uint64(1); off <= 12; off += 3 {
					if err := s.Append(ctx, "r", pos.Epoch, msgs(off, 3, pos.Epoch, time.Now())); err != nil {
						t.Fatal(err)
					}
				}
				all, _ := s.Read(ctx, "r", 0, 0)
				wantOffsets(t, "trimmed", all, 8, 12)
				p, recent, _ := s.Load(ctx, "r", 100)
				if p.Offset != 12 {
					t.Fatalf("top %d, want 12", p.Offset)
				}
				wantOffsets(t, "load after trim", recent, 8, 12)
			})
			t.Run("trim by age", func(t *testing.T) {
				s, _ := b.open(t, store.Retention{MaxLen: 100, MaxAge: time.Minute})
				pos, _, _ := s.Load(ctx, "r", 0)
				old := time.Now().Add(-2 * time.Minute)
				if err := s.Append(ctx, "r", pos.Epoch, msgs(1, 3, pos.Epoch, old)); err != nil {
					t.Fatal(err)
				}
				if err := s.Append(ctx, "r", pos.Epoch, msgs(4, 2, pos.Epoch, time.Now())); err != nil {
					t.Fatal(err)
				}
				all, _ := s.Read(ctx, "r", 0, 0)
				wantOffsets(t, "aged", all, 4, 5)
			})
			t.Run("no history keeps the position", func(t *testing.T) {
				s, _ := b.open(t, store.Retention{})
				pos, _, _ := s.Load(ctx, "r", 10)
				if err := s.Append(ctx, "r", pos.Epoch, msgs(1, 3, pos.Epoch, time.Now())); err != nil {
					t.Fatal(err)
				}
				p, recent, _ := s.Load(ctx, "r", 10)
				if p.Offset != 3 || len(recent) != 0 {
					t.Fatalf("position %+v, %d messages; want offset 3 and none", p, len(recent))
				}
			})
		})
	}
}

// A second process cannot open a data directory in use.
func TestEmbeddedLocksItsDirectory(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenEmbedded(dir, store.Retention{MaxLen: 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := store.OpenEmbedded(dir, store.Retention{MaxLen: 10}, nil); err == nil {
		_ = s2.Close()
		t.Fatal("opened a data directory that is in use")
	}
}

// Many rooms appending at once share commits and each keeps its order.
func TestEmbeddedGroupCommit(t *testing.T) {
	s, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 1000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for r := 0; r < 20; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := fmt.Sprintf("room-%d", r)
			pos, _, err := s.Load(ctx, room, 0)
			if err != nil {
				t.Error(err)
				return
			}
			for off := uint64(1); off <= 50; off++ {
				if err := s.Append(ctx, room, pos.Epoch, msgs(off, 1, pos.Epoch, time.Now())); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for r := 0; r < 20; r++ {
		all, _ := s.Read(ctx, fmt.Sprintf("room-%d", r), 0, 0)
		wantOffsets(t, fmt.Sprintf("room-%d", r), all, 1, 50)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, "room-1", "x", msgs(51, 1, "x", time.Now())); err == nil {
		t.Fatal("append after close succeeded")
	}
}

// The sweep trims rooms that stopped publishing and forgets rooms idle past
// the position TTL (their next load starts a new epoch).
func TestEmbeddedSweep(t *testing.T) {
	s, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 100, MaxAge: time.Minute, MetaTTL: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	pos, _, _ := s.Load(ctx, "quiet", 0)
	if err := s.Append(ctx, "quiet", pos.Epoch, msgs(1, 3, pos.Epoch, time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := s.Sweep(ctx, time.Now().Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.Read(ctx, "quiet", 0, 0); len(left) != 0 {
		t.Fatalf("%d aged messages left after a sweep", len(left))
	}
	if p, _, _ := s.Load(ctx, "quiet", 0); p != (store.Position{Offset: 3, Epoch: pos.Epoch}) {
		t.Fatalf("position after trimming %+v, want offset 3 epoch %s", p, pos.Epoch)
	}
	if err := s.Sweep(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := s.Load(ctx, "quiet", 0); p.Offset != 0 || p.Epoch == pos.Epoch {
		t.Fatalf("position after the TTL %+v, want a new epoch at 0", p)
	}
}

// Users' marks survive a reopen, are kept per room, and a save of some
// users leaves the others' alone.
func TestStoreMarks(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s, reopen := b.open(t, store.Retention{MaxLen: 100})
			if m, err := s.LoadMarks(ctx, "r"); err != nil || len(m) != 0 {
				t.Fatalf("no marks yet: %v %v", m, err)
			}
			if err := s.SaveMarks(ctx, "r", map[string]store.Marks{"ann": {Epoch: "e1", Ack: 5, Read: 3}, "ben smith": {Epoch: "e1", Ack: 2, Read: 2}}); err != nil {
				t.Fatal(err)
			}
			if err := s.SaveMarks(ctx, "r2", map[string]store.Marks{"ann": {Epoch: "x", Ack: 9, Read: 9}}); err != nil {
				t.Fatal(err)
			}
			if err := s.SaveMarks(ctx, "r", map[string]store.Marks{"ann": {Epoch: "e1", Ack: 7, Read: 6}}); err != nil {
				t.Fatal(err)
			}
			s = reopen()
			got, err := s.LoadMarks(ctx, "r")
			want := map[string]store.Marks{"ann": {Epoch: "e1", Ack: 7, Read: 6}, "ben smith": {Epoch: "e1", Ack: 2, Read: 2}}
			if err != nil || len(got) != 2 || got["ann"] != want["ann"] || got["ben smith"] != want["ben smith"] {
				t.Fatalf("marks of r: %v %v", got, err)
			}
			if got, _ := s.LoadMarks(ctx, "r2"); len(got) != 1 || got["ann"].Ack != 9 {
				t.Fatalf("marks of r2: %v", got)
			}
			// A room whose name is a prefix of another's keeps its own marks.
			if got, _ := s.LoadMarks(ctx, "r2x"); len(got) != 0 {
				t.Fatalf("marks of r2x: %v", got)
			}
		})
	}
}
