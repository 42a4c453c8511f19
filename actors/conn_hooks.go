package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/hubbub-chat/hubbub/auth"
	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// A backend's hooks are called off the connection actor, which continues
// with the answer through ReenterAfter. While a hook call is out, the
// connection's later commands wait (held, in stash) and then run in the order
// sent, so a command's effects never overtake an earlier one's.

// hookResult carries a hook's answer back to the connection actor.
type hookResult struct {
	res any
	err error
}

// callHook runs call on a goroutine of its own and continues with then
// inside the actor.
func (c *conn) callHook(ctx actor.Context, call func() (any, error), then func(res any, err error)) {
	c.held = true
	fut := actor.NewFuture(ctx.ActorSystem(), c.node.hooks.Timeout()+time.Second)
	root := ctx.ActorSystem().Root
	go func() { // owner: this connection actor; bounded by the hook client's timeout
		res, err := call()
		root.Send(fut.PID(), hookResult{res: res, err: err})
	}()
	ctx.ReenterAfter(fut, func(res any, err error) {
		if hr, ok := res.(hookResult); ok && err == nil {
			res, err = hr.res, hr.err
		}
		c.held = false
		then(res, err)
		if !c.held {
			c.release(ctx)
		}
	})
}

// profile is the profile a room of that name has.
func (c *conn) profile(room string) *RoomProfile {
	p := profileFor(c.node.cfg.Room.rules, room)
	return &p
}

// notify queues a leave or disconnect notification for the backend.
func (c *conn) notify(ctx actor.Context, kind hooksv1.Notification_Kind, room, reason string, held bool) {
	if c.node.notifier == nil || c.identity == nil || (room != "" && c.profile(room).HookNotify == HookNotifyOff) {
		return
	}
	ctx.Send(c.node.notifier, notice{held: held, n: &hooksv1.Notification{Kind: kind, User: c.identity.User, ClientId: c.clientID,
		Room: room, Reason: reason, TimeUnixMs: time.Now().UnixMilli()}})
}

// hookTrace is the trace context a hook call continues: the command's span
// when Hubbub traces, else the client's own traceparent, passed through.
func (c *conn) hookTrace(f *hubbubv1.ClientFrame) map[string]string {
	if f.GetTrace() != nil {
		return f.GetTrace()
	}
	return c.clientTrace
}

// hookRefused answers a command the backend refused: PERMISSION_DENIED with
// its reason, or UNAVAILABLE when it said to retry later.
func (c *conn) hookRefused(id uint64, r *hooksv1.Refusal) {
	c.node.counters.HookRefusals.Add(1)
	c.replyErr(id, refusalCode(r, hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED), r.GetTemporary(), "%s", refusalReason(r))
}

func refusalReason(r *hooksv1.Refusal) string {
	if r.GetReason() == "" {
		return "refused by the backend"
	}
	return r.GetReason()
}

// hookDown answers a command whose hook got no usable answer.
func (c *conn) hookDown(id uint64) {
	c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "the backend did not answer; retry")
}

// connectHook lets the backend decide who the connection is: after the
// token check when tokens are configured, instead of it otherwise.
func (c *conn) connectHook(ctx actor.Context, f *hubbubv1.ClientFrame, token, name string) {
	if c.node.auth.Enabled() {
		if _, err := c.node.auth.Authenticate(token, name); err != nil {
			c.refuse(f.GetId(), err)
			return
		}
	}
	req := &hooksv1.ConnectRequest{Token: token, Name: f.GetConnect().GetName(), ClientId: c.clientID, RemoteAddr: c.info.RemoteAddr,
		Transport: "websocket", Data: f.GetConnect().GetData(), Headers: c.info.Headers}
	trace := f.GetTrace()
	c.callHook(ctx, func() (any, error) { return c.node.hooks.Connect(trace, req) }, func(res any, err error) {
		r, _ := res.(*hooksv1.ConnectResponse)
		switch {
		case err != nil || r == nil:
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "the backend did not answer; reconnect later")
			c.sink.Close(wire.CloseTryAgainLater, wire.CloseReason(wire.CloseTryAgainLater))
			c.held, c.stash = true, nil // nothing runs after a failed connect
		case r.GetError() != nil || r.GetUser() == "":
			c.node.counters.HookRefusals.Add(1)
			c.node.counters.Unauthorized.Add(1)
			c.replyErr(f.GetId(), refusalCode(r.GetError(), hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED), r.GetError().GetTemporary(), "%s", refusalReason(r.GetError()))
			c.sink.Close(wire.CloseUnauthorized, wire.CloseReason(wire.CloseUnauthorized))
			c.held, c.stash = true, nil
		case len(r.GetUser()) > c.cfg.MaxNameBytes || !validDisplayName(r.GetUser()) || proto.Size(r.GetInfo()) > maxHookInfoBytes:
			c.node.log.Warn("connect hook answer refused: invalid user or info over 4 KiB", "user_bytes", len(r.GetUser()), "info_bytes", proto.Size(r.GetInfo()))
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "the backend answered an invalid user")
			c.sink.Close(wire.CloseTryAgainLater, wire.CloseReason(wire.CloseTryAgainLater))
			c.held, c.stash = true, nil
		default:
			var expires time.Time
			if ms := r.GetExpireAtUnixMs(); ms > 0 {
				expires = time.UnixMilli(ms)
			}
			c.hookInfo, c.hookRooms, c.hookTraces = r.GetInfo(), c.validHookRooms(r.GetRooms()), trace
			c.admit(ctx, f, auth.BackendIdentity(r.GetUser(), expires))
		}
	})
}

