package actors

import (
	"log/slog"

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
	conns    map[string]*localConn            // by connection actor id
	rooms    map[string]map[string]*localConn // room -> actor id -> conn
}

type localConn struct {
	sink  Sink
	rooms map[string]struct{}
}

// registerConn and unregisterConn are local messages from connection actors.
type registerConn struct {
	id   string
	sink Sink
}

type unregisterConn struct{ id string }

func relayProps(log *slog.Logger, c *telemetry.Counters) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &relay{log: log, counters: c, conns: map[string]*localConn{}, rooms: map[string]map[string]*localConn{}}
	})
}

func (r *relay) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *nodev1.RelayDeliver:
		r.onDeliver(msg)
	case *nodev1.RelaySubscribe:
		r.onSubscribe(msg)
	case *nodev1.RelayUnsubscribe:
		r.onUnsubscribe(msg)
	case registerConn:
		r.conns[msg.id] = &localConn{sink: msg.sink, rooms: map[string]struct{}{}}
	case unregisterConn:
		r.onUnregister(msg.id)
	case actor.SystemMessage, actor.AutoReceiveMessage:
	default:
		r.log.Warn("relay: unexpected message dropped", "type", slog.AnyValue(msg).String())
	}
}

func (r *relay) onDeliver(msg *nodev1.RelayDeliver) {
	subs := r.rooms[msg.GetRoom()]
	for _, c := range subs {
		frame := msg.GetProtoFrame()
		if c.sink.Encoding() == wire.JSON {
			frame = msg.GetJsonFrame()
		}
		if len(frame) == 0 || c.sink.Send(frame) != nil {
			r.counters.DeliveryDrops.Add(1)
			continue
		}
		r.counters.Deliveries.Add(1)
	}
}

func (r *relay) onSubscribe(msg *nodev1.RelaySubscribe) {
	c, ok := r.conns[msg.GetActorId()]
	if !ok {
		return // the connection closed meanwhile; the room hears of it through its leave
	}
	subs := r.rooms[msg.GetRoom()]
	if subs == nil {
		subs = map[string]*localConn{}
		r.rooms[msg.GetRoom()] = subs
	}
	subs[msg.GetActorId()] = c
	c.rooms[msg.GetRoom()] = struct{}{}
	r.send(c, &hubbubv1.ServerFrame{Id: msg.GetRequestId(), Body: &hubbubv1.ServerFrame_Join{Join: msg.GetReply()}})
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
