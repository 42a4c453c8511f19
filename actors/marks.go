package actors

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubbub-chat/hubbub/auth"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
)

// A room keeps its users' marks: how far each user's application got the
// room's messages (ack) and how far a person read them (read). Marks only
// move forward within the room's epoch. A durable room stores them the way
// it stores messages: one save in flight, whatever changes meanwhile in the
// next (group commit), and a mark command is answered once its save is done.
// Read marks that moved are pushed, coalesced, to the members that asked for
// receipts: at most one ReadReceipts push per presence interval.

// onMarkCommand sends an ack or read command's mark to its room. A
// connection may mark a room it is joined to or may read.
func (c *conn) onMarkCommand(ctx actor.Context, f *hubbubv1.ClientFrame, room string, offset uint64, epoch string, read bool) {
	id := f.GetId()
	if !c.checkRoom(id, room) {
		return
	}
	if jr := c.rooms.get(room); (jr == nil || !jr.joined) && !c.permit(id, auth.Read, room) {
		return
	}
	msg := &nodev1.RoomMark{Room: room, RequestId: id, User: c.identity.User, ClientId: c.clientID, Ack: offset, Epoch: epoch, Trace: f.GetTrace()}
	if read {
		msg.Read = offset
	}
	if offset > c.ledgerAcks[room] { // the ledger counts each delivery acked once
		if c.ledgerAcks == nil {
			c.ledgerAcks = map[string]uint64{}
		}
		c.ledgerAcks[room] = offset
		c.node.ledger.acked(room, offset)
	}
	cmd := markCmd{id: id, read: read}
	if c.markQs == nil {
		c.markQs = map[string]*markQueue{}
	}
	q := c.markQs[room]
	if q == nil {
		q = &markQueue{}
		c.markQs[room] = q
	}
	if !q.inflight {
		q.inflight = true
		c.sendMark(ctx, room, msg, []markCmd{cmd})
		return
	}
	if q.held != nil && q.held.GetEpoch() != epoch {
		c.flushMarks(ctx, room)
	}
	if q.held == nil {
		q.held = msg
	} else {
		q.held.Ack, q.held.Read = max(q.held.GetAck(), msg.GetAck()), max(q.held.GetRead(), msg.GetRead())
		q.held.RequestId, q.held.Trace = id, msg.GetTrace()
	}
	q.waiters = append(q.waiters, cmd)
}

// markQueue is a connection's marks for one room while one is on its way:
// the acks and reads the client sends meanwhile are merged into the next
// (a connection acking every message costs its room one mark per round trip,
// not one per message). Any other command to the room sends the merged mark
// first, so commands still take effect in the order they were sent.
type markQueue struct {
	inflight bool
	held     *nodev1.RoomMark // merged, not sent yet
	waiters  []markCmd        // the commands held's reply answers
}

type markCmd struct {
	id   uint64
	read bool
}

