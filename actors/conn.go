package actors

import (
	"errors"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hubbub-chat/hubbub/auth"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// conn is the actor of one client connection: identity, joined rooms and
// command handling. It never touches the network: replies go to its Sink.
type conn struct {
	node     *Node
	cfg      ConnConfig
	sink     Sink
	info     ConnInfo
	clientID string
	done     chan struct{}

	spans     map[uint64]trace.Span // open command spans by request id
	identity  *auth.Identity
	counted   bool        // holds one of the user's connection slots
	expiry    *time.Timer // token expiry
	expiryGen int

	behavior actor.Behavior
	member   *nodev1.Member         // set by connect
	rooms    map[string]*joinedRoom // joined or joining
	gone     bool                   // the transport closed the socket
}

type joinedRoom struct {
	pid    *actor.PID
	joined bool
}

// connGone tells the connection actor that its socket is closed.
type connGone struct{}

// tokenExpired is the connection's own timer message; gen tells stale timers apart.
type tokenExpired struct{ gen int }

func (c *conn) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		c.rooms = map[string]*joinedRoom{}
		c.spans = map[uint64]trace.Span{}
		c.behavior = actor.NewBehavior()
		c.behavior.Become(c.awaitingConnect)
	case connGone:
		c.gone = true
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		c.onStopping(ctx)
	case *actor.Stopped:
		ctx.Send(c.node.relay, unregisterConn{id: ctx.Self().Id})
		if c.expiry != nil {
			c.expiry.Stop()
		}
		close(c.done)
	case *actor.Terminated:
		c.onRoomTerminated(msg.GetWho())
	case roomPlaced:
		if jr := c.rooms[msg.room]; jr != nil && jr.pid == nil {
			jr.pid = msg.pid
		}
		msg.then(ctx)
	case *actor.Restarting, *actor.ReceiveTimeout:
	case tokenExpired:
		if msg.gen == c.expiryGen {
			c.node.counters.Unauthorized.Add(1)
			c.sink.Close(wire.CloseTokenExpired, "token expired")
		}
	case *inbound:
		c.node.counters.CountCommand(commandName(msg.frame))
		c.behavior.Receive(ctx)
	default:
		c.node.log.Warn("conn: unexpected message dropped", "type", slog.AnyValue(msg).String())
	}
}

// onStopping leaves every room; a stop the transport did not ask for is a failure.
func (c *conn) onStopping(ctx actor.Context) {
	if c.member != nil {
		for name, jr := range c.rooms {
			if jr.pid != nil { // without a PID the join was never sent
				ctx.Send(jr.pid, wrap(&nodev1.RoomLeave{Room: name, Member: c.member, Disconnect: true}))
			}
		}
	}
	if c.counted {
		ctx.Send(c.node.users, releaseUser{user: c.identity.User})
	}
	if !c.gone {
		c.sink.Close(wire.CloseInternal, "internal error")
	}
	c.endAll()
}

// awaitingConnect accepts only a connect command.
func (c *conn) awaitingConnect(ctx actor.Context) {
	f := ctx.Message().(*inbound).frame
	req := f.GetConnect()
	if req == nil {
		if f.GetCommand() == nil {
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND, false, "unknown command")
			return
		}
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_CONNECTED, false, "connect first")
		return
	}
	name := req.GetName()
	if len(name) > c.cfg.MaxNameBytes || !validDisplayName(name) {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "invalid name")
		return
	}
	if name == "" {
		name = "anon-" + c.clientID
	}
	token := req.GetToken()
	if token == "" {
		token = c.info.Token
	}
	id, err := c.node.auth.Authenticate(token, name)
	if err != nil {
		c.refuse(f.GetId(), err)
		return
	}
	c.identity = id
	if c.cfg.MaxConnsPerUser <= 0 {
		c.accept(ctx, f.GetId())
		return
	}
	c.behavior.Become(c.connecting)
	fut := ctx.RequestFuture(c.node.users, acquireUser{user: id.User, max: c.cfg.MaxConnsPerUser}, c.cfg.RequestTimeout)
	ctx.ReenterAfter(fut, func(res any, err error) {
		if ok, _ := res.(bool); !ok || err != nil {
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED, false, "at most %d connections per user", c.cfg.MaxConnsPerUser)
			c.sink.Close(wire.CloseTooManyConnections, "too many connections for this user")
			return
		}
		c.counted = true
		c.accept(ctx, f.GetId())
	})
}

