package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// The keys of the API tests: one per scope.
const (
	pubKey   = "pub-key-0123456789"
	readKey  = "read-key-0123456789"
	adminKey = "admin-key-0123456789"
)

// apiArgs writes a key file and returns the serve flags of a server API on a free port.
func apiArgs(t *testing.T) []string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "keys")
	keys := "# name key scopes\nbilling " + pubKey + " publish\nreports " + readKey + " read\nops " + adminKey + " admin\n"
	if err := os.WriteFile(file, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--api-listen", "127.0.0.1:0", "--api-key-file", file}
}

// apiCall posts a JSON body to a method as curl would and returns the HTTP
// status and the body.
func apiCall(t *testing.T, base, key, method, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/hubbub.api.v1.ServerAPI/"+method, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// apiOK calls a method that must succeed and decodes its JSON answer into out.
func apiOK(t *testing.T, base, key, method, body string, out proto.Message) {
	t.Helper()
	code, b := apiCall(t, base, key, method, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, body, code, b)
	}
	if err := protojson.Unmarshal(b, out); err != nil {
		t.Fatalf("%s answer %s: %v", method, b, err)
	}
}

// apiErr calls a method that must fail with the Connect error code want.
func apiErr(t *testing.T, base, key, method, body, want, mention string) {
	t.Helper()
	code, b := apiCall(t, base, key, method, body)
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil || code == http.StatusOK || e.Code != want || !strings.Contains(e.Message, mention) {
		t.Fatalf("%s %.80s: got %d %s, want %s mentioning %q", method, body, code, b, want, mention)
	}
}

