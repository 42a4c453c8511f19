package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	hubclient "github.com/hubbub-chat/hubbub/client"
	"github.com/hubbub-chat/hubbub/internal/testredis"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

// The embedded store is the default: after a restart history and offsets
// continue in the same epoch, and a client that was away recovers exactly the
// messages it missed, including those published before the restart.
func TestDurableHistoryAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--ephemeral-rooms", "scratch-*"}
	p := startProcess(t, args...)

	away := connect(t, p.URL, wire.Proto, "away")
	pub := connect(t, p.URL, wire.JSON, "pub")
	for i := 1; i <= 5; i++ {
		pub.publish("diary", fmt.Sprint("m", i))
	}
	seen := away.join("diary", nil).GetPosition()
	if seen.GetOffset() != 5 {
		t.Fatalf("position %v, want offset 5", seen)
	}
	away.close()
	for i := 6; i <= 10; i++ {
		pub.publish("diary", fmt.Sprint("m", i))
	}
	scratch := pub.publish("scratch-1", "kept in memory only")
	if n := sum(scrape(t, httpBase(p.URL)), "hubbub_store_messages_total"); n != 10 {
		t.Fatalf("hubbub_store_messages_total = %v, want 10 (the ephemeral room's message is not stored)", n)
	}

	p = restartProcess(t, p, false, args...)

	back := connect(t, p.URL, wire.Proto, "back")
	jr := back.join("diary", seen)
	if !jr.GetRecovered() || jr.GetPosition().GetEpoch() != seen.GetEpoch() || jr.GetPosition().GetOffset() != 10 {
		t.Fatalf("after restart: recovered=%v position %v, want recovered at offset 10 epoch %s", jr.GetRecovered(), jr.GetPosition(), seen.GetEpoch())
	}
	if len(jr.GetMessages()) != 5 {
		t.Fatalf("recovered %d messages, want 5", len(jr.GetMessages()))
	}
	for i, m := range jr.GetMessages() {
		if m.GetOffset() != uint64(6+i) || m.GetBody().GetText() != fmt.Sprint("m", 6+i) {
			t.Fatalf("recovered message %d: %v", i, m)
		}
	}
	pub2 := connect(t, p.URL, wire.Proto, "pub2")
	if r := pub2.publish("diary", "m11"); r.GetOffset() != 11 || r.GetEpoch() != seen.GetEpoch() {
		t.Fatalf("first publish after restart: %v, want offset 11 in epoch %s", r, seen.GetEpoch())
	}
	if m := back.nextMessage(); m.GetOffset() != 11 {
		t.Fatalf("live after restart: %v", m)
	}
	h := back.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "diary"}}})
	if got := len(h.GetHistory().GetMessages()); got != 11 {
		t.Fatalf("history holds %d messages, want 11", got)
	}
	// An ephemeral room starts over: new epoch, its old position not recovered.
	if jr := back.join("scratch-1", &hubbubv1.StreamPosition{Offset: scratch.GetOffset(), Epoch: scratch.GetEpoch()}); jr.GetRecovered() || jr.GetPosition().GetEpoch() == scratch.GetEpoch() {
		t.Fatalf("ephemeral room after restart: recovered=%v position %v", jr.GetRecovered(), jr.GetPosition())
	}

	// A wiped store is real loss: a new epoch, and the client is told.
	p = restartProcess(t, p, false, "--data-dir", t.TempDir())
	c := connect(t, p.URL, wire.Proto, "after-wipe")
	if jr := c.join("diary", jr.GetPosition()); jr.GetRecovered() || jr.GetPosition().GetEpoch() == seen.GetEpoch() {
		t.Fatalf("after a wipe: recovered=%v position %v", jr.GetRecovered(), jr.GetPosition())
	}
}