// sendMark sends a (merged) mark and answers its commands with the room's
// reply, then sends what was held meanwhile.
func (c *conn) sendMark(ctx actor.Context, room string, msg *nodev1.RoomMark, cmds []markCmd) {
	c.ask(ctx, room, msg, msg.GetRequestId(), func(_ *actor.PID, rr *nodev1.RoomReply, err error) {
		for _, cmd := range cmds {
			switch {
			case err != nil && cmd.id != msg.GetRequestId(): // ask answered its own id
				c.replyErr(cmd.id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q did not answer; send the mark again", room)
			case err != nil:
			default:
				fr := &hubbubv1.ServerFrame{Body: rr.GetFrame().GetBody()}
				if m := fr.GetAck(); m != nil && cmd.read {
					fr.Body = &hubbubv1.ServerFrame_Read{Read: m}
				}
				c.forward(cmd.id, fr)
			}
		}
		q := c.markQs[room]
		if q == nil {
			return
		}
		if q.held == nil {
			delete(c.markQs, room)
			return
		}
		next, waiting := q.held, q.waiters
		q.held, q.waiters = nil, nil
		c.sendMark(ctx, room, next, waiting)
	})
}

// flushMarks sends a room's held marks now (another command to the room follows).
func (c *conn) flushMarks(ctx actor.Context, room string) {
	q := c.markQs[room]
	if q == nil || q.held == nil {
		return
	}
	next, waiting := q.held, q.waiters
	q.held, q.waiters = nil, nil
	c.sendMark(ctx, room, next, waiting)
}

// kindReceipts is the push kind of ReadReceipts: relays give it only to the
// members that asked.
const kindReceipts = "receipts"

// markState is a room's marks.
type markState struct {
	users     map[string]store.Marks // in the room's epoch
	dirty     map[string]bool        // changed since the last save started
	waiting   []markWaiter           // answered after the next save
	inflight  []markWaiter           // answered when the save in flight ends
	saving    bool
	unsaved   []string          // the users whose marks the save in flight writes
	receivers map[string]bool   // member keys that get receipts
	receipts  map[string]uint64 // read marks to push at the next flush
	timer     *time.Timer
}

type markWaiter struct {
	to   *actor.PID
	id   uint64
	user string
}

// marksSaved tells the room its save finished.
type marksSaved struct{ err error }

// receiptFlush is the room's receipt timer.
type receiptFlush struct{}

// loadMarks reads the marks of the room's epoch from its store.
func (r *room) loadMarks() error {
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.StoreTimeout)
	defer cancel()
	all, err := r.store.LoadMarks(sctx, r.name)
	if err != nil {
		return err
	}
	r.marks.users = map[string]store.Marks{}
	for user, m := range all {
		if m.Epoch == r.epoch {
			r.marks.users[user] = m
		}
	}
	return nil
}

// userMarks is a user's marks and unread count in the room's epoch.
func (r *room) userMarks(user string) (*hubbubv1.Marks, uint64) {
	m, ok := r.marks.users[user]
	if !ok || m.Epoch != r.epoch {
		return &hubbubv1.Marks{}, 0
	}
	return &hubbubv1.Marks{AckOffset: m.Ack, ReadOffset: m.Read}, r.committed - min(m.Read, r.committed)
}

// onMark raises a user's marks.
func (r *room) onMark(ctx actor.Context, msg *nodev1.RoomMark) {
	id, user := msg.GetRequestId(), msg.GetUser()
	switch {
	case msg.GetEpoch() != "" && msg.GetEpoch() != r.epoch:
		r.fail(ctx, id, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "epoch: %q is not the room's (%q): rejoin", msg.GetEpoch(), r.epoch)
		return
	case max(msg.GetAck(), msg.GetRead()) > r.committed:
		r.fail(ctx, id, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "offset: %d is past the room's position %d", max(msg.GetAck(), msg.GetRead()), r.committed)
		return
	}
	if r.marks.users == nil {
		r.marks.users = map[string]store.Marks{}
	}
	old := r.marks.users[user]
	if old.Epoch != r.epoch {
		old = store.Marks{Epoch: r.epoch}
	}
	m := old
	m.Read = max(m.Read, msg.GetRead())
	m.Ack = max(m.Ack, msg.GetAck(), m.Read)
	r.marks.users[user] = m
	if m.Ack > old.Ack && isUserRoom(r.name) && user == r.owner() {
		r.ackCommands(ctx, m.Ack, msg.GetClientId())
	}
	if m.Read > old.Read && len(r.marks.receivers) > 0 {
		if r.marks.receipts == nil {
			r.marks.receipts = map[string]uint64{}
		}
		r.marks.receipts[user] = m.Read
		r.scheduleReceipts(ctx)
	}
	w := markWaiter{to: ctx.Sender(), id: id, user: user}
	if r.store == nil || (m == old && !r.marks.dirty[user]) { // nothing new to store
		r.answerMark(ctx, w, nil)
		return
	}
	if r.marks.dirty == nil {
		r.marks.dirty = map[string]bool{}
	}
	r.marks.dirty[user] = true
	r.marks.waiting = append(r.marks.waiting, w)
	r.saveMarks(ctx)
}

