package transport

import (
	"context"
	"math/rand"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

func startTransport(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	node := actors.NewNode(actors.Config{}, actors.Options{})
	srv := NewServer(node, cfg, nil)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
	})
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialConnected opens a protobuf connection and completes connect.
func dialConnected(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ws, _, err := (&websocket.Dialer{Subprotocols: []string{wire.SubprotocolProto}}).Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	writeCommand(t, ws, &hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "p"}}})
	if f := readServerFrame(t, ws); f.GetConnect() == nil {
		t.Fatalf("connect: %v", f)
	}
	return ws
}

func writeCommand(t *testing.T, ws *websocket.Conn, f *hubbubv1.ClientFrame) {
	t.Helper()
	b, _ := wire.Marshal(f, wire.Proto)
	if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		t.Fatal(err)
	}
}

func readServerFrame(t *testing.T, ws *websocket.Conn) *hubbubv1.ServerFrame {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.DecodeServerFrame(b, wire.Proto)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Idle connections hold no goroutine with the epoll reader (one each with
// the goroutine reader); pings, pongs and commands wake a reader that goes
// away again.
func TestPolledIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("epoll is Linux-only")
	}
	const n = 100
	for _, reader := range []string{ReaderEpoll, ReaderGoroutine} {
		t.Run(reader, func(t *testing.T) {
			srv, url := startTransport(t, Config{Reader: reader})
			if (srv.poll != nil) != (reader == ReaderEpoll) {
				t.Fatalf("reader %s: poller %v", reader, srv.poll)
			}
			base := runtime.NumGoroutine()
			conns := make([]*websocket.Conn, n)
			pongs := make(chan struct{}, 2*n)
			for i := range conns {
				conns[i] = dialConnected(t, url)
				conns[i].SetPongHandler(func(string) error { pongs <- struct{}{}; return nil })
			}
			// Goroutines kept by the server's and the node's worker pools
			// (bounded, shared by all connections) are not the connections'.
			kept := func() int { return srv.run.Idle() + srv.node.IdleWorkers() }
			idle := func() bool { return runtime.NumGoroutine()-kept()-base < n/4 }
			if reader == ReaderGoroutine {
				time.Sleep(100 * time.Millisecond)
				if got := runtime.NumGoroutine() - base; got < n*3/4 {
					t.Fatalf("goroutine reader: %d goroutines for %d connections", got, n)
				}
				return
			}
			waitUntil(t, "idle connections to hold no goroutine", idle)
			// A ping alone: answered by the reader, which then goes away
			// (gorilla alone would wait on past it for a data message).
			for _, ws := range conns {
				if err := ws.WriteControl(websocket.PingMessage, []byte("ping alone"), time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, "readers to go away after a ping", idle)
			// A ping and a command on every connection: the ping is answered
			// (by the poller's reader, not gorilla's wait for data), the
			// command too, and the readers go away again.
			for i, ws := range conns {
				if err := ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
				writeCommand(t, ws, &hubbubv1.ClientFrame{Id: uint64(10 + i), Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}})
			}
			for i, ws := range conns {
				if f := readServerFrame(t, ws); f.GetPing() == nil || f.GetId() != uint64(10+i) {
					t.Fatalf("ping command: %v", f)
				}
			}
			if len(pongs) < n || len(pongs) > 2*n {
				t.Fatalf("%d pongs for %d pings", len(pongs), 2*n)
			}
			waitUntil(t, "readers to go away after input", idle)
		})
	}
}

// A freshly upgraded connection waits for its connect on the upgrading
// goroutine; one whose connect comes later than that wait goes to the epoll
// set without a goroutine and is still served when the connect comes, and
// one that goes away before connecting is ended.
func TestPolledLateConnect(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("epoll is Linux-only")
	}
	srv, url := startTransport(t, Config{idleReaderAfter: 20 * time.Millisecond})
	const n = 50
	base := runtime.NumGoroutine()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		ws, _, err := (&websocket.Dialer{Subprotocols: []string{wire.SubprotocolProto}}).Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Close() })
		conns[i] = ws
	}
	kept := func() int { return srv.run.Idle() + srv.node.IdleWorkers() }
	waitUntil(t, "unconnected sockets to hold no goroutine", func() bool { return runtime.NumGoroutine()-kept()-base < n/4 })
	for i, ws := range conns[:n-1] {
		writeCommand(t, ws, &hubbubv1.ClientFrame{Id: uint64(i + 1), Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "late"}}})
	}
	for i, ws := range conns[:n-1] {
		if f := readServerFrame(t, ws); f.GetConnect() == nil || f.GetId() != uint64(i+1) {
			t.Fatalf("late connect: %v", f)
		}
	}
	_ = conns[n-1].UnderlyingConn().Close() // gone before connecting
	waitUntil(t, "the unconnected socket to end", func() bool { return srv.open.Load() == n-1 })
}

// A frame that arrives a byte at a time, and a ping split likewise, are
// read whole.
func TestPolledSplitFrames(t *testing.T) {
	_, url := startTransport(t, Config{})
	ws := dialConnected(t, url)
	pong := make(chan string, 1)
	ws.SetPongHandler(func(p string) error { pong <- p; return nil })
	nc := ws.UnderlyingConn()
	frame := func(op byte, payload []byte) []byte {
		mask := [4]byte{1, 2, 3, 4}
		b := []byte{0x80 | op, 0x80 | byte(len(payload))}
		b = append(b, mask[:]...)
		for i, c := range payload {
			b = append(b, c^mask[i%4])
		}
		return b
	}
	cmd, _ := wire.Marshal(&hubbubv1.ClientFrame{Id: 7, Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}}, wire.Proto)
	var stream []byte
	stream = append(stream, frame(websocket.PingMessage, []byte("split ping"))...)
	stream = append(stream, frame(websocket.BinaryMessage, cmd)...)
	for _, b := range stream {
		if _, err := nc.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if f := readServerFrame(t, ws); f.GetPing() == nil || f.GetId() != 7 {
		t.Fatalf("split command: %v", f)
	}
	select {
	case p := <-pong:
		if p != "split ping" {
			t.Fatalf("pong %q", p)
		}
	default:
		t.Fatal("no pong for the split ping")
	}
}

