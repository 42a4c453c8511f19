package actors

import (
	"encoding/json"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hubbub-chat/hubbub/auth"
	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// maxIDBytes bounds a publish's message_id and key: both are remembered by the room.
const maxIDBytes = 128

// connected handles every command after connect. Commands take effect in the
// order the client sent them: each is checked here in arrival order, and
// every request to a room leaves in that order too (see ask), so a room sees
// one connection's commands in the order sent, on this node or another.
func (c *conn) connected(ctx actor.Context, f *hubbubv1.ClientFrame) {
	c.clientTrace = f.GetTrace()
	f.Trace = c.beginCommand(f, roomOf(f))
	switch cmd := f.GetCommand().(type) {
	case *hubbubv1.ClientFrame_Join:
		c.onJoin(ctx, f, cmd.Join)
	case *hubbubv1.ClientFrame_Leave:
		c.onLeave(ctx, f, cmd.Leave)
	case *hubbubv1.ClientFrame_Publish:
		c.onPublish(ctx, f, cmd.Publish)
	case *hubbubv1.ClientFrame_History:
		if c.checkRoom(f.GetId(), cmd.History.GetRoom()) && c.permit(f.GetId(), auth.Read, cmd.History.GetRoom()) {
			c.onRoomQuery(ctx, f, cmd.History.GetRoom(), &nodev1.RoomHistory{Request: cmd.History, RequestId: f.GetId(), Trace: f.GetTrace()})
		}
	case *hubbubv1.ClientFrame_Presence:
		if c.checkRoom(f.GetId(), cmd.Presence.GetRoom()) && c.permit(f.GetId(), auth.Read, cmd.Presence.GetRoom()) {
			c.onRoomQuery(ctx, f, cmd.Presence.GetRoom(), &nodev1.RoomPresence{Room: cmd.Presence.GetRoom(), RequestId: f.GetId(),
				Limit: cmd.Presence.GetLimit(), Cursor: cmd.Presence.GetCursor(), Trace: f.GetTrace()})
		}
	case *hubbubv1.ClientFrame_Refresh:
		c.onRefresh(ctx, f, cmd.Refresh)
	case *hubbubv1.ClientFrame_Typing:
		c.onTyping(ctx, f, cmd.Typing)
	case *hubbubv1.ClientFrame_Rpc:
		c.onRpc(ctx, f, cmd.Rpc)
	case *hubbubv1.ClientFrame_Direct:
		c.onDirect(ctx, f, cmd.Direct)
	case *hubbubv1.ClientFrame_Ack:
		c.onMarkCommand(ctx, f, cmd.Ack.GetRoom(), cmd.Ack.GetOffset(), cmd.Ack.GetEpoch(), false)
	case *hubbubv1.ClientFrame_Read:
		c.onMarkCommand(ctx, f, cmd.Read.GetRoom(), cmd.Read.GetOffset(), cmd.Read.GetEpoch(), true)
	case *hubbubv1.ClientFrame_Ping:
		c.send(&hubbubv1.ServerFrame{Id: f.GetId(), Body: &hubbubv1.ServerFrame_Ping{Ping: &hubbubv1.PingReply{ServerTimeUnixMs: time.Now().UnixMilli()}}})
	case *hubbubv1.ClientFrame_Connect:
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_ALREADY_CONNECTED, false, "already connected")
	default:
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND, false, "unknown command")
	}
}

