package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hubbub-chat/hubbub/actors"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/server"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

var encodings = []wire.Encoding{wire.Proto, wire.JSON}

// replies reads until every id has its reply; other frames stay queued for
// later reads.
func (c *client) replies(ids ...uint64) map[uint64]*hubbubv1.ServerFrame {
	c.t.Helper()
	want := map[uint64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	got := map[uint64]*hubbubv1.ServerFrame{}
	var skipped []*hubbubv1.ServerFrame
	defer func() { c.pending = append(skipped, c.pending...) }()
	for len(got) < len(want) {
		f := c.read(waitFor)
		if f == nil {
			c.t.Fatalf("connection ended with %d of %d replies: %v", len(got), len(want), c.err())
		}
		if !want[f.GetId()] {
			skipped = append(skipped, f)
			continue
		}
		if got[f.GetId()] != nil {
			c.t.Fatalf("two replies to %d", f.GetId())
		}
		got[f.GetId()] = f
	}
	return got
}

// Numeric fields take any value: out-of-range positions get the documented
// empty answer at once, a position without its epoch gets BAD_REQUEST naming
// the field, and no room panics or answers late.
func TestNumericFieldsAnsweredAtOnce(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	for _, enc := range encodings {
		t.Run(enc.String(), func(t *testing.T) {
			c := connect(t, s.URL, enc, "nums")
			room := "nums-" + enc.String()
			pos := c.join(room, nil).GetPosition()
			c.publish(room, "one")
			start := time.Now()
			for _, since := range []uint64{1 << 63, 1<<63 + 1, ^uint64(0), ^uint64(0) - 1, 2} {
				for _, reverse := range []bool{false, true} {
					r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{
						Room: room, SinceOffset: since, Limit: ^uint32(0), Reverse: reverse}}})
					if r.GetHistory() == nil || len(r.GetHistory().GetMessages()) != 0 || r.GetHistory().GetPosition().GetOffset() != 1 {
						t.Fatalf("history since %d reverse %v: %v", since, reverse, r)
					}
				}
			}
			other := connect(t, s.URL, enc, "nums2")
			j := other.join(room, &hubbubv1.StreamPosition{Offset: ^uint64(0), Epoch: pos.GetEpoch()})
			if j.GetRecovered() || j.GetPosition().GetOffset() != 1 {
				t.Fatalf("join from beyond the end: %v", j)
			}
			r := other.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{
				Room: room + "x", Since: &hubbubv1.StreamPosition{Offset: 5}}}})
			if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST || r.GetError().GetTemporary() ||
				!strings.Contains(r.GetError().GetMessage(), "join.since.epoch") {
				t.Fatalf("offset without epoch: %v", r)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("answers took %v", took)
			}
		})
	}
	if p := s.node.Counters().ActorPanics.Load(); p != 0 {
		t.Fatalf("%d actor panics", p)
	}
}

// burst is a pipelined sequence of every room command, sent without waiting
// for any reply, with what each reply must say when they take effect in order.
func burst(c *client, room string) func(t *testing.T) {
	type step struct {
		f     *hubbubv1.ClientFrame
		check func(*hubbubv1.ServerFrame) bool
	}
	ok := func(r *hubbubv1.ServerFrame) bool { return r.GetError() == nil }
	code := func(want hubbubv1.ErrorCode) func(*hubbubv1.ServerFrame) bool {
		return func(r *hubbubv1.ServerFrame) bool { return errCode(r) == want }
	}
	offset := func(want uint64) func(*hubbubv1.ServerFrame) bool {
		return func(r *hubbubv1.ServerFrame) bool { return r.GetPublish().GetOffset() == want }
	}
	history := func(n int) func(*hubbubv1.ServerFrame) bool {
		return func(r *hubbubv1.ServerFrame) bool {
			return r.GetHistory() != nil && len(r.GetHistory().GetMessages()) == n
		}
	}
	typing := func(on bool) *hubbubv1.ClientFrame {
		return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: room, Typing: on}}}
	}
	hist := &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: room}}}
	steps := []step{
		{&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}}, func(r *hubbubv1.ServerFrame) bool { return r.GetJoin() != nil }},
		{typing(true), func(r *hubbubv1.ServerFrame) bool { return r.GetTyping() != nil }},
		{publishFrame(room, "1", ""), offset(1)},
		{publishFrame(room, "2", ""), offset(2)},
		{hist, history(2)},
		{publishFrame(room, "3", ""), offset(3)},
		{&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: room}}},
			func(r *hubbubv1.ServerFrame) bool { return int(r.GetPresence().GetState().GetMembers()) == 1 }},
		{&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: room}}}, func(r *hubbubv1.ServerFrame) bool { return r.GetLeave() != nil }},
		{typing(true), code(hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED)},
		{&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: room}}}, code(hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED)},
		{&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}}, ok},
		{publishFrame(room, "4", ""), offset(4)},
		{again(hist), history(4)},
		{typing(false), ok},
	}
	ids := make([]uint64, len(steps))
	for i, st := range steps {
		ids[i] = c.send(st.f)
	}
	return func(t *testing.T) {
		t.Helper()
		got := c.replies(ids...)
		for i, st := range steps {
			if r := got[ids[i]]; !st.check(r) {
				t.Fatalf("room %s, step %d (%v): reply %v", room, i, st.f.GetCommand(), r)
			}
		}
	}
}

