package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/server"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

func tracedServer(t *testing.T, detail telemetry.DeliveryDetail, nc actors.Config, tc transport.Config) (*testServer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{SpanProcessor: sdktrace.NewSimpleSpanProcessor(exp), Deliveries: detail})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return startServer(t, nc, tc, server.Options{Tracing: tr}), exp
}

func spansOf(exp *tracetest.InMemoryExporter, traceID trace.TraceID) map[string]tracetest.SpanStub {
	out := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == traceID {
			out[s.Name] = s
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// One publish is one trace: the client's span -> the command -> the room
// accepting it -> the fan-out on the node, with counts of recipients.
func TestOnePublishIsOneTrace(t *testing.T) {
	s, exp := tracedServer(t, telemetry.DeliveryEvents, actors.Config{}, transport.Config{})
	subs := []*client{connect(t, s.URL, wire.Proto, "s1"), connect(t, s.URL, wire.JSON, "s2")}
	for _, c := range subs {
		c.join("traced", nil)
	}
	pub := connect(t, s.URL, wire.JSON, "pub")
	clientTrace := "0af7651916cd43dd8448eb211c80319c"
	clientSpan := "b7ad6b7169203331"
	f := publishFrame("traced", "follow me", "")
	f.Trace = map[string]string{"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"}
	r := pub.request(f)
	if r.GetPublish() == nil || r.GetTraceId() != clientTrace {
		t.Fatalf("reply %v", r)
	}
	for _, c := range subs {
		c.nextMessage()
	}
	tid, _ := trace.TraceIDFromHex(clientTrace)
	var spans map[string]tracetest.SpanStub
	eventually(t, "three spans", func() bool {
		spans = spansOf(exp, tid)
		return len(spans) == 3
	})
	cmd, room, fan := spans["hubbub publish"], spans["hubbub.room publish"], spans["hubbub.fanout"]
	if cmd.Parent.SpanID().String() != clientSpan || cmd.SpanKind != trace.SpanKindServer {
		t.Fatalf("command span parent %v kind %v", cmd.Parent.SpanID(), cmd.SpanKind)
	}
	if room.Parent.SpanID() != cmd.SpanContext.SpanID() || fan.Parent.SpanID() != room.SpanContext.SpanID() {
		t.Fatalf("links: room's parent %v (cmd %v), fanout's parent %v (room %v)",
			room.Parent.SpanID(), cmd.SpanContext.SpanID(), fan.Parent.SpanID(), room.SpanContext.SpanID())
	}
	if attr(room, "hubbub.offset") != "1" || attr(room, "hubbub.epoch") == "" || attr(room, "hubbub.room") != "traced" {
		t.Fatalf("room attributes %v", room.Attributes)
	}
	if attr(fan, "hubbub.fanout.recipients") != "2" || attr(fan, "hubbub.fanout.delivered") != "2" {
		t.Fatalf("fanout attributes %v", fan.Attributes)
	}
	var deliverEvents int
	for _, e := range fan.Events {
		if e.Name == "hubbub.deliver" {
			deliverEvents++
		}
	}
	if deliverEvents != 2 {
		t.Fatalf("deliver events %d", deliverEvents)
	}

	// Without client context the server starts the trace and reports its id.
	r = pub.request(publishFrame("traced", "no context", ""))
	own, err := trace.TraceIDFromHex(r.GetTraceId())
	if err != nil {
		t.Fatalf("reply trace id %q", r.GetTraceId())
	}
	eventually(t, "the server-started trace", func() bool { return len(spansOf(exp, own)) == 3 })
	if spansOf(exp, own)["hubbub publish"].Parent.IsValid() {
		t.Fatal("server-started trace has a parent")
	}
}

// A node's relay is sharded, yet each push is one fan-out span per node: the
// shards' parts summed (recipients, one event per recipient), timed from the
// first shard's start to the last one's end. Every member still gets the
// room's messages in order whichever shard serves it.
func TestShardedRelayOneFanoutSpan(t *testing.T) {
	s, exp := tracedServer(t, telemetry.DeliveryEvents, actors.Config{RelayShards: 4}, transport.Config{})
	const members, msgs = 12, 20
	var subs []*client
	for i := range members {
		c := connect(t, s.URL, wire.Proto, fmt.Sprint("m", i))
		c.join("sharded", nil)
		subs = append(subs, c)
	}
	pub := connect(t, s.URL, wire.Proto, "pub")
	var tids []trace.TraceID
	for i := range msgs {
		r := pub.request(publishFrame("sharded", fmt.Sprint(i), ""))
		tid, err := trace.TraceIDFromHex(r.GetTraceId())
		if err != nil {
			t.Fatalf("reply %v", r)
		}
		tids = append(tids, tid)
	}
	for _, c := range subs {
		for i := range msgs {
			if m := c.nextMessage(); m.GetOffset() != uint64(i+1) || m.GetBody().GetText() != fmt.Sprint(i) {
				t.Fatalf("message %d: offset %d body %q", i, m.GetOffset(), m.GetBody().GetText())
			}
		}
	}
	for _, tid := range tids {
		eventually(t, "the fan-out span", func() bool { _, ok := spansOf(exp, tid)["hubbub.fanout"]; return ok })
		var fans []tracetest.SpanStub
		for _, sp := range exp.GetSpans() {
			if sp.SpanContext.TraceID() == tid && sp.Name == "hubbub.fanout" {
				fans = append(fans, sp)
			}
		}
		if len(fans) != 1 {
			t.Fatalf("%d fan-out spans for one push on one node", len(fans))
		}
		fan, room := fans[0], spansOf(exp, tid)["hubbub.room publish"]
		if attr(fan, "hubbub.fanout.recipients") != fmt.Sprint(members) || attr(fan, "hubbub.fanout.delivered") != fmt.Sprint(members) {
			t.Fatalf("fanout attributes %v", fan.Attributes)
		}
		if len(fan.Events) != members {
			t.Fatalf("%d deliver events, want %d", len(fan.Events), members)
		}
		for _, e := range fan.Events {
			if e.Time.Before(fan.StartTime) || e.Time.After(fan.EndTime) {
				t.Fatalf("event at %v outside the span %v-%v", e.Time, fan.StartTime, fan.EndTime)
			}
		}
		if fan.Parent.SpanID() != room.SpanContext.SpanID() || fan.StartTime.Before(room.StartTime) {
			t.Fatalf("fan-out parent %v (room %v), start %v (room %v)", fan.Parent.SpanID(), room.SpanContext.SpanID(), fan.StartTime, room.StartTime)
		}
	}
	if n := s.node.Counters().FanoutNotesDropped.Load(); n != 0 {
		t.Fatalf("%d fan-out notes dropped", n)
	}
}

func TestDeliverySpansAndSlowConsumerEvent(t *testing.T) {
	s, exp := tracedServer(t, telemetry.DeliverySpans, actors.Config{}, transport.Config{MaxQueuedBytes: 64 << 10, WriteTimeout: 30 * time.Second})
	good := connect(t, s.URL, wire.Proto, "good")
	good.join("hose", nil)
	slow, _, err := smallBufferDialer().Dial(s.URL, http2hdr())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	writeFrame(t, slow, &hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "slow"}}})
	writeFrame(t, slow, &hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "hose"}}})
	eventually(t, "slow client to join", func() bool {
		r := good.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "hose"}}})
		return int(r.GetPresence().GetState().GetMembers()) == 2
	})
	pub := connect(t, s.URL, wire.Proto, "pub")
	first := pub.request(publishFrame("hose", "first", ""))
	tid, _ := trace.TraceIDFromHex(first.GetTraceId())
	eventually(t, "per-recipient spans", func() bool {
		n := 0
		for _, sp := range exp.GetSpans() {
			if sp.SpanContext.TraceID() == tid && sp.Name == "hubbub.deliver" {
				n++
			}
		}
		return n == 2
	})
	payload := longString(8 << 10)
	for i := 0; i < 1000 && s.node.Counters().SlowConsumers.Load() == 0; i++ {
		pub.request(publishFrame("hose", fmt.Sprint(i, payload), ""))
	}
	eventually(t, "a slow-consumer event on a fan-out span", func() bool {
		for _, sp := range exp.GetSpans() {
			for _, e := range sp.Events {
				if sp.Name == "hubbub.fanout" && e.Name == "hubbub.slow_consumer" {
					return true
				}
			}
		}
		return false
	})
}

