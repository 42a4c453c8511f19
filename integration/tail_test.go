package integration

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	connectrpc "connectrpc.com/connect"

	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	"github.com/hubbub-chat/hubbub/proto/hubbub/api/v1/apiv1connect"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// apiClient is a Connect client of the server API (HTTP/1.1 and JSON, as a browser's) with a key.
func apiClient(base, key string) apiv1connect.ServerAPIClient {
	auth := connectrpc.UnaryInterceptorFunc(func(next connectrpc.UnaryFunc) connectrpc.UnaryFunc {
		return func(ctx context.Context, req connectrpc.AnyRequest) (connectrpc.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+key)
			return next(ctx, req)
		}
	})
	return apiv1connect.NewServerAPIClient(http.DefaultClient, base, connectrpc.WithProtoJSON(),
		connectrpc.WithInterceptors(auth, streamAuth(key)))
}

// streamAuth adds the key to streaming calls.
type streamAuth string

func (k streamAuth) WrapUnary(next connectrpc.UnaryFunc) connectrpc.UnaryFunc { return next }
func (k streamAuth) WrapStreamingClient(next connectrpc.StreamingClientFunc) connectrpc.StreamingClientFunc {
	return func(ctx context.Context, spec connectrpc.Spec) connectrpc.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(k))
		return conn
	}
}
func (k streamAuth) WrapStreamingHandler(next connectrpc.StreamingHandlerFunc) connectrpc.StreamingHandlerFunc {
	return next
}

// tailed receives a Tail stream's responses on a channel.
func tailed(t *testing.T, stream *connectrpc.ServerStreamForClient[apiv1.TailResponse]) <-chan *apiv1.TailResponse {
	ch := make(chan *apiv1.TailResponse, 1000)
	go func() { // owner: the stream; ends when it does
		defer close(ch)
		for stream.Receive() {
			ch <- stream.Msg()
		}
	}()
	t.Cleanup(func() { _ = stream.Close() })
	return ch
}

// nextTail waits for a Tail response.
func nextTail(t *testing.T, ch <-chan *apiv1.TailResponse) *apiv1.TailResponse {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("tail ended")
		}
		return r
	case <-time.After(waitFor):
		t.Fatal("no tail response")
	}
	return nil
}

// tailMessages collects n messages from a Tail stream, failing on a gap.
func tailMessages(t *testing.T, ch <-chan *apiv1.TailResponse, n int) []*apiv1.TailMessage {
	t.Helper()
	var got []*apiv1.TailMessage
	for len(got) < n {
		r := nextTail(t, ch)
		if r.GetGap() {
			t.Fatalf("gap after %d messages: %v", len(got), r)
		}
		got = append(got, r.GetMessages()...)
	}
	return got
}

// tailErr opens a Tail that must fail and returns its error.
func tailErr(c apiv1connect.ServerAPIClient, room string) error {
	st, err := c.Tail(context.Background(), connectrpc.NewRequest(&apiv1.TailRequest{Room: room}))
	if err != nil {
		return err
	}
	defer st.Close()
	for st.Receive() {
	}
	return st.Err()
}

var traceIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// The server API's operator calls: Tail streams a room's messages (with the
// trace id of each publish) from now or from a position, says gap when the
// room no longer holds what it missed, ends at shutdown; Info names the key
// and shows slow consumers; ListRooms has each room's publish rate.
func TestServerAPITailAndInfo(t *testing.T) {
	p := startProcess(t, append(apiArgs(t), "--history-size", "10", "--max-queued-bytes", "262144",
		"--otel-traces-exporter", "console")...)
	admin, reader := apiClient(p.API, adminKey), apiClient(p.API, readKey)
	ctx := context.Background()
	pub := connect(t, p.URL, wire.Proto, "pub")
	pub.join("watch", nil)
	pub.publish("watch", "before the tail")

	// Tail needs the admin scope (messages are the users'), and a valid room name.
	if err := tailErr(reader, "watch"); connectrpc.CodeOf(err) != connectrpc.CodePermissionDenied {
		t.Fatalf("tail with a read key: %v", err)
	}
	if err := tailErr(admin, "bad room"); connectrpc.CodeOf(err) != connectrpc.CodeInvalidArgument {
		t.Fatalf("tail of a bad room name: %v", err)
	}

	stream, err := admin.Tail(ctx, connectrpc.NewRequest(&apiv1.TailRequest{Room: "watch"}))
	if err != nil {
		t.Fatal(err)
	}
	ch := tailed(t, stream)
	first := nextTail(t, ch)
	if first.GetPosition().GetOffset() != 1 || first.GetPosition().GetEpoch() == "" || len(first.GetMessages()) != 0 {
		t.Fatalf("tail start: %v", first)
	}
	var pubs []*hubbubv1.PublishReply
	for i := range 5 {
		pubs = append(pubs, pub.publish("watch", fmt.Sprintf("live %d", i)))
	}
	apiOK(t, p.API, pubKey, "Publish", `{"room":"watch","body":{"text":"from the backend"}}`, &apiv1.PublishResponse{})
	got := tailMessages(t, ch, 6)
	for i, m := range got {
		if m.GetMessage().GetOffset() != uint64(i+2) {
			t.Fatalf("tail message %d at offset %d", i, m.GetMessage().GetOffset())
		}
		if !traceIDPattern.MatchString(m.GetTraceId()) {
			t.Fatalf("tail message %d without a trace id: %q", i, m.GetTraceId())
		}
	}
	if got[0].GetMessage().GetBody().GetText() != "live 0" || got[5].GetMessage().GetSender().GetServer() != "billing" {
		t.Fatalf("tail messages: %v", got)
	}
	if got[0].GetMessage().GetEpoch() != pubs[0].GetEpoch() {
		t.Fatalf("epoch %q, publish said %q", got[0].GetMessage().GetEpoch(), pubs[0].GetEpoch())
	}

	// From a position: exactly what came after it, from the room's history.
	since := &hubbubv1.StreamPosition{Offset: 4, Epoch: pubs[0].GetEpoch()}
	resumed, err := admin.Tail(ctx, connectrpc.NewRequest(&apiv1.TailRequest{Room: "watch", Since: since}))
	if err != nil {
		t.Fatal(err)
	}
	rch := tailed(t, resumed)
	if r := nextTail(t, rch); r.GetPosition().GetOffset() != 4 {
		t.Fatalf("resumed tail start: %v", r)
	}
	back := tailMessages(t, rch, 3)
	if back[0].GetMessage().GetOffset() != 5 || back[2].GetMessage().GetOffset() != 7 {
		t.Fatalf("resumed tail: %v", back)
	}

	// Too far back (the room holds 10): the first answer says gap.
	for i := range 12 {
		pub.publish("watch", fmt.Sprintf("more %d", i))
	}
	if n := len(tailMessages(t, ch, 12)); n != 12 {
		t.Fatalf("live tail got %d", n)
	}
	old, err := admin.Tail(ctx, connectrpc.NewRequest(&apiv1.TailRequest{Room: "watch", Since: &hubbubv1.StreamPosition{Offset: 2, Epoch: pubs[0].GetEpoch()}}))
	if err != nil {
		t.Fatal(err)
	}
	och := tailed(t, old)
	nextTail(t, och)
	if r := nextTail(t, och); !r.GetGap() || r.GetMessages()[0].GetMessage().GetOffset() != 10 || r.GetPosition().GetOffset() != 19 {
		t.Fatalf("tail from before the history: gap %v, %d messages, position %v", r.GetGap(), len(r.GetMessages()), r.GetPosition())
	}

	// Info names the key, counts slow consumers and lists the slowest connections.
	info, err := admin.Info(ctx, connectrpc.NewRequest(&apiv1.InfoRequest{Slowest: 5}))
	if err != nil || info.Msg.GetKey() != "ops" || !slices.Equal(info.Msg.GetScopes(), []string{"admin"}) || len(info.Msg.GetNodes()) != 1 {
		t.Fatalf("info: %v %v", info, err)
	}
	if _, err := admin.Info(ctx, connectrpc.NewRequest(&apiv1.InfoRequest{Slowest: 1000})); connectrpc.CodeOf(err) != connectrpc.CodeInvalidArgument {
		t.Fatalf("info with slowest 1000: %v", err)
	}
	ws := stalledMember(t, p.URL, "slow")
	eventually(t, "the stalled member to join", func() bool {
		r := pub.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "slow"}}})
		return r.GetPresence().GetState().GetMembers() == 1
	})
	pub.join("slow", nil)
	sawQueued := false
	for i := 0; i < 6000 && !sawQueued; i++ {
		publishKeyed(pub, "slow", "", i)
		if i%20 != 0 {
			continue
		}
		in, err := admin.Info(ctx, connectrpc.NewRequest(&apiv1.InfoRequest{Slowest: 5}))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range in.Msg.GetNodes()[0].GetSlowest() {
			if c.GetUser() == "stalled" && c.GetQueuedBytes() > 0 && slices.Contains(c.GetRooms(), "slow") {
				sawQueued = true
			}
		}
	}
	if !sawQueued {
		t.Fatal("the stalled member never showed among the slowest connections")
	}
	for i := 0; i < 6000; i++ {
		in, err := admin.Info(ctx, connectrpc.NewRequest(&apiv1.InfoRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if in.Msg.GetNodes()[0].GetSlowConsumers() >= 1 {
			break
		}
		if i == 5999 {
			t.Fatal("the stalled member was never counted as a slow consumer")
		}
		publishKeyed(pub, "slow", "", i)
	}
	_ = ws

	// The publish rate of a busy room is positive, of a quiet one zero.
	lr, err := reader.ListRooms(ctx, connectrpc.NewRequest(&apiv1.ListRoomsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	rates := map[string]float64{}
	for _, r := range lr.Msg.GetRooms() {
		rates[r.GetRoom()] = r.GetPublishRate()
	}
	if rates["slow"] <= 1 || rates["watch"] <= 0 {
		t.Fatalf("publish rates: %v", rates)
	}
	ri, err := reader.RoomInfo(ctx, connectrpc.NewRequest(&apiv1.RoomInfoRequest{Room: "slow"}))
	if err != nil || ri.Msg.GetPublishRate() <= 1 {
		t.Fatalf("room info rate: %v %v", ri, err)
	}

	// A graceful stop ends the tails rather than waiting for them.
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the server did not stop with tails open")
	}
	for r := range ch {
		t.Fatalf("tail response after stop: %v", r)
	}
	t.Logf("stopped in %v with three tails open", time.Since(start).Round(time.Millisecond))
}
