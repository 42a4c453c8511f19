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

func (s *recordingSink) Push(b []byte, _ *PushInfo) error { return s.Send(b) }

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
		case f.GetPresenceDiff() != nil:
			room = f.GetPresenceDiff().GetRoom()
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

// fuzzNums are the fuzzed values of the commands' numeric fields.
type fuzzNums struct {
	since   uint64 // history.since_offset
	joinOff uint64 // join.since.offset
	limit   uint32 // history.limit
}

// commandFor turns one fuzz byte into a command; numeric fields come from nums.
func commandFor(op byte, id uint64, nums fuzzNums) *hubbubv1.ClientFrame {
	room := fuzzRooms[int(op>>4)%len(fuzzRooms)]
	f := &hubbubv1.ClientFrame{Id: id}
	switch op % 8 {
	case 0, 1:
		j := &hubbubv1.JoinRequest{Room: room}
		switch op >> 6 {
		case 1:
			j.Since = &hubbubv1.StreamPosition{Offset: nums.joinOff, Epoch: "e"}
		case 2:
			j.Since = &hubbubv1.StreamPosition{Offset: nums.joinOff} // no epoch: bad with an offset
		}
		f.Command = &hubbubv1.ClientFrame_Join{Join: j}
	case 2:
		f.Command = &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: room}}
	case 3, 4:
		f.Command = &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: room, MessageId: fmt.Sprint(op % 5),
			Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "x"}}}}
	case 5:
		f.Command = &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: room, Typing: op&1 == 0}}
	case 6:
		f.Command = &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: room, SinceOffset: nums.since,
			Limit: nums.limit, Reverse: op&0x40 != 0}}
	case 7:
		user := fmt.Sprint("u", int(op>>4)%3)
		switch {
		case op&0x08 == 0 || op>>6 == 3:
			f.Command = &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: room}}
		case op>>6 == 0:
			f.Command = &hubbubv1.ClientFrame_Ack{Ack: &hubbubv1.AckRequest{Room: room, Offset: nums.since}}
		case op>>6 == 1:
			f.Command = &hubbubv1.ClientFrame_Read{Read: &hubbubv1.ReadRequest{Room: room, Offset: nums.since % 4}}
		default:
			f.Command = &hubbubv1.ClientFrame_Direct{Direct: &hubbubv1.DirectRequest{User: user, RequireAck: op&0x20 != 0, TtlMs: nums.limit,
				Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "d"}}}}
		}
	}
	return f
}

// FuzzCommandSequences drives random command sequences (acks, reads and
// direct messages among them), with any values in
// the numeric fields, from three clients sent back to back (pipelined)
// through a real node, and checks that: no actor panics; every command gets
// exactly one reply and none is a temporary or internal error; no client sees
// a push of a room it is not in; and each command takes effect in the order
// sent: join, leave and typing succeed or fail exactly as a model that
// applies them one after another says.
func FuzzCommandSequences(f *testing.F) {
	f.Add([]byte{0x00, 0x10, 0x03, 0x13, 0x02, 0x03, 0x25, 0x21, 0x14}, uint64(0), uint64(0), uint32(0))
	f.Add([]byte{0x01, 0x81, 0x42, 0x03, 0x03, 0x02, 0x00, 0x03}, uint64(1), uint64(2), uint32(5))
	f.Add([]byte{0x00, 0x05, 0x03, 0x06, 0x46, 0x02, 0x05}, uint64(1)<<63, uint64(1)<<63, uint32(1<<31))
	f.Add([]byte{0x40, 0x80, 0x06, 0x46, 0x41, 0x81}, ^uint64(0), ^uint64(0), ^uint32(0))
	// Acks, reads and direct messages (commands too) among joins and publishes.
	f.Add([]byte{0x00, 0x03, 0x0f, 0x4f, 0x8f, 0xaf, 0x03, 0x0f, 0x4f}, uint64(1), uint64(0), uint32(500))
	node := NewNode(Config{Room: RoomConfig{TypingTTL: 50 * time.Millisecond}}, Options{})
	defer func() { _ = node.Shutdown(context.Background()) }()
	f.Fuzz(func(t *testing.T, ops []byte, since, joinOff uint64, limit uint32) {
		connects := []*hubbubv1.ConnectRequest{{Name: "u0"}, {Name: "u1"}, {Name: "u2"}}
		nums := fuzzNums{since: since, joinOff: joinOff, limit: limit}
		for i, run := range runCommands(t, node, connects, ops, nums) {
			if run.closed != 0 {
				t.Fatalf("client %d closed with %d", i, run.closed)
			}
			if err := checkOrder(run); err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
		}
	})
}