// With tracing off no trace id is reported and nothing is recorded.
func TestTracingOffByDefault(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	c := connect(t, s.URL, wire.Proto, "quiet")
	f := publishFrame("r", "x", "")
	f.Trace = map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	if r := c.request(f); r.GetTraceId() != "" {
		t.Fatalf("trace id with tracing off: %v", r)
	}
}

// With a durable store the trace shows the write-through: the room's span has
// a store append child, and the fan-out follows the room once it is stored.
func TestDurablePublishTrace(t *testing.T) {
	st, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s, exp := tracedServer(t, telemetry.DeliveryEvents, actors.Config{Room: actors.RoomConfig{Store: st}}, transport.Config{})
	sub := connect(t, s.URL, wire.Proto, "sub")
	sub.join("traced-durable", nil)
	pub := connect(t, s.URL, wire.Proto, "pub")
	r := pub.request(publishFrame("traced-durable", "stored", ""))
	tid, err := trace.TraceIDFromHex(r.GetTraceId())
	if r.GetPublish() == nil || err != nil {
		t.Fatalf("reply %v", r)
	}
	sub.nextMessage()
	var spans map[string]tracetest.SpanStub
	eventually(t, "four spans", func() bool {
		spans = spansOf(exp, tid)
		return len(spans) == 4
	})
	room, app, fan := spans["hubbub.room publish"], spans["hubbub.store append"], spans["hubbub.fanout"]
	if app.Parent.SpanID() != room.SpanContext.SpanID() || fan.Parent.SpanID() != room.SpanContext.SpanID() {
		t.Fatalf("store append's parent %v, fanout's parent %v, room %v", app.Parent.SpanID(), fan.Parent.SpanID(), room.SpanContext.SpanID())
	}
	if attr(room, "hubbub.room.durable") != "true" || attr(app, "hubbub.store.batch") != "1" {
		t.Fatalf("room attributes %v, store attributes %v", room.Attributes, app.Attributes)
	}
	if app.EndTime.After(fan.StartTime) {
		t.Fatal("the fan-out started before the store accepted the message")
	}
}
