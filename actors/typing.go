package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// typingState tracks who is typing in a room. Indicators are ephemeral: they
// expire after ttl without a refresh and are never stored in history.
type typingState struct {
	ttl     time.Duration
	typers  map[string]*typer // by client id
	timer   *time.Timer
	pending bool
}

type typer struct {
	client   *hubbubv1.ClientInfo
	expires  time.Time
	lastSent time.Time
}

func newTypingState(ttl time.Duration) *typingState {
	return &typingState{ttl: ttl, typers: map[string]*typer{}}
}

// remove forgets a typer and reports whether it was typing.
func (t *typingState) remove(clientID string) bool {
	_, ok := t.typers[clientID]
	delete(t.typers, clientID)
	return ok
}

func (t *typingState) stop() {
	if t != nil && t.timer != nil {
		t.timer.Stop()
	}
}

// schedule arranges one typingSweep to the room after the ttl.
func (t *typingState) schedule(ctx actor.Context) {
	if t.pending {
		return
	}
	t.pending = true
	self, system := ctx.Self(), ctx.ActorSystem()
	t.timer = time.AfterFunc(t.ttl, func() { system.Root.Send(self, typingSweep{}) })
}

func (r *room) onTyping(ctx actor.Context, msg *nodev1.RoomTyping) {
	m, ok := r.members[memberKey(msg.GetMember())]
	if !ok {
		r.fail(ctx, msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED, "not joined to %q", r.name)
		return
	}
	if !r.prof.Typing {
		r.fail(ctx, msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "typing is off in room %q (its profile %q)", r.name, r.prof.Name)
		return
	}
	r.reply(ctx, msg.GetRequestId(), &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Typing{Typing: &hubbubv1.TypingReply{Room: r.name}}})
	id := m.GetClient().GetClientId()
	if !msg.GetTyping() {
		if r.typing.remove(id) {
			r.broadcastTyping(ctx, m.GetClient(), false)
		}
		return
	}
	now := time.Now()
	t, ok := r.typing.typers[id]
	if !ok {
		t = &typer{client: m.GetClient()}
		r.typing.typers[id] = t
	}
	t.expires = now.Add(r.typing.ttl)
	// A refresh is re-broadcast at most every half ttl so receivers' own expiry stays fresh.
	if !ok || now.Sub(t.lastSent) >= r.typing.ttl/2 {
		t.lastSent = now
		r.broadcastTyping(ctx, m.GetClient(), true)
	}
	r.typing.schedule(ctx)
}

func (r *room) onTypingSweep(ctx actor.Context) {
	r.typing.pending = false
	now := time.Now()
	for id, t := range r.typing.typers {
		if !now.Before(t.expires) {
			delete(r.typing.typers, id)
			r.broadcastTyping(ctx, t.client, false)
		}
	}
	if len(r.typing.typers) > 0 {
		r.typing.schedule(ctx)
	}
}

func (r *room) broadcastTyping(ctx actor.Context, c *hubbubv1.ClientInfo, typing bool) {
	r.broadcast(ctx, &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_TypingEvent{TypingEvent: &hubbubv1.TypingEvent{
		Room: r.name, Client: c, Typing: typing,
	}}}, 0)
}