// connecting waits for the per-user connection count.
func (c *conn) connecting(ctx actor.Context) {
	f := ctx.Message().(*inbound).frame
	c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_CONNECTED, true, "connect is in progress")
}

// refuse answers a connect whose token failed and closes the connection.
func (c *conn) refuse(id uint64, err error) {
	c.node.counters.Unauthorized.Add(1)
	if errors.Is(err, auth.ErrExpired) {
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED, false, "token expired")
		c.sink.Close(wire.CloseTokenExpired, "token expired")
		return
	}
	c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED, false, "%v", err)
	c.sink.Close(wire.CloseUnauthorized, "unauthorized")
}

// accept completes a connect.
func (c *conn) accept(ctx actor.Context, id uint64) {
	info := &hubbubv1.ClientInfo{User: c.identity.User, ClientId: c.clientID}
	enc := nodev1.Encoding_ENCODING_PROTO
	if c.sink.Encoding() == wire.JSON {
		enc = nodev1.Encoding_ENCODING_JSON
	}
	c.member = &nodev1.Member{Address: ctx.Self().Address, ActorId: ctx.Self().Id, Client: info, Encoding: enc}
	c.armExpiry(ctx)
	c.send(&hubbubv1.ServerFrame{Id: id, Body: &hubbubv1.ServerFrame_Connect{Connect: &hubbubv1.ConnectReply{
		Client: info, PingIntervalMs: uint32(c.node.cfg.PingInterval / time.Millisecond),
		ServerVersion: c.node.cfg.ServerVersion, MaxFrameBytes: uint32(c.node.cfg.MaxFrameBytes),
		ExpiresUnixMs: expiresMs(c.identity),
	}}})
	c.behavior.Become(c.connected)
}

func expiresMs(id *auth.Identity) int64 {
	if id.Expires.IsZero() {
		return 0
	}
	return id.Expires.UnixMilli()
}

// armExpiry closes the connection with 4001 when its token expires, unless refreshed.
func (c *conn) armExpiry(ctx actor.Context) {
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.expiryGen++
	if c.identity.Expires.IsZero() {
		return
	}
	self, root, gen := ctx.Self(), ctx.ActorSystem().Root, c.expiryGen
	c.expiry = time.AfterFunc(time.Until(c.identity.Expires), func() { root.Send(self, tokenExpired{gen: gen}) })
}

func (c *conn) onRefresh(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.RefreshRequest) {
	id, err := c.node.auth.Authenticate(req.GetToken(), "")
	switch {
	case err != nil:
		c.node.counters.Unauthorized.Add(1)
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED, false, "%v", err)
		return
	case id.Anonymous || id.User != c.identity.User:
		c.node.counters.Unauthorized.Add(1)
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, false, "a refreshed token must name the same user")
		return
	}
	c.identity = id
	c.armExpiry(ctx)
	c.send(&hubbubv1.ServerFrame{Id: f.GetId(), Body: &hubbubv1.ServerFrame_Refresh{Refresh: &hubbubv1.RefreshReply{ExpiresUnixMs: expiresMs(id)}}})
}

// permit checks the identity's permission for a room command.
func (c *conn) permit(id uint64, act auth.Action, room string) bool {
	if c.identity.Can(act, room) {
		return true
	}
	c.node.counters.PermissionDenied.Add(1)
	c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, false, "not allowed in %q", room)
	return false
}

