package actors

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// protoactor's dead-letter throttle parks a goroutine for one throttle
// interval (1s) after a dead letter; it ends by itself.
var ignoreThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, ignoreThrottle) }

// recordingSink is the transport's side of the seam, kept in memory: it
// decodes every frame it is handed, in order.
type recordingSink struct {
	enc    wire.Encoding
	mu     sync.Mutex
	frames []*hubbubv1.ServerFrame
	closed int
	err    error
}

func (s *recordingSink) Encoding() wire.Encoding { return s.enc }

func (s *recordingSink) Send(b []byte) error {
	f, err := wire.DecodeServerFrame(b, s.enc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil && s.err == nil {
		s.err = err
	}
	s.frames = append(s.frames, f)
	return nil
}

func (s *recordingSink) Push(b []byte, _ PushInfo) error { return s.Send(b) }

func (s *recordingSink) Close(code int, _ string) {
	s.mu.Lock()
	s.closed = code
	s.mu.Unlock()
}

func (s *recordingSink) snapshot() ([]*hubbubv1.ServerFrame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*hubbubv1.ServerFrame(nil), s.frames...), s.err
}

// checkStream verifies one connection's stream: every push of a room falls
// between that connection's join reply and its leave reply for the room, and
// message offsets of a room only grow.
func checkStream(frames []*hubbubv1.ServerFrame, joinIDs, leaveIDs map[uint64]string) error {
	in := map[string]bool{}
	last := map[string]uint64{}
	for i, f := range frames {
		if room, ok := joinIDs[f.GetId()]; ok && f.GetJoin() != nil {
			in[room] = true
			last[room] = f.GetJoin().GetPosition().GetOffset()
			continue
		}
		if room, ok := leaveIDs[f.GetId()]; ok && f.GetLeave() != nil {
			in[room] = false
			continue
		}
		var room string
		switch {
		case f.GetMessage() != nil:
			room = f.GetMessage().GetRoom()
			if off := f.GetMessage().GetOffset(); in[room] && off != last[room]+1 {
				return fmt.Errorf("frame %d: offset %d after %d in %q", i, off, last[room], room)
			}
			last[room] = f.GetMessage().GetOffset()
		case f.GetPresenceEvent() != nil:
			room = f.GetPresenceEvent().GetRoom()
		case f.GetTypingEvent() != nil:
			room = f.GetTypingEvent().GetRoom()
		default:
			continue
		}
		if !in[room] {
			return fmt.Errorf("frame %d: push of %q while not a member: %v", i, room, f)
		}
	}
	return nil
}

var fuzzRooms = []string{"a", "b", "c"}

// commandFor turns one fuzz byte into a command.
func commandFor(op byte, id uint64) *hubbubv1.ClientFrame {
	room := fuzzRooms[int(op>>4)%len(fuzzRooms)]
	f := &hubbubv1.ClientFrame{Id: id}
	switch op % 8 {
	case 0, 1:
		f.Command = &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}
	case 2:
		f.Command = &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: room}}
	case 3, 4:
		f.Command = &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: room, MessageId: fmt.Sprint(op % 5),
			Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "x"}}}}
	case 5:
		f.Command = &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: room, Typing: op&1 == 0}}
	case 6:
		f.Command = &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: room, Limit: uint32(op)}}
	case 7:
		f.Command = &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: room}}
	}
	return f
}

// FuzzCommandSequences drives random command sequences from three clients
// through a real node and checks no client sees a push of a room it is not in.
func FuzzCommandSequences(f *testing.F) {
	f.Add([]byte{0x00, 0x10, 0x03, 0x13, 0x02, 0x03, 0x25, 0x21, 0x14})
	f.Add([]byte{0x01, 0x81, 0x42, 0x03, 0x03, 0x02, 0x00, 0x03})
	node := NewNode(Config{Room: RoomConfig{TypingTTL: 50 * time.Millisecond}}, Options{})
	defer func() { _ = node.Shutdown(context.Background()) }()
	f.Fuzz(func(t *testing.T, ops []byte) {
		connects := []*hubbubv1.ConnectRequest{{Name: "u0"}, {Name: "u1"}, {Name: "u2"}}
		for i, run := range runCommands(t, node, connects, ops) {
			if run.closed != 0 {
				t.Fatalf("client %d closed with %d", i, run.closed)
			}
		}
	})
}

// fuzzRun is what one client of a fuzzed command sequence received.
type fuzzRun struct {
	frames []*hubbubv1.ServerFrame
	closed int
}

// runCommands connects one client per connect request (alternating
// encodings), drives ops through a real node (each byte picks a client, a
// command and a room), closes the clients, and checks each one's stream: every
// frame decodes and no push of a room comes outside the client's membership.
func runCommands(t *testing.T, node *Node, connects []*hubbubv1.ConnectRequest, ops []byte) []fuzzRun {
	t.Helper()
	if len(ops) > 200 {
		ops = ops[:200]
	}
	n := len(connects)
	sinks := make([]*recordingSink, n)
	handles := make([]*ConnHandle, n)
	joins, leaves := make([]map[uint64]string, n), make([]map[uint64]string, n)
	for i, req := range connects {
		sinks[i] = &recordingSink{enc: []wire.Encoding{wire.Proto, wire.JSON}[i%2]}
		h, err := node.OpenConn(sinks[i], ConnInfo{})
		if err != nil {
			t.Fatal(err)
		}
		handles[i] = h
		joins[i], leaves[i] = map[uint64]string{}, map[uint64]string{}
		h.Receive(&hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: req}}, 100)
	}
	for k, op := range ops {
		c := int(op) % n
		id := uint64(k + 2)
		cmd := commandFor(op, id)
		if j := cmd.GetJoin(); j != nil {
			joins[c][id] = j.GetRoom()
		}
		if l := cmd.GetLeave(); l != nil {
			leaves[c][id] = l.GetRoom()
		}
		handles[c].Receive(cmd, 20)
	}
	runs := make([]fuzzRun, n)
	for i, h := range handles {
		h.Receive(&hubbubv1.ClientFrame{Id: 10_000, Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}}, 10)
		h.Close(5 * time.Second)
		frames, err := sinks[i].snapshot()
		if err != nil {
			t.Fatalf("client %d: undecodable frame: %v", i, err)
		}
		if err := checkStream(frames, joins[i], leaves[i]); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		sinks[i].mu.Lock()
		runs[i] = fuzzRun{frames: frames, closed: sinks[i].closed}
		sinks[i].mu.Unlock()
	}
	return runs
}

func TestNodeShutdownIsIdempotent(t *testing.T) {
	node := NewNode(Config{}, Options{})
	s := &recordingSink{enc: wire.Proto}
	h, err := node.OpenConn(s, ConnInfo{})
	if err != nil {
		t.Fatal(err)
	}
	h.Receive(&hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{}}}, 10)
	h.Receive(&hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "x"}}}, 10)
	deadline := time.Now().Add(5 * time.Second)
	for {
		frames, _ := s.snapshot()
		if len(frames) >= 2 || time.Now().After(deadline) {
			if len(frames) < 2 || frames[0].GetConnect().GetClient().GetUser() == "" || frames[1].GetJoin() == nil {
				t.Fatalf("frames %v", frames)
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	h.Close(time.Second)
	for i := 0; i < 2; i++ {
		if err := node.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := node.OpenConn(s, ConnInfo{}); err == nil {
		t.Fatal("OpenConn after Shutdown")
	}
}
