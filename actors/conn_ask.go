package actors

import (
	"errors"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// A connection's requests to one room leave in the order the client sent
// them, which protoactor keeps from one sender to one receiver (locally and
// over one remote stream). A route holds that order where it could break:
//
//   - while the room's actor is being looked up (a cluster round trip off the
//     actor), later requests to the room wait behind the lookup;
//   - when a request dead-letters (the room stopped or moved), the requests
//     sent after it to the same actor dead-letter too: new requests wait until
//     every request to the old actor has answered, then the dead-lettered ones
//     are sent again to the room's new actor in their original order, and the
//     waiting ones after them.

// routeAsk is one request to a room waiting for, or sent to, the room's actor.
type routeAsk struct {
	seq     uint64 // order of the command on this connection
	room    string
	msg     proto.Message
	id      uint64
	then    func(*actor.PID, *nodev1.RoomReply, error)
	attempt int
	failed  bool // answered already: the room's node died while it was in flight
}

// route is where a connection's requests to one room go.
type route struct {
	pid         *actor.PID             // the room's actor, nil while unknown
	outstanding int                    // requests sent to pid not answered yet
	waiting     []*routeAsk            // requests waiting for pid, in seq order
	looking     bool                   // a lookup is on its way
	inflight    map[*routeAsk]struct{} // nil while nothing is in flight
	watched     *actor.PID             // a room on another node, watched while requests are in flight to it
}

// roomPlaced carries a room's placement back to the connection actor.
type roomPlaced struct {
	room string
	pid  *actor.PID
}

// ask sends a request to a room and continues with its reply inside this
// actor. A dead letter (the room stopped meanwhile) is retried once on a fresh
// activation; a timeout gets a temporary UNAVAILABLE error for the client, and
// then is called with the error so the caller can undo state.
func (c *conn) ask(ctx actor.Context, room string, msg proto.Message, id uint64, then func(*actor.PID, *nodev1.RoomReply, error)) {
	if q := c.markQs[room]; q != nil && q.held != nil {
		if _, mark := msg.(*nodev1.RoomMark); !mark {
			c.flushMarks(ctx, room) // merged marks the client sent before this command go first
		}
	}
	c.seq++
	c.dispatchAsk(ctx, &routeAsk{seq: c.seq, room: room, msg: msg, id: id, then: then})
}

func (c *conn) routeOf(room string) *route {
	rt := c.routes.get(room)
	if rt == nil {
		rt = &route{}
		c.routes.set(room, rt)
	}
	return rt
}

// dispatchAsk sends a request at once when the room's actor is known and
// nothing waits before it, or queues it in order and looks the room up.
func (c *conn) dispatchAsk(ctx actor.Context, a *routeAsk) {
	rt := c.routeOf(a.room)
	if rt.pid == nil && len(rt.waiting) == 0 && !rt.looking && rt.outstanding == 0 {
		rt.pid, _ = c.node.placement.Cached(a.room)
	}
	if rt.pid != nil && len(rt.waiting) == 0 {
		c.sendAsk(ctx, rt, a)
		return
	}
	i, _ := slices.BinarySearchFunc(rt.waiting, a.seq, func(w *routeAsk, seq uint64) int { return cmpSeq(w.seq, seq) })
	rt.waiting = slices.Insert(rt.waiting, i, a)
	c.lookup(ctx, a.room, rt)
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// lookup places the room off the actor once nothing is in flight to its old actor.
func (c *conn) lookup(ctx actor.Context, room string, rt *route) {
	if rt.looking || rt.outstanding > 0 || len(rt.waiting) == 0 {
		return
	}
	rt.looking, rt.pid = true, nil
	self, root, placement := ctx.Self(), ctx.ActorSystem().Root, c.node.placement
	go func() { // owner: this connection actor; bounded by the placement's lookup timeout
		root.Send(self, roomPlaced{room: room, pid: placement.RoomPID(room)})
	}()
}

// onRoomPlaced sends what waited for the room's actor, in order.
func (c *conn) onRoomPlaced(ctx actor.Context, msg roomPlaced) {
	rt := c.routes.get(msg.room)
	if rt == nil || !rt.looking {
		return
	}
	rt.looking, rt.pid = false, msg.pid
	waiting := rt.waiting
	rt.waiting = nil
	for _, a := range waiting {
		c.sendAsk(ctx, rt, a)
	}
}

// sendAsk sends the request to the room's actor and continues with the answer.
func (c *conn) sendAsk(ctx actor.Context, rt *route, a *routeAsk) {
	pid := rt.pid
	rt.outstanding++
	if rt.inflight == nil {
		rt.inflight = map[*routeAsk]struct{}{}
	}
	rt.inflight[a] = struct{}{}
	if pid.Address != ctx.Self().Address && !pid.Equal(rt.watched) {
		// A room on another node: if that node dies, Terminated comes long
		// before the request timeout, and onNodeLost answers at once.
		ctx.Watch(pid)
		rt.watched = pid
	}
	fut := ctx.RequestFuture(pid, wrap(a.msg), c.cfg.RequestTimeout)
	ctx.ReenterAfter(fut, func(res any, err error) {
		if a.failed {
			return
		}
		delete(rt.inflight, a)
		if len(rt.inflight) == 0 {
			rt.inflight = nil // an idle route keeps no map
		}
		rt.outstanding--
		defer c.settleRoute(ctx, a.room, rt)
		if errors.Is(err, actor.ErrDeadLetter) && a.attempt == 0 {
			if rt.pid.Equal(pid) {
				rt.pid = nil
				c.node.placement.Forget(a.room, pid)
			}
			a.attempt++
			i, _ := slices.BinarySearchFunc(rt.waiting, a.seq, func(w *routeAsk, seq uint64) int { return cmpSeq(w.seq, seq) })
			rt.waiting = slices.Insert(rt.waiting, i, a)
			return
		}
		rr, ok := unwrap(res).(*nodev1.RoomReply)
		if err == nil && !ok {
			err = errors.New("unexpected reply")
		}
		if err != nil {
			c.node.counters.RoomTimeouts.Add(1)
			c.replyErr(a.id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q did not answer", a.room)
			a.then(pid, nil, err)
			return
		}
		a.then(pid, rr, nil)
	})
}

// settleRoute looks the room up again when requests wait, and forgets a
// route with nothing in flight for a room the connection has not joined.
func (c *conn) settleRoute(ctx actor.Context, room string, rt *route) {
	if c.routes.get(room) != rt {
		return
	}
	if len(rt.waiting) > 0 {
		c.lookup(ctx, room, rt)
		return
	}
	if rt.outstanding == 0 && !rt.looking && c.rooms.get(room) == nil {
		if rt.watched != nil {
			ctx.Unwatch(rt.watched)
		}
		c.routes.del(room)
	}
}

// onRouteTerminated answers at once every request in flight to a room whose
// actor terminated (on another node: the node died or the room stopped):
// UNAVAILABLE, temporary, so the client retries (with the same message id,
// which the room's next activation recognises) instead of waiting for the
// request timeout. The room may have handled a request before it died, so
// it is not sent again here.
func (c *conn) onRouteTerminated(ctx actor.Context, who *actor.PID) {
	for room, rt := range c.routes.all() {
		if !who.Equal(rt.watched) {
			continue
		}
		rt.watched = nil
		if who.Equal(rt.pid) {
			rt.pid = nil
			c.node.placement.Forget(room, who)
		}
		for a := range rt.inflight {
			a.failed = true
			delete(rt.inflight, a)
			rt.outstanding--
			c.node.counters.RoomTimeouts.Add(1)
			c.replyErr(a.id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q went away; retry", a.room)
			a.then(who, nil, errRoomGone)
		}
		c.settleRoute(ctx, room, rt)
	}
}

func (c *conn) checkRoom(id uint64, room string) bool {
	if room == "" || len(room) > c.cfg.MaxRoomNameBytes || !validName(room) {
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM, false,
			"room names are 1-%d bytes of printable UTF-8 without spaces", c.cfg.MaxRoomNameBytes)
		return false
	}
	return true
}

// forward sends a room's reply frame to the client with the request id.
func (c *conn) forward(id uint64, f *hubbubv1.ServerFrame) {
	if f == nil {
		return
	}
	f.Id = id
	if e := f.GetError(); e != nil {
		c.node.counters.CountError(e.GetCode().String())
	}
	c.send(f)
}

func (c *conn) replyErr(id uint64, code hubbubv1.ErrorCode, temporary bool, format string, args ...any) {
	c.node.counters.CountError(code.String())
	c.send(errFrame(id, code, temporary, format, args...))
}

func (c *conn) send(f *hubbubv1.ServerFrame) {
	c.endCommand(f.GetId(), f)
	b, err := wire.Marshal(f, c.sink.Encoding())
	if err != nil {
		c.node.log.Error("conn: encode reply", "err", err)
		return
	}
	_ = c.sink.Send(b)
}
