package actors

import (
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// A room's tails are the server API's Tail streams (an operator watching the
// room): long polls parked in the room until its next message is stored.
// They are not members: no presence, no relay, nothing on a member's path.

const (
	maxTailWaiters = 32  // parked tails per room; the oldest is answered empty past this
	tailTraceRing  = 256 // trace ids kept for the newest messages
	maxTailBatch   = 256 // messages per tail answer
	// tailWait is how long a tail waits parked; the asker gives up a little
	// later, and the room forgets waiters older than that without answering.
	tailWait = 20 * time.Second
)

// tailWaiter is a parked RoomTail.
type tailWaiter struct {
	to *actor.PID
	id uint64
	at time.Time
}

// tailState is a room's parked tails and the trace ids of its newest messages.
type tailState struct {
	waiters []tailWaiter
	traces  [tailTraceRing]struct {
		offset uint64
		id     string
	}
}

// noteTrace keeps the trace id of a stored message's publish.
func (t *tailState) noteTrace(offset uint64, carrier map[string]string) {
	if len(carrier) == 0 {
		return
	}
	tp := carrier["traceparent"] // version-traceid-spanid-flags
	if len(tp) < 35 {
		return
	}
	slot := &t.traces[offset%tailTraceRing]
	slot.offset, slot.id = offset, tp[3:35]
}

func (t *tailState) traceID(offset uint64) string {
	if slot := &t.traces[offset%tailTraceRing]; slot.offset == offset {
		return slot.id
	}
	return ""
}

// onTail answers a RoomTail from the history, or parks it until the next message.
func (r *room) onTail(ctx actor.Context, msg *nodev1.RoomTail) {
	limit := int(msg.GetLimit())
	if limit <= 0 || limit > maxTailBatch {
		limit = maxTailBatch
	}
	after := msg.GetAfter()
	if after == nil || after.GetEpoch() == "" {
		ctx.Respond(wrap(&nodev1.RoomReply{RequestId: msg.GetRequestId(), Tail: &nodev1.RoomTailReply{Position: r.position()}}))
		return
	}
	if after.GetEpoch() == r.epoch && after.GetOffset() >= r.committed && msg.GetWait() && ctx.Sender() != nil {
		now := time.Now()
		r.tails.waiters = slices.DeleteFunc(r.tails.waiters, func(w tailWaiter) bool { return now.Sub(w.at) >= tailWait })
		if len(r.tails.waiters) >= maxTailWaiters {
			old := r.tails.waiters[0]
			r.tails.waiters = r.tails.waiters[1:]
			ctx.Send(old.to, wrap(&nodev1.RoomReply{RequestId: old.id, Tail: &nodev1.RoomTailReply{Position: r.position()}}))
		}
		r.tails.waiters = append(r.tails.waiters, tailWaiter{to: ctx.Sender(), id: msg.GetRequestId(), at: now})
		return
	}
	r.replyTail(ctx, ctx.Sender(), msg.GetRequestId(), after, limit)
}

// replyTail answers with the held messages after a position.
func (r *room) replyTail(ctx actor.Context, to *actor.PID, id uint64, after *hubbubv1.StreamPosition, limit int) {
	out := &nodev1.RoomTailReply{Position: r.position()}
	from := after.GetOffset()
	if after.GetEpoch() != r.epoch || from > r.committed {
		out.Gap, from = true, 0
	}
	if r.prof.HistoryTTL > 0 {
		r.history.trim(time.Now())
	}
	msgs := r.history.since(from, limit)
	if len(msgs) > 0 && msgs[0].GetOffset() != from+1 {
		out.Gap = true
	} else if len(msgs) == 0 && from < r.committed {
		out.Gap = true
	}
	for _, m := range msgs {
		out.Entries = append(out.Entries, &nodev1.TailEntry{Message: m, TraceId: r.tails.traceID(m.GetOffset())})
	}
	if n := len(msgs); n > 0 {
		out.Position = &hubbubv1.StreamPosition{Offset: msgs[n-1].GetOffset(), Epoch: r.epoch}
	}
	if to != nil {
		ctx.Send(to, wrap(&nodev1.RoomReply{RequestId: id, Tail: out}))
	}
}

// wakeTails answers the parked tails with a message just stored.
func (r *room) wakeTails(ctx actor.Context, m *hubbubv1.Message, carrier map[string]string) {
	r.tails.noteTrace(m.GetOffset(), carrier)
	if len(r.tails.waiters) == 0 {
		return
	}
	e := &nodev1.TailEntry{Message: m, TraceId: r.tails.traceID(m.GetOffset())}
	pos := r.position()
	for _, w := range r.tails.waiters {
		ctx.Send(w.to, wrap(&nodev1.RoomReply{RequestId: w.id, Tail: &nodev1.RoomTailReply{Entries: []*nodev1.TailEntry{e}, Position: pos}}))
	}
	r.tails.waiters = r.tails.waiters[:0]
}

// rateMeter is a publish rate averaged over about rateWindow: an
// exponentially decaying count, written by one actor and read by others.
type rateMeter struct {
	bits atomic.Uint64 // float64 rate at the time in at
	at   atomic.Int64  // Unix nanoseconds
}

const rateWindow = 10 * time.Second

func decay(rate float64, since time.Duration) float64 {
	if since <= 0 {
		return rate
	}
	return rate * math.Exp(-since.Seconds()/rateWindow.Seconds())
}

// tick counts one event now (one writer only).
func (m *rateMeter) tick(now time.Time) {
	r := decay(math.Float64frombits(m.bits.Load()), now.Sub(time.Unix(0, m.at.Load())))
	m.bits.Store(math.Float64bits(r + 1/rateWindow.Seconds()))
	m.at.Store(now.UnixNano())
}

// rate is the events per second now.
func (m *rateMeter) rate(now time.Time) float64 {
	at := m.at.Load()
	if at == 0 {
		return 0
	}
	return decay(math.Float64frombits(m.bits.Load()), now.Sub(time.Unix(0, at)))
}
