package loadtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protowire"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// lconn is one load-generating connection (protobuf frames unless a
// subscriber was asked to speak JSON).
type lconn struct {
	ws     *websocket.Conn // nil with raw
	raw    *rawConn
	enc    wire.Encoding
	wmu    sync.Mutex
	nextID uint64
	buf    bytes.Buffer
}

// dialOpts say how a connection speaks.
type dialOpts struct {
	compress bool          // offer permessage-deflate
	enc      wire.Encoding // zero: protobuf
	compact  bool          // ask for compact pushes
	user     string        // connect as this user (development mode) with its personal stream
	raw      bool          // use the raw client (see rawConn); not with compress
	small    bool          // with raw: a 4 KB read buffer (connections that only connect)
}

var dialer = &websocket.Dialer{
	Subprotocols:     []string{wire.SubprotocolProto},
	HandshakeTimeout: 30 * time.Second,
	ReadBufferSize:   4096,
	WriteBufferSize:  4096,
	NetDialContext:   (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
}

// open dials and completes the connect handshake.
func open(ctx context.Context, url, name string, o dialOpts) (*lconn, error) {
	d := *dialer
	d.EnableCompression = o.compress
	if o.enc == 0 {
		o.enc = wire.Proto
	}
	c := &lconn{enc: o.enc}
	if o.raw && !o.compress {
		size := rawReadBuffer
		if o.small {
			size = 4 << 10
		}
		raw, err := dialRaw(ctx, url, o.enc.String(), size)
		if err != nil {
			return nil, err
		}
		c.raw = raw
	} else {
		d.Subprotocols = []string{o.enc.String()}
		ws, resp, err := d.DialContext(ctx, url, nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			return nil, err
		}
		c.ws = ws
	}
	req := &hubbubv1.ConnectRequest{Name: name, Compact: o.compact}
	if o.user != "" {
		req.Name, req.UserStream = o.user, true
	}
	if err := c.send(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: req}}); err != nil {
		c.closeSocket()
		return nil, err
	}
	f, err := c.readFrame()
	if err != nil || f.GetConnect() == nil {
		c.closeSocket()
		return nil, fmt.Errorf("connect: %v %v", f, err)
	}
	return c, nil
}

func (c *lconn) send(f *hubbubv1.ClientFrame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nextID++
	f.Id = c.nextID
	b, err := wire.Marshal(f, c.enc)
	if err != nil {
		return err
	}
	mt := websocket.BinaryMessage
	if c.enc == wire.JSON {
		mt = websocket.TextMessage
	}
	if c.raw != nil {
		return c.raw.write(byte(mt), b)
	}
	return c.ws.WriteMessage(mt, b)
}

// read returns the next frame's bytes, valid until the next read.
func (c *lconn) read() ([]byte, error) {
	if c.raw != nil {
		return c.raw.next()
	}
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
	return wire.DecodeServerFrame(b, c.enc)
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
	if c.raw != nil {
		c.raw.close()
		return
	}
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.ws.Close()
}

func (c *lconn) closeSocket() {
	if c.raw != nil {
		_ = c.raw.nc.Close()
		return
	}
	_ = c.ws.Close()
}

// setReadDeadline bounds the next reads.
func (c *lconn) setReadDeadline(t time.Time) {
	if c.raw != nil {
		_ = c.raw.nc.SetReadDeadline(t)
		return
	}
	_ = c.ws.SetReadDeadline(t)
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

// messageOffset reads a protobuf message push's offset (Message.offset, or
// CompactMessage.offset), 0 for other frames.
func messageOffset(frame []byte) uint64 {
	msg, ok := field(frame, 20)
	if !ok {
		if msg, ok = field(frame, 25); !ok {
			return 0
		}
	}
	for b := msg; len(b) > 0; {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0
		}
		b = b[l:]
		if n == 2 && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(b)
			return v
		}
		if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
			return 0
		}
		b = b[l:]
	}
	return 0
}

// messageSentAt finds a message push's payload send time without decoding the
// whole frame: ServerFrame.message(20) -> Message.body(5) -> Body.binary(3),
// or ServerFrame.compact_message(25) -> CompactMessage.binary(7); in JSON the
// first "binary" or "y" string.
func messageSentAt(frame []byte, enc wire.Encoding) (time.Time, error) {
	if enc == wire.JSON {
		return jsonSentAt(frame)
	}
	var bin []byte
	if msg, ok := field(frame, 20); ok {
		body, ok := field(msg, 5)
		if !ok {
			return time.Time{}, errNotMessage
		}
		bin, ok = field(body, 3)
		if !ok {
			return time.Time{}, errNotMessage
		}
	} else if msg, ok := field(frame, 25); ok {
		if bin, ok = field(msg, 7); !ok {
			return time.Time{}, errNotMessage
		}
	}
	ok := bin != nil
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
		case n == 6 || n == 13: // a publish's or a direct message's reply
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

var (
	jsonFull    = []byte(`"binary":"`)
	jsonCompact = []byte(`"y":"`)
)

// jsonSentAt is messageSentAt for a JSON push: the first 8 bytes of the
// base64 binary body (12 characters hold 9 bytes).
func jsonSentAt(frame []byte) (time.Time, error) {
	i := bytes.Index(frame, jsonFull)
	k := len(jsonFull)
	if i < 0 {
		i, k = bytes.Index(frame, jsonCompact), len(jsonCompact)
	}
	if i < 0 || len(frame) < i+k+12 {
		return time.Time{}, errNotMessage
	}
	var b [9]byte
	if _, err := base64.StdEncoding.Decode(b[:], frame[i+k:i+k+12]); err != nil {
		return time.Time{}, errNotMessage
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(b[:]))), nil
}
