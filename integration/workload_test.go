package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	hubclient "github.com/hubbub-chat/hubbub/client"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/wire"
)

// The workload of the cluster fault tests: strict subscribers (recorders)
// and Go-client publishers that retry with the same message id, and the
// checks of what they saw against what Redis stored.

// recorderSet is strict subscribers running until stopped.
type recorderSet struct {
	recs   []*recorder
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startRecorders starts n recorders; recorder i tries the URLs order(i) in
// turn and speaks enc(i). It returns once each has joined every room.
func startRecorders(t *testing.T, ctx context.Context, n int, rooms []string, order func(i int) []string, enc func(i int) wire.Encoding) *recorderSet {
	t.Helper()
	s := &recorderSet{}
	ctx, s.cancel = context.WithCancel(ctx)
	for i := 0; i < n; i++ {
		rec := newRecorder(fmt.Sprint("sub", i), order(i), rooms)
		rec.enc = enc(i)
		s.recs = append(s.recs, rec)
		s.wg.Add(1)
		go func() { defer s.wg.Done(); rec.run(ctx) }() // owner: the set; joined by stop
	}
	t.Cleanup(s.stop)
	eventually(t, "subscribers joined", func() bool {
		for _, rec := range s.recs {
			rec.mu.Lock()
			joined := len(rec.got)
			rec.mu.Unlock()
			if joined != len(rooms) {
				return false
			}
		}
		return true
	})
	return s
}

func (s *recorderSet) stop() { s.cancel(); s.wg.Wait() }

// check waits until every recorder has caught up with every stream, stops
// them, and fails on anything a recorder saw that the streams do not say.
// It returns the reconnects and recoveries of all recorders.
func (s *recorderSet) check(t *testing.T, rooms []string, streams map[string][]*hubbubv1.Message) (connects, recoveries int) {
	t.Helper()
	for _, rec := range s.recs {
		for _, room := range rooms {
			top := uint64(len(streams[room]))
			eventually(t, rec.name+" catching up "+room, func() bool { return rec.offset(room) >= top })
		}
	}
	s.stop()
	for _, rec := range s.recs {
		for _, p := range rec.problems {
			t.Error(p)
		}
		for _, room := range rooms {
			for off, text := range rec.got[room] {
				if want := streams[room][off-1].GetBody().GetText(); text != want {
					t.Errorf("%s: %s/%d delivered %q, stream has %q", rec.name, room, off, text, want)
				}
			}
		}
		connects += rec.connects
		recoveries += rec.recoveries
	}
	return connects, recoveries
}

// ack is one acknowledged publish.
type ack struct {
	room, text string
	offset     uint64
	epoch      string
}

// publisherSet is Go-client publishers that round-robin the rooms, each
// publish retried with the same message id while the error is temporary.
type publisherSet struct {
	mu   sync.Mutex
	acks []ack
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// startPublishers starts n publishers; publisher w connects with cfg(w) and
// waits pace between publishes.
func startPublishers(t *testing.T, ctx context.Context, n int, rooms []string, pace time.Duration, cfg func(w int) hubclient.Config) *publisherSet {
	t.Helper()
	p := &publisherSet{stop: make(chan struct{})}
	for w := 0; w < n; w++ {
		c := cfg(w)
		c.Name = fmt.Sprint("pub", w)
		c.MinReconnectDelay, c.MaxReconnectDelay = 50*time.Millisecond, 300*time.Millisecond
		cl := hubclient.New(c)
		t.Cleanup(func() { cl.Close() })
		if err := cl.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		p.wg.Add(1)
		go p.run(t, ctx, cl, w, rooms, pace) // owner: the set; joined by halt
	}
	t.Cleanup(p.halt)
	return p
}

func (p *publisherSet) run(t *testing.T, ctx context.Context, cl *hubclient.Client, w int, rooms []string, pace time.Duration) {
	defer p.wg.Done()
	for i := 0; i < 20000; i++ { // bounded; halted by the test long before
		select {
		case <-p.stop:
			return
		default:
		}
		room, text := rooms[(w+i)%len(rooms)], fmt.Sprintf("p%d-%d", w, i)
		for {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := cl.Publish(pctx, room, &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: text}}, &hubclient.PublishOptions{MessageID: text})
			cancel()
			if err == nil {
				p.mu.Lock()
				p.acks = append(p.acks, ack{room, text, r.GetOffset(), r.GetEpoch()})
				p.mu.Unlock()
				break
			}
			var se *hubclient.ServerError
			if ctx.Err() != nil || (errors.As(err, &se) && !se.Temporary) {
				t.Errorf("publish %s: %v", text, err)
				return
			}
			time.Sleep(20 * time.Millisecond) // temporary: the room is moving or its node died; same id again
		}
		time.Sleep(pace)
	}
}

func (p *publisherSet) count() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.acks) }

// halt stops publishing and waits for the publishers.
func (p *publisherSet) halt() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// checkStreams reads every room's stream from Redis and fails unless each is
// gapless with no message stored twice, every acknowledged message is in it
// at its offset in one epoch, and nothing unacknowledged is stored.
func checkStreams(t *testing.T, ctx context.Context, redisURL string, rooms []string, acks []ack) map[string][]*hubbubv1.Message {
	t.Helper()
	st, err := store.OpenRedis(ctx, store.RedisOptions{URL: redisURL}, store.Retention{MaxLen: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	streams := map[string][]*hubbubv1.Message{}
	total := 0
	for _, room := range rooms {
		msgs, err := st.Read(ctx, room, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		texts := map[string]uint64{}
		for i, m := range msgs {
			if m.GetOffset() != uint64(i+1) {
				t.Fatalf("%s: stream entry %d has offset %d: not gapless", room, i, m.GetOffset())
			}
			if prev, dup := texts[m.GetBody().GetText()]; dup {
				t.Fatalf("%s: %q stored twice, at %d and %d", room, m.GetBody().GetText(), prev, m.GetOffset())
			}
			texts[m.GetBody().GetText()] = m.GetOffset()
		}
		streams[room] = msgs
		total += len(msgs)
	}
	epochs := map[string]string{}
	for _, a := range acks {
		msgs := streams[a.room]
		if a.offset == 0 || a.offset > uint64(len(msgs)) || msgs[a.offset-1].GetBody().GetText() != a.text {
			t.Fatalf("%q acknowledged at %s/%d is not in the stream there", a.text, a.room, a.offset)
		}
		if e, ok := epochs[a.room]; ok && e != a.epoch {
			t.Fatalf("%s: epoch changed from %s to %s without data loss", a.room, e, a.epoch)
		}
		epochs[a.room] = a.epoch
	}
	if total != len(acks) {
		t.Fatalf("%d messages stored, %d acknowledged: the stream holds unacknowledged ones", total, len(acks))
	}
	return streams
}
