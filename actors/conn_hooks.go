package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

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
	if c.node.notifier == nil || c.identity == nil {
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
	code := hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED
	if r.GetTemporary() {
		code = hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE
	}
	c.replyErr(id, code, r.GetTemporary(), "%s", refusalReason(r))
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
	req := &hooksv1.ConnectRequest{Token: token, Name: f.GetConnect().GetName(), ClientId: c.clientID, RemoteAddr: c.info.RemoteAddr, Transport: "websocket"}
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
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED, false, "%s", refusalReason(r.GetError()))
			c.sink.Close(wire.CloseUnauthorized, wire.CloseReason(wire.CloseUnauthorized))
			c.held, c.stash = true, nil
		case len(r.GetUser()) > c.cfg.MaxNameBytes || !validDisplayName(r.GetUser()):
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "the backend named an invalid user")
			c.sink.Close(wire.CloseTryAgainLater, wire.CloseReason(wire.CloseTryAgainLater))
			c.held, c.stash = true, nil
		default:
			var expires time.Time
			if ms := r.GetExpireAtUnixMs(); ms > 0 {
				expires = time.UnixMilli(ms)
			}
			c.admit(ctx, f, auth.BackendIdentity(r.GetUser(), expires))
		}
	})
}

// onRpc forwards an rpc command to the backend and answers with its reply.
func (c *conn) onRpc(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.RpcRequest) {
	if c.node.hooks == nil {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND, false, "rpc needs a backend (--hook-url)")
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
