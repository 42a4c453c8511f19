package integration

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// The raw protocol client of the end-to-end tests: a WebSocket that speaks
// frames directly, for asserting exactly what the server sends.

// client is a raw protocol client for tests.
type client struct {
	t       testing.TB
	ws      *websocket.Conn
	enc     wire.Encoding
	frames  chan *hubbubv1.ServerFrame
	pending []*hubbubv1.ServerFrame // frames read past while waiting for a reply
	nextID  atomic.Uint64
	done    chan struct{}
	mu      sync.Mutex
	closeEr error
	wmu     sync.Mutex
}

func dial(t testing.TB, url string, enc wire.Encoding) *client {
	t.Helper()
	c, err := tryDial(t, url, enc, websocket.DefaultDialer)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func tryDial(t testing.TB, url string, enc wire.Encoding, d *websocket.Dialer) (*client, error) {
	return tryDialHeader(t, url, enc, d, nil)
}

// tryDialHeader dials with the upgrade request's headers set.
func tryDialHeader(t testing.TB, url string, enc wire.Encoding, d *websocket.Dialer, hdr http.Header) (*client, error) {
	dd := *d
	dd.Subprotocols = []string{enc.String()}
	ws, _, err := dd.Dial(url, hdr)
	if err != nil {
		return nil, err
	}
	if ws.Subprotocol() != enc.String() {
		return nil, fmt.Errorf("subprotocol %q", ws.Subprotocol())
	}
	c := &client{t: t, ws: ws, enc: enc, frames: make(chan *hubbubv1.ServerFrame, 100000), done: make(chan struct{})}
	go c.readLoop() // owner: the client; joined by close
	t.Cleanup(c.close)
	return c, nil
}

// connect dials and sends connect with a name.
func connect(t testing.TB, url string, enc wire.Encoding, name string) *client {
	t.Helper()
	c := dial(t, url, enc)
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: name}}})
	if r.GetConnect() == nil {
		t.Fatalf("connect: %v", r)
	}
	return c
}

func (c *client) readLoop() {
	defer close(c.done)
	defer close(c.frames)
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.closeEr = err
			c.mu.Unlock()
			return
		}
		want := websocket.BinaryMessage
		if c.enc == wire.JSON {
			want = websocket.TextMessage
		}
		if mt != want {
			c.mu.Lock()
			c.closeEr = fmt.Errorf("frame type %d on %v", mt, c.enc)
			c.mu.Unlock()
			return
		}
		f, err := wire.DecodeServerFrame(data, c.enc)
		if err != nil {
			c.mu.Lock()
			c.closeEr = err
			c.mu.Unlock()
			return
		}
		c.frames <- f
	}
}

func (c *client) close() {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
	}
	_ = c.ws.Close()
	<-c.done
}

func (c *client) writeRaw(mt int, data []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(mt, data); err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		// A write can fail (connection reset) a moment before the reader
		// sees the server's close; tests check why the server closed.
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
			c.t.Errorf("write: %v", err)
		}
	}
}

func (c *client) send(f *hubbubv1.ClientFrame) uint64 {
	if f.Id == 0 {
		f.Id = c.nextID.Add(1)
	}
	b, err := wire.Marshal(f, c.enc)
	if err != nil {
		c.t.Fatal(err)
	}
	mt := websocket.BinaryMessage
	if c.enc == wire.JSON {
		mt = websocket.TextMessage
	}
	c.writeRaw(mt, b)
	return f.Id
}

// read returns the next frame in arrival order, or nil when the connection ended.
func (c *client) read(timeout time.Duration) *hubbubv1.ServerFrame {
	if len(c.pending) > 0 {
		f := c.pending[0]
		c.pending = c.pending[1:]
		return f
	}
	select {
	case f, ok := <-c.frames:
		if !ok {
			return nil
		}
		return f
	case <-time.After(timeout):
		c.t.Fatalf("no frame within %v", timeout)
		return nil
	}
}

// request sends a command and returns its reply; frames before it stay queued for read.
func (c *client) request(f *hubbubv1.ClientFrame) *hubbubv1.ServerFrame {
	c.t.Helper()
	id := c.send(f)
	return c.waitReply(id)
}

func (c *client) waitReply(id uint64) *hubbubv1.ServerFrame {
	c.t.Helper()
	for i, f := range c.pending {
		if f.GetId() == id {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return f
		}
	}
	deadline := time.After(waitFor)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("connection ended waiting for reply %d: %v", id, c.err())
			}
			if f.GetId() == id {
				return f
			}
			c.pending = append(c.pending, f)
		case <-deadline:
			c.t.Fatalf("no reply to %d", id)
		}
	}
}

