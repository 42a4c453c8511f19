package actors

import (
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

// notifier sends a node's leave and disconnect notifications to the
// backend's Notify hook: batched, one batch in flight at a time (so they
// arrive in the order they happened on this node, and so per room and per
// connection), each batch sent again with backoff until the backend answers
// without error (at least once while the node runs), through a bounded
// queue whose overflow drops the oldest and is counted.
//
// A connection's disconnect (its Disconnect and the leaves of the rooms it
// was in) is held for the grace window. If the same user connects to this
// node again within it, the Disconnect is dropped; each leave is dropped when
// the user joins that room again within it, and sent when the window ends
// otherwise. So a client that reconnects at once (a network blip, a page
// reload) and rejoins its rooms produces no notification, and a backend
// never misses a room the user did not come back to. A reconnect to another
// node is not seen here: its disconnect is sent after the window.
//
// With a journal (NotifyConfig.JournalDir) the queue and the open
// connections outlive the process: see journal.
type notifier struct {
	node    *Node
	cfg     NotifyConfig
	seq     uint64
	queue   []*hooksv1.Notification
	sending int // notifications of the queue's head in flight; 0: none
	backoff time.Duration
	timer   *time.Timer
	retry   bool                         // the head batch failed; it goes again when the backoff timer fires
	held    map[string][]*heldDisconnect // by user
	flushes []*actor.PID                 // flush requests waiting for an empty queue

	stream  string                  // the name notifications carry: the journal's, else the node's
	journal *journal                // nil without NotifyConfig.JournalDir
	conns   map[string]*journalConn // open connections and their rooms, for the journal
	jerr    bool                    // a journal write failed (logged once)
	// recovered is what the journal held at start, sent in Started.
	recovered *journalState
}

// NotifyConfig configures the notifications. Zero values take the defaults noted.
type NotifyConfig struct {
	// Grace holds a disconnect this long for a reconnect of the same user. Default 0: none.
	Grace time.Duration
	// MaxQueue bounds the notifications waiting. Default 10000.
	MaxQueue int
	// Batch is the most notifications per call. Default 100.
	Batch int
	// Linger is how long a partial batch waits for more. Default 20ms.
	Linger time.Duration
	// JournalDir, when set, keeps the queue and the open connections in a
	// journal there, so a node killed and restarted on it sends what it owed.
	JournalDir string
}

func (c NotifyConfig) withDefaults() NotifyConfig {
	if c.MaxQueue <= 0 {
		c.MaxQueue = 10000
	}
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.Linger <= 0 {
		c.Linger = 20 * time.Millisecond
	}
	return c
}

// heldDisconnect is a connection's disconnect waiting out the grace window.
type heldDisconnect struct {
	clientID string
	events   []*hooksv1.Notification
}

// notice is one notification for the notifier; with held it is part of a
// disconnect (its leaves, then the disconnect itself, last).
type notice struct {
	n    *hooksv1.Notification
	held bool
}

// userConnected tells the notifier a user connected (cancelling held disconnects).
type userConnected struct{ user, clientID string }

// userJoined tells the notifier a user joined a room (cancelling a held leave of it).
type userJoined struct {
	user, clientID, room string
	notify               bool  // the room's profile notifies joins
	time                 int64 // Unix ms
}

type (
	notifySend   struct{}                  // the linger or backoff timer fired
	notifyDone   struct{ err error }       // a batch was answered (or failed)
	graceExpired struct{ user, id string } // a held disconnect's window ended
	notifyFlush  struct{}                  // answer when everything queued was sent (shutdown)
)

// newNotifier opens the journal, if any, and returns the notifier with what
// a previous process on it left: its queue, and the connections it had open.
func newNotifier(n *Node) (*notifier, error) {
	s := &notifier{node: n, cfg: n.cfg.Notify.withDefaults(), held: map[string][]*heldDisconnect{}, backoff: 100 * time.Millisecond,
		stream: n.nodeID, conns: map[string]*journalConn{}}
	if s.cfg.JournalDir == "" {
		return s, nil
	}
	j, st, err := openJournal(s.cfg.JournalDir)
	if err != nil {
		return nil, fmt.Errorf("notification journal: %w", err)
	}
	s.journal, s.stream, s.seq, s.recovered = j, st.stream, st.seq, st
	return s, nil
}

func notifierProps(s *notifier) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return s })
}

