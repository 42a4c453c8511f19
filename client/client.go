package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// Client is a connection to a Hubbub server that reconnects by itself.
type Client struct {
	cfg Config

	mu         sync.Mutex
	state      State
	ws         *websocket.Conn // the current connection once rejoined and resent, nil otherwise
	sock       *websocket.Conn // the current socket from dial to its end, for Close
	nextID     uint64
	pending    map[uint64]*call
	subs       map[string]*Subscription
	info       *hubbubv1.ClientInfo
	userStream string        // the personal stream's room, from the connect reply
	up         chan struct{} // closed while connected; replaced on disconnect
	closeErr   error
	started    bool
	msgPrefix  string
	msgSeq     uint64
	dials      int               // dial attempts, for rotating through URLs
	aliases    map[uint32]string // compact pushes: the current connection's room aliases (JoinReply.alias)

	wmu     sync.Mutex // one writer at a time on ws
	closed  chan struct{}
	runDone chan struct{}
	once    sync.Once
}

// call is one request waiting for its reply.
type call struct {
	frame   *hubbubv1.ClientFrame
	retry   bool                          // resend after a reconnect
	sent    bool                          // written on the current connection
	done    chan *hubbubv1.ServerFrame    // cap 1
	onReply func(f *hubbubv1.ServerFrame) // run on the reader goroutine, in stream order
	err     error
}

// New returns a client; Connect starts it.
func New(cfg Config) *Client {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Client{
		cfg: cfg.withDefaults(), pending: map[uint64]*call{}, subs: map[string]*Subscription{},
		up: make(chan struct{}), closed: make(chan struct{}), runDone: make(chan struct{}),
		msgPrefix: hex.EncodeToString(b[:]),
	}
}

// Connect starts the connection cycle and waits until the client is connected
// (or ctx ends, or the server refuses it for good). The client keeps
// reconnecting in the background until Close, whatever Connect returns.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	if !c.started {
		c.started = true
		go c.run() // owner: the client; joined by Close
	}
	up := c.up
	c.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-c.closed:
		return c.err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// State returns the connection's state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Info is the identity the server gave this connection (nil before the first connect).
func (c *Client) Info() *hubbubv1.ClientInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

func (c *Client) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil {
		return c.closeErr
	}
	return ErrClosed
}

// Close closes the connection (1000), fails what is pending with ErrClosed and
// closes every subscription's Events. It waits for the client's goroutines.
func (c *Client) Close() error {
	c.shutdown(ErrClosed)
	c.mu.Lock()
	started := c.started
	ws := c.sock
	c.mu.Unlock()
	if ws != nil {
		c.wmu.Lock()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.wmu.Unlock()
		_ = ws.Close()
	}
	if started {
		<-c.runDone
	}
	c.mu.Lock()
	subs := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.subs = map[string]*Subscription{}
	c.mu.Unlock()
	for _, s := range subs {
		s.close()
	}
	return nil
}

// shutdown makes the client final with err.
func (c *Client) shutdown(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.closeErr = err
		c.state = StateClosed
		for id, cl := range c.pending {
			cl.err = err
			close(cl.done)
			delete(c.pending, id)
		}
		for _, s := range c.subs {
			s.signalFirst(err)
		}
		c.mu.Unlock()
		close(c.closed)
		c.notify(StateChange{State: StateClosed, Err: err})
	})
}

func (c *Client) notify(sc StateChange) {
	if c.cfg.OnState != nil {
		c.cfg.OnState(sc)
	}
}