// kill -9 while clients publish: the store file is intact, every
// acknowledged message is there at its offset, offsets are gapless and
// publishing continues in the same epoch.
func TestEmbeddedStoreSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	p := startProcess(t, "--data-dir", dir, "--history-size", "100000")
	const publishers, rooms = 6, 3
	type ack struct {
		room, text string
		offset     uint64
	}
	var mu sync.Mutex
	var acks []ack
	epochs := map[string]string{}
	var wg sync.WaitGroup
	for w := 0; w < publishers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, err := rawConnect(p.URL)
			if err != nil {
				t.Error(err)
				return
			}
			defer ws.Close()
			room := fmt.Sprint("crash-", w%rooms)
			for i := 0; i < 5000; i++ { // bounded; the kill ends it sooner
				text := fmt.Sprintf("w%d-%d", w, i)
				r, err := rawRequest(ws, uint64(i+10), publishFrame(room, text, ""))
				if err != nil {
					return // the server died
				}
				if r.GetPublish() == nil {
					t.Errorf("publish: %v", r)
					return
				}
				mu.Lock()
				acks = append(acks, ack{room, text, r.GetPublish().GetOffset()})
				epochs[room] = r.GetPublish().GetEpoch()
				mu.Unlock()
			}
		}()
	}
	eventually(t, "300 acknowledged publishes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acks) >= 300
	})
	p = restartProcess(t, p, true, "--data-dir", dir, "--history-size", "100000")
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d publishes acknowledged before kill -9", len(acks))

	c := connect(t, p.URL, wire.Proto, "checker")
	stored := map[string]map[uint64]string{}
	for r := 0; r < rooms; r++ {
		room := fmt.Sprint("crash-", r)
		msgs, pos := readAll(t, c, room)
		if pos.GetEpoch() != epochs[room] {
			t.Fatalf("%s: epoch %s after kill -9, was %s", room, pos.GetEpoch(), epochs[room])
		}
		stored[room] = map[uint64]string{}
		texts := map[string]bool{}
		for i, m := range msgs {
			if m.GetOffset() != uint64(i+1) {
				t.Fatalf("%s: message %d has offset %d (gap)", room, i, m.GetOffset())
			}
			if texts[m.GetBody().GetText()] {
				t.Fatalf("%s: %q stored twice", room, m.GetBody().GetText())
			}
			texts[m.GetBody().GetText()] = true
			stored[room][m.GetOffset()] = m.GetBody().GetText()
		}
		if uint64(len(msgs)) != pos.GetOffset() {
			t.Fatalf("%s: %d messages up to offset %d", room, len(msgs), pos.GetOffset())
		}
		if r := c.publish(room, "after"); r.GetOffset() != pos.GetOffset()+1 || r.GetEpoch() != epochs[room] {
			t.Fatalf("%s: publish after restart %v, want offset %d", room, r, pos.GetOffset()+1)
		}
	}
	for _, a := range acks {
		if got := stored[a.room][a.offset]; got != a.text {
			t.Fatalf("acknowledged %q at %s/%d; the store has %q", a.text, a.room, a.offset, got)
		}
	}
}

// readAll pages through a room's whole history.
func readAll(t *testing.T, c *client, room string) ([]*hubbubv1.Message, *hubbubv1.StreamPosition) {
	t.Helper()
	var out []*hubbubv1.Message
	var after uint64
	for {
		r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: room, SinceOffset: after}}})
		h := r.GetHistory()
		if h == nil {
			t.Fatalf("history: %v", r)
		}
		out = append(out, h.GetMessages()...)
		if len(h.GetMessages()) == 0 || h.GetMessages()[len(h.GetMessages())-1].GetOffset() >= h.GetPosition().GetOffset() {
			return out, h.GetPosition()
		}
		after = h.GetMessages()[len(h.GetMessages())-1].GetOffset()
	}
}

// recorder is a strict subscriber: it joins rooms over raw sockets,
// reconnects through the nodes in turn, rejoins with the last position it
// saw and checks that every message (recovered or live) is the next offset
// of the room's one epoch: no gap, no duplicate, never "not recovered".
type recorder struct {
	name  string
	urls  []string
	rooms []string
	enc   wire.Encoding

	mu         sync.Mutex
	pos        map[string]*hubbubv1.StreamPosition
	got        map[string]map[uint64]string
	problems   []string
	connects   int
	recoveries int
}

func newRecorder(name string, urls, rooms []string) *recorder {
	return &recorder{name: name, urls: urls, rooms: rooms, enc: wire.Proto, pos: map[string]*hubbubv1.StreamPosition{}, got: map[string]map[uint64]string{}}
}

func (r *recorder) problem(format string, args ...any) {
	r.problems = append(r.problems, r.name+": "+fmt.Sprintf(format, args...))
}

