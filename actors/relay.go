package actors

import (
	"context"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/asynkron/protoactor-go/actor"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// relayID is the actor id of every node's relay.
const relayID = "hubbub/relay"

// relay receives each room's pushes once per node and appends the encoded
// frame to the outbound queue of every local member. Because join and leave
// replies take the same path as pushes, each member's stream is ordered.
type relay struct {
	log      *slog.Logger
	counters *telemetry.Counters
	tracing  *telemetry.Tracing
	conns    map[string]*localConn             // by connection actor id
	rooms    map[string]map[string]*roomMember // room -> actor id -> member
}

type localConn struct {
	id    string
	sink  Sink
	rooms map[string]struct{}
}

// roomMember is one local connection's membership of one room: where the
// room's pushes go, and where the member is in the room's stream.
type roomMember struct {
	conn   *localConn
	stream memberStream
}

// memberStream is where one member is in one room's stream: the epoch and
// offset of the last message it was handed (or of its join reply).
type memberStream struct {
	epoch  string
	offset uint64
}

// continues reports whether a message continues the member's stream, and
// moves the stream forward when it does. Pushes that are not messages
// (offset 0) always pass.
func (s *memberStream) continues(msg *nodev1.RelayDeliver) bool {
	if msg.GetOffset() == 0 || msg.GetEpoch() == "" {
		return true
	}
	if msg.GetEpoch() != s.epoch || msg.GetOffset() != s.offset+1 {
		return false
	}
	s.offset = msg.GetOffset()
	return true
}

// registerConn and unregisterConn are local messages from connection actors.
type registerConn struct {
	id   string
	sink Sink
}

type unregisterConn struct{ id string }

func relayProps(log *slog.Logger, c *telemetry.Counters, t *telemetry.Tracing) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &relay{log: log, counters: c, tracing: t, conns: map[string]*localConn{}, rooms: map[string]map[string]*roomMember{}}
	}, actor.WithMailbox(actor.Unbounded(&c.Mailboxes.Relay)))
}

func (r *relay) Receive(ctx actor.Context) {
	switch msg := unwrap(ctx.Message()).(type) {
	case *nodev1.RelayDeliver:
		r.counters.RelayDelivers.Add(1)
		if r.tracing.Enabled && len(msg.GetTrace()) > 0 {
			r.onDeliverTraced(msg, ctx.ActorSystem().Address()) // known once the cluster's transport runs
		} else {
			r.onDeliver(msg)
		}
	case *nodev1.RelaySubscribe:
		r.onSubscribe(msg)
	case *nodev1.RelayUnsubscribe:
		r.onUnsubscribe(msg)
	case registerConn:
		r.conns[msg.id] = &localConn{id: msg.id, sink: msg.sink, rooms: map[string]struct{}{}}
	case unregisterConn:
		r.onUnregister(msg.id)
	case relayProbe:
		ctx.Respond(msg)
	case actor.SystemMessage, actor.AutoReceiveMessage:
	default:
		r.log.Warn("relay: unexpected message dropped", "type", slog.AnyValue(msg).String())
	}
}

// onDeliver is the hot path: the same bytes to every local member's queue.
func (r *relay) onDeliver(msg *nodev1.RelayDeliver) {
	subs := r.rooms[msg.GetRoom()]
	delivered := 0
	for _, m := range subs {
		if r.deliver(msg, m) == nil {
			delivered++
		}
	}
	r.count(msg, len(subs), delivered)
}

// errStreamGap is a message that does not continue a member's stream.
var errStreamGap = errors.New("message does not continue the member's stream")

// deliver hands a push to one member. This is the last line of defence of
// the promise that a member never sees a silent gap: a message whose offset
// is not the next one of the member's stream in its epoch (a stale room
// activation, a push lost between nodes, anything) is never delivered;
// the member is unsubscribed and closed with 4004, so it rejoins with its
// last position and recovers exactly what it missed.
func (r *relay) deliver(msg *nodev1.RelayDeliver, m *roomMember) error {
	c := m.conn
	if !m.stream.continues(msg) {
		r.counters.StreamGaps.Add(1)
		r.log.Warn("relay: a message does not continue a member's stream; closing it to resync", "room", msg.GetRoom(),
			"conn", c.id, "stream_epoch", m.stream.epoch, "stream_offset", m.stream.offset, "epoch", msg.GetEpoch(), "offset", msg.GetOffset())
		r.drop(msg.GetRoom(), c.id, c)
		c.sink.Close(wire.CloseRoomMoved, wire.CloseReason(wire.CloseRoomMoved))
		return errStreamGap
	}
	frame := msg.GetProtoFrame()
	if c.sink.Encoding() == wire.JSON {
		frame = msg.GetJsonFrame()
	}
	if len(frame) == 0 {
		return errNoFrame
	}
	return c.sink.Push(frame, PushInfo{Room: msg.GetRoom(), Key: msg.GetKey(), Policy: msg.GetPolicy()})
}

