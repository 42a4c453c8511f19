package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/internal/faults"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/server"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

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
		return int(r.GetPresence().GetState().GetMembers()) == 2
	})

	pub := connect(t, s.URL, wire.Proto, "pub")
	payload := longString(8 << 10)
	const n = 1000 // 8 MB: far past the slow reader's queue and socket buffers
	// The good member keeps up: the publisher stays at most 16 messages
	// (128 KB, half the queue bound) ahead of what it has read, so only a
	// member that does not read can fall 256 KB behind.
	const window = 16
	read := 0
	readOne := func() {
		m := good.nextMessage()
		if want := fmt.Sprintf("%d:", read); m.GetBody().GetText()[:len(want)] != want {
			t.Fatalf("good client: message %d is %.10q", read, m.GetBody().GetText())
		}
		read++
	}
	for i := 0; i < n; i++ {
		pub.request(publishFrame("firehose", fmt.Sprintf("%d:%s", i, payload), ""))
		if i-read >= window {
			readOne()
		}
	}
	for read < n {
		readOne()
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
		return int(r.GetPresence().GetState().GetMembers()) == 1
	})
}

// injectText is the fault injector (a test-only server option) that panics
// a room on a publish of text, and the publisher's connection actor on
// text+"!conn".
func injectText(text string) server.Options {
	return server.Options{Inject: faults.PanicOnText(text)}
}

// A panic in a room answers the request that caused it with INTERNAL at once
// (not a temporary error after a timeout), stops the room, and closes its
// members with 4004, so they rejoin a fresh activation and recover from the
// store. Every other room and connection keeps working.
func TestRoomPanicClosesMembersWith4004(t *testing.T) {
	st, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 100, MaxAge: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := startServer(t, actors.Config{Room: actors.RoomConfig{Store: st}}, transport.Config{}, injectText("boom"))
	a := connect(t, s.URL, wire.Proto, "a")
	a.join("fragile", nil)
	watcher := connect(t, s.URL, wire.JSON, "watcher")
	watcher.join("fragile", nil)
	one := a.publish("fragile", "one")
	start := time.Now()
	r := a.request(publishFrame("fragile", "boom", ""))
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_INTERNAL || r.GetError().GetTemporary() {
		t.Fatalf("faulting publish: %v", r)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the failing request waited %v for its answer", took)
	}
	for _, c := range []*client{a, watcher} {
		if code := closeCode(c.waitClosed()); code != wire.CloseRoomMoved {
			t.Fatalf("member closed with %d, want 4004", code)
		}
	}
	// The members rejoin with their last position and lose nothing.
	back := connect(t, s.URL, wire.Proto, "a")
	j := back.join("fragile", &hubbubv1.StreamPosition{Offset: 0, Epoch: one.GetEpoch()})
	if !j.GetRecovered() || len(j.GetMessages()) != 1 || j.GetPosition().GetOffset() != 1 {
		t.Fatalf("rejoin after the room failed: %v", j)
	}
	if got := back.publish("fragile", "two"); got.GetOffset() != 2 || got.GetEpoch() != one.GetEpoch() {
		t.Fatalf("after the panic: %v", got)
	}
	b := connect(t, s.URL, wire.JSON, "b")
	if got := b.publish("sturdy", "fine"); got.GetOffset() != 1 {
		t.Fatalf("other room: %v", got)
	}
	if p, f := s.node.Counters().ActorPanics.Load(), s.node.Counters().RoomFailures.Load(); p != 1 || f != 1 {
		t.Fatalf("panics counted %d, room failures %d", p, f)
	}
}

// A panic in a connection actor closes that connection with 1011 and leaves
// its rooms; nothing else is touched.
func TestConnPanicClosesWith1011(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{}, injectText("boom"))
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
		return int(r.GetPresence().GetState().GetMembers()) == 1
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
	members := func() uint32 {
		return watcher.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "hb"}}}).
			GetPresence().GetState().GetMembers()
	}
	sawDeadJoin := false
	eventually(t, "the dead client to join and be dropped", func() bool {
		n := members()
		sawDeadJoin = sawDeadJoin || n == 3
		return sawDeadJoin && n == 2
	})
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

// A slow consumer that reads again soon after its queue overflowed gets the
// Disconnect push and the 4000 close frame, not a bare TCP drop, so it knows
// to reconnect and recover from history rather than report an outage.
func TestSlowConsumerThatResumesSees4000(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{MaxQueuedBytes: 64 << 10, SlowConsumerGrace: 5 * time.Second})
	for _, enc := range encodings {
		t.Run(enc.String(), func(t *testing.T) {
			room := "paused-" + enc.String()
			ws, _, err := smallBufferDialer().Dial(s.URL, map[string][]string{"Sec-WebSocket-Protocol": {enc.String()}})
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			mt := websocket.BinaryMessage
			if enc == wire.JSON {
				mt = websocket.TextMessage
			}
			for i, f := range []*hubbubv1.ClientFrame{
				{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "paused"}}},
				{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}},
			} {
				f.Id = uint64(i + 1)
				b, _ := wire.Marshal(f, enc)
				if err := ws.WriteMessage(mt, b); err != nil {
					t.Fatal(err)
				}
			}
			pub := connect(t, s.URL, wire.Proto, "pub")
			eventually(t, "the paused member to join", func() bool {
				r := pub.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: room}}})
				return int(r.GetPresence().GetState().GetMembers()) == 1
			})
			before := s.node.Counters().SlowConsumers.Load()
			payload := longString(4 << 10)
			// Paced publishes: the write pump keeps up until the socket's
			// buffers are full and a write blocks; only then does the queue
			// overflow, with that write stuck, the case that used to end in a
			// bare TCP drop.
			pace := time.NewTicker(time.Millisecond)
			defer pace.Stop()
			for i := 0; s.node.Counters().SlowConsumers.Load() == before; i++ {
				if i == 20000 {
					t.Fatal("the paused member never overflowed")
				}
				<-pace.C
				pub.request(publishFrame(room, payload, ""))
			}
			// Resume reading: everything up to the close decodes, and the
			// close says slow consumer.
			var disc *hubbubv1.Disconnect
			_ = ws.SetReadDeadline(time.Now().Add(waitFor))
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					if code := closeCode(err); code != wire.CloseSlowConsumer || disc.GetCode() != wire.CloseSlowConsumer || !disc.GetReconnect() {
						t.Fatalf("close %v, disconnect %v", err, disc)
					}
					break
				}
				f, err := wire.DecodeServerFrame(data, enc)
				if err != nil {
					t.Fatalf("frame after the overflow does not decode: %v", err)
				}
				if d := f.GetDisconnect(); d != nil {
					disc = d
				}
			}
		})
	}
}