// again is a new frame with f's command, for sending the same command twice
// (send gives each frame its own id).
func again(f *hubbubv1.ClientFrame) *hubbubv1.ClientFrame {
	return &hubbubv1.ClientFrame{Command: f.GetCommand()}
}

// A connection's commands take effect in the order it sent them, even when
// it sends them back to back without waiting, in both encodings, with
// history in memory or in the embedded store, and right after a connect that
// waits for the user's connection count.
func TestPipelinedCommandsTakeEffectInOrder(t *testing.T) {
	st, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 100, MaxAge: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	servers := map[string]*testServer{
		"memory":   startServer(t, actors.Config{Conn: actors.ConnConfig{MaxConnsPerUser: 5}}, transport.Config{}),
		"embedded": startServer(t, actors.Config{Room: actors.RoomConfig{Store: st}}, transport.Config{}),
	}
	for name, s := range servers {
		for _, enc := range encodings {
			t.Run(name+"/"+enc.String(), func(t *testing.T) {
				c := dial(t, s.URL, enc)
				// connect, then everything else, without waiting
				cid := c.send(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "pipe"}}})
				checks := make([]func(*testing.T), 0, 3)
				for i := 0; i < 3; i++ {
					checks = append(checks, burst(c, fmt.Sprintf("pipe-%s-%d", enc, i)))
				}
				if r := c.replies(cid)[cid]; r.GetConnect() == nil {
					t.Fatalf("connect: %v", r)
				}
				for _, check := range checks {
					check(t)
				}
			})
		}
	}
}

// The same across nodes: a client on one node pipelines commands to rooms
// hosted on every node of a three-node cluster.
func TestClusterPipelinedCommandsTakeEffectInOrder(t *testing.T) {
	nodes := startCluster(t, 3)
	for _, enc := range encodings {
		t.Run(enc.String(), func(t *testing.T) {
			c := connect(t, nodes[0].URL, enc, "pipe")
			var checks []func(*testing.T)
			for i := 0; i < 6; i++ { // six rooms: spread over the nodes by the cluster's placement
				checks = append(checks, burst(c, fmt.Sprintf("cpipe-%s-%d", enc, i)))
			}
			for _, check := range checks {
				check(t)
			}
		})
	}
	hosting := 0
	for _, p := range nodes {
		if sum(scrape(t, httpBase(p.URL)), "hubbub_rooms_active") > 0 {
			hosting++
		}
	}
	if hosting < 2 {
		t.Fatalf("rooms on %d node(s): the test did not cross nodes", hosting)
	}
}

