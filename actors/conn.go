package actors

import (
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hubbub-chat/hubbub/auth"
	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// conn is the actor of one client connection: identity, joined rooms and
// command handling. It never touches the network: replies go to its Sink.
type conn struct {
	node     *Node
	cfg      *ConnConfig // the node's, shared
	sink     Sink
	info     ConnInfo
	clientID string
	done     chan struct{}

	spans     map[uint64]trace.Span // open command spans by request id
	identity  *auth.Identity
	compact   bool        // the client asked for compact pushes
	userRoom  string      // the user's personal room, joined at connect ("" when not)
	wantsUser bool        // the client asked for its personal stream
	counted   bool        // holds one of the user's connection slots
	expiry    *time.Timer // the connect timeout until connect, then the token's expiry
	expiryGen int

	// handle is the current command handler: awaitingConnect, then
	// connected. While held is set (a connect waits for the user's slot),
	// frames wait in stash and run in order afterwards.
	handle func(actor.Context, *hubbubv1.ClientFrame)
	held   bool
	stash  []*hubbubv1.ClientFrame
	routes roomMap[*route]       // where requests to each room go, in order
	seq    uint64                // commands sent to rooms so far
	member *nodev1.Member        // set by connect
	rooms  roomMap[*joinedRoom]  // joined or joining
	markQs map[string]*markQueue // marks waiting for the one on its way, by room
	// The newest offset this connection acked per room, for the delivery
	// ledger (which counts an ack of exactly a delivered offset).
	ledgerAcks map[string]uint64
	gone       bool // the transport closed the socket

	clientTrace map[string]string // the trace the client sent with the command being handled

	// From the connect hook's answer, for accept: the user's info, the rooms
	// joined for the connection, and the client's positions in them.
	hookInfo   *structpb.Value
	hookRooms  []string
	hookSince  map[string]*hubbubv1.StreamPosition
	hookTraces map[string]string
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
		c.handle = c.awaitingConnect
		c.armConnectTimeout(ctx)
	case connGone:
		c.gone = true
		ctx.Stop(ctx.Self())
	case kick:
		c.sink.Close(msg.code, msg.reason)
	case *actor.Stopping:
		c.onStopping(ctx)
	case *actor.Stopped:
		ctx.Send(c.node.relays[relayShard(ctx.Self().Id, len(c.node.relays))], unregisterConn{id: ctx.Self().Id})
		if c.expiry != nil {
			c.expiry.Stop()
		}
		close(c.done)
	case *actor.Terminated:
		c.onRoomTerminated(msg.GetWho())
		c.onRouteTerminated(ctx, msg.GetWho())
	case roomPlaced:
		c.onRoomPlaced(ctx, msg)
	case connectTimeout:
		if c.member == nil {
			c.node.counters.ConnectTimeouts.Add(1)
			c.sink.Close(wire.CloseConnectTimeout, wire.CloseReason(wire.CloseConnectTimeout))
		}
	case *actor.Restarting, *actor.ReceiveTimeout:
	case tokenExpired:
		if msg.gen == c.expiryGen {
			c.node.counters.Unauthorized.Add(1)
			c.sink.Close(wire.CloseTokenExpired, wire.CloseReason(wire.CloseTokenExpired))
		}
	case *inbound:
		c.node.counters.CountCommand(commandName(msg.frame))
		if inject := c.node.inject; inject != nil {
			inject("conn", msg.frame)
		}
		c.dispatch(ctx, msg.frame)
	default:
		c.node.log.Warn("conn: unexpected message dropped", "type", slog.AnyValue(msg).String())
	}
}

// onStopping leaves every room; a stop the transport did not ask for is a failure.
func (c *conn) onStopping(ctx actor.Context) {
	if c.member != nil {
		for name, jr := range c.rooms.all() {
			pid := jr.pid
			if rt := c.routes.get(name); pid == nil && rt != nil && rt.outstanding > 0 {
				pid = rt.pid // the join is on its way there
			}
			if pid != nil { // without a PID the join was never sent
				ctx.Send(pid, wrap(&nodev1.RoomLeave{Room: name, Member: c.member, Disconnect: true}))
			}
		}
	}
	if c.counted {
		ctx.Send(c.node.users, releaseUser{user: c.identity.User})
	}
	if c.member != nil {
		ctx.Send(c.node.users, connDown{pid: ctx.Self()})
		for name, jr := range c.rooms.all() {
			if jr.joined {
				c.notify(ctx, hooksv1.Notification_KIND_LEAVE, name, "disconnect", true)
			}
		}
		c.notify(ctx, hooksv1.Notification_KIND_DISCONNECT, "", "closed", true)
	}
	if !c.gone {
		c.sink.Close(wire.CloseInternal, wire.CloseReason(wire.CloseInternal))
	}
	c.endAll()
}