// run is the connection cycle: dial, serve, back off, again, until closed.
func (c *Client) run() {
	defer close(c.runDone)
	attempt := 0
	for {
		select {
		case <-c.closed:
			return
		default:
		}
		c.setState(StateConnecting, nil, attempt)
		ws, err := c.dial()
		if err == nil {
			attempt = 0
			err = c.serve(ws)
		}
		var de *DisconnectError
		if errors.As(err, &de) && !de.Reconnect {
			c.shutdown(err)
			return
		}
		attempt++
		c.setState(StateDisconnected, err, attempt)
		delay := backoff(attempt, c.cfg.MinReconnectDelay, c.cfg.MaxReconnectDelay)
		var se *ServerError
		if errors.As(err, &se) && se.RetryAfter > delay {
			delay = se.RetryAfter
		}
		t := time.NewTimer(delay)
		select {
		case <-c.closed:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (c *Client) setState(s State, err error, attempt int) {
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return
	}
	c.state = s
	c.mu.Unlock()
	c.notify(StateChange{State: s, Err: err, Attempt: attempt})
}

// dial opens a WebSocket and completes the connect handshake.
func (c *Client) dial() (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DialTimeout)
	defer cancel()
	go func() { // owner: dial; ends with ctx
		select {
		case <-c.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	d := *c.cfg.Dialer
	d.Subprotocols = []string{c.cfg.Encoding.String()}
	urls := append([]string{c.cfg.URL}, c.cfg.URLs...)
	url := urls[c.dials%len(urls)]
	c.dials++
	ws, resp, err := d.DialContext(ctx, url, nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	req := &hubbubv1.ConnectRequest{Name: c.cfg.Name, Data: c.cfg.ConnectData, Compact: c.cfg.Compact, UserStream: c.cfg.UserStream}
	c.mu.Lock()
	c.aliases = map[uint32]string{} // a connection's aliases are its own
	for room, s := range c.subs {
		if s.server && s.position != nil {
			if req.Since == nil {
				req.Since = map[string]*hubbubv1.StreamPosition{}
			}
			req.Since[room] = s.position
		}
	}
	c.mu.Unlock()
	if c.cfg.Token != nil {
		if req.Token, err = c.cfg.Token(ctx); err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("token: %w", err)
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.SetReadDeadline(dl)
		_ = ws.SetWriteDeadline(dl)
	}
	if err := c.write(ws, &hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: req}}); err != nil {
		_ = ws.Close()
		return nil, err
	}
	f, err := c.readFrame(ws)
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	if e := f.GetError(); e != nil {
		_ = ws.Close()
		se := serverError(e)
		if e.GetCode() == hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED || e.GetCode() == hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
			return nil, &DisconnectError{Code: wire.CloseUnauthorized, Reason: se.Message}
		}
		return nil, se
	}
	if f.GetConnect() == nil {
		_ = ws.Close()
		return nil, fmt.Errorf("hubbub: unexpected reply to connect: %v", f)
	}
	_ = ws.SetReadDeadline(time.Time{})
	_ = ws.SetWriteDeadline(time.Time{})
	c.mu.Lock()
	c.info = f.GetConnect().GetClient()
	c.userStream = f.GetConnect().GetUserStream()
	fresh := c.serverRoomsLocked(f.GetConnect().GetRooms())
	c.mu.Unlock()
	if c.cfg.OnServerJoin != nil {
		for _, s := range fresh {
			c.cfg.OnServerJoin(s)
		}
	}
	return ws, nil
}

// serverRoomsLocked records the rooms the server joins on this connection:
// no join is sent for them, and their join replies (id 0) go to their
// subscriptions. It ends the server subscriptions not named any more and
// returns the new ones. Called with c.mu held.
func (c *Client) serverRoomsLocked(rooms []string) []*Subscription {
	named := map[string]bool{}
	var fresh []*Subscription
	for _, room := range rooms {
		named[room] = true
		s := c.subs[room]
		if s == nil {
			s = newSubscription(c, room)
			c.subs[room] = s
			fresh = append(fresh, s)
		}
		s.server, s.joinSent = true, true
	}
	for room, s := range c.subs {
		if s.server && !named[room] {
			delete(c.subs, room)
			s.signalFirst(ErrDisconnected)
			s.cancel()
			s.queue.close()
		}
	}
	return fresh
}

// serve runs one connection: rejoin, resend, then read until it ends.
func (c *Client) serve(ws *websocket.Conn) error {
	c.mu.Lock()
	closed := c.state == StateClosed
	c.sock = ws
	c.mu.Unlock()
	if closed {
		_ = ws.Close()
		return ErrClosed
	}
	readErr := make(chan error, 1)
	go func() { readErr <- c.readLoop(ws) }() // owner: serve; joined below
	// Rejoin every room, then resend what waited (in id order). Requests made
	// meanwhile queue behind them; the connection is published to callers
	// only when nothing is left to send, so order is kept across reconnects.
	for {
		c.mu.Lock()
		batch := c.unsentLocked()
		if len(batch) == 0 {
			c.ws = ws
			c.state = StateConnected
			close(c.up)
			c.mu.Unlock()
			break
		}
		c.mu.Unlock()
		if !c.writeAll(ws, batch) {
			break // the reader sees the broken connection too
		}
	}
	c.notify(StateChange{State: StateConnected})
	err := <-readErr
	_ = ws.Close()
	c.mu.Lock()
	c.ws, c.sock = nil, nil
	if c.state != StateClosed {
		c.state = StateDisconnected
	}
	select {
	case <-c.up:
		c.up = make(chan struct{})
	default:
	}
	for _, s := range c.subs {
		s.joinSent = false
	}
	for id, cl := range c.pending {
		switch {
		case cl.retry:
			cl.sent = false
		default:
			cl.err = ErrDisconnected
			close(cl.done)
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
	return err
}

// unsentLocked returns the joins of rooms not yet joined on this connection,
// then the unsent requests in id order, marking them sent.
func (c *Client) unsentLocked() []*call {
	var joins, rest []*call
	for _, s := range c.subs {
		if !s.joinSent {
			joins = append(joins, c.joinCallLocked(s))
		}
	}
	for _, cl := range c.pending {
		if !cl.sent {
			rest = append(rest, cl)
		}
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i].frame.GetId() < rest[j].frame.GetId() })
	for _, cl := range rest {
		cl.sent = true
	}
	return append(joins, rest...)
}

func (c *Client) writeAll(ws *websocket.Conn, calls []*call) bool {
	for _, cl := range calls {
		if c.write(ws, cl.frame) != nil {
			return false
		}
	}
	return true
}

// readLoop dispatches frames until the connection ends; it returns why.
func (c *Client) readLoop(ws *websocket.Conn) error {
	var advice *DisconnectError
	for {
		f, err := c.readFrame(ws)
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				if advice == nil || advice.Code != ce.Code {
					advice = &DisconnectError{Code: ce.Code, Reason: ce.Text, Reconnect: wire.Reconnect(ce.Code)}
				}
				return advice
			}
			if advice != nil {
				return advice
			}
			return err
		}
		if d := f.GetDisconnect(); d != nil {
			advice = &DisconnectError{Code: int(d.GetCode()), Reason: d.GetReason(), Reconnect: d.GetReconnect()}
			continue
		}
		if f.GetId() != 0 {
			c.onReply(f)
			continue
		}
		c.onPush(f)
	}
}