// checkOrder replays one client's commands on a model of its memberships
// and checks each reply says what the model says.
func checkOrder(run fuzzRun) error {
	replies := map[uint64]*hubbubv1.ServerFrame{}
	for _, f := range run.frames {
		if f.GetId() != 0 {
			replies[f.GetId()] = f
		}
	}
	joined := map[string]bool{}
	marks := map[string]uint64{} // the ack mark each room last reported
	for _, cmd := range run.sent {
		r := replies[cmd.GetId()]
		code := r.GetError().GetCode()
		switch c := cmd.GetCommand().(type) {
		case *hubbubv1.ClientFrame_Join:
			want := hubbubv1.ErrorCode_ERROR_CODE_UNSPECIFIED
			switch since := c.Join.GetSince(); {
			case since.GetOffset() > 0 && since.GetEpoch() == "":
				want = hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST
			case joined[c.Join.GetRoom()]:
				want = hubbubv1.ErrorCode_ERROR_CODE_ALREADY_JOINED
			default:
				joined[c.Join.GetRoom()] = true
			}
			if code != want || (want == 0 && r.GetJoin() == nil) {
				return fmt.Errorf("command %d (join %q): got %v, want %v", cmd.GetId(), c.Join.GetRoom(), r, want)
			}
		case *hubbubv1.ClientFrame_Leave:
			want := hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED
			if joined[c.Leave.GetRoom()] {
				want = 0
				delete(joined, c.Leave.GetRoom())
			}
			if code != want || (want == 0 && r.GetLeave() == nil) {
				return fmt.Errorf("command %d (leave %q): got %v, want %v", cmd.GetId(), c.Leave.GetRoom(), r, want)
			}
		case *hubbubv1.ClientFrame_Typing:
			want := hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED
			if joined[c.Typing.GetRoom()] {
				want = 0
			}
			if code != want || (want == 0 && r.GetTyping() == nil) {
				return fmt.Errorf("command %d (typing %q): got %v, want %v", cmd.GetId(), c.Typing.GetRoom(), r, want)
			}
		case *hubbubv1.ClientFrame_History:
			if h := r.GetHistory(); h == nil || uint32(len(h.GetMessages())) > max(c.History.GetLimit(), 1000) {
				return fmt.Errorf("command %d (history): got %v", cmd.GetId(), r)
			}
		case *hubbubv1.ClientFrame_Ack, *hubbubv1.ClientFrame_Read:
			// Marks only move forward: a reply never shows less than an earlier one in the room.
			m, room := r.GetRead(), cmd.GetRead().GetRoom()
			if a := cmd.GetAck(); a != nil {
				m, room = r.GetAck(), a.GetRoom()
			}
			if m == nil {
				if code != hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST {
					return fmt.Errorf("command %d (mark): got %v", cmd.GetId(), r)
				}
				continue
			}
			if got := m.GetMarks().GetAckOffset(); got < marks[room] {
				return fmt.Errorf("command %d (mark %q): ack mark %d after %d", cmd.GetId(), room, got, marks[room])
			}
			marks[room] = m.GetMarks().GetAckOffset()
		case *hubbubv1.ClientFrame_Direct:
			if ttl := c.Direct.GetTtlMs(); time.Duration(ttl)*time.Millisecond > 24*time.Hour {
				if code != hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST {
					return fmt.Errorf("command %d (direct, ttl %d): got %v", cmd.GetId(), ttl, r)
				}
				continue
			}
			if d := r.GetDirect(); d == nil || d.GetRoom() != "@"+c.Direct.GetUser() {
				return fmt.Errorf("command %d (direct): got %v", cmd.GetId(), r)
			}
		}
	}
	return nil
}

// fuzzRun is what one client of a fuzzed command sequence sent and received.
type fuzzRun struct {
	sent   []*hubbubv1.ClientFrame
	frames []*hubbubv1.ServerFrame
	closed int
}

// runCommands connects one client per connect request (alternating
// encodings), drives ops through a real node back to back (each byte picks a
// client, a command and a room), waits until every command has its reply,
// closes the clients, and checks each one's stream: every frame decodes, no
// push of a room comes outside the client's membership, every command got
// exactly one reply and none a temporary or internal error, and no actor
// panicked.
func runCommands(t *testing.T, node *Node, connects []*hubbubv1.ConnectRequest, ops []byte, nums fuzzNums) []fuzzRun {
	t.Helper()
	if len(ops) > 200 {
		ops = ops[:200]
	}
	panics := node.counters.ActorPanics.Load()
	n := len(connects)
	sinks := make([]*recordingSink, n)
	handles := make([]*ConnHandle, n)
	runs := make([]fuzzRun, n)
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
		cmd := commandFor(op, id, nums)
		if j := cmd.GetJoin(); j != nil {
			joins[c][id] = j.GetRoom()
		}
		if l := cmd.GetLeave(); l != nil {
			leaves[c][id] = l.GetRoom()
		}
		runs[c].sent = append(runs[c].sent, cmd)
		handles[c].Receive(cmd, 20)
	}
	for i, h := range handles {
		waitReplies(t, sinks[i], len(runs[i].sent)+1)
		h.Close(5 * time.Second)
		frames, err := sinks[i].snapshot()
		if err != nil {
			t.Fatalf("client %d: undecodable frame: %v", i, err)
		}
		if err := checkStream(frames, joins[i], leaves[i]); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if err := checkReplies(frames, len(runs[i].sent)+1); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		sinks[i].mu.Lock()
		runs[i].frames, runs[i].closed = frames, sinks[i].closed
		sinks[i].mu.Unlock()
	}
	if p := node.counters.ActorPanics.Load(); p != panics {
		t.Fatalf("%d actor panics", p-panics)
	}
	return runs
}

// waitReplies waits until a sink holds replies to n requests (bounded).
func waitReplies(t *testing.T, s *recordingSink, n int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		frames, _ := s.snapshot()
		got := 0
		for _, f := range frames {
			if f.GetId() != 0 {
				got++
			}
		}
		if got >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("replies to %d requests did not all arrive", n)
}

// checkReplies checks that requests 1..n each got exactly one reply, and
// none a temporary or internal error (a bad value is a BAD_REQUEST at once).
func checkReplies(frames []*hubbubv1.ServerFrame, n int) error {
	seen := map[uint64]int{}
	for _, f := range frames {
		if f.GetId() == 0 {
			continue
		}
		seen[f.GetId()]++
		if e := f.GetError(); e.GetTemporary() || e.GetCode() == hubbubv1.ErrorCode_ERROR_CODE_INTERNAL ||
			e.GetCode() == hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE {
			return fmt.Errorf("reply %d: %v", f.GetId(), e)
		}
	}
	if len(seen) != n {
		return fmt.Errorf("%d of %d requests answered", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			return fmt.Errorf("request %d answered %d times", id, k)
		}
	}
	return nil
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