// dispatch hands a frame to the current handler, or keeps it for later
// while a connect is held, so commands take effect in the order sent.
func (c *conn) dispatch(ctx actor.Context, f *hubbubv1.ClientFrame) {
	if c.held {
		c.stash = append(c.stash, f)
		return
	}
	c.handle(ctx, f)
}

// release ends a hold and runs the frames that waited, in order (one of them
// may hold again; the rest then keep waiting).
func (c *conn) release(ctx actor.Context) {
	c.held = false
	for len(c.stash) > 0 && !c.held {
		f := c.stash[0]
		c.stash = c.stash[1:]
		c.handle(ctx, f)
	}
}

// connectTimeout is the connection's own timer message: no connect arrived in time.
type connectTimeout struct{}

// armConnectTimeout closes the connection when no connect completes within ConnectTimeout.
func (c *conn) armConnectTimeout(ctx actor.Context) {
	if c.cfg.ConnectTimeout <= 0 {
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	c.expiry = time.AfterFunc(c.cfg.ConnectTimeout, func() { root.Send(self, connectTimeout{}) })
}

// awaitingConnect accepts only a connect command.
func (c *conn) awaitingConnect(ctx actor.Context, f *hubbubv1.ClientFrame) {
	req := f.GetConnect()
	if req == nil {
		if f.GetCommand() == nil {
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND, false, "unknown command")
			return
		}
		c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_CONNECTED, false, "connect first")
		return
	}
	c.compact, c.wantsUser, c.hookSince = req.GetCompact(), req.GetUserStream(), req.GetSince()
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
	if c.node.hooks.Has("Connect") {
		c.connectHook(ctx, f, token, name)
		return
	}
	id, err := c.node.auth.Authenticate(token, name)
	if err != nil {
		c.refuse(f.GetId(), err)
		return
	}
	c.admit(ctx, f, id)
}

// admit completes a connect whose identity is known: it takes one of the
// user's connection slots when they are limited, then accepts.
func (c *conn) admit(ctx actor.Context, f *hubbubv1.ClientFrame, id *auth.Identity) {
	c.identity = id
	if id.Named() && (c.wantsUser || c.cfg.MaxConnsPerUser > 0) {
		c.userRoom = UserRoom(id.User)
	}
	switch {
	case c.cfg.MaxConnsPerUser <= 0:
		c.accept(ctx, f.GetId())
		return
	case c.userRoom != "":
		c.reserveSlot(ctx, f)
		return
	}
	c.held = true // commands sent after connect wait for its outcome
	fut := ctx.RequestFuture(c.node.users, acquireUser{user: id.User, max: c.cfg.MaxConnsPerUser}, c.cfg.RequestTimeout)
	ctx.ReenterAfter(fut, func(res any, err error) {
		if ok, _ := res.(bool); !ok || err != nil {
			c.replyErr(f.GetId(), hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED, false, "at most %d connections per user", c.cfg.MaxConnsPerUser)
			c.sink.Close(wire.CloseTooManyConnections, wire.CloseReason(wire.CloseTooManyConnections))
			c.stash = nil
			return
		}
		c.counted = true
		c.accept(ctx, f.GetId())
		c.release(ctx)
	})
}

// reserveSlot asks the user's actor (the personal room) for one of the
// user's connection slots, counted across the cluster, then accepts; the
// connection's join of the personal room takes the slot.
func (c *conn) reserveSlot(ctx actor.Context, f *hubbubv1.ClientFrame) {
	c.held = true // commands sent after connect wait for its outcome
	msg := &nodev1.RoomReserve{Room: c.userRoom, RequestId: f.GetId(), ClientId: c.clientID, Max: uint32(c.cfg.MaxConnsPerUser), Trace: f.GetTrace()}
	c.ask(ctx, c.userRoom, msg, f.GetId(), func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		switch {
		case err != nil: // the client got UNAVAILABLE
			c.sink.Close(wire.CloseTryAgainLater, wire.CloseReason(wire.CloseTryAgainLater))
			c.stash = nil
		case rr.GetFrame().GetError() != nil:
			c.forward(f.GetId(), rr.GetFrame())
			c.sink.Close(wire.CloseTooManyConnections, wire.CloseReason(wire.CloseTooManyConnections))
			c.stash = nil
		default:
			c.accept(ctx, f.GetId())
			c.release(ctx)
		}
	})
}