// A connection that never sends connect is closed with 4005 after the
// connect timeout, with a disconnect push saying so; one that connects in
// time stays.
func TestConnectTimeout(t *testing.T) {
	s := startServer(t, actors.Config{Conn: actors.ConnConfig{ConnectTimeout: 300 * time.Millisecond}}, transport.Config{})
	good := connect(t, s.URL, wire.Proto, "good")
	for _, enc := range encodings {
		idle := dial(t, s.URL, enc)
		var disc *hubbubv1.Disconnect
		for f := idle.read(waitFor); f != nil; f = idle.read(waitFor) {
			disc = f.GetDisconnect()
		}
		if code := closeCode(idle.err()); code != wire.CloseConnectTimeout || disc.GetCode() != wire.CloseConnectTimeout ||
			!disc.GetReconnect() || disc.GetReason() != wire.CloseReason(wire.CloseConnectTimeout) {
			t.Fatalf("%v: close %d, disconnect %v", enc, code, disc)
		}
	}
	if r := good.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}}); r.GetPing() == nil {
		t.Fatalf("connected client after the timeout: %v", r)
	}
	if n := s.node.Counters().ConnectTimeouts.Load(); n != 2 {
		t.Fatalf("connect timeouts counted %d", n)
	}
}

// Recovery hands out history, so it needs read: a token that may join but
// not read joins with recovered false and no messages; one that may read
// gets the missed messages.
func TestRecoveryNeedsRead(t *testing.T) {
	s := authServer(t, actors.Config{}, transport.Config{})
	claims := func(read []string) jwt.MapClaims {
		return jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix(),
			"rooms": map[string]any{"join": []string{"*"}, "publish": []string{"*"}, "read": read}}
	}
	reader := dial(t, s.URL, wire.Proto)
	reader.request(connectFrame(token(t, jwt.SigningMethodHS256, testSecret, claims([]string{"*"})), ""))
	pos := reader.join("recov", nil).GetPosition()
	for i := 0; i < 3; i++ {
		reader.publish("recov", fmt.Sprint(i))
	}
	joinOnly := dial(t, s.URL, wire.JSON)
	joinOnly.request(connectFrame(token(t, jwt.SigningMethodHS256, testSecret, claims(nil)), ""))
	j := joinOnly.join("recov", pos)
	if j.GetRecovered() || len(j.GetMessages()) != 0 || j.GetPosition().GetOffset() != 3 {
		t.Fatalf("join-only token recovered: %v", j)
	}
	if r := joinOnly.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "recov"}}}); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("join-only history: %v", r)
	}
	again := dial(t, s.URL, wire.JSON)
	again.request(connectFrame(token(t, jwt.SigningMethodHS256, testSecret, claims([]string{"rec*"})), ""))
	j = again.join("recov", pos)
	if !j.GetRecovered() || len(j.GetMessages()) != 3 {
		t.Fatalf("reader did not recover: %v", j)
	}
}

// --max-message-bytes counts what the user sent: a text's bytes, a binary
// body's bytes, a data body's compact JSON; the same in both encodings, to
// the byte.
func TestMessageSizeLimitIsExact(t *testing.T) {
	const limit = 32 << 10
	s := startServer(t, actors.Config{Conn: actors.ConnConfig{MaxMessageBytes: limit}}, transport.Config{})
	bodies := map[string]func(n int) *hubbubv1.Body{
		"text": func(n int) *hubbubv1.Body {
			return &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: strings.Repeat("é", n/2) + strings.Repeat("x", n%2)}}
		},
		"binary": func(n int) *hubbubv1.Body {
			return &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: make([]byte, n)}}
		},
		"data": func(n int) *hubbubv1.Body { // "xxx…": the quotes count
			return &hubbubv1.Body{Kind: &hubbubv1.Body_Data{Data: structpb.NewStringValue(strings.Repeat("x", n-2))}}
		},
	}
	for _, enc := range encodings {
		c := connect(t, s.URL, enc, "size")
		for kind, body := range bodies {
			for n, want := range map[int]hubbubv1.ErrorCode{limit: 0, limit + 1: hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE} {
				r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: "size", Body: body(n)}}})
				if errCode(r) != want || (want == 0 && r.GetPublish() == nil) {
					t.Fatalf("%v %s of %d bytes: %v", enc, kind, n, r)
				}
			}
		}
	}
}