func TestServerAPI(t *testing.T) {
	// The default profile keeps 10 messages in memory; the "big:*" profile
	// makes the embedded store keep 200 per room, so History pages through
	// the store past a room's in-memory window.
	cfg := filepath.Join(t.TempDir(), "hubbub.yaml")
	if err := os.WriteFile(cfg, []byte("history-size: 10\nrooms:\n  - pattern: \"big:*\"\n    history-size: 200\n  - pattern: \"news\"\n    publish: none\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, append(apiArgs(t), "--config", cfg, "--history-store", "embedded", "--log-level", "debug")...)
	base := p.API

	alice := connect(t, p.URL, wire.Proto, "alice")
	bob := connect(t, p.URL, wire.JSON, "bob")
	for _, c := range []*client{alice, bob} {
		c.join("lobby", nil)
	}

	t.Run("publish as curl would", func(t *testing.T) {
		var r apiv1.PublishResponse
		apiOK(t, base, pubKey, "Publish", `{"room":"lobby","body":{"text":"deploy done"},"messageId":"deploy-1"}`, &r)
		if r.GetOffset() != 1 || r.GetEpoch() == "" || r.GetDuplicate() {
			t.Fatalf("publish: %v", &r)
		}
		for _, c := range []*client{alice, bob} {
			m := c.nextMessage()
			if m.GetBody().GetText() != "deploy done" || m.GetSender().GetServer() != "billing" || m.GetSender().GetUser() != "" {
				t.Fatalf("member got %v", m)
			}
		}
		// A retry is recognised: same offset, nothing delivered twice.
		apiOK(t, base, pubKey, "Publish", `{"room":"lobby","body":{"text":"deploy done"},"messageId":"deploy-1"}`, &r)
		if r.GetOffset() != 1 || !r.GetDuplicate() {
			t.Fatalf("retry: %v", &r)
		}
		// A user's message id is not the key's: a client may reuse it.
		if pr := alice.request(publishFrame("lobby", "mine", "deploy-1")); pr.GetPublish().GetOffset() != 2 || pr.GetPublish().GetDuplicate() {
			t.Fatalf("client publish with the same id: %v", pr)
		}
		for _, c := range []*client{alice, bob} {
			if m := c.nextMessage(); m.GetOffset() != 2 || m.GetSender().GetUser() != "alice" {
				t.Fatalf("after the retry got %v", m)
			}
		}
	})

	t.Run("batch and broadcast", func(t *testing.T) {
		body := `{"items":[
			{"room":"lobby","body":{"text":"b1"},"messageId":"b1"},
			{"room":"bad room","body":{"text":"x"}},
			{"room":"lobby","body":{"data":{"n":2}},"messageId":"b2"},
			{"room":"lobby","body":{"text":"` + strings.Repeat("x", 40<<10) + `"}},
			{"room":"lobby"},
			{"room":"big:1","body":{"binary":"AAEC"},"messageId":"b3"}]}`
		var r apiv1.BatchPublishResponse
		apiOK(t, base, pubKey, "BatchPublish", body, &r)
		want := []string{"", "items[1].room", "", "items[3].body", "items[4].body", ""}
		for i, res := range r.GetResults() {
			if want[i] == "" && res.GetPublished() == nil || want[i] != "" && !strings.HasPrefix(res.GetError().GetMessage(), want[i]) {
				t.Fatalf("item %d: %v", i, res)
			}
		}
		if r.GetResults()[0].GetPublished().GetOffset() != 3 || r.GetResults()[2].GetPublished().GetOffset() != 4 || len(r.GetResults()) != 6 {
			t.Fatalf("results %v", r.GetResults())
		}
		if c := r.GetResults()[3].GetError().GetCode(); c != hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE {
			t.Fatalf("oversized item: %v", c)
		}
		for _, c := range []*client{alice, bob} {
			if a, b := c.nextMessage(), c.nextMessage(); a.GetBody().GetText() != "b1" || b.GetBody().GetData().GetStructValue().GetFields()["n"].GetNumberValue() != 2 {
				t.Fatalf("batch delivered %v then %v", a, b)
			}
		}
		// The whole batch again: each item is recognised by its id.
		apiOK(t, base, pubKey, "BatchPublish", body, &r)
		for _, i := range []int{0, 2, 5} {
			if !r.GetResults()[i].GetPublished().GetDuplicate() {
				t.Fatalf("retried item %d: %v", i, r.GetResults()[i])
			}
		}
		var b apiv1.BroadcastResponse
		apiOK(t, base, pubKey, "Broadcast", `{"rooms":["lobby","big:1","news"],"body":{"text":"all hands"},"messageId":"ah"}`, &b)
		for i, res := range b.GetResults() {
			if res.GetPublished() == nil {
				t.Fatalf("broadcast room %d: %v", i, res)
			}
		}
		if m := alice.nextMessage(); m.GetBody().GetText() != "all hands" || m.GetOffset() != 5 {
			t.Fatalf("broadcast delivered %v", m)
		}
		bob.nextMessage()
		// "news" takes no publishes from users; the server's went in.
		if b.GetResults()[2].GetPublished().GetOffset() != 1 {
			t.Fatalf("news: %v", b.GetResults()[2])
		}
		if r := alice.request(publishFrame("news", "me too", "")); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
			t.Fatalf("a user published to news: %v", r)
		}
	})

	t.Run("history pages through the store", func(t *testing.T) {
		var items []string
		for i := 1; i <= 45; i++ {
			items = append(items, fmt.Sprintf(`{"room":"big:log","body":{"text":"m%d"}}`, i))
		}
		var r apiv1.BatchPublishResponse
		apiOK(t, base, pubKey, "BatchPublish", `{"items":[`+strings.Join(items, ",")+`]}`, &r)
		for i, res := range r.GetResults() {
			if res.GetPublished().GetOffset() != uint64(i+1) {
				t.Fatalf("item %d: %v", i, res)
			}
		}
		// Forwards from the start in pages of 20, and backwards from the end.
		var got []uint64
		for since := uint64(0); ; {
			var h apiv1.HistoryResponse
			apiOK(t, base, readKey, "History", fmt.Sprintf(`{"room":"big:log","sinceOffset":"%d","limit":20}`, since), &h)
			for _, m := range h.GetMessages() {
				got = append(got, m.GetOffset())
			}
			if len(h.GetMessages()) < 20 {
				break
			}
			since = h.GetMessages()[len(h.GetMessages())-1].GetOffset()
		}
		var back []uint64
		for before := uint64(0); ; {
			var h apiv1.HistoryResponse
			apiOK(t, base, readKey, "History", fmt.Sprintf(`{"room":"big:log","beforeOffset":"%d","limit":20,"reverse":true}`, before), &h)
			for _, m := range h.GetMessages() {
				back = append(back, m.GetOffset())
			}
			if len(h.GetMessages()) < 20 {
				break
			}
			before = h.GetMessages()[len(h.GetMessages())-1].GetOffset()
		}
		slices.Reverse(back)
		for i := range 45 {
			if len(got) != 45 || len(back) != 45 || got[i] != uint64(i+1) || back[i] != uint64(i+1) {
				t.Fatalf("forwards %v\nbackwards %v", got, back)
			}
		}
		// A window in the middle, read from the store.
		var h apiv1.HistoryResponse
		apiOK(t, base, readKey, "History", `{"room":"big:log","sinceOffset":"4","beforeOffset":"9"}`, &h)
		if len(h.GetMessages()) != 4 || h.GetMessages()[0].GetBody().GetText() != "m5" || h.GetPosition().GetOffset() != 45 {
			t.Fatalf("window: %v", &h)
		}
	})

	t.Run("presence, rooms, connections", func(t *testing.T) {
		for _, name := range []string{"carol", "dave", "erin"} {
			connect(t, p.URL, wire.Proto, name).join("lobby", nil)
		}
		var users []string
		for cursor := ""; ; {
			var pr apiv1.PresenceResponse
			apiOK(t, base, readKey, "Presence", `{"room":"lobby","limit":2,"cursor":"`+cursor+`"}`, &pr)
			users = append(users, pr.GetUsers()...)
			if cursor = pr.GetNextCursor(); cursor == "" {
				break
			}
		}
		if strings.Join(users, ",") != "alice,bob,carol,dave,erin" {
			t.Fatalf("presence pages: %v", users)
		}
		var info apiv1.RoomInfoResponse
		apiOK(t, base, readKey, "RoomInfo", `{"room":"lobby"}`, &info)
		if info.GetPresence().GetMembers() != 5 || info.GetNode() != "local" || len(info.GetMembers()) != 1 ||
			info.GetMembers()[0].GetMembers() != 5 || info.GetInfo().GetProfile() != "default" || info.GetPosition().GetOffset() != 5 {
			t.Fatalf("room info: %v", &info)
		}
		var rooms []string
		for cursor := ""; ; {
			var lr apiv1.ListRoomsResponse
			apiOK(t, base, readKey, "ListRooms", `{"pattern":"big:*","limit":1,"cursor":"`+cursor+`"}`, &lr)
			for _, r := range lr.GetRooms() {
				rooms = append(rooms, r.GetRoom())
			}
			if cursor = lr.GetNextCursor(); cursor == "" {
				break
			}
		}
		if strings.Join(rooms, ",") != "big:1,big:log" {
			t.Fatalf("rooms: %v", rooms)
		}
		var cr apiv1.ConnectionsResponse
		apiOK(t, base, readKey, "Connections", `{"user":"alice"}`, &cr)
		if len(cr.GetConnections()) != 1 || strings.Join(cr.GetConnections()[0].GetRooms(), ",") != "lobby" || cr.GetConnections()[0].GetNode() != "local" {
			t.Fatalf("connections: %v", &cr)
		}
		var in apiv1.InfoResponse
		apiOK(t, base, readKey, "Info", `{}`, &in)
		if len(in.GetNodes()) != 1 || in.GetNodes()[0].GetConnections() != 5 || in.GetNodes()[0].GetRooms() < 4 {
			t.Fatalf("info: %v", &in)
		}
	})

	t.Run("disconnect a user", func(t *testing.T) {
		f1, f2 := connect(t, p.URL, wire.Proto, "frank"), connect(t, p.URL, wire.JSON, "frank")
		var d apiv1.DisconnectResponse
		apiOK(t, base, adminKey, "Disconnect", `{"user":"frank","reason":"banned","reconnect":false}`, &d)
		if d.GetConnections() != 2 {
			t.Fatalf("disconnect: %v", &d)
		}
		for _, c := range []*client{f1, f2} {
			var disc *hubbubv1.Disconnect
			for disc == nil {
				f := c.read(waitFor)
				if f == nil {
					t.Fatal("no Disconnect push")
				}
				disc = f.GetDisconnect()
			}
			if disc.GetCode() != wire.CloseDisconnectedFinal || disc.GetReason() != "banned" || disc.GetReconnect() {
				t.Fatalf("push %v", disc)
			}
			if code := closeCode(c.waitClosed()); code != wire.CloseDisconnectedFinal {
				t.Fatalf("close code %d", code)
			}
		}
		// One connection, with a reconnect hint.
		g := connect(t, p.URL, wire.Proto, "gina")
		var cr apiv1.ConnectionsResponse
		apiOK(t, base, readKey, "Connections", `{"user":"gina"}`, &cr)
		apiOK(t, base, adminKey, "Disconnect", `{"clientId":"`+cr.GetConnections()[0].GetClientId()+`","reconnect":true}`, &d)
		if code := closeCode(g.waitClosed()); d.GetConnections() != 1 || code != wire.CloseDisconnected {
			t.Fatalf("disconnected %d, close %d", d.GetConnections(), code)
		}
	})

	t.Run("keys and scopes", func(t *testing.T) {
		body := `{"room":"lobby","body":{"text":"x"}}`
		apiErr(t, base, "", "Publish", body, "unauthenticated", "missing API key")
		apiErr(t, base, "wrong-key-0123456789", "Publish", body, "unauthenticated", "unknown API key")
		apiErr(t, base, readKey, "Publish", body, "permission_denied", "publish scope")
		apiErr(t, base, pubKey, "History", `{"room":"lobby"}`, "permission_denied", "read scope")
		apiErr(t, base, pubKey, "Disconnect", `{"user":"alice"}`, "permission_denied", "admin scope")
		// A refused call publishes nothing.
		var h apiv1.HistoryResponse
		apiOK(t, base, adminKey, "History", `{"room":"lobby","reverse":true,"limit":1}`, &h)
		if h.GetPosition().GetOffset() != 5 {
			t.Fatalf("position %v", h.GetPosition())
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, c := range []struct{ method, body, mention string }{
			{"Publish", `{"room":"lobby","body":{"text":`, "unmarshal"},
			{"Publish", `{"room":"a b","body":{"text":"x"}}`, "room"},
			{"Publish", `{"room":"lobby"}`, "body: required"},
			{"Publish", `{"room":"lobby","body":{"text":"` + strings.Repeat("y", 33<<10) + `"}}`, "body:"},
			{"Publish", `{"room":"lobby","body":{"text":"x"},"messageId":"` + strings.Repeat("i", 200) + `"}`, "message_id"},
			{"Publish", `{"room":"lobby","body":{"text":1}}`, "unmarshal"},
			{"BatchPublish", `{"items":[]}`, "items: empty"},
			{"BatchPublish", `{"items":[` + strings.Repeat(`{"room":"a","body":{"text":"x"}},`, 1000) + `{"room":"a","body":{"text":"x"}}]}`, "at most 1000"},
			{"Broadcast", `{"rooms":[],"body":{"text":"x"}}`, "rooms: empty"},
			{"Broadcast", `{"rooms":["a","a"],"body":{"text":"x"}}`, "named twice"},
			{"History", `{"room":""}`, "room"},
			{"History", `{"room":"lobby","sinceOffset":"5","beforeOffset":"6"}`, "before_offset"},
			{"Disconnect", `{}`, "user or client_id"},
			{"Connections", `{}`, "user: required"},
		} {
			apiErr(t, base, adminKey, c.method, c.body, "invalid_argument", c.mention)
		}
		var h apiv1.HistoryResponse
		apiOK(t, base, adminKey, "History", `{"room":"lobby","reverse":true,"limit":1}`, &h)
		if h.GetPosition().GetOffset() != 5 {
			t.Fatalf("bad input published something: %v", h.GetPosition())
		}
	})

	t.Run("grpc client", func(t *testing.T) {
		conn, err := grpc.NewClient(strings.TrimPrefix(base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		api := apiv1.NewServerAPIClient(conn)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+adminKey)
		res, err := api.Publish(ctx, &apiv1.PublishRequest{Room: "lobby", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "over grpc"}}})
		if err != nil || res.GetOffset() != 6 {
			t.Fatalf("publish: %v %v", res, err)
		}
		if m := alice.nextMessage(); m.GetBody().GetText() != "over grpc" || m.GetSender().GetServer() != "ops" {
			t.Fatalf("member got %v", m)
		}
		h, err := api.History(ctx, &apiv1.HistoryRequest{Room: "lobby", Reverse: true, Limit: 2})
		if err != nil || len(h.GetMessages()) != 2 || h.GetMessages()[0].GetOffset() != 6 {
			t.Fatalf("history: %v %v", h, err)
		}
		pr, err := api.Presence(ctx, &apiv1.PresenceRequest{Room: "lobby", Limit: 100})
		if err != nil || strings.Join(pr.GetUsers(), ",") != "alice,bob" { // the others left with their subtest
			t.Fatalf("presence: %v %v", pr, err)
		}
		lr, err := api.ListRooms(ctx, &apiv1.ListRoomsRequest{Pattern: "lobby"})
		if err != nil || len(lr.GetRooms()) != 1 || lr.GetRooms()[0].GetMembers() != 2 {
			t.Fatalf("rooms: %v %v", lr, err)
		}
		h2 := connect(t, p.URL, wire.Proto, "hank")
		d, err := api.Disconnect(ctx, &apiv1.DisconnectRequest{User: "hank", Reconnect: true})
		if err != nil || d.GetConnections() != 1 || closeCode(h2.waitClosed()) != wire.CloseDisconnected {
			t.Fatalf("disconnect: %v %v", d, err)
		}
		_, err = api.Publish(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer nope-nope-nope"),
			&apiv1.PublishRequest{Room: "lobby", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "x"}}})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("wrong key over grpc: %v", err)
		}
		_, err = api.Publish(ctx, &apiv1.PublishRequest{Room: "a b", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "x"}}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad room over grpc: %v", err)
		}
		// Server reflection, as grpcurl uses it: the API is listed.
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		rr, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var services []string
		for _, s := range rr.GetListServicesResponse().GetService() {
			services = append(services, s.GetName())
		}
		_ = stream.CloseSend()
		if !slices.Contains(services, "hubbub.api.v1.ServerAPI") {
			t.Fatalf("reflection lists %v", services)
		}
		hc, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "hubbub.api.v1.ServerAPI"})
		if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health: %v %v", hc, err)
		}
	})

	t.Run("calls are counted by method, key and code", func(t *testing.T) {
		samples := scrape(t, httpBase(p.URL))
		ok := sum(samples, "hubbub_api_calls_total", `rpc_method="Publish"`, `hubbub_api_key="billing"`, `rpc_connect_rpc_error_code="ok"`)
		denied := sum(samples, "hubbub_api_calls_total", `rpc_method="Publish"`, `hubbub_api_key="reports"`, `rpc_connect_rpc_error_code="permission_denied"`)
		malformed := sum(samples, "hubbub_api_calls_total", `rpc_connect_rpc_error_code="malformed"`)
		if ok < 2 || denied != 1 || malformed < 2 {
			t.Fatalf("ok %v, denied %v, malformed %v", ok, denied, malformed)
		}
	})

	t.Run("keys stay out of the logs", func(t *testing.T) {
		logs := drainLogs(p)
		for _, k := range []string{pubKey, readKey, adminKey} {
			if bytes.Contains(logs, []byte(k)) {
				t.Fatalf("a key is in the logs")
			}
		}
	})
}

