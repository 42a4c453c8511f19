package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hubbub-chat/hubbub/actors"
	hubclient "github.com/hubbub-chat/hubbub/client"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

// compactConn is a raw connection that asked for compact pushes; it keeps
// each push's bytes to measure them.
type compactConn struct {
	t   *testing.T
	ws  *websocket.Conn
	enc wire.Encoding
	id  uint64
}

func dialCompact(t *testing.T, url string, enc wire.Encoding, name string) *compactConn {
	t.Helper()
	d := *websocket.DefaultDialer
	d.Subprotocols = []string{enc.String()}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	c := &compactConn{t: t, ws: ws, enc: enc}
	if r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: name, Compact: true}}}); r.GetConnect() == nil {
		t.Fatalf("connect: %v", r)
	}
	return c
}

func (c *compactConn) request(f *hubbubv1.ClientFrame) *hubbubv1.ServerFrame {
	c.t.Helper()
	c.id++
	r, err := rawRequestEnc(c.ws, c.enc, c.id, f)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

func (c *compactConn) join(room string) uint32 {
	c.t.Helper()
	j := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}}).GetJoin()
	if j == nil || j.GetAlias() == 0 {
		c.t.Fatalf("join %s: no alias in %v", room, j)
	}
	return j.GetAlias()
}

// next returns the next compact message push and its size on the wire,
// skipping other pushes (presence diffs stay full frames).
func (c *compactConn) next() (*hubbubv1.CompactMessage, int) {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(waitFor))
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatal(err)
		}
		f, err := wire.DecodeServerFrame(data, c.enc)
		if err != nil {
			c.t.Fatalf("decode %q: %v", data, err)
		}
		if f.GetMessage() != nil {
			c.t.Fatalf("a full message push on a compact connection: %v", f)
		}
		if m := f.GetCompactMessage(); m != nil {
			return m, len(data)
		}
	}
}

// A connection that asks for compact pushes gets every message as a
// CompactMessage naming the room by the alias its join reply gave, with the
// same offset, sender, body, time, id and key as a full member sees, in
// fewer bytes; aliases are reused only after a leave; other pushes stay
// full frames.
func TestCompactPushes(t *testing.T) {
	for _, enc := range []wire.Encoding{wire.Proto, wire.JSON} {
		t.Run(enc.String(), func(t *testing.T) { testCompactPushes(t, enc) })
	}
}

func testCompactPushes(t *testing.T, enc wire.Encoding) {
	s := startServer(t, actors.Config{}, transport.Config{})
	full := connect(t, s.URL, enc, "full")
	full.join("ca", nil)
	full.join("cb", nil)
	cc := dialCompact(t, s.URL, enc, "compact")
	a, b := cc.join("ca"), cc.join("cb")
	if a == b {
		t.Fatalf("rooms ca and cb share alias %d", a)
	}
	pub := connect(t, s.URL, wire.Proto, "publisher")
	text := strings.Repeat("t", 128)
	data, _ := structpb.NewValue(map[string]any{"price": 101.5, "sym": "HBB"})
	publishes := []struct {
		room string
		req  *hubbubv1.PublishRequest
	}{
		{"ca", &hubbubv1.PublishRequest{Room: "ca", MessageId: "m-1", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: text}}}},
		{"cb", &hubbubv1.PublishRequest{Room: "cb", Key: "HBB", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Data{Data: data}}}},
		{"ca", &hubbubv1.PublishRequest{Room: "ca", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: []byte{0, 1, 2, 255}}}}},
	}
	for _, p := range publishes {
		if r := pub.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: p.req}}); r.GetPublish() == nil {
			t.Fatalf("publish: %v", r)
		}
	}
	aliasOf := map[string]uint32{"ca": a, "cb": b}
	for i, p := range publishes {
		want := full.nextMessage()
		got, size := cc.next()
		if got.GetAlias() != aliasOf[p.room] || want.GetRoom() != p.room {
			t.Fatalf("push %d: alias %d for room %s (aliases %v)", i, got.GetAlias(), want.GetRoom(), aliasOf)
		}
		if got.GetOffset() != want.GetOffset() || got.GetUser() != want.GetSender().GetUser() || got.GetUser() != "publisher" ||
			got.GetTimeUnixMs() != want.GetTimeUnixMs() || got.GetMessageId() != want.GetMessageId() || got.GetKey() != want.GetKey() {
			t.Fatalf("push %d: compact %v, full %v", i, got, want)
		}
		var body *hubbubv1.Body
		switch k := got.GetBody().(type) {
		case *hubbubv1.CompactMessage_Text:
			body = &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: k.Text}}
		case *hubbubv1.CompactMessage_Data:
			body = &hubbubv1.Body{Kind: &hubbubv1.Body_Data{Data: k.Data}}
		case *hubbubv1.CompactMessage_Binary:
			body = &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: k.Binary}}
		}
		if !proto.Equal(body, want.GetBody()) {
			t.Fatalf("push %d: body %v, want %v", i, body, want.GetBody())
		}
		if i == 0 {
			fullSize := len(mustMarshal(t, &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Message{Message: want}}, enc))
			t.Logf("%v: a 128-byte text message is %d bytes compact, %d full", enc, size, fullSize)
			if size >= fullSize || (enc == wire.JSON && size > 239) {
				t.Fatalf("compact push of %d bytes against %d full", size, fullSize)
			}
		}
	}
	// Leaving frees ca's alias (cc was its only compact member); the next
	// room joined takes it, and its pushes are told apart by the join reply.
	if r := cc.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "ca"}}}); r.GetLeave() == nil {
		t.Fatalf("leave: %v", r)
	}
	if c := cc.join("cc"); c != a {
		t.Fatalf("room cc got alias %d, want the freed %d", c, a)
	}
	pub.publish("ca", "not for cc")
	pub.publish("cc", "for cc")
	pub.publish("cb", "for cb")
	if m, _ := cc.next(); m.GetAlias() != a || m.GetText() != "for cc" || m.GetOffset() != 1 {
		t.Fatalf("after the alias moved: %v", m)
	}
	if m, _ := cc.next(); m.GetAlias() != b || m.GetText() != "for cb" || m.GetOffset() != 2 {
		t.Fatalf("cb after the alias moved: %v", m)
	}
}

