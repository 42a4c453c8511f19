package client

import (
	"context"
	"sync"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// EventKind says what an Event carries.
type EventKind int

const (
	// EventMessage: a published message (Message is set).
	EventMessage EventKind = iota + 1
	// EventPresence: the room's presence changed (Presence is set: who came
	// and went since the previous diff, and the counts). Skipped counts the
	// diffs missed before it; with Config.TrackMembers the member list
	// reloads itself after a gap or a reset.
	EventPresence
	// EventTyping: a member started or stopped typing (Typing is set).
	EventTyping
	// EventNotRecovered: after a reconnect the server no longer had every
	// missed message (or the room's epoch changed); reload the room's state.
	// Position is the room's position now; messages after it follow.
	EventNotRecovered
	// EventMembers: the member list (Subscription.Members) was loaded or
	// reloaded (Config.TrackMembers).
	EventMembers
	// EventReadReceipts: users' read marks moved (Receipts is set; with
	// Config.Receipts).
	EventReadReceipts
	// EventCommand: a device command of the personal stream not acked yet,
	// sent again at every join (Message is set; it may also have come as an
	// EventMessage: dedupe on its message id, then Client.Ack its offset).
	EventCommand
)

// Event is one thing that happened in a room.
type Event struct {
	Kind     EventKind
	Room     string
	Message  *hubbubv1.Message
	Presence *hubbubv1.PresenceDiff
	Typing   *hubbubv1.TypingEvent
	Position *hubbubv1.StreamPosition
	Receipts *hubbubv1.ReadReceipts
	// Skipped counts the messages before this one that the client will never
	// see: the room's overflow policy dropped or conflated them because the
	// client fell behind. Reload state (or read history) if they matter.
	Skipped uint64
}

// Marks are the user's ack and read marks in the room and the count of
// messages after the read mark, as the last join (or rejoin) reply said.
func (s *Subscription) Marks() (marks *hubbubv1.Marks, unread uint64) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.marks, s.unread
}

// Subscription is the client's membership of one room. It survives
// reconnects: the client rejoins the room with the last position delivered.
type Subscription struct {
	c    *Client
	room string

	// Set by the client's reader goroutine, under c.mu.
	position *hubbubv1.StreamPosition
	joined   bool
	joinSent bool // a join was sent on the current connection
	server   bool // the server joins it at connect (ConnectReply.rooms)
	joinErr  error
	first    chan struct{} // closed at the first join reply (or failure)
	firstOK  sync.Once

	info    *hubbubv1.RoomInfo // from the last join reply
	marks   *hubbubv1.Marks    // the user's marks, from the last join reply
	unread  uint64             // from the last join reply
	members memberList

	queue  eventQueue
	events chan Event
	done   chan struct{}

	ctx    context.Context // canceled by close: ends member list loads
	cancel context.CancelFunc
	loads  sync.WaitGroup
}

func newSubscription(c *Client, room string) *Subscription {
	s := &Subscription{c: c, room: room, first: make(chan struct{}), events: make(chan Event), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.queue.init()
	go s.feed() // owner: the subscription; ends when its queue closes, joined by close
	return s
}

// Room is the room's name.
func (s *Subscription) Room() string { return s.room }

// Events delivers the room's events in order. It is closed after Leave or Close.
func (s *Subscription) Events() <-chan Event { return s.events }

// Position is the position of the last message delivered (nil before the first join).
func (s *Subscription) Position() *hubbubv1.StreamPosition {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.position
}

// Leave leaves the room and closes Events.
func (s *Subscription) Leave(ctx context.Context) error {
	return s.c.leave(ctx, s)
}

func (s *Subscription) signalFirst(err error) {
	s.firstOK.Do(func() {
		s.joinErr = err
		close(s.first)
	})
}

// feed moves events from the unbounded queue to the Events channel.
func (s *Subscription) feed() {
	defer close(s.done)
	defer close(s.events)
	for {
		ev, ok := s.queue.pop()
		if !ok {
			return
		}
		select {
		case s.events <- ev:
		case <-s.queue.closedCh:
			return
		}
	}
}

// close stops the feed and waits for it.
func (s *Subscription) close() {
	s.cancel()
	s.loads.Wait()
	s.queue.close()
	<-s.done
}

// eventQueue is an unbounded FIFO with a blocking pop.
type eventQueue struct {
	mu       sync.Mutex
	items    []Event
	ready    chan struct{} // cap 1: items were added
	closedCh chan struct{}
	closed   bool
}

func (q *eventQueue) init() {
	q.ready = make(chan struct{}, 1)
	q.closedCh = make(chan struct{})
}

func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, ev)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *eventQueue) pop() (Event, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			ev := q.items[0]
			q.items[0] = Event{}
			q.items = q.items[1:]
			q.mu.Unlock()
			return ev, true
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-q.closedCh:
			return Event{}, false
		}
	}
}

func (q *eventQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.closedCh)
	}
}