// connected handles every command after connect.
func (c *conn) connected(ctx actor.Context) {
	f := ctx.Message().(*inbound).frame
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
			c.onRoomQuery(ctx, f, cmd.Presence.GetRoom(), &nodev1.RoomPresence{Room: cmd.Presence.GetRoom(), RequestId: f.GetId(), Trace: f.GetTrace()})
		}
	case *hubbubv1.ClientFrame_Refresh:
		c.onRefresh(ctx, f, cmd.Refresh)
	case *hubbubv1.ClientFrame_Typing:
		c.onTyping(ctx, f, cmd.Typing)
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
	if _, ok := c.rooms[name]; ok {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_ALREADY_JOINED, false, "already joined %q", name)
		return
	}
	if len(c.rooms) >= c.cfg.MaxRooms {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED, false, "at most %d rooms per connection", c.cfg.MaxRooms)
		return
	}
	jr := &joinedRoom{}
	c.rooms[name] = jr
	msg := &nodev1.RoomJoin{Room: name, Member: c.member, Since: req.GetSince(), RequestId: f.GetId(), Trace: f.GetTrace()}
	c.ask(ctx, name, msg, f.GetId(), func(pid *actor.PID, rr *nodev1.RoomReply, err error) {
		if c.rooms[name] != jr {
			return // left meanwhile
		}
		switch {
		case err != nil:
			delete(c.rooms, name)
			// The room may still process the join late; undo it.
			ctx.Send(pid, wrap(&nodev1.RoomLeave{Room: name, Member: c.member, Disconnect: true}))
		case rr.GetFrame().GetError() != nil:
			delete(c.rooms, name)
			c.forward(f.GetId(), rr.GetFrame())
		default:
			jr.joined = true // the join reply itself reaches the client through the relay
			ctx.Watch(pid)   // a room that dies under its members sends Terminated
			c.endCommand(f.GetId(), nil)
		}
	})
}

func (c *conn) onLeave(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.LeaveRequest) {
	name := req.GetRoom()
	if !c.checkRoom(f.GetId(), name) {
		return
	}
	if _, ok := c.rooms[name]; !ok {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED, false, "not joined to %q", name)
		return
	}
	if jr := c.rooms[name]; jr.joined && jr.pid != nil {
		ctx.Unwatch(jr.pid)
	}
	delete(c.rooms, name)
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
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "publish needs a body")
		return
	}
	if size := proto.Size(req.GetBody()); size > c.cfg.MaxMessageBytes {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE, false, "body is %d bytes, limit %d", size, c.cfg.MaxMessageBytes)
		return
	}
	if fault := c.node.cfg.FaultText; fault != "" && req.GetBody().GetText() == fault+"!conn" {
		panic("conn: injected fault")
	}
	msg := &nodev1.RoomPublish{Room: req.GetRoom(), Member: c.member, Body: req.GetBody(), MessageId: req.GetMessageId(),
		Key: req.GetKey(), RequestId: f.GetId(), Trace: f.GetTrace()}
	c.ask(ctx, req.GetRoom(), msg, f.GetId(), func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		if err == nil {
			c.forward(f.GetId(), rr.GetFrame())
		}
	})
}

// onRoomQuery asks a room and forwards its reply; callers have checked the room name.
func (c *conn) onRoomQuery(ctx actor.Context, f *hubbubv1.ClientFrame, room string, msg proto.Message) {
	c.ask(ctx, room, msg, f.GetId(), func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		if err == nil {
			c.forward(f.GetId(), rr.GetFrame())
		}
	})
}

func (c *conn) onTyping(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.TypingRequest) {
	if !c.checkRoom(f.GetId(), req.GetRoom()) {
		return
	}
	if jr, ok := c.rooms[req.GetRoom()]; !ok || !jr.joined {
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED, false, "not joined to %q", req.GetRoom())
		return
	}
	c.onRoomQuery(ctx, f, req.GetRoom(), &nodev1.RoomTyping{Room: req.GetRoom(), Member: c.member, Typing: req.GetTyping(),
		RequestId: f.GetId(), Trace: f.GetTrace()})
}

// ask sends a request to a room and continues with its reply inside this
// actor. A dead letter (the room stopped meanwhile) is retried once on a fresh
// activation; a timeout gets a temporary UNAVAILABLE error for the client, and
// then is called with the error so the caller can undo state.
func (c *conn) ask(ctx actor.Context, room string, msg proto.Message, id uint64, then func(*actor.PID, *nodev1.RoomReply, error)) {
	c.askAttempt(ctx, room, msg, id, then, 0)
}