func mustMarshal(t *testing.T, f *hubbubv1.ServerFrame, enc wire.Encoding) []byte {
	t.Helper()
	b, err := wire.Marshal(f, enc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The Go client with Compact set hands the application the same Messages as
// a client without it (but for the sender's client id and info), in both
// encodings, across three nodes where each room lives on one of them.
func TestClusterCompactGoClient(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rooms := []string{"cx-1", "cx-2", "cx-3", "cx-4"}
	var subs []map[string]*hubclient.Subscription
	for i, cfg := range []hubclient.Config{
		{URL: nodes[0].URL, Compact: true, Encoding: wire.Proto, Name: "compact-proto"},
		{URL: nodes[1].URL, Compact: true, Encoding: wire.JSON, Name: "compact-json"},
		{URL: nodes[2].URL, Encoding: wire.Proto, Name: "full"},
	} {
		m := map[string]*hubclient.Subscription{}
		c := startClient(ctx, t, cfg)
		for _, r := range rooms {
			s, err := c.Join(ctx, r)
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			m[r] = s
		}
		subs = append(subs, m)
	}
	pub := startClient(ctx, t, hubclient.Config{URL: nodes[2].URL, Name: "pub"})
	const perRoom = 3
	for k := 0; k < perRoom; k++ {
		for _, r := range rooms {
			if _, err := pub.PublishText(ctx, r, fmt.Sprintf("%s #%d", r, k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range rooms {
		for k := 0; k < perRoom; k++ {
			want := waitEvent(t, subs[2][r], hubclient.EventMessage).Message
			want = proto.Clone(want).(*hubbubv1.Message)
			want.Sender.ClientId, want.Sender.Info = "", nil
			if want.GetBody().GetText() != fmt.Sprintf("%s #%d", r, k) || want.GetOffset() != uint64(k+1) {
				t.Fatalf("full client, room %s: %v", r, want)
			}
			for i := 0; i < 2; i++ {
				got := waitEvent(t, subs[i][r], hubclient.EventMessage).Message
				if !proto.Equal(got, want) {
					t.Fatalf("compact client %d, room %s: %v, want %v", i, r, got, want)
				}
			}
		}
	}
}

// A compact Go client keeps its rooms apart across kill -9 and restart of
// its server: the new connection's join replies give new aliases, missed
// messages come back recovered (full Messages), later ones compact.
func TestCompactGoClientAcrossRestart(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startProcess(t, "--listen", addr, "--data-dir", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	retry := func(c hubclient.Config) hubclient.Config {
		c.MinReconnectDelay, c.MaxReconnectDelay = 50*time.Millisecond, 200*time.Millisecond
		return c
	}
	sub := startClient(ctx, t, retry(hubclient.Config{URL: p.URL, Compact: true, Encoding: wire.JSON, Name: "sub"}))
	pub := startClient(ctx, t, retry(hubclient.Config{URL: p.URL, Name: "pub"}))
	rooms := []string{"rs-a", "rs-b", "rs-c"}
	subs := map[string]*hubclient.Subscription{}
	for _, r := range rooms {
		s, err := sub.Join(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		subs[r] = s
	}
	expect := func(from, to int) {
		t.Helper()
		for _, r := range rooms {
			for k := from; k < to; k++ {
				m := waitEvent(t, subs[r], hubclient.EventMessage).Message
				if m.GetRoom() != r || m.GetOffset() != uint64(k+1) || m.GetBody().GetText() != fmt.Sprintf("%s %d", r, k) {
					t.Fatalf("room %s message %d: %v", r, k, m)
				}
			}
		}
	}
	publish := func(from, to int) {
		t.Helper()
		for k := from; k < to; k++ {
			for _, r := range rooms {
				if _, err := pub.PublishText(ctx, r, fmt.Sprintf("%s %d", r, k)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	publish(0, 2)
	expect(0, 2)
	restartProcess(t, p, true, "--data-dir", dir)
	publish(2, 4)
	expect(2, 4)
}

func startClient(ctx context.Context, t *testing.T, cfg hubclient.Config) *hubclient.Client {
	t.Helper()
	c := hubclient.New(cfg)
	t.Cleanup(func() { c.Close() })
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}