func (c *Client) readFrame(ws *websocket.Conn) (*hubbubv1.ServerFrame, error) {
	_, data, err := ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	return wire.DecodeServerFrame(data, c.cfg.Encoding)
}

func (c *Client) write(ws *websocket.Conn, f *hubbubv1.ClientFrame) error {
	b, err := wire.Marshal(f, c.cfg.Encoding)
	if err != nil {
		return err
	}
	mt := websocket.BinaryMessage
	if c.cfg.Encoding == wire.JSON {
		mt = websocket.TextMessage
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return ws.WriteMessage(mt, b)
}

func (c *Client) onReply(f *hubbubv1.ServerFrame) {
	c.mu.Lock()
	cl, ok := c.pending[f.GetId()]
	if ok {
		delete(c.pending, f.GetId())
	}
	c.mu.Unlock()
	if !ok {
		return // its caller gave up
	}
	if cl.onReply != nil {
		cl.onReply(f)
	}
	cl.done <- f
	close(cl.done)
}

func (c *Client) onPush(f *hubbubv1.ServerFrame) {
	if j := f.GetJoin(); j != nil { // a room the server joined for this client
		c.mu.Lock()
		s := c.subs[j.GetRoom()]
		c.mu.Unlock()
		if s != nil && s.server {
			c.onJoinReply(s, f, false)
		}
		return
	}
	var room string
	ev := Event{}
	switch {
	case f.GetCompactMessage() != nil:
		m := c.expand(f.GetCompactMessage())
		if m == nil {
			return
		}
		ev.Kind, ev.Message, room = EventMessage, m, m.GetRoom()
	case f.GetMessage() != nil:
		ev.Kind, ev.Message, room = EventMessage, f.GetMessage(), f.GetMessage().GetRoom()
	case f.GetPresenceDiff() != nil:
		ev.Kind, ev.Presence, room = EventPresence, f.GetPresenceDiff(), f.GetPresenceDiff().GetRoom()
	case f.GetTypingEvent() != nil:
		ev.Kind, ev.Typing, room = EventTyping, f.GetTypingEvent(), f.GetTypingEvent().GetRoom()
	case f.GetReadReceipts() != nil:
		ev.Kind, ev.Receipts, room = EventReadReceipts, f.GetReadReceipts(), f.GetReadReceipts().GetRoom()
	default:
		return
	}
	ev.Room = room
	c.mu.Lock()
	s := c.subs[room]
	if s == nil || !s.joined {
		c.mu.Unlock()
		return
	}
	if ev.Kind == EventPresence {
		var ok bool
		if ev, ok = c.onDiffLocked(s, ev.Presence); !ok {
			c.mu.Unlock()
			return
		}
	}
	if ev.Kind == EventMessage {
		if p := s.position; p != nil && p.GetEpoch() == ev.Message.GetEpoch() && ev.Message.GetOffset() > p.GetOffset()+1 {
			ev.Skipped = ev.Message.GetOffset() - p.GetOffset() - 1
		}
		if !s.advance(ev.Message) {
			c.mu.Unlock()
			return // already delivered
		}
	}
	c.mu.Unlock()
	s.queue.push(ev)
}

// expand turns a compact push back into the Message it stands for: the room
// its alias names on this connection, the epoch of the subscription's
// stream. Nil for an alias no join reply gave.
func (c *Client) expand(cm *hubbubv1.CompactMessage) *hubbubv1.Message {
	c.mu.Lock()
	room, ok := c.aliases[cm.GetAlias()]
	var epoch string
	if s := c.subs[room]; ok && s != nil {
		epoch = s.position.GetEpoch()
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := &hubbubv1.Message{Room: room, Offset: cm.GetOffset(), Epoch: epoch, TimeUnixMs: cm.GetTimeUnixMs(),
		MessageId: cm.GetMessageId(), Key: cm.GetKey(), Body: &hubbubv1.Body{}}
	if cm.GetUser() != "" || cm.GetServer() != "" {
		m.Sender = &hubbubv1.ClientInfo{User: cm.GetUser(), Server: cm.GetServer()}
	}
	switch b := cm.GetBody().(type) {
	case *hubbubv1.CompactMessage_Text:
		m.Body.Kind = &hubbubv1.Body_Text{Text: b.Text}
	case *hubbubv1.CompactMessage_Data:
		m.Body.Kind = &hubbubv1.Body_Data{Data: b.Data}
	case *hubbubv1.CompactMessage_Binary:
		m.Body.Kind = &hubbubv1.Body_Binary{Binary: b.Binary}
	}
	return m
}

// advance records a message as delivered; false for one delivered before. Called with c.mu held.
func (s *Subscription) advance(m *hubbubv1.Message) bool {
	if p := s.position; p != nil && p.GetEpoch() == m.GetEpoch() && m.GetOffset() <= p.GetOffset() {
		return false
	}
	s.position = &hubbubv1.StreamPosition{Offset: m.GetOffset(), Epoch: m.GetEpoch()}
	return true
}

// do sends a command and waits for its reply.
func (c *Client) do(ctx context.Context, f *hubbubv1.ClientFrame, retry bool) (*hubbubv1.ServerFrame, error) {
	cl, err := c.start(f, retry, nil)
	if err != nil {
		return nil, err
	}
	return c.wait(ctx, cl)
}

// start registers a call and sends it when connected.
func (c *Client) start(f *hubbubv1.ClientFrame, retry bool, onReply func(*hubbubv1.ServerFrame)) (*call, error) {
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return nil, c.err()
	}
	ws := c.ws
	if ws == nil && c.cfg.FailFast {
		// Disconnected (or still rejoining after a reconnect).
		c.mu.Unlock()
		return nil, ErrDisconnected
	}
	c.nextID++
	f.Id = c.nextID + 1 // id 1 is the connect handshake's
	cl := &call{frame: f, retry: retry, done: make(chan *hubbubv1.ServerFrame, 1), onReply: onReply}
	c.pending[f.Id] = cl
	cl.sent = ws != nil
	c.mu.Unlock()
	if ws != nil {
		_ = c.write(ws, f) // a failed write is retried or failed by the reconnect
	}
	return cl, nil
}

func (c *Client) wait(ctx context.Context, cl *call) (*hubbubv1.ServerFrame, error) {
	select {
	case f, ok := <-cl.done:
		if !ok {
			return nil, cl.err
		}
		if e := f.GetError(); e != nil {
			return f, serverError(e)
		}
		return f, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, cl.frame.GetId())
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// nextMessageID returns a client message id unique to this client.
func (c *Client) nextMessageID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgSeq++
	return c.msgPrefix + "-" + strconv.FormatUint(c.msgSeq, 36)
}
