package actors

import (
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
