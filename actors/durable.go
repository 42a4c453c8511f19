package actors

import (
	"context"
	"errors"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
)

// A room with a store is write-through: a publish gets its offset at once,
// waits in pending, and is acknowledged and delivered only once the store
// accepted it. One append is in flight per room; what queues meanwhile goes
// in the next one (group commit), so the room's throughput grows with the
// store's latency instead of shrinking. Members and history only ever see
// committed messages: positions handed out (join, history) are r.committed.

// pendingPublish is a message with an offset that the store has not accepted yet.
type pendingPublish struct {
	msg       *hubbubv1.Message
	publisher waiter   // to is nil for a publish that wants no answer
	retries   []waiter // retries with the same message id while it is pending
	span      trace.Span
	trace     map[string]string
}

// waiters yields the requests to answer about p: its publisher, then its retries.
func (p *pendingPublish) waiters(yield func(waiter) bool) {
	if p.publisher.to != nil && !yield(p.publisher) {
		return
	}
	for _, w := range p.retries {
		if !yield(w) {
			return
		}
	}
}

// waiter is a request to answer when its message is committed.
type waiter struct {
	to  *actor.PID
	id  uint64
	dup bool
}

// appendBatch is the store append in flight.
type appendBatch struct {
	entries []*pendingPublish
	err     error
	took    time.Duration
	done    chan struct{}
}

// appendDone tells the room its append finished.
type appendDone struct{ b *appendBatch }

const maxBatch = 256

// durableStore is the store of a room named name, or nil when the room keeps
// history in memory only.
func durableStore(cfg RoomConfig, prof *RoomProfile, name string) store.Store {
	if cfg.Store == nil || !prof.Durable || isHealthRoom(name) {
		return nil
	}
	return cfg.Store
}

// load sets the room's position and recent history from the store.
func (r *room) load(ctx actor.Context) {
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.StoreTimeout)
	defer cancel()
	limit := r.prof.HistorySize
	pos, recent, err := r.store.Load(sctx, r.name, limit)
	if err != nil {
		r.counters.StoreErrors.Add(1)
		r.loadErr = err
		r.log.Error("room: load history", "room", r.name, "err", err)
		ctx.Poison(ctx.Self()) // answer what is queued, then stop; the next request retries
		return
	}
	r.counters.RoomsLoaded.Add(1)
	r.epoch, r.offset, r.committed = pos.Epoch, pos.Offset, pos.Offset
	if err := r.loadMarks(); err != nil {
		r.counters.StoreErrors.Add(1)
		r.loadErr = err
		r.log.Error("room: load marks", "room", r.name, "err", err)
		ctx.Poison(ctx.Self())
		return
	}
	defer func() {
		if isUserRoom(r.name) {
			r.rebuildCommands(ctx) // from the history loaded below
		}
	}()
	for _, m := range recent {
		r.history.append(m)
		if id := m.GetMessageId(); id != "" {
			r.dedupe.put(dedupeScope(m.GetSender()), id, m.GetOffset())
		}
	}
}

// findPending returns the pending entry of an offset not yet committed.
func (r *room) findPending(off uint64) *pendingPublish {
	if r.inflight != nil {
		for _, p := range r.inflight.entries {
			if p.msg.GetOffset() == off {
				return p
			}
		}
	}
	for _, p := range r.pending {
		if p.msg.GetOffset() == off {
			return p
		}
	}
	return nil
}

// enqueue queues an accepted message for the store.
func (r *room) enqueue(ctx actor.Context, p *pendingPublish) {
	r.pending = append(r.pending, p)
	r.flush(ctx)
}