func (s *notifier) Receive(ctx actor.Context) {
	defer s.flushJournal()
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		s.recover(ctx)
	case notice:
		s.onNotice(ctx, msg)
	case userConnected:
		s.conns[msg.clientID] = &journalConn{user: msg.user, rooms: map[string]bool{}}
		s.record(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Open{Open: &nodev1.JournalConn{ClientId: msg.clientID, User: msg.user}}})
		s.cancel(msg.user, func(n *hooksv1.Notification) bool { return n.GetKind() == hooksv1.Notification_KIND_DISCONNECT })
	case userJoined:
		if c := s.conns[msg.clientID]; c != nil {
			c.rooms[msg.room] = true
			s.record(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Join{Join: &nodev1.JournalConn{ClientId: msg.clientID, Room: msg.room}}})
		}
		rejoined := s.cancel(msg.user, func(n *hooksv1.Notification) bool {
			return n.GetKind() == hooksv1.Notification_KIND_LEAVE && n.GetRoom() == msg.room
		})
		if msg.notify && !rejoined {
			s.enqueue(ctx, &hooksv1.Notification{Kind: hooksv1.Notification_KIND_JOIN, User: msg.user, ClientId: msg.clientID,
				Room: msg.room, Reason: "join", TimeUnixMs: msg.time})
		}
	case graceExpired:
		s.release(ctx, msg.user, msg.id)
	case notifySend:
		s.timer = nil
		s.send(ctx, true)
	case notifyDone:
		s.onDone(ctx, msg.err)
	case notifyFlush:
		for user, hs := range s.held {
			for _, h := range hs {
				s.release(ctx, user, h.clientID)
			}
		}
		if len(s.queue) == 0 {
			ctx.Respond(true)
			return
		}
		s.flushes = append(s.flushes, ctx.Sender())
		s.send(ctx, true)
	case *actor.Stopped:
		if s.timer != nil {
			s.timer.Stop()
		}
		if s.journal != nil {
			s.journal.close()
		}
	}
}

// recover queues what a previous process on the journal left unsent, then
// the leaves and disconnect of each connection it had open: the process
// ended without telling the backend.
func (s *notifier) recover(ctx actor.Context) {
	st := s.recovered
	s.recovered = nil
	if st == nil {
		return
	}
	s.queue = append(s.queue, st.queued...)
	ids := make([]string, 0, len(st.conns))
	for id := range st.conns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	now := time.Now().UnixMilli()
	for _, id := range ids {
		c := st.conns[id]
		s.conns[id] = c
		rooms := make([]string, 0, len(c.rooms))
		for room := range c.rooms {
			rooms = append(rooms, room)
		}
		slices.Sort(rooms)
		for _, room := range rooms {
			s.leave(ctx, &hooksv1.Notification{Kind: hooksv1.Notification_KIND_LEAVE, User: c.user, ClientId: id, Room: room, Reason: "node_restarted", TimeUnixMs: now})
		}
		s.disconnect(ctx, &hooksv1.Notification{Kind: hooksv1.Notification_KIND_DISCONNECT, User: c.user, ClientId: id, Reason: "node_restarted", TimeUnixMs: now})
	}
	if len(st.queued) > 0 || len(ids) > 0 {
		s.node.log.Info("notifications owed by the previous process queued again", "queued", len(st.queued), "connections", len(ids))
	}
	s.send(ctx, false)
}

func (s *notifier) onNotice(ctx actor.Context, msg notice) {
	switch {
	case msg.held && s.cfg.Grace > 0:
		s.hold(ctx, msg.n)
	case msg.n.GetKind() == hooksv1.Notification_KIND_DISCONNECT:
		s.disconnect(ctx, msg.n)
	default:
		s.leave(ctx, msg.n)
	}
}

// leave queues a leave, the connection now out of the room.
func (s *notifier) leave(ctx actor.Context, n *hooksv1.Notification) {
	s.left(n.GetClientId(), n.GetRoom())
	s.enqueue(ctx, n)
}

// left records that a connection is out of a room.
func (s *notifier) left(clientID, room string) {
	if c := s.conns[clientID]; c != nil && c.rooms[room] {
		delete(c.rooms, room)
		s.record(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Left{Left: &nodev1.JournalConn{ClientId: clientID, Room: room}}})
	}
}

// disconnect queues a disconnect, the connection now gone.
func (s *notifier) disconnect(ctx actor.Context, n *hooksv1.Notification) {
	s.enqueue(ctx, n)
	s.closed(n.GetClientId())
}

// closed records that a connection is gone and owes nothing more.
func (s *notifier) closed(clientID string) {
	if _, ok := s.conns[clientID]; ok {
		delete(s.conns, clientID)
		s.record(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Closed{Closed: &nodev1.JournalConn{ClientId: clientID}}})
	}
}

// hold keeps a disconnect's notifications until the grace window ends.
func (s *notifier) hold(ctx actor.Context, n *hooksv1.Notification) {
	hs := s.held[n.GetUser()]
	var h *heldDisconnect
	for _, x := range hs {
		if x.clientID == n.GetClientId() {
			h = x
		}
	}
	if h == nil {
		h = &heldDisconnect{clientID: n.GetClientId()}
		s.held[n.GetUser()] = append(hs, h)
	}
	h.events = append(h.events, n)
	if n.GetKind() == hooksv1.Notification_KIND_DISCONNECT { // the last of the group
		self, root, user, id := ctx.Self(), ctx.ActorSystem().Root, n.GetUser(), n.GetClientId()
		time.AfterFunc(s.cfg.Grace, func() { root.Send(self, graceExpired{user: user, id: id}) })
	}
}