// A polled connection that sends nothing, not even pongs, is dropped once
// the keep-alive passes (no read deadline runs while it is idle).
func TestPolledSilentPeerDropped(t *testing.T) {
	_, url := startTransport(t, Config{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	ws := dialConnected(t, url)
	ws.SetPingHandler(func(string) error { return nil }) // never answer
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				t.Fatal("the silent peer was not dropped")
			}
			return
		}
	}
}

// Random streams of pings, pongs and commands (some fragmented, with control
// frames between the fragments), written in random pieces with pauses:
// every command is answered in order and the last ping is answered, with
// either reader.
func TestReadersRandomStreams(t *testing.T) {
	for _, reader := range []string{ReaderEpoll, ReaderGoroutine} {
		t.Run(reader, func(t *testing.T) {
			// Readers park after 1ms without input, so the stream's pauses
			// send the socket back to the epoll set mid-stream.
			_, url := startTransport(t, Config{Reader: reader, idleReaderAfter: time.Millisecond})
			for seed := int64(1); seed <= 8; seed++ {
				testRandomStream(t, url, seed)
			}
		})
	}
}

func testRandomStream(t *testing.T, url string, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	ws := dialConnected(t, url)
	var pongs atomic.Int32
	var lastPong atomic.Value
	ws.SetPongHandler(func(p string) error { pongs.Add(1); lastPong.Store(p); return nil })
	frame := func(fin bool, op byte, payload []byte) []byte {
		var mask [4]byte
		rng.Read(mask[:])
		b0 := op
		if fin {
			b0 |= 0x80
		}
		b := []byte{b0}
		switch n := len(payload); {
		case n < 126:
			b = append(b, 0x80|byte(n))
		default:
			b = append(b, 0x80|126, byte(n>>8), byte(n))
		}
		b = append(b, mask[:]...)
		for i, c := range payload {
			b = append(b, c^mask[i%4])
		}
		return b
	}
	lastPing := ""
	control := func() ([]byte, bool) {
		p := make([]byte, rng.Intn(126))
		rng.Read(p)
		if rng.Intn(2) == 0 {
			lastPing = string(p)
			return frame(true, websocket.PingMessage, p), true
		}
		return frame(true, websocket.PongMessage, p), false
	}
	var stream []byte
	pings, commands := 0, 0
	for i := 0; i < 60; i++ {
		if rng.Intn(3) == 0 {
			f, ping := control()
			stream = append(stream, f...)
			if ping {
				pings++
			}
			continue
		}
		commands++
		cmd, _ := wire.Marshal(&hubbubv1.ClientFrame{Id: uint64(100 + commands), Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}}, wire.Proto)
		// One frame, or fragments with control frames between them.
		parts := 1 + rng.Intn(3)
		for k := 0; k < parts; k++ {
			lo, hi := len(cmd)*k/parts, len(cmd)*(k+1)/parts
			op := byte(websocket.BinaryMessage)
			if k > 0 {
				op = 0 // continuation
			}
			stream = append(stream, frame(k == parts-1, op, cmd[lo:hi])...)
			if k < parts-1 && rng.Intn(2) == 0 {
				f, ping := control()
				stream = append(stream, f...)
				if ping {
					pings++
				}
			}
		}
	}
	// A last command, read after every pong before it (but see below).
	commands++
	last, _ := wire.Marshal(&hubbubv1.ClientFrame{Id: uint64(100 + commands), Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}}, wire.Proto)
	stream = append(stream, frame(true, websocket.BinaryMessage, last)...)
	nc := ws.UnderlyingConn()
	go func() { // owner: this test; ends when the stream is written
		for len(stream) > 0 {
			n := min(len(stream), 1+rng.Intn(40))
			if _, err := nc.Write(stream[:n]); err != nil {
				return
			}
			stream = stream[n:]
			if rng.Intn(4) == 0 {
				time.Sleep(time.Duration(rng.Intn(3)) * time.Millisecond)
			}
		}
	}()
	for i := 1; i <= commands; i++ {
		if f := readServerFrame(t, ws); f.GetPing() == nil || f.GetId() != uint64(100+i) {
			t.Fatalf("seed %d: reply %d: %v", seed, i, f)
		}
	}
	// A ping not yet answered when the next arrives may be answered only
	// through the next one's pong (RFC 6455 5.5.3): the last ping is
	// answered, and no pong comes without a ping.
	// The pump may take a reply queued just after a ping before that ping's
	// pong; one more round trip brings any pong still due.
	if p, _ := lastPong.Load().(string); pings > 0 && p != lastPing {
		writeCommand(t, ws, &hubbubv1.ClientFrame{Id: 99, Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}})
		if f := readServerFrame(t, ws); f.GetId() != 99 {
			t.Fatalf("seed %d: extra round trip: %v", seed, f)
		}
	}
	if p, _ := lastPong.Load().(string); pings > 0 && p != lastPing {
		t.Fatalf("seed %d: the last ping (of %d) was not answered", seed, pings)
	}
	if got := int(pongs.Load()); got > pings || (pings > 0 && got == 0) {
		t.Fatalf("seed %d: %d pongs for %d pings", seed, got, pings)
	}
	_ = ws.Close()
}
