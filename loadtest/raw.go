package loadtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"sync"
	"time"
)

// rawConn is the fan-out subscribers' WebSocket client: a handshake and a
// frame reader of its own over one large buffered reader, so a subscriber
// reads a whole batch of pushes with one system call and parses each frame in
// place, without an allocation per frame. At a million deliveries a second a
// gorilla reader per subscriber (4 KB reads, a reader object and a copy per
// frame) made the load tool, not the server, the bottleneck of a run with
// each on a core of its own. Compressed connections keep gorilla.
type rawConn struct {
	nc  net.Conn
	br  *bufio.Reader
	wmu sync.Mutex
	big []byte // a frame larger than the buffer
	out []byte // masked frames being written
}

const rawReadBuffer = 64 << 10

// dialRaw opens a WebSocket with the given subprotocol, read through a
// buffer of size bytes.
func dialRaw(ctx context.Context, url, subprotocol string, size int) (*rawConn, error) {
	u, err := neturl.Parse(url)
	if err != nil {
		return nil, err
	}
	// No TCP keep-alive: loopback runs end well within it, and it costs four
	// system calls per connection.
	nc, err := (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: -1}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	} else {
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n", u.RequestURI(), u.Host, key, subprotocol)
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, size)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		nc.Close()
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != subprotocol {
		nc.Close()
		return nil, fmt.Errorf("websocket handshake: subprotocol %q, want %q", got, subprotocol)
	}
	_ = nc.SetDeadline(time.Time{})
	return &rawConn{nc: nc, br: br}, nil
}

var errFragmented = errors.New("fragmented message (the raw reader reads whole frames only)")

// next returns the next data frame's payload, valid until the next call.
// It answers pings and skips pongs; a close frame ends the connection.
func (c *rawConn) next() ([]byte, error) {
	for {
		h, err := c.br.Peek(2)
		if err != nil {
			return nil, err
		}
		fin, op, masked, n, hl := h[0]&0x80 != 0, h[0]&0x0f, h[1]&0x80 != 0, int(h[1]&0x7f), 2
		switch n {
		case 126:
			hl = 4
		case 127:
			hl = 10
		}
		if h, err = c.br.Peek(hl); err != nil {
			return nil, err
		}
		switch n {
		case 126:
			n = int(binary.BigEndian.Uint16(h[2:]))
		case 127:
			n = int(binary.BigEndian.Uint64(h[2:]))
		}
		if masked {
			return nil, errors.New("a server frame is masked")
		}
		if !fin || op == 0 {
			return nil, errFragmented
		}
		_, _ = c.br.Discard(hl)
		var p []byte
		if n <= c.br.Size() {
			if p, err = c.br.Peek(n); err != nil {
				return nil, err
			}
			_, _ = c.br.Discard(n) // p stays valid until the next read fills the buffer
		} else {
			if cap(c.big) < n {
				c.big = make([]byte, n)
			}
			p = c.big[:n]
			if _, err = io.ReadFull(c.br, p); err != nil {
				return nil, err
			}
		}
		switch op {
		case 0x8: // close: echo it and end
			_ = c.write(0x8, p[:min(len(p), 2)])
			return nil, io.EOF
		case 0x9: // ping
			if err := c.write(0xA, p); err != nil {
				return nil, err
			}
		case 0xA: // pong
		default:
			return p, nil
		}
	}
}

// write sends one masked frame.
func (c *rawConn) write(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.out[:0], 0x80|op)
	switch n := len(p); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, p...)
	for i := range b[start:] {
		b[start+i] ^= mask[i&3]
	}
	c.out = b
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

// close sends a normal close frame and closes the socket.
func (c *rawConn) close() {
	_ = c.write(0x8, []byte{0x03, 0xE8}) // 1000
	_ = c.nc.Close()
}
