package actors

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
)

// The fan-out span is recorded off the delivery path. A relay shard makes
// no OpenTelemetry call while it hands a traced push to its members: it
// notes when it started and ended, the counts and (when configured) one
// event per recipient. The shards' notes of one push are summed (pushTally),
// and the sum goes to the node's fan-out recorder, whose goroutine makes the
// one hubbub.fanout span of that push on this node with the shards' own
// timestamps. The trace looks as if the span had been made in place, while
// extracting the context, building the span and handing it to the exporter
// cost the relays nothing but the note.

// fanoutQueue bounds the notes waiting for the recorder; a note that finds
// it full is dropped and counted (hubbub_trace_notes_dropped_total).
const fanoutQueue = 8192

// fanoutNote is what the relay noted of one traced push on one node: the
// sum of its shards' parts.
type fanoutNote struct {
	msg        *nodev1.RelayDeliver
	node       string
	start, end time.Time
	recipients int
	delivered  int
	events     []deliveryEvent
	ledger     *LedgerEntry // the message's delivery ledger on this node, or nil
}

// merge adds another shard's part of the same push.
func (n *fanoutNote) merge(o *fanoutNote) {
	if o.start.Before(n.start) {
		n.start = o.start
	}
	if o.end.After(n.end) {
		n.end = o.end
	}
	n.recipients += o.recipients
	n.delivered += o.delivered
	n.events = append(n.events, o.events...)
}

// deliveryEvent is one recipient's delivery, drop or slow-consumer close.
type deliveryEvent struct {
	name   string // hubbub.deliver, hubbub.drop or hubbub.slow_consumer
	client string
	err    string
	at     time.Time
}

// fanoutRecorder turns relay notes into spans on its own goroutine.
type fanoutRecorder struct {
	tracing  *telemetry.Tracing
	counters *telemetry.Counters
	in       chan *fanoutNote
	stop     chan struct{}
	done     chan struct{}
}

func startFanoutRecorder(t *telemetry.Tracing, c *telemetry.Counters) *fanoutRecorder {
	f := &fanoutRecorder{tracing: t, counters: c, in: make(chan *fanoutNote, fanoutQueue), stop: make(chan struct{}), done: make(chan struct{})}
	go f.run() // owner: the node; joined by close in Node.Shutdown
	return f
}

// note passes a push's note on without waiting.
func (f *fanoutRecorder) note(n *fanoutNote) {
	select {
	case f.in <- n:
	default:
		f.counters.FanoutNotesDropped.Add(1)
	}
}

// close records what is queued and stops the recorder.
func (f *fanoutRecorder) close() {
	close(f.stop)
	<-f.done
}

func (f *fanoutRecorder) run() {
	defer close(f.done)
	for {
		select {
		case n := <-f.in:
			f.span(n)
		case <-f.stop:
			for {
				select {
				case n := <-f.in:
					f.span(n)
				default:
					return
				}
			}
		}
	}
}

// span builds the fan-out span of a push from its note.
func (f *fanoutRecorder) span(n *fanoutNote) {
	msg := n.msg
	ctx := telemetry.Extract(context.Background(), msg.GetTrace())
	ctx, span := f.tracing.Tracer.Start(ctx, "hubbub.fanout", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(n.start),
		trace.WithAttributes(attrRoom.String(msg.GetRoom()), attrOffset.Int64(int64(msg.GetOffset())), attrNode.String(n.node)))
	for _, e := range n.events {
		switch {
		case e.name == "hubbub.deliver" && f.tracing.Deliveries == telemetry.DeliverySpans:
			_, s := f.tracing.Tracer.Start(ctx, e.name, trace.WithTimestamp(e.at), trace.WithAttributes(attrClient.String(e.client)))
			s.End(trace.WithTimestamp(e.at))
		case e.err != "":
			span.AddEvent(e.name, trace.WithTimestamp(e.at), trace.WithAttributes(attrClient.String(e.client), attribute.String("error.type", e.err)))
		default:
			span.AddEvent(e.name, trace.WithTimestamp(e.at), trace.WithAttributes(attrClient.String(e.client)))
		}
	}
	span.SetAttributes(attrRecipients.Int(n.recipients), attrDelivered.Int(n.delivered), attrDropped.Int(n.recipients-n.delivered))
	if e := n.ledger; e != nil { // the ledger as the span is made: later outcomes are in the server API's Ledger
		c := e.count()
		span.SetAttributes(attribute.Int64("hubbub.ledger.members", int64(c.GetMembers())), attribute.Int64("hubbub.ledger.queued", c.GetQueued()),
			attribute.Int64("hubbub.ledger.written", c.GetWritten()), attribute.Int64("hubbub.ledger.acked", int64(c.GetAcked())),
			attribute.Int64("hubbub.ledger.dropped", int64(c.GetDropped())), attribute.Int64("hubbub.ledger.conflated", int64(c.GetConflated())),
			attribute.Int64("hubbub.ledger.disconnected", int64(c.GetGone())))
	}
	span.End(trace.WithTimestamp(n.end))
}
