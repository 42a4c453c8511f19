package integration

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

// stalledMember joins a room over a socket with a tiny receive buffer and
// does not read until told to.
func stalledMember(t *testing.T, url, room string) *websocket.Conn {
	t.Helper()
	ws, _, err := smallBufferDialer().Dial(url, http2hdr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	writeFrame(t, ws, &hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "stalled"}}})
	writeFrame(t, ws, &hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}})
	return ws
}

// drain reads a stalled member's messages until it has seen offset last; it
// fails if the connection closes first.
func drain(t *testing.T, ws *websocket.Conn, last uint64) []*hubbubv1.Message {
	t.Helper()
	var got []*hubbubv1.Message
	_ = ws.SetReadDeadline(time.Now().Add(waitFor))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("stalled member's connection ended after %d messages: %v", len(got), err)
		}
		f, err := wire.DecodeServerFrame(b, wire.Proto)
		if err != nil {
			t.Fatal(err)
		}
		if f.GetDisconnect() != nil {
			t.Fatalf("disconnected: %v", f.GetDisconnect())
		}
		if m := f.GetMessage(); m != nil {
			got = append(got, m)
			if m.GetOffset() == last {
				return got
			}
		}
	}
}

func publishKeyed(c *client, room, key string, i int) uint64 {
	b := make([]byte, 2048)
	binary.BigEndian.PutUint32(b, uint32(i))
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{
		Room: room, Key: key, Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: b}}}}})
	return r.GetPublish().GetOffset()
}

// Under drop-oldest a member that falls behind stays connected, skips old
// messages (visible as offset gaps) and gets the newest; others get everything.
func TestOverflowDropOldest(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{Overflow: []actors.OverflowRule{{Pattern: "game:*", Policy: actors.OverflowDropOldest}}},
		Conn: actors.ConnConfig{CommandRate: -1, ByteRate: -1}},
		transport.Config{MaxQueuedBytes: 256 << 10, WriteTimeout: 30 * time.Second})
	good := connect(t, s.URL, wire.Proto, "good")
	good.join("game:1", nil)
	ws := stalledMember(t, s.URL, "game:1")
	eventually(t, "stalled member to join", func() bool {
		r := good.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "game:1"}}})
		return int(r.GetPresence().GetState().GetMembers()) == 2
	})
	pub := connect(t, s.URL, wire.Proto, "pub")
	const n = 4000 // 8 MB: far more than the stalled member's socket buffers and queue hold
	var last uint64
	for i := 0; i < n; i++ {
		last = publishKeyed(pub, "game:1", "", i)
	}
	for i := 0; i < n; i++ {
		if m := good.nextMessage(); m.GetOffset() != uint64(i+1) {
			t.Fatalf("good member: %v at %d", m.GetOffset(), i)
		}
	}
	got := drain(t, ws, last)
	if len(got) >= n {
		t.Fatalf("stalled member got all %d messages; nothing was dropped", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].GetOffset() <= got[i-1].GetOffset() {
			t.Fatalf("offsets not increasing: %d after %d", got[i].GetOffset(), got[i-1].GetOffset())
		}
	}
	if s.node.Counters().OverflowDropped.Load() == 0 || s.node.Counters().SlowConsumers.Load() != 0 {
		t.Fatalf("dropped %d, slow consumers %d", s.node.Counters().OverflowDropped.Load(), s.node.Counters().SlowConsumers.Load())
	}
}

// Under conflate a member that falls behind gets the newest value of every key.
func TestOverflowConflate(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{Overflow: []actors.OverflowRule{{Pattern: "market:*", Policy: actors.OverflowConflate}}},
		Conn: actors.ConnConfig{CommandRate: -1, ByteRate: -1}}, // 2,400 publishes as fast as acks come back
		transport.Config{MaxQueuedBytes: 256 << 10, WriteTimeout: 30 * time.Second})
	watcher := connect(t, s.URL, wire.Proto, "watcher")
	watcher.join("market:eu", nil)
	ws := stalledMember(t, s.URL, "market:eu")
	eventually(t, "stalled member to join", func() bool {
		r := watcher.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "market:eu"}}})
		return int(r.GetPresence().GetState().GetMembers()) == 2
	})
	pub := connect(t, s.URL, wire.Proto, "pub")
	const keys, rounds = 8, 300
	latest := map[string]uint64{}
	var last uint64
	for r := 0; r < rounds; r++ {
		for k := 0; k < keys; k++ {
			key := fmt.Sprint("sym", k)
			last = publishKeyed(pub, "market:eu", key, r)
			latest[key] = last
		}
	}
	got := drain(t, ws, last)
	seen := map[string]uint64{}
	for i, m := range got {
		if i > 0 && m.GetOffset() <= got[i-1].GetOffset() {
			t.Fatalf("offsets not increasing")
		}
		seen[m.GetKey()] = m.GetOffset()
	}
	for key, off := range latest {
		if seen[key] != off {
			t.Fatalf("key %s: newest seen %d, published %d", key, seen[key], off)
		}
	}
	if len(got) >= keys*rounds || s.node.Counters().Conflated.Load() == 0 {
		t.Fatalf("got %d of %d, conflated %d", len(got), keys*rounds, s.node.Counters().Conflated.Load())
	}
}