// deliver records m; called with r.mu held.
func (r *recorder) deliver(m *hubbubv1.Message) {
	p := r.pos[m.GetRoom()]
	switch {
	case p == nil:
		r.problem("%s: message %d before the join reply", m.GetRoom(), m.GetOffset())
		return
	case m.GetEpoch() != p.GetEpoch():
		r.problem("%s: epoch %s after %s", m.GetRoom(), m.GetEpoch(), p.GetEpoch())
	case m.GetOffset() <= p.GetOffset():
		r.problem("%s: duplicate offset %d (at %d)", m.GetRoom(), m.GetOffset(), p.GetOffset())
		return
	case m.GetOffset() != p.GetOffset()+1:
		r.problem("%s: gap %d..%d", m.GetRoom(), p.GetOffset()+1, m.GetOffset()-1)
	}
	r.pos[m.GetRoom()] = &hubbubv1.StreamPosition{Offset: m.GetOffset(), Epoch: m.GetEpoch()}
	r.got[m.GetRoom()][m.GetOffset()] = m.GetBody().GetText()
}

func (r *recorder) run(ctx context.Context) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		r.session(ctx, r.urls[attempt%len(r.urls)])
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// session is one connection: join every room, then read until it ends.
func (r *recorder) session(ctx context.Context, url string) {
	ws, err := rawConnectEnc(url, r.enc)
	if err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	defer ws.Close()
	r.mu.Lock()
	r.connects++
	joins := map[uint64]string{}
	for i, room := range r.rooms {
		id := uint64(100 + i)
		joins[id] = room
		f := &hubbubv1.ClientFrame{Id: id, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room, Since: r.pos[room]}}}
		b, _ := wire.Marshal(f, r.enc)
		if ws.WriteMessage(messageType(r.enc), b) != nil {
			r.mu.Unlock()
			return
		}
	}
	r.mu.Unlock()
	for {
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		f, err := wire.DecodeServerFrame(data, r.enc)
		if err != nil {
			r.mu.Lock()
			r.problem("decode: %v", err)
			r.mu.Unlock()
			return
		}
		r.mu.Lock()
		switch {
		case joins[f.GetId()] != "":
			room := joins[f.GetId()]
			jr := f.GetJoin()
			switch {
			case jr == nil:
				// refused for now (room moving, node not ready): reconnect and retry
				r.mu.Unlock()
				return
			case r.pos[room] == nil:
				r.pos[room] = jr.GetPosition()
				r.got[room] = map[uint64]string{}
			default:
				if !jr.GetRecovered() {
					r.problem("%s: not recovered from %v (room at %v)", room, r.pos[room], jr.GetPosition())
				}
				r.recoveries++
				for _, m := range jr.GetMessages() {
					r.deliver(m)
				}
				if p := r.pos[room]; jr.GetRecovered() && p.GetOffset() != jr.GetPosition().GetOffset() {
					r.problem("%s: recovered up to %d, room at %d", room, p.GetOffset(), jr.GetPosition().GetOffset())
				}
			}
		case f.GetMessage() != nil:
			r.deliver(f.GetMessage())
		}
		r.mu.Unlock()
	}
}

func (r *recorder) offset(room string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos[room].GetOffset()
}