// flush starts an append of what is pending when none is in flight.
func (r *room) flush(ctx actor.Context) {
	if r.inflight != nil || len(r.pending) == 0 {
		return
	}
	n := min(len(r.pending), maxBatch)
	b := &appendBatch{entries: r.pending[:n:n], done: make(chan struct{})}
	r.pending = r.pending[n:]
	r.inflight = b
	msgs := make([]*hubbubv1.Message, n)
	var parent trace.Span
	for i, p := range b.entries {
		msgs[i] = p.msg
		if parent == nil && p.span != nil {
			parent = p.span
		}
	}
	st, name, epoch, timeout := r.store, r.name, r.epoch, r.cfg.StoreTimeout
	var span trace.Span
	if parent != nil {
		_, span = r.tracing.Tracer.Start(trace.ContextWithSpan(context.Background(), parent), "hubbub.store append",
			trace.WithAttributes(attrRoom.String(name), attribute.Int("hubbub.store.batch", n)))
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		b.err = st.Append(sctx, name, epoch, msgs)
		b.took = time.Since(start)
		cancel()
		if span != nil {
			if b.err != nil {
				span.SetStatus(codes.Error, b.err.Error())
			}
			span.End()
		}
		close(b.done)
		root.Send(self, appendDone{b: b})
	}()
}

// onAppendDone commits a stored batch, or fails it and everything pending.
func (r *room) onAppendDone(ctx actor.Context, b *appendBatch) {
	if b != r.inflight {
		return // settled already (the room was stopping)
	}
	r.inflight = nil
	if b.err != nil {
		r.abort(ctx, b)
		return
	}
	r.counters.StoreAppends.Add(1)
	r.counters.StoreMessages.Add(int64(len(b.entries)))
	r.counters.Hist.Load().RecordStoreAppend(b.took)
	for _, p := range b.entries {
		r.commit(ctx, p)
		r.runReads() // a read waiting for exactly this offset sees the room as it was then
	}
	r.flush(ctx)
}

// abort fails the batch and everything pending after it: none of it was
// delivered, so the room rolls back to its last committed offset. A conflict
// means another activation of the room wrote to the store: this one is stale
// and stops, so its members rejoin the room where it now lives.
func (r *room) abort(ctx actor.Context, b *appendBatch) {
	conflict := errors.Is(b.err, store.ErrConflict)
	if conflict {
		r.counters.StoreConflicts.Add(1)
		r.log.Warn("room: another activation wrote to the store; stopping", "room", r.name, "err", b.err)
	} else {
		r.counters.StoreErrors.Add(1)
		r.log.Error("room: store append failed", "room", r.name, "err", b.err)
	}
	failed := append(b.entries, r.pending...)
	r.pending = nil
	for _, p := range failed {
		if id := p.msg.GetMessageId(); id != "" {
			r.dedupe.forget(p.msg.GetSender().GetUser(), id, p.msg.GetOffset())
		}
		if p.span != nil {
			p.span.SetStatus(codes.Error, "not stored")
			p.span.End()
		}
		for w := range p.waiters {
			f := errFrame(w.id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q could not store the message; retry", r.name)
			ctx.Send(w.to, wrap(&nodev1.RoomReply{RequestId: w.id, Frame: f}))
		}
	}
	r.offset = r.committed
	r.runReads()
	if conflict && !r.stopping {
		ctx.Stop(ctx.Self())
	}
}

// settle finishes the store's work while the room stops: it waits for the
// append in flight and stores what is pending, so a room that moves or stops
// answers every publish it accepted.
func (r *room) settle(ctx actor.Context) {
	deadline := time.Now().Add(r.cfg.StoreTimeout)
	for r.inflight != nil || len(r.pending) > 0 {
		if r.inflight == nil {
			r.flush(ctx)
		}
		b := r.inflight
		select {
		case <-b.done:
			r.onAppendDone(ctx, b)
		case <-time.After(time.Until(deadline)):
			r.inflight = nil
			r.abort(ctx, &appendBatch{entries: b.entries, err: errors.New("room stopped before the store answered")})
			return
		}
		if b.err != nil {
			return // abort failed everything pending
		}
	}
}
