package actors

import (
	"context"
	"runtime/debug"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// onPanic handles a panic of the room's own code. The room's state may be
// half-updated, so it is not kept: the request that failed gets INTERNAL (not
// temporary: the same request would fail again), and the room stops. Its
// members watch it and are closed with 4004, so they rejoin a fresh
// activation and recover from the store (or learn recovered: false when the
// room keeps history in memory). The same holds on one node and in a cluster,
// where the room's parent is protoactor's placement actor and its supervisor
// would restart the room empty under the same PID without telling anyone.
func (r *room) onPanic(ctx actor.Context, msg any, reason any) {
	r.counters.ActorPanics.Add(1)
	r.log.Error("room panicked; stopping it (its members rejoin)", "room", r.name, "reason", reason, "stack", string(debug.Stack()))
	type request interface{ GetRequestId() uint64 }
	if req, ok := msg.(request); ok && ctx.Sender() != nil {
		id := req.GetRequestId()
		r.reply(ctx, id, errFrame(id, hubbubv1.ErrorCode_ERROR_CODE_INTERNAL, false, "room %q failed handling this request", r.name))
	}
	switch msg.(type) {
	case *actor.Stopping, *actor.Stopped:
		return // already on its way out
	}
	if !r.stopping {
		r.stopping = true
		r.counters.RoomFailures.Add(1)
		ctx.Stop(ctx.Self())
	}
}

// deferredRead is a history request that arrived while publishes accepted
// before it were still on their way to the store: it is answered once they
// are committed (or failed), so a client that publishes and then reads
// history sees its own message.
type deferredRead struct {
	upTo uint64 // the room's newest assigned offset when the request arrived
	run  func()
}

// onHistory answers at once, or after the publishes accepted before it commit.
func (r *room) onHistory(ctx actor.Context, msg *nodev1.RoomHistory) {
	to := ctx.Sender()
	if r.offset > r.committed {
		r.reads = append(r.reads, deferredRead{upTo: r.offset, run: func() { r.answerHistory(ctx, to, msg) }})
		return
	}
	r.answerHistory(ctx, to, msg)
}

// runReads answers the deferred reads whose publishes have settled.
func (r *room) runReads() {
	i := 0
	for ; i < len(r.reads) && (r.reads[i].upTo <= r.committed || r.offset == r.committed); i++ {
		r.reads[i].run()
	}
	r.reads = r.reads[i:]
}

// healthRoomPrefix names the rooms readiness probes ask. Client room names
// cannot contain spaces, so no client can join one.
const healthRoomPrefix = " health/"

func isHealthRoom(name string) bool { return strings.HasPrefix(name, healthRoomPrefix) }

// stale checks, before a request is served, that this activation still
// holds the room's newest position, whenever it has reason to doubt it: the
// node was stalled since the room last checked (another node may have
// activated the room and served it meanwhile), or a join asks to recover
// from a position past the room's own (its client saw more than this
// activation has). The check reads the room's position from the store. An
// activation the store has moved past is stale: it answers the request with a
// temporary UNAVAILABLE (the retry reaches the live activation) and stops,
// so its members are closed with 4004 and rejoin there. It never answers a
// join or a history request with an old position. Rooms without a store
// have no shared position to check against.
func (r *room) stale(ctx actor.Context, msg any) bool {
	if r.store == nil || r.stopping {
		return false
	}
	type request interface{ GetRequestId() uint64 }
	req, ok := msg.(request)
	if !ok {
		return false
	}
	stalls := r.stalls.count()
	join, _ := msg.(*nodev1.RoomJoin)
	behind := join != nil && join.GetSince().GetEpoch() == r.epoch && join.GetSince().GetOffset() > r.committed
	if stalls == r.verified && !behind {
		return false
	}
	if r.offset > r.committed {
		return false // appends in flight: their outcome (stored or conflict) settles the question
	}
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.StoreTimeout)
	defer cancel()
	pos, _, err := r.store.Load(sctx, r.name, 0)
	if err != nil {
		r.counters.StoreErrors.Add(1)
		id := req.GetRequestId()
		r.reply(ctx, id, errFrame(id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q cannot check its position; retry", r.name))
		return true
	}
	if pos.Epoch == r.epoch && pos.Offset == r.committed {
		r.verified = stalls
		return false
	}
	r.counters.StaleRooms.Add(1)
	r.log.Warn("room: the store is ahead of this activation (another one served the room); stopping", "room", r.name,
		"epoch", r.epoch, "offset", r.committed, "store_epoch", pos.Epoch, "store_offset", pos.Offset)
	id := req.GetRequestId()
	r.reply(ctx, id, errFrame(id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q moved; retry", r.name))
	r.stopping = true
	ctx.Stop(ctx.Self())
	return true
}
