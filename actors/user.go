package actors

import (
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubbub-chat/hubbub/auth"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// A user's actor is the user's personal room, "@<user>": a room grain like
// any other, placed anywhere in the cluster, whose members are the user's
// connections on every node (those that asked for the personal stream, and
// every one while connections per user are capped). It holds the user's
// personal stream, the direct messages to the user with offsets and an
// epoch, stored like a room's history, so a device recovers what it missed
// with since; and it grants the user's connection slots cluster-wide
// (RoomReserve). Clients cannot join, leave or publish to rooms starting
// with "@"; they send direct messages, and read their own stream's history.

// userRoomPrefix starts the name of every user's personal room.
const userRoomPrefix = "@"

// UserRoom is the name of a user's personal room.
func UserRoom(user string) string { return userRoomPrefix + user }

// isUserRoom reports whether a room is a user's personal room.
func isUserRoom(room string) bool { return strings.HasPrefix(room, userRoomPrefix) }

// reserveFor is how long a granted connection slot waits for its join.
const reserveFor = 10 * time.Second

// userProfile is the profile of every personal room: no presence, joins,
// leaves or typing (a user's own devices), durable history kept for the
// configured size and time, and no publishes but direct messages and the
// server API's.
func (c RoomConfig) userProfile() RoomProfile {
	p := c.defaultProfile()
	p.Name, p.Pattern = "user", userRoomPrefix+"*"
	p.HistorySize, p.HistoryTTL = c.UserHistorySize, c.UserHistoryTTL
	p.Presence, p.JoinLeave, p.Typing = PresenceOff, false, false
	p.Publish, p.MaxMembers, p.PublishRate = PublishNone, 0, 0
	p.HookNotify, p.SkipJoinHook = HookNotifyOff, true
	return p
}

// onDirect sends a direct message: a publish into the recipient's personal
// room, answered with a PublishReply in the direct case.
func (c *conn) onDirect(ctx actor.Context, f *hubbubv1.ClientFrame, req *hubbubv1.DirectRequest) {
	user, id := req.GetUser(), f.GetId()
	switch {
	case user == "" || len(user) > c.cfg.MaxNameBytes || !validDisplayName(user):
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "direct.user: 1-%d bytes of printable UTF-8", c.cfg.MaxNameBytes)
		return
	case !c.identity.Can(auth.Direct, user):
		c.node.counters.PermissionDenied.Add(1)
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, false, "not allowed to message %q (the token's direct claim)", user)
		return
	case req.GetBody().GetKind() == nil:
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "direct.body: required (text, data or binary)")
		return
	case len(req.GetMessageId()) > maxIDBytes:
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "direct.message_id: %d bytes, at most %d", len(req.GetMessageId()), maxIDBytes)
		return
	case CommandTTL(req.GetTtlMs()) > maxCommandTTL:
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "direct.ttl_ms: %d, at most %d", req.GetTtlMs(), maxCommandTTL.Milliseconds())
		return
	}
	if size := BodyBytes(req.GetBody()); size > c.cfg.MaxMessageBytes {
		c.replyErr(id, hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE, false, "body is %d bytes, limit %d", size, c.cfg.MaxMessageBytes)
		return
	}
	room := UserRoom(user)
	msg := &nodev1.RoomPublish{Room: room, Member: c.member, Body: req.GetBody(), MessageId: req.GetMessageId(),
		RequestId: id, Trace: f.GetTrace(), Direct: true, RequireAck: req.GetRequireAck(), TtlMs: req.GetTtlMs()}
	c.ask(ctx, room, msg, id, func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		if err != nil {
			return
		}
		fr := rr.GetFrame()
		if p := fr.GetPublish(); p != nil {
			fr = &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Direct{Direct: p}}
		}
		c.forward(id, fr)
	})
}

// onReserve grants one of the user's connection slots, or refuses when the
// user's connections and live reservations already fill them.
func (r *room) onReserve(ctx actor.Context, msg *nodev1.RoomReserve) {
	now := time.Now()
	if r.reserved == nil {
		r.reserved = map[string]time.Time{}
	}
	for id, at := range r.reserved {
		if now.Sub(at) > reserveFor {
			delete(r.reserved, id)
		}
	}
	r.userMax = int(msg.GetMax())
	if _, ok := r.reserved[msg.GetClientId()]; !ok && len(r.members)+len(r.reserved) >= r.userMax {
		r.reply(ctx, msg.GetRequestId(), errFrame(msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED, false,
			"at most %d connections per user", r.userMax))
		return
	}
	r.reserved[msg.GetClientId()] = now
	r.reply(ctx, msg.GetRequestId(), &hubbubv1.ServerFrame{})
}

// takeSlot lets a member into a personal room: the slot it reserved, or a
// free one. False when the user's slots are full.
func (r *room) takeSlot(m *nodev1.Member) bool {
	id := m.GetClient().GetClientId()
	if _, ok := r.reserved[id]; ok {
		delete(r.reserved, id)
		return true
	}
	return r.userMax <= 0 || len(r.members)+len(r.reserved) < r.userMax
}
