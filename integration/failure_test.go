package integration

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

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

// A member that never reads is closed as a slow consumer; the room and the
// other members keep going.
func TestSlowConsumerClosedOthersUnaffected(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{MaxQueuedBytes: 256 << 10, WriteTimeout: 30 * time.Second})
	good := connect(t, s.URL, wire.Proto, "good")
	good.join("firehose", nil)

	// The slow client joins with the raw socket and then never reads again.
	slowWS, _, err := smallBufferDialer().Dial(s.URL, http2hdr())
	if err != nil {
		t.Fatal(err)
	}
	defer slowWS.Close()
	writeFrame(t, slowWS, &hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "slow"}}})
	writeFrame(t, slowWS, &hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "firehose"}}})
	eventually(t, "slow client to join", func() bool {
		r := good.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "firehose"}}})
		return len(r.GetPresence().GetMembers()) == 2
	})

	pub := connect(t, s.URL, wire.Proto, "pub")
	payload := longString(8 << 10)
	const n = 1000 // 8 MB: far past the slow reader's queue and socket buffers
	for i := 0; i < n; i++ {
		pub.request(publishFrame("firehose", fmt.Sprintf("%d:%s", i, payload), ""))
	}
	for i := 0; i < n; i++ {
		m := good.nextMessage()
		if want := fmt.Sprintf("%d:", i); m.GetBody().GetText()[:len(want)] != want {
			t.Fatalf("good client: message %d is %.10q", i, m.GetBody().GetText())
		}
	}
	eventually(t, "slow consumer close", func() bool { return s.node.Counters().Closes()[wire.CloseSlowConsumer] == 1 })
	if s.node.Counters().SlowConsumers.Load() != 1 {
		t.Fatalf("slow consumers counted %d", s.node.Counters().SlowConsumers.Load())
	}
	// The slow client's socket ends: drain it until the connection breaks.
	_ = slowWS.SetReadDeadline(time.Now().Add(waitFor))
	for {
		if _, _, err := slowWS.ReadMessage(); err != nil {
			break
		}
	}
	// Its membership is gone.
	eventually(t, "slow member to leave", func() bool {
		r := good.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "firehose"}}})
		return len(r.GetPresence().GetMembers()) == 1
	})
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

// A panic in a room drops that one message; the room keeps its state and
// every other room and connection keeps working.
func TestRoomPanicIsContained(t *testing.T) {
	s := startServer(t, actors.Config{FaultText: "boom", Conn: actors.ConnConfig{RequestTimeout: 300 * time.Millisecond}}, transport.Config{})
	a := connect(t, s.URL, wire.Proto, "a")
	a.join("fragile", nil)
	a.publish("fragile", "one")
	r := a.request(publishFrame("fragile", "boom", ""))
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !r.GetError().GetTemporary() {
		t.Fatalf("faulting publish: %v", r)
	}
	if got := a.publish("fragile", "two"); got.GetOffset() != 2 {
		t.Fatalf("after the panic: %v", got)
	}
	if m1, m2 := a.nextMessage(), a.nextMessage(); m1.GetOffset() != 1 || m2.GetOffset() != 2 {
		t.Fatalf("stream after panic: %v %v", m1, m2)
	}
	b := connect(t, s.URL, wire.JSON, "b")
	if got := b.publish("sturdy", "fine"); got.GetOffset() != 1 {
		t.Fatalf("other room: %v", got)
	}
	if s.node.Counters().ActorPanics.Load() != 1 {
		t.Fatalf("panics counted %d", s.node.Counters().ActorPanics.Load())
	}
}

// A panic in a connection actor closes that connection with 1011 and leaves
// its rooms; nothing else is touched.
func TestConnPanicClosesWith1011(t *testing.T) {
	s := startServer(t, actors.Config{FaultText: "boom"}, transport.Config{})
	calm := connect(t, s.URL, wire.Proto, "calm")
	calm.join("room", nil)
	bad := connect(t, s.URL, wire.JSON, "bad")
	bad.join("room", nil)
	bad.send(publishFrame("room", "boom!conn", ""))
	var disc *hubbubv1.Disconnect
	for f := bad.read(waitFor); f != nil; f = bad.read(waitFor) {
		if d := f.GetDisconnect(); d != nil {
			disc = d
		}
	}
	if closeCode(bad.err()) != wire.CloseInternal || disc.GetCode() != wire.CloseInternal || !disc.GetReconnect() {
		t.Fatalf("close %v, disconnect %v", bad.err(), disc)
	}
	eventually(t, "bad member to leave", func() bool {
		r := calm.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "room"}}})
		return len(r.GetPresence().GetMembers()) == 1
	})
	if got := calm.publish("room", "still fine"); got.GetOffset() != 1 {
		t.Fatalf("publish after conn panic: %v", got)
	}
}

// A peer that stops answering pings is detected and its actor stopped.
func TestDeadPeerDetected(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond})
	watcher := connect(t, s.URL, wire.Proto, "watcher")
	watcher.join("hb", nil)
	// A live client that reads answers pings and stays connected.
	live := connect(t, s.URL, wire.Proto, "live")
	live.join("hb", nil)
	// A dead one: joins, then neither reads nor answers pings.
	dead, _, err := websocket.DefaultDialer.Dial(s.URL, http2hdr())
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	writeFrame(t, dead, &hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "dead"}}})
	writeFrame(t, dead, &hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "hb"}}})
	sawDeadJoin := false
	for {
		ev := watcher.nextPush().GetPresenceEvent()
		if ev.GetClient().GetUser() == "dead" {
			if ev.GetAction() == hubbubv1.PresenceAction_PRESENCE_ACTION_JOIN {
				sawDeadJoin = true
				continue
			}
			break // its leave
		}
	}
	if !sawDeadJoin {
		t.Fatal("dead client never joined")
	}
	if got := live.publish("hb", "alive"); got.GetOffset() != 1 {
		t.Fatalf("live client: %v", got)
	}
}

// Shutdown tells every client to go away (1001, reconnect) after writing what
// was queued for it.
func TestGracefulShutdownSends1001(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	var clients []*client
	for i := 0; i < 5; i++ {
		enc := wire.Proto
		if i%2 == 1 {
			enc = wire.JSON
		}
		c := connect(t, s.URL, enc, fmt.Sprint("c", i))
		c.join("bye", nil)
		clients = append(clients, c)
	}
	messages := &s.node.Counters().Pushes[0] // telemetry.PushNames[0] is "message"
	before := messages.Load()
	clients[0].publish("bye", "last words")
	// Queued for all five (the publish ack can overtake the push): the close must not lose it.
	eventually(t, "the message to be queued for everyone", func() bool { return messages.Load()-before == 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		var gotMsg bool
		var disc *hubbubv1.Disconnect
		for f := c.read(waitFor); f != nil; f = c.read(waitFor) {
			if f.GetMessage().GetBody().GetText() == "last words" {
				gotMsg = true
			}
			if d := f.GetDisconnect(); d != nil {
				disc = d
			}
		}
		if !gotMsg || disc.GetCode() != wire.CloseGoingAway || !disc.GetReconnect() || closeCode(c.err()) != wire.CloseGoingAway {
			t.Fatalf("client %d: message %v, disconnect %v, close %v", i, gotMsg, disc, c.err())
		}
	}
	// New connections are refused while and after shutting down.
	if _, err := tryDial(t, s.URL, wire.Proto, websocket.DefaultDialer); err == nil {
		t.Fatal("dial after shutdown succeeded")
	}
}
