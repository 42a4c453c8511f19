package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
)

// FuzzEmbeddedStore runs random sequences of loads, appends (continuing,
// stale, gapped, wrong epoch), reads, sweeps and reopens against the
// embedded store and checks every answer against a model: the store accepts
// exactly the appends that continue the stream, keeps the newest MaxLen
// messages, and loses nothing across a reopen.
func FuzzEmbeddedStore(f *testing.F) {
	// Each operation is two bytes: the first picks the operation (low
	// values) and a count (high values), the second the room and an offset.
	f.Add([]byte{0, 0, 1, 0, 7, 0, 13, 0, 1, 0, 4, 0, 0, 0})
	f.Add([]byte{0, 1, 13, 1, 13, 1, 13, 1, 4, 1, 2, 4, 5, 0, 0, 1, 4, 3})
	f.Add([]byte{0, 2, 1, 2, 3, 2, 5, 1, 2, 3, 1, 2, 4, 2, 0, 2, 11, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			ops = ops[:200]
		}
		const maxLen = 5
		dir := t.TempDir()
		ret := store.Retention{MaxLen: maxLen}
		s, err := store.OpenEmbedded(dir, ret, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close() }()
		ctx := context.Background()
		type room struct {
			epoch string
			top   uint64
			texts map[uint64]string
		}
		model := map[string]*room{}
		names := []string{"a", "b", "c"}
		for i := 0; i+1 < len(ops); i += 2 {
			name := names[int(ops[i+1])%len(names)]
			r := model[name]
			switch ops[i] % 6 {
			case 0: // load
				pos, recent, err := s.Load(ctx, name, maxLen)
				if err != nil {
					t.Fatal(err)
				}
				if r == nil {
					r = &room{epoch: pos.Epoch, texts: map[uint64]string{}}
					model[name] = r
				}
				if pos.Epoch != r.epoch || pos.Offset != r.top {
					t.Fatalf("%s: load %+v, model epoch %s top %d", name, pos, r.epoch, r.top)
				}
				want := min(uint64(maxLen), r.top)
				if uint64(len(recent)) != want {
					t.Fatalf("%s: %d recent messages, want %d", name, len(recent), want)
				}
				for _, m := range recent {
					if m.GetBody().GetText() != r.texts[m.GetOffset()] {
						t.Fatalf("%s/%d: %q, want %q", name, m.GetOffset(), m.GetBody().GetText(), r.texts[m.GetOffset()])
					}
				}
			case 1, 2: // append 1..3 messages at top+1 (case 1) or at an offset near it (case 2)
				if r == nil {
					continue
				}
				first := r.top + 1
				if ops[i]%6 == 2 {
					first = uint64(max(1, int(r.top)+int(ops[i+1]%5)-2))
				}
				n := uint64(ops[i]/6%3) + 1
				batch := msgs(first, n, r.epoch, time.Now())
				for _, m := range batch {
					m.Body.Kind = textBody(fmt.Sprintf("%s-%d-%d", name, i, m.GetOffset()))
				}
				err := s.Append(ctx, name, r.epoch, batch)
				ok := first == r.top+1
				if ok != (err == nil) || (!ok && !errors.Is(err, store.ErrConflict)) {
					t.Fatalf("%s: append at %d (top %d): %v", name, first, r.top, err)
				}
				if ok {
					for _, m := range batch {
						r.texts[m.GetOffset()] = m.GetBody().GetText()
					}
					r.top += n
				}
			case 3: // append with another epoch
				if r == nil {
					continue
				}
				if err := s.Append(ctx, name, "other", msgs(r.top+1, 1, "other", time.Now())); !errors.Is(err, store.ErrConflict) {
					t.Fatalf("%s: wrong epoch accepted: %v", name, err)
				}
			case 4: // read after some offset
				if r == nil {
					continue
				}
				after := uint64(ops[i+1] % 16)
				got, err := s.Read(ctx, name, after, 0)
				if err != nil {
					t.Fatal(err)
				}
				from := max(after+1, r.top-min(r.top, maxLen)+1)
				if r.top < from {
					from = r.top + 1
				}
				if uint64(len(got)) != r.top+1-from {
					t.Fatalf("%s: read after %d gave %d messages, model %d..%d", name, after, len(got), from, r.top)
				}
				for k, m := range got {
					if m.GetOffset() != from+uint64(k) || m.GetBody().GetText() != r.texts[m.GetOffset()] {
						t.Fatalf("%s: read %v at %d", name, m, k)
					}
				}
			case 5: // reopen, or sweep (nothing has aged)
				if ops[i+1]%2 == 0 {
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					if s, err = store.OpenEmbedded(dir, ret, nil); err != nil {
						t.Fatal(err)
					}
				} else if err := s.Sweep(ctx, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

func textBody(s string) *hubbubv1.Body_Text { return &hubbubv1.Body_Text{Text: s} }