// cancel drops the user's held notifications that match, counting them, and
// reports whether there were any. A connection whose held notifications are
// all gone owes nothing more.
func (s *notifier) cancel(user string, match func(*hooksv1.Notification) bool) bool {
	found := false
	hs := s.held[user]
	for _, h := range hs {
		kept := h.events[:0]
		for _, n := range h.events {
			if !match(n) {
				kept = append(kept, n)
				continue
			}
			found = true
			s.node.counters.HookNotifyCoalesced.Add(1)
			if n.GetKind() == hooksv1.Notification_KIND_LEAVE {
				s.left(n.GetClientId(), n.GetRoom())
			}
		}
		h.events = kept
	}
	// A group with nothing left is done; its grace timer finds nothing.
	hs = slices.DeleteFunc(hs, func(h *heldDisconnect) bool {
		if len(h.events) == 0 {
			s.closed(h.clientID)
			return true
		}
		return false
	})
	if len(hs) == 0 {
		delete(s.held, user)
	} else {
		s.held[user] = hs
	}
	return found
}

// release queues what is left of a held disconnect whose window ended.
func (s *notifier) release(ctx actor.Context, user, id string) {
	hs := s.held[user]
	for i, h := range hs {
		if h.clientID != id {
			continue
		}
		for _, n := range h.events {
			if n.GetKind() == hooksv1.Notification_KIND_DISCONNECT {
				s.enqueue(ctx, n)
			} else {
				s.leave(ctx, n)
			}
		}
		s.closed(id)
		hs = append(hs[:i], hs[i+1:]...)
		break
	}
	if len(hs) == 0 {
		delete(s.held, user)
	} else {
		s.held[user] = hs
	}
}

func (s *notifier) enqueue(ctx actor.Context, n *hooksv1.Notification) {
	s.seq++ // in the order sent, so a backend can tell a redelivery
	n.Seq = s.seq
	if len(s.queue) >= s.cfg.MaxQueue && len(s.queue) > s.sending {
		// Drop the oldest that is not in flight.
		s.queue = append(s.queue[:s.sending], s.queue[s.sending+1:]...)
		s.node.counters.HookNotifyDropped.Add(1)
	}
	s.queue = append(s.queue, n)
	s.record(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Queued{Queued: n}})
	s.send(ctx, false)
}

// send sends the head of the queue: a full batch at once, a partial one
// after the linger (or now when now is set).
func (s *notifier) send(ctx actor.Context, now bool) {
	if s.sending > 0 || len(s.queue) == 0 || (s.retry && !now) {
		return
	}
	if !now && len(s.queue) < s.cfg.Batch {
		if s.timer == nil {
			s.schedule(ctx, s.cfg.Linger)
		}
		return
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.sending = min(len(s.queue), s.cfg.Batch)
	req := &hooksv1.NotifyRequest{Node: s.stream, Notifications: append([]*hooksv1.Notification(nil), s.queue[:s.sending]...)}
	self, root, hooks := ctx.Self(), ctx.ActorSystem().Root, s.node.hooks
	go func() { // owner: the notifier; bounded by the hook client's timeout
		root.Send(self, notifyDone{err: hooks.Notify(req)})
	}()
}

func (s *notifier) schedule(ctx actor.Context, after time.Duration) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	s.timer = time.AfterFunc(after, func() { root.Send(self, notifySend{}) })
}

func (s *notifier) onDone(ctx actor.Context, err error) {
	n := s.sending
	s.sending = 0
	if err != nil {
		s.retry = true
		s.schedule(ctx, s.backoff) // the same batch again
		s.backoff = min(2*s.backoff, 5*time.Second)
		return
	}
	s.retry, s.backoff = false, 100*time.Millisecond
	s.node.counters.HookNotified.Add(int64(n))
	s.record(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Acked{Acked: s.queue[n-1].GetSeq()}})
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		for _, pid := range s.flushes {
			ctx.Send(pid, true)
		}
		s.flushes = nil
		return
	}
	s.send(ctx, len(s.flushes) > 0)
}

// record appends to the journal, if any.
func (s *notifier) record(rec *nodev1.NotifyJournalRecord) {
	if s.journal != nil {
		s.journal.append(rec)
	}
}

// flushJournal writes out what this message recorded, and compacts the
// journal when it has grown well past what it holds.
func (s *notifier) flushJournal() {
	j := s.journal
	if j == nil {
		return
	}
	err := j.flush()
	if live := 2 + len(s.queue) + 2*len(s.conns); err == nil && j.records > 10000 && j.records > 4*live {
		err = j.rewrite(&journalState{stream: s.stream, seq: s.seq, conns: s.conns, queued: s.queue})
	}
	if err != nil && !s.jerr {
		s.jerr = true
		s.node.log.Error("notification journal write failed; notifications continue without it", "err", err)
	} else if err == nil {
		s.jerr = false
	}
}
