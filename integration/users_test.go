package integration

import (
	"context"
	"testing"
	"time"

	connectrpc "connectrpc.com/connect"

	hubclient "github.com/hubbub-chat/hubbub/client"
	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// userDevice connects a raw client as user (development mode: the name is
// the user) asking for its personal stream, and returns it with the join
// reply of the stream, which follows the connect reply with id 0.
func userDevice(t *testing.T, url, user string, since map[string]*hubbubv1.StreamPosition) (*client, *hubbubv1.JoinReply) {
	t.Helper()
	c := dial(t, url, wire.Proto)
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{
		Name: user, UserStream: true, Since: since}}})
	if r.GetConnect().GetUserStream() != "@"+user {
		t.Fatalf("connect as %s: %v", user, r)
	}
	f := c.nextPush()
	if f.GetJoin().GetRoom() != "@"+user {
		t.Fatalf("%s's personal stream join: %v", user, f)
	}
	return c, f.GetJoin()
}

// A user's devices on three nodes all receive a direct message (from a
// client and from the server API) at once; a fourth device that was away
// recovers exactly what it missed when it reconnects; the personal stream is
// the user's alone.
func TestUserStreamsAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3, apiArgs(t)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Three devices of alice, one per node, with the Go client.
	streams := make([]chan *hubclient.Subscription, 3)
	for i, n := range nodes {
		streams[i] = make(chan *hubclient.Subscription, 1)
		ch := streams[i]
		startClient(ctx, t, hubclient.Config{URL: n.URL, Name: "alice", UserStream: true, Encoding: []wire.Encoding{wire.Proto, wire.JSON, wire.Proto}[i],
			OnServerJoin: func(s *hubclient.Subscription) { ch <- s }})
	}
	devices := make([]*hubclient.Subscription, 3)
	for i, ch := range streams {
		select {
		case devices[i] = <-ch:
		case <-time.After(waitFor):
			t.Fatalf("device %d: no personal stream", i)
		}
		if devices[i].Room() != "@alice" {
			t.Fatalf("device %d joined %q", i, devices[i].Room())
		}
	}
	// A fourth device connects, sees where the stream is, and goes away.
	away, jr := userDevice(t, nodes[0].URL, "alice", nil)
	seen := jr.GetPosition()
	away.close()

	bob := startClient(ctx, t, hubclient.Config{URL: nodes[1].URL, Name: "bob"})
	r, err := bob.Direct(ctx, "alice", &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "lunch?"}}, nil)
	if err != nil || r.GetRoom() != "@alice" || r.GetOffset() != seen.GetOffset()+1 {
		t.Fatalf("direct: %v %v", r, err)
	}
	api := apiClient(nodes[2].API, pubKey)
	sr, err := api.SendToUser(ctx, connectrpc.NewRequest(&apiv1.SendToUserRequest{User: "alice", MessageId: "bill-7",
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "invoice ready"}}}))
	if err != nil || sr.Msg.GetOffset() != r.GetOffset()+1 || sr.Msg.GetRoom() != "@alice" {
		t.Fatalf("SendToUser: %v %v", sr, err)
	}
	again, err := api.SendToUser(ctx, connectrpc.NewRequest(&apiv1.SendToUserRequest{User: "alice", MessageId: "bill-7",
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "invoice ready"}}}))
	if err != nil || !again.Msg.GetDuplicate() || again.Msg.GetOffset() != sr.Msg.GetOffset() {
		t.Fatalf("SendToUser retry: %v %v", again, err)
	}
	for i, d := range devices {
		m := waitEvent(t, d, hubclient.EventMessage).Message
		if m.GetBody().GetText() != "lunch?" || m.GetSender().GetUser() != "bob" || m.GetRoom() != "@alice" {
			t.Fatalf("device %d got %v", i, m)
		}
		m = waitEvent(t, d, hubclient.EventMessage).Message
		if m.GetBody().GetText() != "invoice ready" || m.GetSender().GetServer() != "billing" || m.GetOffset() != sr.Msg.GetOffset() {
			t.Fatalf("device %d got %v", i, m)
		}
	}

	// The fourth device comes back on another node: exactly the two it missed.
	back, jr := userDevice(t, nodes[2].URL, "alice", map[string]*hubbubv1.StreamPosition{"@alice": seen})
	if !jr.GetRecovered() || len(jr.GetMessages()) != 2 || jr.GetMessages()[0].GetBody().GetText() != "lunch?" ||
		jr.GetMessages()[1].GetOffset() != sr.Msg.GetOffset() {
		t.Fatalf("recovery: recovered %v, %d messages", jr.GetRecovered(), len(jr.GetMessages()))
	}
	// Alice reads her own stream's history; nobody joins, publishes to or reads another's.
	if h := back.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "@alice"}}}); len(h.GetHistory().GetMessages()) != 2 {
		t.Fatalf("own history: %v", h)
	}
	mallory := connect(t, nodes[0].URL, wire.JSON, "mallory")
	for _, f := range []*hubbubv1.ClientFrame{
		{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "@alice"}}},
		{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "@alice"}}},
		publishFrame("@alice", "hi", ""),
	} {
		if r := mallory.request(f); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
			t.Fatalf("%v: %v", f, r)
		}
	}
	bad := mallory.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Direct{Direct: &hubbubv1.DirectRequest{User: "alice"}}})
	if errCode(bad) != hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST {
		t.Fatalf("direct without a body: %v", bad)
	}
}

// Connections per user are counted across the cluster by the user's actor,
// and the server API's Disconnect reaches every node.
func TestUserConnectionCapAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3, append(apiArgs(t), "--max-conns-per-user", "2")...)
	first, _ := userDevice(t, nodes[0].URL, "carol", nil)
	second, _ := userDevice(t, nodes[1].URL, "carol", nil)
	// A connection that did not ask for the stream counts too: it joins the
	// user's room to hold its slot.
	third := dial(t, nodes[2].URL, wire.Proto)
	r := third.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "carol"}}})
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED {
		t.Fatalf("third connection of carol: %v", r)
	}
	if code := closeCode(third.waitClosed()); code != wire.CloseTooManyConnections {
		t.Fatalf("third connection closed with %d", code)
	}
	// Another user is not affected.
	connect(t, nodes[2].URL, wire.Proto, "dave")

	// One of carol's connections goes: a slot is free again, on any node.
	first.close()
	eventually(t, "a free slot for carol", func() bool {
		c := dial(t, nodes[2].URL, wire.Proto)
		defer c.close()
		r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "carol"}}})
		return r.GetConnect() != nil
	})
	fourth, _ := userDevice(t, nodes[2].URL, "carol", nil)

	var d apiv1.DisconnectResponse
	apiOK(t, nodes[0].API, adminKey, "Disconnect", `{"user":"carol","reason":"account closed"}`, &d)
	if d.GetConnections() != 2 {
		t.Fatalf("disconnect closed %d connections", d.GetConnections())
	}
	for _, c := range []*client{second, fourth} {
		if code := closeCode(c.waitClosed()); code != wire.CloseDisconnectedFinal {
			t.Fatalf("closed with %d", code)
		}
	}
}