// drainLogs returns the log records the process has written so far, as JSON lines.
func drainLogs(p *serverProcess) []byte {
	var b bytes.Buffer
	for {
		select {
		case rec := <-p.logs:
			line, _ := json.Marshal(rec)
			b.Write(append(line, '\n'))
		default:
			return b.Bytes()
		}
	}
}

// Three processes: an API call on one node reaches members on the others in
// the room's one order with the clients' publishes; Disconnect, Connections,
// ListRooms and Info cover every node.
func TestServerAPICluster(t *testing.T) {
	nodes := startCluster(t, 3, apiArgs(t)...)
	a, b, c := nodes[0], nodes[1], nodes[2]
	mb, mc := connect(t, b.URL, wire.Proto, "mb"), connect(t, c.URL, wire.JSON, "mc")
	mb.join("ops", nil)
	mc.join("ops", nil)
	pub := connect(t, b.URL, wire.Proto, "pub")

	const rounds = 5
	done := make(chan error, 1)
	go func() { // owner: this test; joined below
		for i := range rounds * 10 {
			id := pub.send(publishFrame("ops", fmt.Sprintf("c-%d", i), fmt.Sprintf("c-%d", i)))
			if r := pub.waitReply(id); r.GetPublish() == nil {
				done <- fmt.Errorf("client publish %d: %v", i, r)
				return
			}
		}
		done <- nil
	}()
	for r := range rounds {
		var items []string
		for i := range 10 {
			items = append(items, fmt.Sprintf(`{"room":"ops","body":{"text":"a-%d"},"messageId":"a-%d"}`, r*10+i, r*10+i))
		}
		var res apiv1.BatchPublishResponse
		apiOK(t, a.API, pubKey, "BatchPublish", `{"items":[`+strings.Join(items, ",")+`]}`, &res)
		for i, it := range res.GetResults() {
			if it.GetPublished() == nil {
				t.Fatalf("round %d item %d: %v", r, i, it)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var seqs [2][]string
	for k, m := range []*client{mb, mc} {
		next := map[string]int{}
		for off := uint64(1); off <= rounds*20; off++ {
			msg := m.nextMessage()
			if msg.GetOffset() != off {
				t.Fatalf("member %d: offset %d, want %d", k, msg.GetOffset(), off)
			}
			text := msg.GetBody().GetText()
			who, n := text[:1], 0
			fmt.Sscanf(text[2:], "%d", &n)
			if n != next[who] {
				t.Fatalf("member %d: %s out of order (want %s-%d)", k, text, who, next[who])
			}
			next[who]++
			if who == "a" && msg.GetSender().GetServer() != "billing" {
				t.Fatalf("API message from %v", msg.GetSender())
			}
			seqs[k] = append(seqs[k], text)
		}
	}
	if !slices.Equal(seqs[0], seqs[1]) {
		t.Fatalf("members saw different orders:\n%v\n%v", seqs[0], seqs[1])
	}

	// A user connected to every node.
	zs := []*client{connect(t, a.URL, wire.Proto, "zed"), connect(t, b.URL, wire.JSON, "zed"), connect(t, c.URL, wire.Proto, "zed")}
	zs[1].join("ops", nil)
	var cr apiv1.ConnectionsResponse
	apiOK(t, c.API, readKey, "Connections", `{"user":"zed"}`, &cr)
	onNodes := map[string]bool{}
	for _, conn := range cr.GetConnections() {
		onNodes[conn.GetNode()] = true
	}
	if len(cr.GetConnections()) != 3 || len(onNodes) != 3 {
		t.Fatalf("connections: %v", &cr)
	}
	var in apiv1.InfoResponse
	apiOK(t, b.API, readKey, "Info", `{}`, &in)
	if len(in.GetNodes()) != 3 {
		t.Fatalf("info: %v", &in)
	}
	var d apiv1.DisconnectResponse
	apiOK(t, a.API, adminKey, "Disconnect", `{"user":"zed","reason":"maintenance","reconnect":true}`, &d)
	if d.GetConnections() != 3 {
		t.Fatalf("disconnect: %v", &d)
	}
	for i, z := range zs {
		if code := closeCode(z.waitClosed()); code != wire.CloseDisconnected {
			t.Fatalf("zed on node %d: close %d", i, code)
		}
	}

	// Rooms started through one node are listed by another, with their nodes.
	for i := range 10 {
		var r apiv1.PublishResponse
		apiOK(t, a.API, pubKey, "Publish", fmt.Sprintf(`{"room":"list-%d","body":{"text":"hi"}}`, i), &r)
	}
	var lr apiv1.ListRoomsResponse
	apiOK(t, b.API, readKey, "ListRooms", `{"pattern":"list-*"}`, &lr)
	hosts := map[string]bool{}
	for _, r := range lr.GetRooms() {
		hosts[r.GetNode()] = true
		if r.GetOffset() != 1 {
			t.Fatalf("room %v", r)
		}
	}
	if len(lr.GetRooms()) != 10 || len(hosts) < 2 {
		t.Fatalf("listed %v", lr.GetRooms())
	}
}
