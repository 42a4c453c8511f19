package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
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
type userConnected struct{ user string }

// userJoined tells the notifier a user joined a room (cancelling a held leave of it).
type userJoined struct{ user, room string }

type (
	notifySend   struct{}                  // the linger or backoff timer fired
	notifyDone   struct{ err error }       // a batch was answered (or failed)
	graceExpired struct{ user, id string } // a held disconnect's window ended
	notifyFlush  struct{}                  // answer when everything queued was sent (shutdown)
)

func notifierProps(n *Node) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &notifier{node: n, cfg: n.cfg.Notify.withDefaults(), held: map[string][]*heldDisconnect{}, backoff: 100 * time.Millisecond}
	})
}

func (s *notifier) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case notice:
		if msg.held && s.cfg.Grace > 0 {
			s.hold(ctx, msg.n)
			return
		}
		s.enqueue(ctx, msg.n)
	case userConnected:
		s.cancel(msg.user, func(n *hooksv1.Notification) bool { return n.GetKind() == hooksv1.Notification_KIND_DISCONNECT })
	case userJoined:
		s.cancel(msg.user, func(n *hooksv1.Notification) bool {
			return n.GetKind() == hooksv1.Notification_KIND_LEAVE && n.GetRoom() == msg.room
		})
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

// cancel drops the user's held notifications that match, counting them.
func (s *notifier) cancel(user string, match func(*hooksv1.Notification) bool) {
	for _, h := range s.held[user] {
		kept := h.events[:0]
		for _, n := range h.events {
			if match(n) {
				s.node.counters.HookNotifyCoalesced.Add(1)
			} else {
				kept = append(kept, n)
			}
		}
		h.events = kept
	}
}

// release queues what is left of a held disconnect whose window ended.
func (s *notifier) release(ctx actor.Context, user, id string) {
	hs := s.held[user]
	for i, h := range hs {
		if h.clientID != id {
			continue
		}
		for _, n := range h.events {
			s.enqueue(ctx, n)
		}
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
	req := &hooksv1.NotifyRequest{Node: s.node.nodeID, Notifications: append([]*hooksv1.Notification(nil), s.queue[:s.sending]...)}
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