// saveMarks starts a save of the changed marks when none is in flight.
func (r *room) saveMarks(ctx actor.Context) {
	if r.marks.saving || len(r.marks.dirty) == 0 {
		return
	}
	batch := make(map[string]store.Marks, len(r.marks.dirty))
	r.marks.unsaved = r.marks.unsaved[:0]
	for user := range r.marks.dirty {
		batch[user] = r.marks.users[user]
		r.marks.unsaved = append(r.marks.unsaved, user)
	}
	r.marks.dirty = nil
	r.marks.saving, r.marks.inflight, r.marks.waiting = true, r.marks.waiting, nil
	st, name, timeout := r.store, r.name, r.cfg.StoreTimeout
	self, root := ctx.Self(), ctx.ActorSystem().Root
	go func() { // owner: this room; bounded by the store timeout
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := st.SaveMarks(sctx, name, batch)
		cancel()
		root.Send(self, marksSaved{err: err})
	}()
}

// onMarksSaved answers the marks the save stored, then saves what changed meanwhile.
func (r *room) onMarksSaved(ctx actor.Context, msg marksSaved) {
	if msg.err != nil {
		r.counters.StoreErrors.Add(1)
		r.log.Error("room: store marks", "room", r.name, "err", msg.err)
		// The marks stay raised in memory: the next save writes them again.
		if r.marks.dirty == nil {
			r.marks.dirty = map[string]bool{}
		}
		for _, user := range r.marks.unsaved {
			r.marks.dirty[user] = true
		}
	}
	for _, w := range r.marks.inflight {
		r.answerMark(ctx, w, msg.err)
	}
	r.marks.saving, r.marks.inflight = false, nil
	if msg.err == nil || len(r.marks.waiting) > 0 { // after a failure, the next mark command tries again
		r.saveMarks(ctx)
	}
}

func (r *room) answerMark(ctx actor.Context, w markWaiter, err error) {
	if w.to == nil {
		return
	}
	var f *hubbubv1.ServerFrame
	if err != nil {
		f = errFrame(w.id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q could not store the marks; send them again", r.name)
	} else {
		marks, unread := r.userMarks(w.user)
		f = &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Ack{Ack: &hubbubv1.MarksReply{Room: r.name, Marks: marks, Epoch: r.epoch, Unread: unread}}}
	}
	ctx.Send(w.to, wrap(&nodev1.RoomReply{RequestId: w.id, Frame: f}))
}

// scheduleReceipts arms the receipt flush once per interval.
func (r *room) scheduleReceipts(ctx actor.Context) {
	if r.marks.timer != nil {
		return
	}
	self, system := ctx.Self(), ctx.ActorSystem()
	r.marks.timer = time.AfterFunc(r.prof.PresenceInterval, func() { system.Root.Send(self, receiptFlush{}) })
}

// onReceiptFlush pushes the read marks that moved since the last push.
func (r *room) onReceiptFlush(ctx actor.Context) {
	r.marks.timer = nil
	if len(r.marks.receipts) == 0 || len(r.marks.receivers) == 0 {
		r.marks.receipts = nil
		return
	}
	users := make([]string, 0, len(r.marks.receipts))
	for u := range r.marks.receipts {
		users = append(users, u)
	}
	slices.SortFunc(users, strings.Compare)
	rr := &hubbubv1.ReadReceipts{Room: r.name}
	for _, u := range users {
		rr.Receipts = append(rr.Receipts, &hubbubv1.ReadReceipt{User: u, Offset: r.marks.receipts[u]})
	}
	r.marks.receipts = nil
	r.broadcast(ctx, &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_ReadReceipts{ReadReceipts: rr}}, 0)
}

// watchReceipts notes a member that joined (or left) asking for receipts.
func (r *room) watchReceipts(key string, on bool) {
	if on {
		if r.marks.receivers == nil {
			r.marks.receivers = map[string]bool{}
		}
		r.marks.receivers[key] = true
		return
	}
	delete(r.marks.receivers, key)
}

func (r *room) stopMarks() {
	if r.marks.timer != nil {
		r.marks.timer.Stop()
	}
}
