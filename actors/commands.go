package actors

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// Device commands are direct messages with require_ack: the user's personal
// room keeps each one pending until the user's ack mark reaches its offset
// (an ack from any of the user's connections) or its time to live passes.
// A pending command is sent again in the reply to every join of the stream
// (JoinReply.commands), so a device that reconnects gets it even when its
// recovery starts after it: delivery is at least once, deduped on the
// message id by the device. The outcome goes to the sender's own personal
// stream as a message with outcome set (a client sender), and the server
// API reads or waits for it (GetCommand). Commands are rebuilt from the
// stored stream and marks when the room starts again (a node killed, a
// move), so a restart changes no outcome; what the recipient's connection
// was and when it acked is kept in memory only.

const (
	defaultCommandTTL = time.Minute
	maxCommandTTL     = 24 * time.Hour
	maxSettled        = 1024 // outcomes a room remembers for GetCommand
	maxCommandWaiters = 64
)

// commandState is a personal room's device commands.
type commandState struct {
	pending map[uint64]*hubbubv1.Message
	settled map[uint64]*hubbubv1.CommandOutcome
	order   []uint64 // settled offsets, oldest first
	waiters []commandWaiter
	timer   *time.Timer
	timerAt time.Time
}

type commandWaiter struct {
	to     *actor.PID
	id     uint64
	offset uint64
	at     time.Time
}

// commandExpiry is the room's timer for the next command to expire.
type commandExpiry struct{}

// CommandTTL is a command's time to live from its request: ms, or the default.
func CommandTTL(ms uint32) time.Duration {
	if ms == 0 {
		return defaultCommandTTL
	}
	return time.Duration(ms) * time.Millisecond
}

// owner is the user of a personal room.
func (r *room) owner() string { return strings.TrimPrefix(r.name, userRoomPrefix) }

// stampCommand marks a message published with require_ack as a command.
func (r *room) stampCommand(m *hubbubv1.Message, msg *nodev1.RoomPublish) {
	if isUserRoom(r.name) && msg.GetRequireAck() {
		m.RequireAck = true
		m.ExpiresUnixMs = time.Now().Add(min(CommandTTL(msg.GetTtlMs()), maxCommandTTL)).UnixMilli()
	}
	m.Outcome = msg.GetOutcome()
}

// addCommand makes a stored command pending.
func (r *room) addCommand(ctx actor.Context, m *hubbubv1.Message) {
	if !m.GetRequireAck() {
		return
	}
	if r.cmds.pending == nil {
		r.cmds.pending = map[uint64]*hubbubv1.Message{}
	}
	r.cmds.pending[m.GetOffset()] = m
	r.armCommandTimer(ctx)
}

// rebuildCommands finds the pending commands of a room that just loaded its
// stream: those after the owner's ack mark; those that expired meanwhile are
// settled without a push (their expiry may have been told before).
func (r *room) rebuildCommands(ctx actor.Context) {
	ack := r.marks.users[r.owner()].Ack
	now := time.Now().UnixMilli()
	for i := 0; i < r.history.n; i++ {
		m := r.history.at(i)
		switch {
		case !m.GetRequireAck():
		case m.GetOffset() <= ack:
			r.remember(&hubbubv1.CommandOutcome{User: r.owner(), Offset: m.GetOffset(), MessageId: m.GetMessageId(), State: hubbubv1.CommandState_COMMAND_STATE_ACKED})
		case m.GetExpiresUnixMs() <= now:
			r.remember(&hubbubv1.CommandOutcome{User: r.owner(), Offset: m.GetOffset(), MessageId: m.GetMessageId(), State: hubbubv1.CommandState_COMMAND_STATE_EXPIRED,
				TimeUnixMs: m.GetExpiresUnixMs()})
		default:
			r.addCommand(ctx, m)
		}
	}
}

// pendingCommands are the commands not acked yet, oldest first.
func (r *room) pendingCommands() []*hubbubv1.Message {
	out := make([]*hubbubv1.Message, 0, len(r.cmds.pending))
	for _, m := range r.cmds.pending {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *hubbubv1.Message) int { return cmpSeq(a.GetOffset(), b.GetOffset()) })
	return out
}

// ackCommands settles the commands the owner's new ack mark covers.
func (r *room) ackCommands(ctx actor.Context, ack uint64, clientID string) {
	now := time.Now().UnixMilli()
	for off, m := range r.cmds.pending {
		if off <= ack {
			r.settleCommand(ctx, m, &hubbubv1.CommandOutcome{User: r.owner(), Offset: off, MessageId: m.GetMessageId(),
				State: hubbubv1.CommandState_COMMAND_STATE_ACKED, ClientId: clientID, TimeUnixMs: now})
		}
	}
}

// onCommandExpiry settles the commands whose time passed.
func (r *room) onCommandExpiry(ctx actor.Context) {
	r.cmds.timer = nil
	now := time.Now().UnixMilli()
	for off, m := range r.cmds.pending {
		if m.GetExpiresUnixMs() <= now {
			r.settleCommand(ctx, m, &hubbubv1.CommandOutcome{User: r.owner(), Offset: off, MessageId: m.GetMessageId(),
				State: hubbubv1.CommandState_COMMAND_STATE_EXPIRED, TimeUnixMs: now})
		}
	}
	r.armCommandTimer(ctx)
}

// armCommandTimer sets the timer for the next expiry.
func (r *room) armCommandTimer(ctx actor.Context) {
	var next int64
	for _, m := range r.cmds.pending {
		if e := m.GetExpiresUnixMs(); next == 0 || e < next {
			next = e
		}
	}
	if next == 0 {
		return
	}
	at := time.UnixMilli(next)
	if r.cmds.timer != nil {
		if !at.Before(r.cmds.timerAt) {
			return
		}
		r.cmds.timer.Stop()
	}
	self, system := ctx.Self(), ctx.ActorSystem()
	r.cmds.timerAt = at
	r.cmds.timer = time.AfterFunc(time.Until(at), func() { system.Root.Send(self, commandExpiry{}) })
}