// /readyz proves the actor system answers: a stuck room mailbox makes the
// node unready (and is counted) until it moves again; /healthz stays a cheap
// liveness check.
func TestReadinessProbesTheActors(t *testing.T) {
	var mu sync.Mutex
	stuck := make(chan struct{})
	blocked := false
	inject := func(kind string, msg any) {
		if p, ok := msg.(*nodev1.RoomPresence); ok && kind == "room" && strings.HasPrefix(p.GetRoom(), " health/") {
			mu.Lock()
			b := blocked
			mu.Unlock()
			if b {
				<-stuck
			}
		}
	}
	s := startServerConfig(t, server.Config{Transport: transport.Config{ReadyTimeout: 200 * time.Millisecond}}, server.Options{Inject: inject})
	base := httpBase(s.URL)
	if code, err := httpGet(base + "/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("readyz before: %d %v", code, err)
	}
	mu.Lock()
	blocked = true
	mu.Unlock()
	if code, _ := httpGet(base + "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with a stuck room: %d", code)
	}
	if code, _ := httpGet(base + "/healthz"); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	mu.Lock()
	blocked = false
	mu.Unlock()
	close(stuck)
	eventually(t, "ready again", func() bool { code, _ := httpGet(base + "/readyz"); return code == http.StatusOK })
	if n := s.node.Counters().ProbeFailures.Load(); n < 1 {
		t.Fatalf("probe failures counted %d", n)
	}
}

// One configuration, one place per setting: what the transport enforces is
// what the connect reply tells the client.
func TestConnectReplyReportsTheTransportSettings(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{PingInterval: 7 * time.Second, MaxFrameBytes: 12345})
	c := dial(t, s.URL, wire.Proto)
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "cfg"}}}).GetConnect()
	if r.GetPingIntervalMs() != 7000 || r.GetMaxFrameBytes() != 12345 {
		t.Fatalf("connect reply %v", r)
	}
	// A frame just over the limit the client was told is refused with 1009.
	c.send(publishFrame("cfg", longString(12345), ""))
	if code := closeCode(c.waitClosed()); code != wire.CloseTooBig {
		t.Fatalf("close %d", code)
	}
}

// A stale room activation never answers with an old position: two nodes
// share one store (each runs its own activation of the room), one falls
// behind while the other publishes, and a client that saw the newer
// messages rejoins on the stale one. The stale activation checks the store,
// answers UNAVAILABLE (temporary), stops and closes its members with 4004;
// the retry recovers exactly the missed messages.
func TestStaleActivationChecksTheStore(t *testing.T) {
	st, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 100, MaxAge: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := actors.Config{Room: actors.RoomConfig{Store: st}}
	a, b := startServer(t, cfg, transport.Config{}), startServer(t, cfg, transport.Config{})
	onA := connect(t, a.URL, wire.Proto, "on-a")
	pos := onA.join("shared", nil).GetPosition()
	onA.publish("shared", "one")
	onB := connect(t, b.URL, wire.JSON, "on-b")
	onB.join("shared", &hubbubv1.StreamPosition{Offset: 1, Epoch: pos.GetEpoch()})
	last := onB.publish("shared", "two") // a's activation does not know this one
	onB.publish("shared", "three")
	reader := connect(t, a.URL, wire.JSON, "reader")
	r := reader.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{
		Room: "shared", Since: &hubbubv1.StreamPosition{Offset: last.GetOffset(), Epoch: last.GetEpoch()}}}})
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !r.GetError().GetTemporary() {
		t.Fatalf("join on the stale activation: %v", r)
	}
	if code := closeCode(onA.waitClosed()); code != wire.CloseRoomMoved {
		t.Fatalf("member of the stale activation closed with %d", code)
	}
	j := reader.join("shared", &hubbubv1.StreamPosition{Offset: last.GetOffset(), Epoch: last.GetEpoch()})
	if !j.GetRecovered() || j.GetPosition().GetOffset() != 3 || len(j.GetMessages()) != 1 || j.GetMessages()[0].GetBody().GetText() != "three" {
		t.Fatalf("retry: %v", j)
	}
	if n := a.node.Counters().StaleRooms.Load(); n != 1 {
		t.Fatalf("stale rooms counted %d", n)
	}
}