func (r *relay) count(msg *nodev1.RelayDeliver, recipients, delivered int) {
	r.counters.Deliveries.Add(int64(delivered))
	r.counters.CountPushes(msg.GetKind(), delivered)
	r.counters.DeliveryDrops.Add(int64(recipients - delivered))
	if msg.GetOffset() > 0 {
		r.counters.Hist.Load().RecordFanout(recipients, msg.GetAcceptedUnixNano())
	}
}

// onDeliverTraced is onDeliver with a fan-out span on the publish's trace:
// counts as attributes, drops and slow consumers as events, and per-recipient
// events or spans when configured.
func (r *relay) onDeliverTraced(msg *nodev1.RelayDeliver, address string) {
	ctx := telemetry.Extract(context.Background(), msg.GetTrace())
	ctx, span := r.tracing.Tracer.Start(ctx, "hubbub.fanout", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrRoom.String(msg.GetRoom()), attrOffset.Int64(int64(msg.GetOffset())), attrNode.String(address)))
	defer span.End()
	subs := r.rooms[msg.GetRoom()]
	delivered := 0
	for _, m := range subs {
		c := m.conn
		err := r.deliver(msg, m)
		switch {
		case errors.Is(err, ErrSlowConsumer):
			span.AddEvent("hubbub.slow_consumer", trace.WithAttributes(attrClient.String(c.id)))
		case err != nil:
			span.AddEvent("hubbub.drop", trace.WithAttributes(attrClient.String(c.id), attribute.String("error.type", err.Error())))
		default:
			delivered++
		}
		switch {
		case err != nil:
		case r.tracing.Deliveries == telemetry.DeliveryEvents:
			span.AddEvent("hubbub.deliver", trace.WithAttributes(attrClient.String(c.id)))
		case r.tracing.Deliveries == telemetry.DeliverySpans:
			_, s := r.tracing.Tracer.Start(ctx, "hubbub.deliver", trace.WithAttributes(attrClient.String(c.id)))
			s.End()
		}
	}
	span.SetAttributes(attrRecipients.Int(len(subs)), attrDelivered.Int(delivered), attrDropped.Int(len(subs)-delivered))
	r.count(msg, len(subs), delivered)
}

func (r *relay) onSubscribe(msg *nodev1.RelaySubscribe) {
	c, ok := r.conns[msg.GetActorId()]
	if !ok {
		return // the connection closed meanwhile; the room hears of it through its leave
	}
	subs := r.rooms[msg.GetRoom()]
	if subs == nil {
		subs = map[string]*roomMember{}
		r.rooms[msg.GetRoom()] = subs
	}
	pos := msg.GetReply().GetPosition()
	subs[msg.GetActorId()] = &roomMember{conn: c, stream: memberStream{epoch: pos.GetEpoch(), offset: pos.GetOffset()}}
	c.rooms[msg.GetRoom()] = struct{}{}
	r.send(c, &hubbubv1.ServerFrame{Id: msg.GetRequestId(), Body: &hubbubv1.ServerFrame_Join{Join: msg.GetReply()}, TraceId: traceID(msg.GetTrace())})
}

func (r *relay) onUnsubscribe(msg *nodev1.RelayUnsubscribe) {
	c, ok := r.conns[msg.GetActorId()]
	if !ok {
		return
	}
	r.drop(msg.GetRoom(), msg.GetActorId(), c)
	if msg.GetReply() {
		r.send(c, &hubbubv1.ServerFrame{Id: msg.GetRequestId(), Body: &hubbubv1.ServerFrame_Leave{Leave: &hubbubv1.LeaveReply{Room: msg.GetRoom()}}})
	}
}

func (r *relay) drop(room, id string, c *localConn) {
	delete(c.rooms, room)
	if subs := r.rooms[room]; subs != nil {
		delete(subs, id)
		if len(subs) == 0 {
			delete(r.rooms, room)
		}
	}
}

func (r *relay) onUnregister(id string) {
	c, ok := r.conns[id]
	if !ok {
		return
	}
	for room := range c.rooms {
		r.drop(room, id, c)
	}
	delete(r.conns, id)
}

func (r *relay) send(c *localConn, f *hubbubv1.ServerFrame) {
	b, err := wire.Marshal(f, c.sink.Encoding())
	if err != nil {
		r.log.Error("relay: encode reply", "err", err)
		return
	}
	_ = c.sink.Send(b)
}
