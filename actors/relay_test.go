package actors

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// The member-stream check where pushes reach a connection: a message that
// continues the member's stream is delivered; one that skips an offset,
// repeats one or comes from another epoch is never delivered, and the member
// is closed with 4004 to resync.
func TestRelayTurnsStreamGapsIntoResync(t *testing.T) {
	msg := func(epoch string, off uint64) *nodev1.RelayDeliver {
		f := &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Message{Message: &hubbubv1.Message{Room: "r", Offset: off, Epoch: epoch}}}
		b, _ := proto.Marshal(f)
		return &nodev1.RelayDeliver{Room: "r", Offset: off, Epoch: epoch, ProtoFrame: b, Kind: "message"}
	}
	presence := func() *nodev1.RelayDeliver {
		b, _ := proto.Marshal(&hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_PresenceDiff{PresenceDiff: &hubbubv1.PresenceDiff{Room: "r"}}})
		return &nodev1.RelayDeliver{Room: "r", ProtoFrame: b, Kind: "presence"}
	}
	for _, tc := range []struct {
		name string
		bad  *nodev1.RelayDeliver
	}{
		{"skipped offset", msg("E", 9)},
		{"repeated offset", msg("E", 6)},
		{"other epoch", msg("F", 7)},
	} {
		for _, runs := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/runsink=%v", tc.name, runs), func(t *testing.T) {
				node := NewNode(Config{}, Options{})
				defer func() { _ = node.Shutdown(context.Background()) }()
				sink := &recordingSink{enc: wire.Proto}
				h, err := node.OpenConn(withRuns(sink, runs), ConnInfo{})
				if err != nil {
					t.Fatal(err)
				}
				defer h.Close(time.Second)
				root := node.system.Root
				root.Send(node.relay, wrap(&nodev1.RelaySubscribe{Room: "r", ActorId: h.pid.Id, RequestId: 1,
					Reply: &hubbubv1.JoinReply{Room: "r", Position: &hubbubv1.StreamPosition{Offset: 5, Epoch: "E"}}}))
				for _, d := range []*nodev1.RelayDeliver{msg("E", 6), presence(), msg("E", 7), tc.bad, msg("E", 8)} {
					root.Send(node.relay, wrap(d))
				}
				for _, pid := range node.relays { // the first shard hands on to the others before it answers
					if _, err := root.RequestFuture(pid, relayProbe{}, time.Second).Result(); err != nil {
						t.Fatal(err)
					}
				}
				frames, _ := sink.snapshot()
				var offsets []uint64
				for _, f := range frames {
					if m := f.GetMessage(); m != nil {
						offsets = append(offsets, m.GetOffset())
					}
				}
				sink.mu.Lock()
				closed := sink.closed
				sink.mu.Unlock()
				if len(offsets) != 2 || offsets[0] != 6 || offsets[1] != 7 || closed != wire.CloseRoomMoved {
					t.Fatalf("delivered %v, closed %d", offsets, closed)
				}
				if n := node.counters.StreamGaps.Load(); n != 1 {
					t.Fatalf("gaps counted %d", n)
				}
			})
		}
	}
}

// runRecordingSink is a recordingSink that also takes runs (RunSink), push
// by push, and counts the runs.
type runRecordingSink struct {
	*recordingSink
	runs atomic.Int64
}

func (s *runRecordingSink) PushRun(frames [][]byte, infos []*PushInfo, errs []error) {
	s.runs.Add(1)
	for k, b := range frames {
		errs[k] = s.Push(b, infos[k])
	}
}

func withRuns(s *recordingSink, runs bool) Sink {
	if runs {
		return &runRecordingSink{recordingSink: s}
	}
	return s
}

// Pushes a shard holds back and delivers member by member keep every
// member's order, including across rooms, and joins and leaves that arrive
// between pushes take effect exactly there.
func TestRelayRunsKeepOrderAcrossJoinsLeavesAndRooms(t *testing.T) {
	for _, runs := range []bool{false, true} {
		t.Run(fmt.Sprintf("runsink=%v", runs), func(t *testing.T) { testRelayRunsKeepOrder(t, runs) })
	}
}

func testRelayRunsKeepOrder(t *testing.T, runs bool) {
	node := NewNode(Config{}, Options{})
	defer func() { _ = node.Shutdown(context.Background()) }()
	msg := func(room string, off uint64) *nodev1.RelayDeliver {
		f := &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Message{Message: &hubbubv1.Message{Room: room, Offset: off, Epoch: "E"}}}
		b, _ := proto.Marshal(f)
		return &nodev1.RelayDeliver{Room: room, Offset: off, Epoch: "E", ProtoFrame: b, Kind: "message"}
	}
	open := func() (*runRecordingSink, *ConnHandle) {
		s := &runRecordingSink{recordingSink: &recordingSink{enc: wire.Proto}}
		var sink Sink = s.recordingSink
		if runs {
			sink = s
		}
		h, err := node.OpenConn(sink, ConnInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return s, h
	}
	a, ha := open()
	b, hb := open()
	defer ha.Close(time.Second)
	defer hb.Close(time.Second)
	root := node.system.Root
	sub := func(h *ConnHandle, room string, at uint64) {
		root.Send(node.relay, wrap(&nodev1.RelaySubscribe{Room: room, ActorId: h.pid.Id, RequestId: 1,
			Reply: &hubbubv1.JoinReply{Room: room, Position: &hubbubv1.StreamPosition{Offset: at, Epoch: "E"}}}))
	}
	send := func(ds ...*nodev1.RelayDeliver) {
		for _, d := range ds {
			root.Send(node.relay, wrap(d))
		}
	}
	sub(ha, "r", 5)
	sub(ha, "s", 0)
	send(msg("r", 6), msg("r", 7), msg("s", 1), msg("r", 8))
	sub(hb, "r", 8)
	send(msg("r", 9), msg("s", 2), msg("r", 10))
	root.Send(node.relay, wrap(&nodev1.RelayUnsubscribe{Room: "r", ActorId: ha.pid.Id}))
	send(msg("r", 11), msg("r", 12))
	for _, pid := range node.relays {
		if _, err := root.RequestFuture(pid, relayProbe{}, time.Second).Result(); err != nil {
			t.Fatal(err)
		}
	}
	seen := func(s *runRecordingSink) string {
		frames, err := s.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, f := range frames {
			if m := f.GetMessage(); m != nil {
				out += fmt.Sprintf("%s%d ", m.GetRoom(), m.GetOffset())
			}
		}
		return out
	}
	if got, want := seen(a), "r6 r7 s1 r8 r9 s2 r10 "; got != want {
		t.Fatalf("first member got %q, want %q", got, want)
	}
	if got, want := seen(b), "r9 r10 r11 r12 "; got != want {
		t.Fatalf("second member got %q, want %q", got, want)
	}
	if n := node.counters.StreamGaps.Load(); n != 0 {
		t.Fatalf("gaps %d", n)
	}
	if runs {
		if n := a.runs.Load() + b.runs.Load(); n == 0 {
			t.Fatal("no run reached the sinks in one call")
		}
	}
}