// Three nodes sharing Redis: clients publish into rooms while a third node
// joins (rooms move), a node is killed with SIGKILL (its rooms and
// connections die), comes back, and another leaves with SIGTERM. Every acknowledged message is in its room's stream
// exactly once, offsets are gapless, and every subscriber, whichever node it
// was on, saw each room's stream exactly once and in order, recovering across
// every reconnect.
func TestClusterDurableHistoryWithRedis(t *testing.T) {
	redisURL := testredis.Start(t)
	manage := []string{freePort(t), freePort(t), freePort(t)}
	seeds := strings.Join(manage, ",")
	addrs := []string{freePort(t), freePort(t), freePort(t)}
	urls := make([]string, 3)
	for i, a := range addrs {
		urls[i] = "ws://" + a + "/ws"
	}
	start := func(i int) *serverProcess {
		_, port, _ := net.SplitHostPort(manage[i])
		p := startProcess(t, "--listen", addrs[i], "--cluster-provider", "automanaged", "--cluster-bind", freePort(t),
			"--cluster-automanage-port", port, "--cluster-seeds", seeds,
			"--history-store", "redis", "--redis-url", redisURL, "--history-size", "100000")
		eventually(t, "node ready", func() bool {
			code, err := httpGet(httpBase(p.URL) + "/readyz")
			return err == nil && code == 200
		})
		return p
	}
	nodes := []*serverProcess{start(0), start(1)}

	rooms := make([]string, 8)
	for i := range rooms {
		rooms[i] = fmt.Sprint("durable-", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Each subscriber starts on a different node and goes round all three.
	recorders := startRecorders(t, ctx, 4, rooms, func(i int) []string { return []string{urls[i%2], urls[(i+1)%2], urls[2]} },
		func(int) wire.Encoding { return wire.Proto })
	pubs := startPublishers(t, ctx, 4, rooms, 3*time.Millisecond, func(w int) hubclient.Config {
		return hubclient.Config{URL: urls[w%2], URLs: []string{urls[(w+1)%2], urls[2]}}
	})
	count := pubs.count

	eventually(t, "publishing under way", func() bool { return count() >= 100 })
	nodes = append(nodes, start(2)) // rooms move to the new node
	joinedAt := count()
	eventually(t, "publishing after the join", func() bool { return count() >= joinedAt+200 })
	killedAt := count()
	if err := nodes[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "publishing after the kill", func() bool { return count() >= killedAt+200 })
	// A rolling restart: node 0 comes back (rooms move to it), then node 1
	// leaves gracefully (SIGTERM: its rooms store what they accepted and stop).
	nodes[0] = start(0)
	rejoinedAt := count()
	eventually(t, "publishing after node 0 came back", func() bool { return count() >= rejoinedAt+200 })
	if err := nodes[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	leftAt := count()
	eventually(t, "publishing after node 1 left", func() bool { return count() >= leftAt+200 })
	pubs.halt()
	t.Logf("acknowledgements: node 2 joined after %d, node 0 was killed after %d and came back after %d, node 1 left after %d; %d in all",
		joinedAt, killedAt, rejoinedAt, leftAt, count())
	if t.Failed() {
		return
	}
	streams := checkStreams(t, ctx, redisURL, rooms, pubs.acks)
	connects, recoveries := recorders.check(t, rooms, streams)
	t.Logf("%d acknowledged messages in %d rooms; subscribers connected %d times and recovered %d times", len(pubs.acks), len(rooms), connects, recoveries)
	if recoveries == 0 {
		t.Fatal("no subscriber had to recover: the test moved no room")
	}
}

// The store going away costs availability, never data: publishes and new
// rooms get a temporary UNAVAILABLE error (counted), nothing half-written
// shows up, and once Redis is back a retry with the same message id is
// accepted once and the stream continues without a gap in the same epoch.
func TestStoreOutage(t *testing.T) {
	rs := testredis.New(t)
	ctx := context.Background()
	st, err := store.OpenRedis(ctx, store.RedisOptions{URL: rs.URL}, store.Retention{MaxLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() }) // after the server's shutdown
	s := startServer(t, actors.Config{Room: actors.RoomConfig{Store: st, StoreTimeout: 2 * time.Second}}, transport.Config{})
	sub := connect(t, s.URL, wire.Proto, "sub")
	epoch := sub.join("outage", nil).GetPosition().GetEpoch()
	pub := connect(t, s.URL, wire.JSON, "pub")
	for i := 1; i <= 3; i++ {
		pub.publish("outage", fmt.Sprint("m", i))
	}

	rs.Stop()
	r := pub.request(publishFrame("outage", "m4", "id-4"))
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !r.GetError().GetTemporary() {
		t.Fatalf("publish with the store down: %v", r)
	}
	j := pub.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "never-loaded"}}})
	if errCode(j) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !j.GetError().GetTemporary() {
		t.Fatalf("joining a new room with the store down: %v", j)
	}
	// A read mark cannot be stored: a temporary error, to send again.
	if m := sub.request(markFrame("outage", 3, epoch, true)); errCode(m) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !m.GetError().GetTemporary() {
		t.Fatalf("a read mark with the store down: %v", m)
	}
	if s.node.Counters().StoreErrors.Load() < 2 {
		t.Fatalf("store errors counted: %d", s.node.Counters().StoreErrors.Load())
	}

	rs.Restart()
	var reply *hubbubv1.PublishReply
	eventually(t, "publishing again", func() bool {
		r := pub.request(publishFrame("outage", "m4", "id-4"))
		reply = r.GetPublish()
		return reply != nil
	})
	if reply.GetOffset() != 4 || reply.GetEpoch() != epoch {
		t.Fatalf("after the outage: %v, want offset 4 in epoch %s", reply, epoch)
	}
	if again := pub.request(publishFrame("outage", "m4", "id-4")).GetPublish(); !again.GetDuplicate() || again.GetOffset() != 4 {
		t.Fatalf("retry: %v", again)
	}
	for i := 1; i <= 4; i++ {
		if m := sub.nextMessage(); m.GetOffset() != uint64(i) || m.GetBody().GetText() != fmt.Sprint("m", i) {
			t.Fatalf("member got %v, want m%d", m, i)
		}
	}
	stored, err := st.Read(ctx, "outage", 0, 0)
	if err != nil || len(stored) != 4 {
		t.Fatalf("stream holds %d messages (%v), want 4", len(stored), err)
	}
	// The read mark sent again is stored (with the one refused during the outage).
	if m := sub.request(markFrame("outage", 2, epoch, false)); m.GetAck().GetMarks().GetReadOffset() != 3 {
		t.Fatalf("marks after the outage: %v", m)
	}
	if marks, err := st.LoadMarks(ctx, "outage"); err != nil || marks["sub"].Read != 3 || marks["sub"].Ack != 3 {
		t.Fatalf("stored marks after the outage: %v %v", marks, err)
	}
	pub.join("never-loaded", nil)
}