func (c *conn) onJoin(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.JoinRequest) {
	name := req.GetRoom()
	if !c.checkRoom(f.GetId(), name) || !c.permit(f.GetId(), auth.Join, name) {
		return
	}
	since := req.GetSince()
	if since.GetOffset() > 0 && since.GetEpoch() == "" {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "join.since.epoch: required with an offset")
		return
	}
	if since != nil && !c.identity.Can(auth.Read, name) {
		// Recovery hands out history, which is what read allows: without it
		// the join goes ahead with recovered false and no messages.
		since = nil
	}
	if c.rooms.has(name) {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_ALREADY_JOINED, false, "already joined %q", name)
		return
	}
	if c.rooms.len() >= c.cfg.MaxRooms {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED, false, "at most %d rooms per connection", c.cfg.MaxRooms)
		return
	}
	if !c.node.hooks.Has("Join") || c.profile(name).SkipJoinHook {
		c.sendJoin(ctx, f, req, since, nil)
		return
	}
	hr := &hooksv1.JoinRequest{User: c.identity.User, ClientId: c.clientID, Room: name}
	trace := c.hookTrace(f)
	c.callHook(ctx, func() (any, error) { return c.node.hooks.Join(trace, hr) }, func(res any, err error) {
		r, _ := res.(*hooksv1.JoinResponse)
		switch {
		case err != nil || r == nil:
			c.hookDown(f.GetId())
		case r.GetError() != nil:
			c.hookRefused(f.GetId(), r.GetError())
		default:
			c.sendJoin(ctx, f, req, since, r.GetData())
		}
	})
}

// sendJoin asks the room to take the connection as a member.
func (c *conn) sendJoin(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.JoinRequest, since *hubbubv1.StreamPosition, data *structpb.Value) {
	name := req.GetRoom()
	jr := &joinedRoom{}
	c.rooms.set(name, jr)
	msg := &nodev1.RoomJoin{Room: name, Member: c.member, Since: since, PresenceSince: req.GetPresenceSince(), Receipts: req.GetReceipts(),
		MayPublish: c.identity.Can(auth.Publish, name), RequestId: f.GetId(), Trace: f.GetTrace(), HookData: data}
	c.ask(ctx, name, msg, f.GetId(), func(pid *actor.PID, rr *nodev1.RoomReply, err error) {
		if c.rooms.get(name) != jr {
			return // left meanwhile
		}
		switch {
		case err != nil:
			c.rooms.del(name)
			// The room may still process the join late; undo it.
			ctx.Send(pid, wrap(&nodev1.RoomLeave{Room: name, Member: c.member, Disconnect: true}))
		case rr.GetFrame().GetError() != nil:
			c.rooms.del(name)
			c.forward(f.GetId(), rr.GetFrame())
		default:
			jr.joined, jr.pid = true, pid // the join reply itself reaches the client through the relay
			ctx.Send(c.node.users, connRoom{pid: ctx.Self(), room: name, joined: true})
			if c.node.notifier != nil {
				ctx.Send(c.node.notifier, userJoined{user: c.identity.User, clientID: c.clientID, room: name,
					notify: c.profile(name).HookNotify == HookNotifyPresence, time: time.Now().UnixMilli()})
			}
			ctx.Watch(pid) // a room that dies under its members sends Terminated
			c.endCommand(f.GetId(), nil)
		}
	})
}

func (c *conn) onLeave(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.LeaveRequest) {
	name := req.GetRoom()
	if !c.checkRoom(f.GetId(), name) {
		return
	}
	jr, ok := c.rooms.lookup(name)
	if !ok {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED, false, "not joined to %q", name)
		return
	}
	if jr.joined && jr.pid != nil {
		ctx.Unwatch(jr.pid)
	}
	c.rooms.del(name)
	ctx.Send(c.node.users, connRoom{pid: ctx.Self(), room: name})
	c.notify(ctx, hooksv1.Notification_KIND_LEAVE, name, "leave", false)
	msg := &nodev1.RoomLeave{Room: name, Member: c.member, RequestId: f.GetId(), Trace: f.GetTrace()}
	c.ask(ctx, name, msg, f.GetId(), func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		if err == nil && rr.GetFrame().GetError() != nil {
			c.forward(f.GetId(), rr.GetFrame())
		}
		c.endCommand(f.GetId(), nil) // the leave reply itself went through the relay
	})
}

