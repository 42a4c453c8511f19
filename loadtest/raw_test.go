package loadtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRawConnReadsFramesAnswersPingsAndCloses runs the raw client against a
// gorilla server: small and large frames arrive intact and in order, a ping
// is answered with its payload, the client's masked frames decode, and a
// close frame ends the reader.
func TestRawConnReadsFramesAnswersPingsAndCloses(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 8192) // 128 KB: larger than the read buffer
	pong := make(chan string, 1)
	echoed := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{Subprotocols: []string{"hubbub.v1.proto"}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.SetPongHandler(func(p string) error { pong <- p; return nil })
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("one"))
		_ = ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second))
		_ = ws.WriteMessage(websocket.BinaryMessage, big)
		_ = ws.WriteMessage(websocket.TextMessage, make([]byte, 300))
		_, b, err := ws.ReadMessage() // reads the pong on the way
		if err == nil {
			echoed <- b
		}
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		_, _, _ = ws.ReadMessage()
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dialRaw(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "hubbub.v1.json", rawReadBuffer); err == nil {
		t.Fatal("a subprotocol the server did not choose was accepted")
	}
	c, err := dialRaw(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "hubbub.v1.proto", rawReadBuffer)
	if err != nil {
		t.Fatal(err)
	}
	defer c.nc.Close()
	for i, want := range [][]byte{[]byte("one"), big, make([]byte, 300)} {
		p, err := c.next()
		if err != nil || !bytes.Equal(p, want) {
			t.Fatalf("frame %d: %d bytes, %v", i, len(p), err)
		}
	}
	if err := c.write(0x2, []byte("hello from the client")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pong:
		if p != "are you there" {
			t.Fatalf("pong %q", p)
		}
	case <-ctx.Done():
		t.Fatal("no pong")
	}
	if b := <-echoed; string(b) != "hello from the client" {
		t.Fatalf("server read %q", b)
	}
	if _, err := c.next(); err != io.EOF {
		t.Fatalf("after the close frame: %v", err)
	}
}