func (c *conn) askAttempt(ctx actor.Context, room string, msg proto.Message, id uint64, then func(*actor.PID, *nodev1.RoomReply, error), attempt int) {
	pid, ok := c.cachedRoomPID(room)
	if !ok {
		// Placing a room may take a cluster round trip (up to the cluster's
		// lookup timeout): do it off the actor and continue when it is done.
		self, root, placement := ctx.Self(), ctx.ActorSystem().Root, c.node.placement
		go func() { // owner: this connection actor; bounded by the placement's lookup timeout
			pid := placement.RoomPID(room)
			root.Send(self, roomPlaced{room: room, pid: pid, then: func(ctx actor.Context) {
				c.askPID(ctx, pid, room, msg, id, then, attempt)
			}})
		}()
		return
	}
	c.askPID(ctx, pid, room, msg, id, then, attempt)
}

// askPID sends the request to the room's actor and continues with the answer.
func (c *conn) askPID(ctx actor.Context, pid *actor.PID, room string, msg proto.Message, id uint64, then func(*actor.PID, *nodev1.RoomReply, error), attempt int) {
	fut := ctx.RequestFuture(pid, wrap(msg), c.cfg.RequestTimeout)
	ctx.ReenterAfter(fut, func(res any, err error) {
		if errors.Is(err, actor.ErrDeadLetter) && attempt == 0 {
			if jr := c.rooms[room]; jr != nil {
				jr.pid = nil
			}
			c.node.placement.Forget(room, pid)
			c.askAttempt(ctx, room, msg, id, then, attempt+1)
			return
		}
		rr, ok := unwrap(res).(*nodev1.RoomReply)
		if err == nil && !ok {
			err = errors.New("unexpected reply")
		}
		if err != nil {
			c.node.counters.RoomTimeouts.Add(1)
			c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q did not answer", room)
			then(pid, nil, err)
			return
		}
		then(pid, rr, nil)
	})
}

// roomPlaced carries a room's placement back to the connection actor.
type roomPlaced struct {
	room string
	pid  *actor.PID
	then func(actor.Context)
}

// cachedRoomPID returns the room's actor when it is known without waiting:
// cached for a joined room, or from the placement's cache.
func (c *conn) cachedRoomPID(room string) (*actor.PID, bool) {
	jr := c.rooms[room]
	if jr != nil && jr.pid != nil {
		return jr.pid, true
	}
	pid, ok := c.node.placement.Cached(room)
	if ok && jr != nil {
		jr.pid = pid
	}
	return pid, ok
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

// roomOf returns the room a command is about, or "".
func roomOf(f *hubbubv1.ClientFrame) string {
	switch cmd := f.GetCommand().(type) {
	case *hubbubv1.ClientFrame_Join:
		return cmd.Join.GetRoom()
	case *hubbubv1.ClientFrame_Leave:
		return cmd.Leave.GetRoom()
	case *hubbubv1.ClientFrame_Publish:
		return cmd.Publish.GetRoom()
	case *hubbubv1.ClientFrame_History:
		return cmd.History.GetRoom()
	case *hubbubv1.ClientFrame_Presence:
		return cmd.Presence.GetRoom()
	case *hubbubv1.ClientFrame_Typing:
		return cmd.Typing.GetRoom()
	}
	return ""
}

// onRoomTerminated handles the death of a joined room (its node died, or it
// moved): the membership is gone with it, so the client is told to reconnect
// and rejoin with its last positions, and learns from the join replies
// whether its messages were recovered.
func (c *conn) onRoomTerminated(who *actor.PID) {
	for _, jr := range c.rooms {
		if jr.joined && jr.pid != nil && jr.pid.Equal(who) {
			c.node.counters.RoomsLost.Add(1)
			c.sink.Close(wire.CloseRoomMoved, "a joined room moved; rejoin")
			return
		}
	}
}