func (c *conn) onPublish(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.PublishRequest) {
	if !c.checkRoom(f.GetId(), req.GetRoom()) || !c.permit(f.GetId(), auth.Publish, req.GetRoom()) {
		return
	}
	if req.GetBody().GetKind() == nil {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "publish.body: required (text, data or binary)")
		return
	}
	for _, fld := range [...]struct{ name, v string }{{"publish.message_id", req.GetMessageId()}, {"publish.key", req.GetKey()}} {
		if len(fld.v) > maxIDBytes {
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "%s: %d bytes, at most %d", fld.name, len(fld.v), maxIDBytes)
			return
		}
	}
	if size := BodyBytes(req.GetBody()); size > c.cfg.MaxMessageBytes {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE, false, "body is %d bytes, limit %d", size, c.cfg.MaxMessageBytes)
		return
	}
	if !c.node.hooks.Has("Publish") || c.profile(req.GetRoom()).SkipPublishHook {
		c.sendPublish(ctx, f, req, req.GetBody())
		return
	}
	hr := &hooksv1.PublishRequest{User: c.identity.User, ClientId: c.clientID, Room: req.GetRoom(), Body: req.GetBody(), MessageId: req.GetMessageId()}
	trace := c.hookTrace(f)
	c.callHook(ctx, func() (any, error) { return c.node.hooks.Publish(trace, hr) }, func(res any, err error) {
		r, _ := res.(*hooksv1.PublishResponse)
		switch {
		case err != nil || r == nil:
			c.hookDown(f.GetId())
		case r.GetError() != nil:
			c.hookRefused(f.GetId(), r.GetError())
		case r.GetBody() != nil && (r.GetBody().GetKind() == nil || BodyBytes(r.GetBody()) > c.cfg.MaxMessageBytes):
			c.node.log.Warn("publish hook: replacement body empty or over --max-message-bytes; publish refused")
			c.hookDown(f.GetId())
		case r.GetBody() != nil:
			c.sendPublish(ctx, f, req, r.GetBody()) // moderated or enriched
		default:
			c.sendPublish(ctx, f, req, req.GetBody())
		}
	})
}

// sendPublish sends a checked publish to its room.
func (c *conn) sendPublish(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.PublishRequest, body *hubbubv1.Body) {
	msg := &nodev1.RoomPublish{Room: req.GetRoom(), Member: c.member, Body: body, MessageId: req.GetMessageId(),
		Key: req.GetKey(), RequestId: f.GetId(), Trace: f.GetTrace()}
	c.ask(ctx, req.GetRoom(), msg, f.GetId(), func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		if err == nil {
			c.forward(f.GetId(), rr.GetFrame())
		}
	})
}

// BodyBytes is the size of what the publisher sent, as MaxMessageBytes
// counts it: the UTF-8 bytes of a text, the bytes of a binary body, and the
// compact JSON of a data body. It is the same in both encodings.
func BodyBytes(b *hubbubv1.Body) int {
	switch k := b.GetKind().(type) {
	case *hubbubv1.Body_Text:
		return len(k.Text)
	case *hubbubv1.Body_Binary:
		return len(k.Binary)
	case *hubbubv1.Body_Data:
		j, err := json.Marshal(k.Data.AsInterface())
		if err != nil {
			return proto.Size(b)
		}
		return len(j)
	}
	return 0
}

// onRoomQuery asks a room and forwards its reply; callers have checked the room name.
func (c *conn) onRoomQuery(ctx actor.Context, f *hubbubv1.ClientFrame, room string, msg proto.Message) {
	c.ask(ctx, room, msg, f.GetId(), func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		if err == nil {
			c.forward(f.GetId(), rr.GetFrame())
		}
	})
}

// onTyping sends a typing indicator of a joined room, or of one whose join is
// still on its way: the room receives the join first and checks membership.
func (c *conn) onTyping(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.TypingRequest) {
	if !c.checkRoom(f.GetId(), req.GetRoom()) {
		return
	}
	if !c.rooms.has(req.GetRoom()) {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED, false, "not joined to %q", req.GetRoom())
		return
	}
	c.onRoomQuery(ctx, f, req.GetRoom(), &nodev1.RoomTyping{Room: req.GetRoom(), Member: c.member, Typing: req.GetTyping(),
		RequestId: f.GetId(), Trace: f.GetTrace()})
}
