package loadtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// lconn is one load-generating connection speaking protobuf frames.
type lconn struct {
	ws     *websocket.Conn
	wmu    sync.Mutex
	nextID uint64
	buf    bytes.Buffer
}

var dialer = &websocket.Dialer{
	Subprotocols:     []string{wire.SubprotocolProto},
	HandshakeTimeout: 30 * time.Second,
	ReadBufferSize:   4096,
	WriteBufferSize:  4096,
	NetDialContext:   (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
}

// compressedDialer offers permessage-deflate.
var compressedDialer = func() *websocket.Dialer { d := *dialer; d.EnableCompression = true; return &d }()

// open dials and completes the connect handshake.
func open(ctx context.Context, url, name string, compress bool) (*lconn, error) {
	d := dialer
	if compress {
		d = compressedDialer
	}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	c := &lconn{ws: ws}
	if err := c.send(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: name}}}); err != nil {
		ws.Close()
		return nil, err
	}
	f, err := c.readFrame()
	if err != nil || f.GetConnect() == nil {
		ws.Close()
		return nil, fmt.Errorf("connect: %v %v", f, err)
	}
	return c, nil
}

func (c *lconn) send(f *hubbubv1.ClientFrame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nextID++
	f.Id = c.nextID
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	return c.ws.WriteMessage(websocket.BinaryMessage, b)
}

// read returns the next frame's bytes, valid until the next read.
func (c *lconn) read() ([]byte, error) {
	_, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	c.buf.Reset()
	_, err = c.buf.ReadFrom(r)
	return c.buf.Bytes(), err
}

func (c *lconn) readFrame() (*hubbubv1.ServerFrame, error) {
	b, err := c.read()
	if err != nil {
		return nil, err
	}
	return wire.DecodeServerFrame(b, wire.Proto)
}

// join joins a room and waits for the reply, skipping pushes.
func (c *lconn) join(room string) error {
	if err := c.send(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}}); err != nil {
		return err
	}
	id := c.nextID
	for {
		f, err := c.readFrame()
		if err != nil {
			return err
		}
		if f.GetId() == id {
			if f.GetJoin() == nil {
				return fmt.Errorf("join %s: %v", room, f)
			}
			return nil
		}
	}
}

func (c *lconn) close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.ws.Close()
}

// payload is a publish body: send time, publisher, sequence, padding.
func payload(size int, sent time.Time, pub, seq uint32) []byte {
	b := make([]byte, max(size, 16))
	binary.LittleEndian.PutUint64(b, uint64(sent.UnixNano()))
	binary.LittleEndian.PutUint32(b[8:], pub)
	binary.LittleEndian.PutUint32(b[12:], seq)
	return b
}

var errNotMessage = errors.New("not a message push")

// messageSentAt finds a message push's payload send time without decoding the
// whole frame: ServerFrame.message(20) -> Message.body(5) -> Body.binary(3).
func messageSentAt(frame []byte) (time.Time, error) {
	msg, ok := field(frame, 20)
	if !ok {
		return time.Time{}, errNotMessage
	}
	body, ok := field(msg, 5)
	if !ok {
		return time.Time{}, errNotMessage
	}
	bin, ok := field(body, 3)
	if !ok || len(bin) < 8 {
		return time.Time{}, errNotMessage
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(bin))), nil
}

// field returns the bytes of the first length-delimited field num.
func field(b []byte, num protowire.Number) ([]byte, bool) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			return v, l >= 0
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
	}
	return nil, false
}

// replyInfo reads a reply's id and whether it is a publish ack or an error.
func replyInfo(frame []byte) (id uint64, ack, isErr bool) {
	b := frame
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return
		}
		b = b[l:]
		switch {
		case n == 1 && typ == protowire.VarintType:
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return
			}
			id = v
			b = b[l:]
			continue
		case n == 6:
			ack = true
		case n == 2:
			isErr = true
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return
		}
		b = b[l:]
	}
	return
}