// maxHookInfoBytes bounds the user info a connect hook may answer: it
// travels with every message the connection publishes.
const maxHookInfoBytes = 4 << 10

// validHookRooms keeps the connect hook's rooms that are valid names, once
// each, up to the connection's room limit; the rest are logged and skipped.
func (c *conn) validHookRooms(rooms []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rooms {
		switch {
		case r == "" || len(r) > c.cfg.MaxRoomNameBytes || !validName(r) || seen[r] || isUserRoom(r):
			c.node.log.Warn("connect hook named an invalid room (or a user's personal room); skipped", "room_bytes", len(r))
		case len(out) >= c.cfg.MaxRooms:
			c.node.log.Warn("connect hook named more rooms than a connection may join; the rest skipped", "max_rooms", c.cfg.MaxRooms)
			return out
		default:
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// joinHookRooms joins the rooms the connect hook named and the user's
// personal room, right after the connect reply: their join replies reach
// the client with id 0, recovering from the positions the client gave in its
// connect (ConnectRequest.since). The hook's answer authorised them, so the
// Join hook is not called.
func (c *conn) joinHookRooms(ctx actor.Context) {
	for _, room := range c.hookRooms {
		since := c.hookSince[room]
		if since.GetOffset() > 0 && since.GetEpoch() == "" {
			since = nil
		}
		f := &hubbubv1.ClientFrame{Trace: c.hookTraces}
		c.sendJoin(ctx, f, &hubbubv1.JoinRequest{Room: room, Since: since}, since, nil)
	}
	c.hookSince, c.hookTraces = nil, nil
}

// refusalCode is the error code a refusal gives the client: the backend's
// choice, else def (UNAVAILABLE when the backend said to retry).
func refusalCode(r *hooksv1.Refusal, def hubbubv1.ErrorCode) hubbubv1.ErrorCode {
	switch {
	case r.GetCode() != hubbubv1.ErrorCode_ERROR_CODE_UNSPECIFIED:
		return r.GetCode()
	case r.GetTemporary():
		return hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE
	}
	return def
}

// onRpc forwards an rpc command to the backend and answers with its reply.
func (c *conn) onRpc(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.RpcRequest) {
	if !c.node.hooks.Has("Rpc") {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND, false, "rpc needs a backend with the Rpc hook (--hook-url, --hooks)")
		return
	}
	if req.GetMethod() == "" || len(req.GetMethod()) > maxIDBytes {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "rpc.method: 1-%d bytes", maxIDBytes)
		return
	}
	if size := BodyBytes(&hubbubv1.Body{Kind: &hubbubv1.Body_Data{Data: req.GetData()}}); req.GetData() != nil && size > c.cfg.MaxMessageBytes {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE, false, "rpc.data is %d bytes, limit %d", size, c.cfg.MaxMessageBytes)
		return
	}
	hr := &hooksv1.RpcRequest{User: c.identity.User, ClientId: c.clientID, Method: req.GetMethod(), Data: req.GetData()}
	trace := c.hookTrace(f)
	c.callHook(ctx, func() (any, error) { return c.node.hooks.Rpc(trace, hr) }, func(res any, err error) {
		r, _ := res.(*hooksv1.RpcResponse)
		switch {
		case err != nil || r == nil:
			c.hookDown(f.GetId())
		case r.GetError() != nil:
			c.hookRefused(f.GetId(), r.GetError())
		default:
			c.send(&hubbubv1.ServerFrame{Id: f.GetId(), Body: &hubbubv1.ServerFrame_Rpc{Rpc: &hubbubv1.RpcReply{Data: r.GetData()}}})
		}
	})
}