// nextPush returns the next push (id 0), skipping none.
func (c *client) nextPush() *hubbubv1.ServerFrame {
	c.t.Helper()
	f := c.read(waitFor)
	if f == nil {
		c.t.Fatalf("connection ended: %v", c.err())
	}
	return f
}

// nextDiff skips other pushes until a presence diff arrives.
func (c *client) nextDiff() *hubbubv1.PresenceDiff {
	c.t.Helper()
	for {
		f := c.nextPush()
		if d := f.GetPresenceDiff(); d != nil {
			return d
		}
		if f.GetError() != nil || f.GetDisconnect() != nil {
			c.t.Fatalf("unexpected frame %v", f)
		}
	}
}

// nextMessage skips presence and typing pushes until a message arrives.
func (c *client) nextMessage() *hubbubv1.Message {
	c.t.Helper()
	for {
		f := c.nextPush()
		if m := f.GetMessage(); m != nil {
			return m
		}
		if f.GetError() != nil || f.GetDisconnect() != nil {
			c.t.Fatalf("unexpected frame %v", f)
		}
	}
}

// waitClosed waits for the connection to end and returns the close error.
func (c *client) waitClosed() error {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(waitFor):
		c.t.Fatal("connection not closed")
	}
	return c.err()
}

func (c *client) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeEr
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

func (c *client) join(room string, since *hubbubv1.StreamPosition) *hubbubv1.JoinReply {
	c.t.Helper()
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room, Since: since}}})
	if r.GetJoin() == nil {
		c.t.Fatalf("join %s: %v", room, r)
	}
	return r.GetJoin()
}

func (c *client) publish(room, text string) *hubbubv1.PublishReply {
	c.t.Helper()
	r := c.request(publishFrame(room, text, ""))
	if r.GetPublish() == nil {
		c.t.Fatalf("publish: %v", r)
	}
	return r.GetPublish()
}

func publishFrame(room, text, msgID string) *hubbubv1.ClientFrame {
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{
		Room: room, MessageId: msgID, Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: text}},
	}}}
}

func errCode(f *hubbubv1.ServerFrame) hubbubv1.ErrorCode { return f.GetError().GetCode() }

// rawConnect dials a protobuf connection and completes the connect handshake;
// it reports errors instead of failing the test, for use on other goroutines.
func rawConnect(url string) (*websocket.Conn, error) { return rawConnectEnc(url, wire.Proto) }

// messageType is the WebSocket frame type of an encoding.
func messageType(enc wire.Encoding) int {
	if enc == wire.JSON {
		return websocket.TextMessage
	}
	return websocket.BinaryMessage
}

// rawConnectEnc is rawConnect in either encoding.
func rawConnectEnc(url string, enc wire.Encoding) (*websocket.Conn, error) {
	d := *websocket.DefaultDialer
	d.Subprotocols = []string{enc.String()}
	d.HandshakeTimeout = 2 * time.Second
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	r, err := rawRequestEnc(ws, enc, 1, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "raw"}}})
	if err != nil || r.GetConnect() == nil {
		ws.Close()
		return nil, fmt.Errorf("connect: %v %v", r, err)
	}
	return ws, nil
}

// rawRequest sends a command and reads until its reply, dropping pushes.
func rawRequest(ws *websocket.Conn, id uint64, f *hubbubv1.ClientFrame) (*hubbubv1.ServerFrame, error) {
	return rawRequestEnc(ws, wire.Proto, id, f)
}

// rawRequestEnc is rawRequest in either encoding.
func rawRequestEnc(ws *websocket.Conn, enc wire.Encoding, id uint64, f *hubbubv1.ClientFrame) (*hubbubv1.ServerFrame, error) {
	f.Id = id
	b, _ := wire.Marshal(f, enc)
	_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(messageType(enc), b); err != nil {
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return nil, err
		}
		r, err := wire.DecodeServerFrame(data, enc)
		if err != nil {
			return nil, err
		}
		if r.GetId() == id {
			return r, nil
		}
	}
}

// smallBufferDialer dials with a tiny socket receive buffer, so a client that
// stops reading backs up into the server quickly.
func smallBufferDialer() *websocket.Dialer {
	nd := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		_ = rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	return &websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 5 * time.Second}
}

func http2hdr() map[string][]string {
	return map[string][]string{"Sec-WebSocket-Protocol": {wire.SubprotocolProto}}
}

func writeFrame(t *testing.T, ws *websocket.Conn, f *hubbubv1.ClientFrame) {
	t.Helper()
	b, err := wire.Marshal(f, wire.Proto)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		t.Fatal(err)
	}
}