// refuse answers a connect whose token failed and closes the connection.
func (c *conn) refuse(id uint64, err error) {
	c.node.counters.Unauthorized.Add(1)
	if errors.Is(err, auth.ErrExpired) {
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED, false, "token expired")
		c.sink.Close(wire.CloseTokenExpired, wire.CloseReason(wire.CloseTokenExpired))
		return
	}
	c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED, false, "%v", err)
	c.sink.Close(wire.CloseUnauthorized, wire.CloseReason(wire.CloseUnauthorized))
}

// accept completes a connect.
func (c *conn) accept(ctx actor.Context, id uint64) {
	info := &hubbubv1.ClientInfo{User: c.identity.User, ClientId: c.clientID, Info: c.hookInfo}
	enc := nodev1.Encoding_ENCODING_PROTO
	if c.sink.Encoding() == wire.JSON {
		enc = nodev1.Encoding_ENCODING_JSON
	}
	c.member = &nodev1.Member{Address: ctx.Self().Address, ActorId: ctx.Self().Id, Client: info, Encoding: enc, Compact: c.compact}
	ctx.Send(c.node.users, connUp{pid: ctx.Self(), user: info.GetUser(), clientID: info.GetClientId(), sink: c.sink})
	if c.node.notifier != nil {
		ctx.Send(c.node.notifier, userConnected{user: info.GetUser(), clientID: c.clientID})
	}
	c.armExpiry(ctx) // replaces the connect timeout
	rooms := c.hookRooms
	if c.userRoom != "" && !slices.Contains(rooms, c.userRoom) {
		rooms = append(rooms, c.userRoom)
		c.hookRooms = rooms
	}
	c.send(&hubbubv1.ServerFrame{Id: id, Body: &hubbubv1.ServerFrame_Connect{Connect: &hubbubv1.ConnectReply{
		Client: info, PingIntervalMs: uint32(c.node.cfg.PingInterval / time.Millisecond),
		ServerVersion: c.node.cfg.ServerVersion, MaxFrameBytes: uint32(c.node.cfg.MaxFrameBytes),
		ExpiresUnixMs: expiresMs(c.identity), Rooms: rooms, UserStream: c.userRoom,
	}}})
	c.handle = c.connected
	c.joinHookRooms(ctx)
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
		c.expiry = nil // a stopped timer still holds memory; most idle connections have none
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

// permit checks the identity's permission for a room command. Personal
// rooms ("@<user>") are the server's: a client may only read its own.
func (c *conn) permit(id uint64, act auth.Action, room string) bool {
	if isUserRoom(room) {
		if act == auth.Read && room == UserRoom(c.identity.User) {
			return true
		}
		c.node.counters.PermissionDenied.Add(1)
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, false,
			"%q is a user's personal stream: send direct messages, and read only your own", room)
		return false
	}
	if c.identity.Can(act, room) {
		return true
	}
	c.node.counters.PermissionDenied.Add(1)
	c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, false, "not allowed in %q", room)
	return false
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
	case *hubbubv1.ClientFrame_Direct:
		return UserRoom(cmd.Direct.GetUser())
	case *hubbubv1.ClientFrame_Ack:
		return cmd.Ack.GetRoom()
	case *hubbubv1.ClientFrame_Read:
		return cmd.Read.GetRoom()
	}
	return ""
}

// onRoomTerminated handles the death of a joined room (its node died, or it
// moved): the membership is gone with it, so the client is told to reconnect
// and rejoin with its last positions, and learns from the join replies
// whether its messages were recovered.
func (c *conn) onRoomTerminated(who *actor.PID) {
	for _, jr := range c.rooms.all() {
		if jr.joined && jr.pid != nil && jr.pid.Equal(who) {
			c.node.counters.RoomsLost.Add(1)
			c.sink.Close(wire.CloseRoomMoved, wire.CloseReason(wire.CloseRoomMoved))
			return
		}
	}
}