// settleCommand ends a pending command: it answers the API's waits and tells a
// client sender through the sender's personal stream.
func (r *room) settleCommand(ctx actor.Context, m *hubbubv1.Message, o *hubbubv1.CommandOutcome) {
	delete(r.cmds.pending, o.GetOffset())
	r.remember(o)
	kept := r.cmds.waiters[:0]
	for _, w := range r.cmds.waiters {
		if w.offset == o.GetOffset() {
			ctx.Send(w.to, wrap(&nodev1.RoomReply{RequestId: w.id, Command: o}))
		} else {
			kept = append(kept, w)
		}
	}
	r.cmds.waiters = kept
	if s := m.GetSender(); s.GetServer() == "" && s.GetUser() != "" && r.outcomes != nil {
		r.outcomes(s.GetUser(), o)
	}
}

func (r *room) remember(o *hubbubv1.CommandOutcome) {
	if r.cmds.settled == nil {
		r.cmds.settled = map[uint64]*hubbubv1.CommandOutcome{}
	}
	if _, ok := r.cmds.settled[o.GetOffset()]; !ok {
		r.cmds.order = append(r.cmds.order, o.GetOffset())
	}
	r.cmds.settled[o.GetOffset()] = o
	for len(r.cmds.order) > maxSettled {
		delete(r.cmds.settled, r.cmds.order[0])
		r.cmds.order = r.cmds.order[1:]
	}
}

// onCommand answers where a command stands, or parks the ask until it settles.
func (r *room) onCommand(ctx actor.Context, msg *nodev1.RoomCommand) {
	off, id := msg.GetOffset(), msg.GetRequestId()
	o := r.commandOutcome(off)
	if o == nil {
		r.fail(ctx, id, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "no device command at offset %d of %q", off, r.name)
		return
	}
	if o.GetState() == hubbubv1.CommandState_COMMAND_STATE_PENDING && msg.GetWait() && ctx.Sender() != nil {
		now := time.Now()
		r.cmds.waiters = slices.DeleteFunc(r.cmds.waiters, func(w commandWaiter) bool { return now.Sub(w.at) >= tailWait })
		if len(r.cmds.waiters) < maxCommandWaiters {
			r.cmds.waiters = append(r.cmds.waiters, commandWaiter{to: ctx.Sender(), id: id, offset: off, at: now})
			return
		}
	}
	ctx.Respond(wrap(&nodev1.RoomReply{RequestId: id, Command: o}))
}

// commandOutcome is where the command at an offset stands, or nil when
// there is none the room knows of.
func (r *room) commandOutcome(off uint64) *hubbubv1.CommandOutcome {
	if m, ok := r.cmds.pending[off]; ok {
		return &hubbubv1.CommandOutcome{User: r.owner(), Offset: off, MessageId: m.GetMessageId(), State: hubbubv1.CommandState_COMMAND_STATE_PENDING}
	}
	if o, ok := r.cmds.settled[off]; ok {
		return o
	}
	return nil
}

func (r *room) stopCommands() {
	if r.cmds.timer != nil {
		r.cmds.timer.Stop()
	}
}

// Command says where the device command at offset in user's personal
// stream stands; with wait and the command pending, it waits up to about 20
// seconds for it to settle, or until ctx ends.
func (n *Node) Command(ctx context.Context, user string, offset uint64, wait bool) (*hubbubv1.CommandOutcome, error) {
	room := UserRoom(user)
	rr, err := n.longAsk(ctx, room, &nodev1.RoomCommand{Room: room, Offset: offset, Wait: wait}, wait)
	if err != nil {
		return nil, err
	}
	if rr.GetCommand() == nil {
		return nil, roomErr(hubbubv1.ErrorCode_ERROR_CODE_INTERNAL, true, "room %q: unexpected reply", room)
	}
	return rr.GetCommand(), nil
}

// sendOutcome publishes a command's outcome into its sender's personal
// stream, off the room's actor (a room never waits on another).
func (n *Node) sendOutcome(sender string, o *hubbubv1.CommandOutcome) {
	go func() { // owner: the node; bounded by the request timeout
		ctx, cancel := context.WithTimeout(context.Background(), 2*n.cfg.Conn.RequestTimeout)
		defer cancel()
		room := UserRoom(sender)
		member := &nodev1.Member{Address: n.system.Address(), Client: &hubbubv1.ClientInfo{Server: "hubbub"}}
		msg := &nodev1.RoomPublish{Room: room, Member: member, Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: outcomeText(o)}},
			MessageId: "outcome/" + o.GetUser() + "/" + strconv.FormatUint(o.GetOffset(), 10),
			Direct:    true, Outcome: o, RequestId: 1}
		if _, errs := n.askRoom(ctx, room, []proto.Message{msg}); errs[0] != nil {
			n.log.Warn("command outcome not delivered to its sender", "sender", sender, "user", o.GetUser(), "offset", o.GetOffset(), "err", errs[0])
		}
	}()
}

func outcomeText(o *hubbubv1.CommandOutcome) string {
	switch o.GetState() {
	case hubbubv1.CommandState_COMMAND_STATE_ACKED:
		return "command acked by " + o.GetUser()
	case hubbubv1.CommandState_COMMAND_STATE_EXPIRED:
		return "command to " + o.GetUser() + " expired"
	}
	return "command " + o.GetState().String()
}