// Fencing: when another activation of a room wrote to the store (a move
// racing with this node), this activation's next append is refused; its
// publisher gets a temporary error, its members are told the room moved
// (4004), and the room reloads: the retry lands after the other writer's
// message, with no offset written twice.
func TestStaleRoomActivationIsFenced(t *testing.T) {
	st, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s := startServer(t, actors.Config{Room: actors.RoomConfig{Store: st}}, transport.Config{})
	member := connect(t, s.URL, wire.Proto, "member")
	member.join("fenced", nil)
	pub := connect(t, s.URL, wire.Proto, "pub")
	first := pub.publish("fenced", "one")

	// The other activation appends offset 2.
	other := &hubbubv1.Message{Room: "fenced", Offset: 2, Epoch: first.GetEpoch(), TimeUnixMs: time.Now().UnixMilli(),
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "from elsewhere"}}}
	if err := st.Append(context.Background(), "fenced", first.GetEpoch(), []*hubbubv1.Message{other}); err != nil {
		t.Fatal(err)
	}
	r := pub.request(publishFrame("fenced", "two", "id-two"))
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !r.GetError().GetTemporary() {
		t.Fatalf("publish on the stale activation: %v", r)
	}
	if code := closeCode(member.waitClosed()); code != wire.CloseRoomMoved {
		t.Fatalf("member closed with %d, want %d", code, wire.CloseRoomMoved)
	}
	if s.node.Counters().StoreConflicts.Load() != 1 {
		t.Fatalf("conflicts counted: %d", s.node.Counters().StoreConflicts.Load())
	}
	var again *hubbubv1.PublishReply
	eventually(t, "publishing after the reload", func() bool {
		again = pub.request(publishFrame("fenced", "two", "id-two")).GetPublish()
		return again != nil
	})
	if again.GetOffset() != 3 || again.GetEpoch() != first.GetEpoch() {
		t.Fatalf("retry: %v, want offset 3 in epoch %s", again, first.GetEpoch())
	}
	back := connect(t, s.URL, wire.Proto, "back")
	jr := back.join("fenced", &hubbubv1.StreamPosition{Offset: 1, Epoch: first.GetEpoch()})
	if !jr.GetRecovered() || len(jr.GetMessages()) != 2 || jr.GetMessages()[0].GetBody().GetText() != "from elsewhere" {
		t.Fatalf("rejoin: recovered=%v %v", jr.GetRecovered(), jr.GetMessages())
	}
}
