package actors

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// countingSink counts frames and signals when a target count is reached.
type countingSink struct {
	n      atomic.Int64
	target atomic.Int64
	done   chan struct{}
}

func (s *countingSink) Encoding() wire.Encoding          { return wire.Proto }
func (s *countingSink) Close(int, string)                {}
func (s *countingSink) Push(b []byte, _ *PushInfo) error { return s.Send(b) }
func (s *countingSink) Send([]byte) error {
	if s.n.Add(1) == s.target.Load() {
		close(s.done)
	}
	return nil
}

// PushRun takes a relay run at once, as the WebSocket connection does.
func (s *countingSink) PushRun(frames [][]byte, _ []*PushInfo, errs []error) {
	k := int64(len(frames))
	if n, t := s.n.Add(k), s.target.Load(); n >= t && n-k < t {
		close(s.done)
	}
	clear(errs)
}

// BenchmarkRoomFanout measures one room publishing to N members on one node:
// the room encodes once, the relay hands the same bytes to every member's sink.
func BenchmarkRoomFanout(b *testing.B) {
	for _, members := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) { benchFanout(b, members, nil) })
	}
}

// BenchmarkRoomFanoutTraced is the 1,000-member fan-out with every publish
// a sampled trace (connection, room and fan-out spans) through the batch
// span processor to an exporter that discards: what tracing costs the
// delivery path, beside the same run untraced.
func BenchmarkRoomFanoutTraced(b *testing.B) {
	b.Run("tracing=off", func(b *testing.B) { benchFanout(b, 1000, nil) })
	b.Run("tracing=on", func(b *testing.B) {
		t, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{
			SpanProcessor: sdktrace.NewBatchSpanProcessor(discardExporter{}),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = t.Shutdown(context.Background()) }()
		benchFanout(b, 1000, t)
	})
}

// discardExporter exports spans nowhere.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

func benchFanout(b *testing.B, members int, tracing *telemetry.Tracing) {
	// No per-connection rate limits: one connection publishes b.N at once.
	// Presence diffs every millisecond: they settle before the timed part.
	node := NewNode(Config{Conn: ConnConfig{CommandRate: -1, ByteRate: -1}, Room: RoomConfig{PresenceInterval: time.Millisecond}}, Options{Tracing: tracing})
	defer func() { _ = node.Shutdown(context.Background()) }()
	sinks := make([]*countingSink, members)
	var handles []*ConnHandle
	for i := range sinks {
		sinks[i] = &countingSink{done: make(chan struct{})}
		sinks[i].target.Store(-1)
		h, _ := node.OpenConn(sinks[i], ConnInfo{})
		handles = append(handles, h)
		h.Receive(&hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "m"}}}, 10)
		h.Receive(&hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "bench"}}}, 10)
	}
	// Wait for the joins: connect reply, join reply and the presence pushes.
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range sinks {
		for s.n.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond) // let presence pushes settle
	pub := handles[0]
	body := &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: string(make([]byte, 128))}}
	last := sinks[members-1]
	last.target.Store(last.n.Load() + int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pub.Receive(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: "bench", Body: body}}}, 10)
	}
	<-last.done
	b.StopTimer()
	b.ReportMetric(float64(b.N*members)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*members), "ns/delivery")
	for _, h := range handles {
		h.Close(time.Second)
	}
}

// BenchmarkRoomJoin measures joins into a room that already has N members:
// with presence coalesced, a join costs the same however big the room is.
func BenchmarkRoomJoin(b *testing.B) {
	for _, members := range []int{0, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			node := NewNode(Config{Conn: ConnConfig{CommandRate: -1, ByteRate: -1}}, Options{})
			defer func() { _ = node.Shutdown(context.Background()) }()
			var handles []*ConnHandle
			join := func(n int) []*countingSink {
				sinks := make([]*countingSink, n)
				for i := range sinks {
					sinks[i] = &countingSink{done: make(chan struct{})}
					sinks[i].target.Store(2) // the connect and join replies
					h, _ := node.OpenConn(sinks[i], ConnInfo{})
					handles = append(handles, h)
					h.Receive(&hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: fmt.Sprint("m", len(handles))}}}, 10)
					h.Receive(&hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "big"}}}, 10)
				}
				return sinks
			}
			for _, s := range join(members) {
				<-s.done
			}
			b.ReportAllocs()
			b.ResetTimer()
			for _, s := range join(b.N) {
				<-s.done
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "joins/s")
			for _, h := range handles {
				h.Close(time.Second)
			}
		})
	}
}
