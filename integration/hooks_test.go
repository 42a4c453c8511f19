package integration

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	hubclient "github.com/hubbub-chat/hubbub/client"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

const hookSecret = "hook-secret-0123456789"

// hookBackend is internal/hookbackend running as its own process.
type hookBackend struct {
	cmd   *exec.Cmd
	URL   string
	mu    sync.Mutex
	seen  []string   // "METHOD TRACEPARENT" per call
	notes []string   // "KIND USER ROOM REASON" per notification, in arrival order
	raw   [][]string // the same as printed: KIND USER CLIENT ROOM REASON NODE SEQ
	done  chan struct{}
}

var (
	backendOnce sync.Once
	backendBin  string
	backendErr  error
)

// startHookBackend builds (once) and starts the test backend.
func startHookBackend(t *testing.T, args ...string) *hookBackend {
	t.Helper()
	backendOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hookbackend")
		if err != nil {
			backendErr = err
			return
		}
		backendBin = filepath.Join(dir, "hookbackend")
		if out, err := exec.Command("go", "build", "-o", backendBin, "../internal/hookbackend").CombinedOutput(); err != nil {
			backendErr = err
			t.Logf("%s", out)
		}
	})
	if backendErr != nil {
		t.Fatalf("build the hook backend: %v", backendErr)
	}
	b := &hookBackend{cmd: exec.Command(backendBin, append([]string{"--secret", hookSecret}, args...)...), done: make(chan struct{})}
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() { // owner: the backend process; ends with its stdout
		defer close(b.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "listening "); ok {
				addr <- a
			} else if n, ok := strings.CutPrefix(line, "notify "); ok {
				f := strings.Fields(n) // KIND USER CLIENT ROOM REASON NODE SEQ
				b.mu.Lock()
				b.notes = append(b.notes, strings.Join([]string{f[0], f[1], f[3], f[4]}, " "))
				b.raw = append(b.raw, f)
				b.mu.Unlock()
			} else if call, ok := strings.CutPrefix(line, "call "); ok {
				b.mu.Lock()
				b.seen = append(b.seen, call)
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(b.kill)
	select {
	case a := <-addr:
		b.URL = "http://" + a
	case <-time.After(waitFor):
		t.Fatal("the hook backend did not start")
	}
	return b
}

func (b *hookBackend) kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
	_ = b.cmd.Wait()
}

func (b *hookBackend) notesNow() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.notes...)
}

func (b *hookBackend) calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.seen...)
}

// hookArgs are the serve flags of a node calling the backend.
func hookArgs(t *testing.T, url, protocol string, extra ...string) []string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "hook-secret")
	if err := os.WriteFile(file, []byte(hookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return append([]string{"--hook-url", url, "--hook-protocol", protocol, "--hook-secret-file", file}, extra...)
}

// connectAs dials and connects with a token, returning the client and the connect reply.
func connectAs(t *testing.T, url string, enc wire.Encoding, token string) (*client, *hubbubv1.ServerFrame) {
	t.Helper()
	c := dial(t, url, enc)
	return c, c.request(connectFrame(token, "mallory"))
}

func rpcFrame(method string, data map[string]any) *hubbubv1.ClientFrame {
	v, _ := structpb.NewValue(data)
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Rpc{Rpc: &hubbubv1.RpcRequest{Method: method, Data: v}}}
}

// Every hook, over HTTP+JSON and over gRPC, against a backend process.
func TestHooks(t *testing.T) {
	for _, protocol := range []string{"json", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			be := startHookBackend(t)
			cfg := filepath.Join(t.TempDir(), "hubbub.yaml")
			if err := os.WriteFile(cfg, []byte("rooms:\n  - pattern: \"open-*\"\n    join-hook: false\n    publish-hook: false\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startProcess(t, hookArgs(t, be.URL, protocol, "--config", cfg)...)

			// The backend names the user; the name the client asked for does not count.
			ann, r := connectAs(t, p.URL, wire.Proto, "user:ann")
			if r.GetConnect().GetClient().GetUser() != "ann" {
				t.Fatalf("connect: %v", r)
			}
			bad, r := connectAs(t, p.URL, wire.JSON, "deny")
			if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED || !strings.Contains(r.GetError().GetMessage(), "banned") ||
				closeCode(bad.waitClosed()) != wire.CloseUnauthorized {
				t.Fatalf("refused connect: %v", r)
			}
			nobody, r := connectAs(t, p.URL, wire.Proto, "who?")
			if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED || closeCode(nobody.waitClosed()) != wire.CloseUnauthorized {
				t.Fatalf("connect without a user: %v", r)
			}

			// Join: refused with the backend's reason, or with its data in the reply.
			if r := ann.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "secret-1"}}}); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED ||
				r.GetError().GetMessage() != "members only" {
				t.Fatalf("refused join: %v", r)
			}
			j := ann.join("vip-1", nil)
			if j.GetHookData().GetStructValue().GetFields()["tier"].GetStringValue() != "gold" ||
				j.GetHookData().GetStructValue().GetFields()["user"].GetStringValue() != "ann" {
				t.Fatalf("join data: %v", j.GetHookData())
			}

			// Publish: refused, replaced, or let through.
			if r := ann.request(publishFrame("vip-1", "a badword here", "")); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED ||
				r.GetError().GetMessage() != "watch your language" {
				t.Fatalf("refused publish: %v", r)
			}
			ann.publish("vip-1", "shout:hello")
			if m := ann.nextMessage(); m.GetBody().GetText() != "SHOUT:HELLO" || m.GetOffset() != 1 {
				t.Fatalf("replaced publish: %v", m)
			}

			// A profile can leave rooms out of the join and publish hooks.
			before := len(be.calls())
			ann.join("open-1", nil)
			ann.publish("open-1", "a badword, unchecked")
			if m := ann.nextMessage(); m.GetBody().GetText() != "a badword, unchecked" || len(be.calls()) != before {
				t.Fatalf("open room: %v, calls %v", m, be.calls()[before:])
			}

			// Rpc: the backend's answer with the command's id, or its refusal.
			if r := ann.request(rpcFrame("echo", map[string]any{"n": 42})); r.GetRpc().GetData().GetStructValue().GetFields()["n"].GetNumberValue() != 42 {
				t.Fatalf("echo: %v", r)
			}
			if r := ann.request(rpcFrame("whoami", nil)); r.GetRpc().GetData().GetStringValue() != "ann" {
				t.Fatalf("whoami: %v", r)
			}
			if r := ann.request(rpcFrame("nope", nil)); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED || !strings.Contains(r.GetError().GetMessage(), "no such method") {
				t.Fatalf("refused rpc: %v", r)
			}

			// Pipelined: a slow join, a slow publish, a slow rpc and a fast
			// publish, sent at once, take effect and answer in the order sent.
			f := &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "slow-room"}}}
			f.Trace = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
			ids := []uint64{ann.send(f), ann.send(publishFrame("slow-room", "slow first", "")),
				ann.send(rpcFrame("sleep", map[string]any{"ms": 100})), ann.send(publishFrame("slow-room", "then fast", ""))}
			var order []uint64
			var texts []string
			for len(order) < 4 || len(texts) < 2 {
				fr := ann.read(waitFor)
				if fr == nil {
					t.Fatalf("stalled after %v %v", order, texts)
				}
				switch {
				case fr.GetMessage() != nil:
					texts = append(texts, fr.GetMessage().GetBody().GetText())
				case fr.GetJoin() != nil || fr.GetPublish() != nil || fr.GetRpc() != nil:
					order = append(order, fr.GetId())
				case fr.GetError() != nil:
					t.Fatalf("error %v", fr)
				}
			}
			if order[1] != ids[1] || order[2] != ids[2] || order[3] != ids[3] || texts[0] != "slow first" || texts[1] != "then fast" {
				t.Fatalf("replies %v (sent %v), messages %v", order, ids, texts)
			}
			// The backend saw the client's trace on the join hook.
			found := false
			for _, c := range be.calls() {
				found = found || strings.HasPrefix(c, "Join 00-4bf92f3577b34da6a3ce929d0e0e4736-")
			}
			if !found {
				t.Fatalf("no traceparent reached the backend: %v", be.calls())
			}
			m := scrape(t, httpBase(p.URL))
			if calls, refused := sum(m, "hubbub_hooks_calls_total"), sum(m, "hubbub_hooks_refusals_total"); calls != float64(len(be.calls())) || refused != 5 {
				t.Fatalf("counted %v calls (backend saw %d), %v refusals", calls, len(be.calls()), refused)
			}
		})
	}
}

// A backend that is down, slow, answers garbage or rejects Hubbub's secret:
// connects close with 1013 (try again later), other commands get a
// temporary UNAVAILABLE, and everything works again once it is back.
func TestHooksBackendFailures(t *testing.T) {
	be := startHookBackend(t)
	p := startProcess(t, hookArgs(t, be.URL, "json", "--hook-timeout", "500ms")...)
	ann, r := connectAs(t, p.URL, wire.Proto, "user:ann")
	if r.GetConnect() == nil {
		t.Fatalf("connect: %v", r)
	}
	// Slow: the rpc outlives the hook timeout.
	if r := ann.request(rpcFrame("sleep", map[string]any{"ms": 1500})); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !r.GetError().GetTemporary() {
		t.Fatalf("slow rpc: %v", r)
	}
	// Killed.
	addr := strings.TrimPrefix(be.URL, "http://")
	be.kill()
	if r := ann.request(publishFrame("room", "hello", "")); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !r.GetError().GetTemporary() {
		t.Fatalf("publish with the backend down: %v", r)
	}
	c, r := connectAs(t, p.URL, wire.JSON, "user:bob")
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || closeCode(c.waitClosed()) != wire.CloseTryAgainLater {
		t.Fatalf("connect with the backend down: %v", r)
	}
	// Restarted on the same address: commands go through again (once the
	// circuit lets a call through).
	startHookBackend(t, "--listen", addr)
	eventually(t, "publishes through the restarted backend", func() bool {
		return ann.request(publishFrame("room", "back", "")).GetPublish() != nil
	})
	// Garbage answers and a wrong secret count as no answer.
	garbage := startHookBackend(t, "--garbage")
	q := startProcess(t, hookArgs(t, garbage.URL, "json")...)
	c, r = connectAs(t, q.URL, wire.Proto, "user:carol")
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || closeCode(c.waitClosed()) != wire.CloseTryAgainLater {
		t.Fatalf("connect with a garbage backend: %v", r)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not the secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := startHookBackend(t)
	w := startProcess(t, "--hook-url", good.URL, "--hook-secret-file", wrong)
	c, r = connectAs(t, w.URL, wire.Proto, "user:dave")
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || closeCode(c.waitClosed()) != wire.CloseTryAgainLater {
		t.Fatalf("connect with a wrong secret: %v", r)
	}
}

// waitNotifications waits until the backend has seen every wanted
// notification ("KIND USER ROOM REASON") at least once and returns what it saw.
func (b *hookBackend) waitNotifications(t *testing.T, want ...string) []string {
	t.Helper()
	var got []string
	eventually(t, "notifications at the backend", func() bool {
		got = got[:0]
		have := map[string]bool{}
		b.mu.Lock()
		for _, l := range b.notes {
			got = append(got, l)
			have[l] = true
		}
		b.mu.Unlock()
		for _, w := range want {
			if !have[w] {
				return false
			}
		}
		return true
	})
	return got
}

// Leaves and disconnects reach the backend in the order they happened, at
// least once across a backend restart; a user who reconnects within the
// grace window produces no disconnect.
func TestHookNotifications(t *testing.T) {
	be := startHookBackend(t)
	p := startProcess(t, hookArgs(t, be.URL, "json", "--hook-disconnect-grace", "1s")...)
	ann, _ := connectAs(t, p.URL, wire.Proto, "user:ann")
	ann.join("a", nil)
	ann.join("b", nil)
	if r := ann.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "a"}}}); r.GetLeave() == nil {
		t.Fatalf("leave: %v", r)
	}
	ann.close()
	got := be.waitNotifications(t, "KIND_LEAVE ann a leave", "KIND_LEAVE ann b disconnect", "KIND_DISCONNECT ann - closed")
	if strings.Join(got, "|") != "KIND_LEAVE ann a leave|KIND_LEAVE ann b disconnect|KIND_DISCONNECT ann - closed" {
		t.Fatalf("notifications %v", got)
	}

	// Bob's page reloads: he is back within the window and rejoins c, so no
	// disconnect and no leave of c; he does not come back to e, so its leave
	// arrives when the window ends.
	bob, _ := connectAs(t, p.URL, wire.JSON, "user:bob")
	bob.join("c", nil)
	bob.join("e", nil)
	bob.close()
	bob2, _ := connectAs(t, p.URL, wire.JSON, "user:bob")
	bob2.join("c", nil)
	got = be.waitNotifications(t, "KIND_LEAVE bob e disconnect")
	time.Sleep(300 * time.Millisecond) // anything else held would have come with it
	for _, l := range be.notesNow() {
		if strings.Contains(l, " bob ") && l != "KIND_LEAVE bob e disconnect" {
			t.Fatalf("a reconnect within the window notified %q (all: %v)", l, got)
		}
	}

	// The backend goes away; what happens meanwhile arrives once it is back.
	bob2.join("d", nil)
	addr := strings.TrimPrefix(be.URL, "http://")
	be.kill()
	bob2.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "d"}}})
	time.Sleep(1500 * time.Millisecond) // retries fail meanwhile
	be2 := startHookBackend(t, "--listen", addr)
	got = be2.waitNotifications(t, "KIND_LEAVE bob d leave")
	if got[0] != "KIND_LEAVE bob d leave" {
		t.Fatalf("after the restart: %v", got)
	}
	bob2.close()
	got = be2.waitNotifications(t, "KIND_LEAVE bob d leave", "KIND_LEAVE bob c disconnect", "KIND_DISCONNECT bob - closed")
	if strings.Join(got[1:], "|") != "KIND_LEAVE bob c disconnect|KIND_DISCONNECT bob - closed" {
		t.Fatalf("bob's disconnect after the window: %v", got)
	}
	// The backend has the last notifications; the node counts them when
	// the backend's answer comes back, a moment later.
	var m map[string]float64
	eventually(t, "the node to count the notifications", func() bool {
		m = scrape(t, httpBase(p.URL))
		return sum(m, "hubbub_hooks_notified_total") >= 7
	})
	if sum(m, "hubbub_hooks_notify_coalesced_total") != 2 {
		t.Fatalf("coalesced %v, notified %v", sum(m, "hubbub_hooks_notify_coalesced_total"), sum(m, "hubbub_hooks_notified_total"))
	}
}

// hookJoins reads the join replies (id 0) of the rooms a connect hook named.
func hookJoins(t *testing.T, c *client, n int) map[string]*hubbubv1.JoinReply {
	t.Helper()
	got := map[string]*hubbubv1.JoinReply{}
	for len(got) < n {
		f := c.nextPush()
		if j := f.GetJoin(); j != nil {
			got[j.GetRoom()] = j
		} else if f.GetMessage() == nil && f.GetPresenceDiff() == nil {
			t.Fatalf("waiting for join replies: %v", f)
		}
	}
	return got
}

// The connect hook sees the upgrade's headers, the connect data and the
// address; it answers the user's info (on the connect reply and on the
// user's messages), rooms joined for the connection (recovering from the
// positions the client gives on reconnect) and refusals with a code.
func TestHookConnectRoomsAndInfo(t *testing.T) {
	be := startHookBackend(t)
	p := startProcess(t, hookArgs(t, be.URL, "json")...)
	bob, _ := connectAs(t, p.URL, wire.JSON, "user:bob")
	bob.join("inbox-ann", nil)
	bob.join("team-x", nil)
	bob.publish("inbox-ann", "one")
	bob.publish("inbox-ann", "two")

	joinsBefore := strings.Count(strings.Join(be.calls(), "\n"), "Join")
	hdr := http.Header{"Cookie": {"session=abc"}}
	ann, err := tryDialHeader(t, p.URL, wire.Proto, websocket.DefaultDialer, hdr)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := structpb.NewValue(map[string]any{"device": "phone"})
	r := ann.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{
		Token: "user:ann/inbox-ann,team-x,bad room", Data: data}}})
	cr := r.GetConnect()
	info := cr.GetClient().GetInfo().GetStructValue().GetFields()
	if info["name"].GetStringValue() != "Ann" || info["cookie"].GetStringValue() != "session=abc" || !info["remote"].GetBoolValue() ||
		info["data"].GetStructValue().GetFields()["device"].GetStringValue() != "phone" {
		t.Fatalf("connect reply info: %v", r)
	}
	if strings.Join(cr.GetRooms(), ",") != "inbox-ann,team-x" {
		t.Fatalf("rooms %v (an invalid name is skipped)", cr.GetRooms())
	}
	joins := hookJoins(t, ann, 2)
	if joins["inbox-ann"].GetPosition().GetOffset() != 2 || joins["team-x"] == nil {
		t.Fatalf("server joins: %v", joins)
	}
	if n := strings.Count(strings.Join(be.calls(), "\n"), "Join"); n != joinsBefore {
		t.Fatalf("the join hook was called for rooms the connect hook named (%d calls, was %d)", n, joinsBefore)
	}
	if r := ann.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "team-x"}}}); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_ALREADY_JOINED {
		t.Fatalf("join of a server-joined room: %v", r)
	}
	// Ann's messages carry her info; she gets her inbox's messages.
	ann.publish("team-x", "hi team")
	m := bob.nextMessage()
	for m.GetRoom() != "team-x" {
		m = bob.nextMessage() // bob's own messages to the inbox first
	}
	if m.GetSender().GetInfo().GetStructValue().GetFields()["name"].GetStringValue() != "Ann" {
		t.Fatalf("sender info: %v", m)
	}
	bob.publish("inbox-ann", "three")
	var last *hubbubv1.Message
	for last.GetBody().GetText() != "three" {
		last = ann.nextMessage()
	}
	pos := &hubbubv1.StreamPosition{Offset: last.GetOffset(), Epoch: last.GetEpoch()}
	ann.close()

	// Missed while away: the reconnect's since recovers them exactly.
	bob.publish("inbox-ann", "four")
	bob.publish("inbox-ann", "five")
	ann2 := dial(t, p.URL, wire.JSON)
	r = ann2.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{
		Token: "user:ann/inbox-ann", Since: map[string]*hubbubv1.StreamPosition{"inbox-ann": pos}}}})
	if r.GetConnect() == nil {
		t.Fatalf("reconnect: %v", r)
	}
	j := hookJoins(t, ann2, 1)["inbox-ann"]
	var texts []string
	for _, m := range j.GetMessages() {
		texts = append(texts, m.GetBody().GetText())
	}
	if !j.GetRecovered() || strings.Join(texts, ",") != "four,five" {
		t.Fatalf("recovery through connect: recovered %v, %v", j.GetRecovered(), texts)
	}

	// A refusal with the backend's code.
	sus, r := connectAs(t, p.URL, wire.JSON, "suspended")
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED || r.GetError().GetMessage() != "suspended until tomorrow" ||
		closeCode(sus.waitClosed()) != wire.CloseUnauthorized {
		t.Fatalf("coded refusal: %v", r)
	}
}

// The Go client takes the rooms a connect hook joins for it: a subscription
// through OnServerJoin, and exact recovery across a server kill -9 and
// restart by passing its position with the next connect.
func TestGoClientServerJoinedRooms(t *testing.T) {
	be := startHookBackend(t)
	addr, dir := freePort(t), t.TempDir()
	args := hookArgs(t, be.URL, "json", "--listen", addr, "--data-dir", dir)
	p1 := startProcess(t, args...)
	subs := make(chan *hubclient.Subscription, 4)
	data, _ := structpb.NewValue(map[string]any{"device": "go"})
	ann := hubclient.New(hubclient.Config{URL: p1.URL, MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond,
		Token:        func(context.Context) (string, error) { return "user:ann/inbox-ann", nil },
		ConnectData:  data,
		OnServerJoin: func(s *hubclient.Subscription) { subs <- s }})
	defer ann.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ann.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if f := ann.Info().GetInfo().GetStructValue().GetFields(); f["name"].GetStringValue() != "Ann" || f["data"].GetStructValue().GetFields()["device"].GetStringValue() != "go" {
		t.Fatalf("info %v", ann.Info())
	}
	var s *hubclient.Subscription
	select {
	case s = <-subs:
	case <-ctx.Done():
		t.Fatal("no server-joined subscription")
	}
	if s.Room() != "inbox-ann" {
		t.Fatalf("room %s", s.Room())
	}
	bob, _ := connectAs(t, p1.URL, wire.JSON, "user:bob")
	bob.join("inbox-ann", nil)
	bob.publish("inbox-ann", "one")
	if ev := waitEvent(t, s, hubclient.EventMessage); ev.Message.GetBody().GetText() != "one" {
		t.Fatalf("first: %v", ev.Message)
	}

	if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p1.done
	p1.done <- nil
	p2 := startProcess(t, args...)
	bob2, _ := connectAs(t, p2.URL, wire.JSON, "user:bob")
	bob2.join("inbox-ann", nil)
	bob2.publish("inbox-ann", "two")
	bob2.publish("inbox-ann", "three")
	var got []string
	for len(got) < 2 {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatal("subscription ended")
			}
			switch ev.Kind {
			case hubclient.EventMessage:
				got = append(got, ev.Message.GetBody().GetText())
			case hubclient.EventNotRecovered:
				t.Fatalf("not recovered after the restart: %v", ev.Position)
			}
		case <-ctx.Done():
			t.Fatalf("after the restart: %v", got)
		}
	}
	if strings.Join(got, ",") != "two,three" {
		t.Fatalf("after the restart: %v", got)
	}
	select {
	case s2 := <-subs:
		t.Fatalf("a second subscription for %s after the reconnect", s2.Room())
	default:
	}
}

// A node killed with kill -9 owes the backend what it had not sent and the
// leaves and disconnects of the connections it had: restarted on the same
// data directory it sends them, under the same node name with seq going on.
func TestHookNotificationsAcrossNodeKill(t *testing.T) {
	be := startHookBackend(t)
	addr, dir := freePort(t), t.TempDir()
	args := hookArgs(t, be.URL, "json", "--listen", addr, "--data-dir", dir, "--hook-disconnect-grace", "5s")
	p1 := startProcess(t, args...)
	ann, _ := connectAs(t, p1.URL, wire.Proto, "user:ann")
	ann.join("r1", nil)
	ann.join("r2", nil)
	cat, _ := connectAs(t, p1.URL, wire.JSON, "user:cat")
	cat.join("r1", nil)
	cat.join("r3", nil)
	cat.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "r1"}}})
	be.waitNotifications(t, "KIND_LEAVE cat r1 leave")
	eventually(t, "the backend's answer at the node", func() bool {
		return sum(scrape(t, httpBase(p1.URL)), "hubbub_hooks_notified_total") == 1
	})
	be.mu.Lock()
	stream, seq1 := be.raw[0][5], be.raw[0][6]
	be.mu.Unlock()

	// The backend goes away: a leave is queued; cat closes (its disconnect
	// waits out the grace window); then the node is killed.
	hookAddr := strings.TrimPrefix(be.URL, "http://")
	be.kill()
	cat.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "r3"}}})
	cat.close()
	time.Sleep(300 * time.Millisecond)
	if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p1.done
	p1.done <- nil

	be2 := startHookBackend(t, "--listen", hookAddr)
	startProcess(t, args...)
	want := []string{"KIND_LEAVE cat r3 leave", "KIND_LEAVE ann r1 node_restarted", "KIND_LEAVE ann r2 node_restarted",
		"KIND_DISCONNECT ann - node_restarted", "KIND_DISCONNECT cat - node_restarted"}
	got := be2.waitNotifications(t, want...)
	if got[0] != want[0] || len(got) != len(want) {
		t.Fatalf("after the restart %v, want %v (the queued leave first, each once)", got, want)
	}
	be2.mu.Lock()
	defer be2.mu.Unlock()
	prev, _ := strconv.Atoi(seq1)
	for _, f := range be2.raw {
		n, _ := strconv.Atoi(f[6])
		if f[5] != stream || n <= prev {
			t.Fatalf("node %s seq %d after node %s seq %d: the journal's name and seq must go on (%v)", f[5], n, stream, prev, be2.raw)
		}
		prev = n
	}
}

// Three nodes call one backend (gRPC): connects on every node get the
// backend's user and info, a room's members on different nodes see each
// other's messages through the hooks, and each node notifies under its own
// name.
func TestHooksCluster(t *testing.T) {
	be := startHookBackend(t)
	nodes := startCluster(t, 3, hookArgs(t, be.URL, "grpc", "--hook-disconnect-grace", "200ms")...)
	ann, r := connectAs(t, nodes[0].URL, wire.Proto, "user:ann/team-c")
	if r.GetConnect().GetClient().GetUser() != "ann" || len(r.GetConnect().GetRooms()) != 1 {
		t.Fatalf("node 0 connect: %v", r)
	}
	hookJoins(t, ann, 1)
	bob, r := connectAs(t, nodes[1].URL, wire.JSON, "user:bob")
	if r.GetConnect().GetClient().GetInfo().GetStructValue().GetFields()["name"].GetStringValue() != "Bob" {
		t.Fatalf("node 1 connect: %v", r)
	}
	carol, _ := connectAs(t, nodes[2].URL, wire.Proto, "user:carol")
	bob.join("team-c", nil)
	carol.join("team-c", nil)
	if r := carol.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "secret-c"}}}); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("refused join on node 2: %v", r)
	}
	if _, r := connectAs(t, nodes[1].URL, wire.JSON, "deny"); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED {
		t.Fatalf("refused connect on node 1: %v", r)
	}

	bob.publish("team-c", "shout:hello")
	if r := carol.request(publishFrame("team-c", "a badword", "")); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("refused publish on node 2: %v", r)
	}
	carol.publish("team-c", "fine")
	for _, c := range []*client{ann, bob, carol} {
		m1, m2 := c.nextMessage(), c.nextMessage()
		if m1.GetBody().GetText() != "SHOUT:HELLO" || m1.GetSender().GetInfo().GetStructValue().GetFields()["name"].GetStringValue() != "Bob" ||
			m2.GetBody().GetText() != "fine" || m2.GetSender().GetUser() != "carol" {
			t.Fatalf("messages: %v %v", m1, m2)
		}
	}

	carol.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "team-c"}}})
	bob.close()
	ann.close()
	be.waitNotifications(t, "KIND_LEAVE carol team-c leave", "KIND_LEAVE bob team-c disconnect", "KIND_DISCONNECT bob - closed",
		"KIND_LEAVE ann team-c disconnect", "KIND_DISCONNECT ann - closed")
	be.mu.Lock()
	defer be.mu.Unlock()
	streams := map[string]string{}
	for _, f := range be.raw {
		if s, ok := streams[f[1]]; ok && s != f[5] {
			t.Fatalf("one connection's notifications under two names: %v", be.raw)
		}
		streams[f[1]] = f[5]
	}
	if len(streams) != 3 || streams["ann"] == streams["bob"] || streams["bob"] == streams["carol"] || streams["ann"] == streams["carol"] {
		t.Fatalf("each node notifies under its own name: %v", streams)
	}
}

// Over https with mutual TLS: Hubbub trusts the backend's CA and presents
// its own certificate; without it the backend refuses and connects get 1013.
// --hooks turns hooks off (joins go by the identity's grants, as without a
// backend) and --hook-timeouts gives one hook a timeout of its own.
func TestHooksMutualTLS(t *testing.T) {
	beCert, beKey, _ := selfSigned(t)
	hubCert, hubKey, _ := selfSigned(t)
	be := startHookBackend(t, "--tls-cert", beCert, "--tls-key", beKey, "--client-ca", hubCert)
	url := strings.Replace(be.URL, "http://", "https://", 1)
	p := startProcess(t, hookArgs(t, url, "grpc", "--hook-ca-file", beCert, "--hook-cert", hubCert, "--hook-key", hubKey,
		"--hooks", "connect,rpc", "--hook-timeouts", "rpc=150ms")...)
	ann, r := connectAs(t, p.URL, wire.JSON, "user:ann")
	if r.GetConnect().GetClient().GetUser() != "ann" {
		for len(p.logs) > 0 {
			t.Log(<-p.logs)
		}
		t.Fatalf("connect over mutual TLS: %v", r)
	}
	joins := strings.Count(strings.Join(be.calls(), "\n"), "Join")
	ann.join("secret-1", nil) // the Join hook is off: the backend would refuse it
	if n := strings.Count(strings.Join(be.calls(), "\n"), "Join"); n != joins {
		t.Fatal("the Join hook was called while off")
	}
	if r := ann.request(rpcFrame("whoami", nil)); r.GetRpc().GetData().GetStringValue() != "ann" {
		t.Fatalf("rpc over mutual TLS: %v", r)
	}
	if r := ann.request(rpcFrame("sleep", map[string]any{"ms": 400})); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !r.GetError().GetTemporary() {
		t.Fatalf("rpc past its own 150ms timeout: %v", r)
	}

	// A node without the client certificate is refused by the backend.
	p2 := startProcess(t, hookArgs(t, url, "grpc", "--hook-ca-file", beCert)...)
	c, r := connectAs(t, p2.URL, wire.JSON, "user:bob")
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE || closeCode(c.waitClosed()) != wire.CloseTryAgainLater {
		t.Fatalf("connect without the client certificate: %v", r)
	}
}

// Room profiles choose what the backend hears: joins too (hook-notify:
// presence), or nothing (off); a rejoin after a page reload is neither a
// leave nor a join.
func TestHookNotifyProfiles(t *testing.T) {
	be := startHookBackend(t)
	cfg := filepath.Join(t.TempDir(), "hubbub.yaml")
	rooms := "rooms:\n  - pattern: \"p-*\"\n    hook-notify: presence\n  - pattern: \"quiet-*\"\n    hook-notify: off\n"
	if err := os.WriteFile(cfg, []byte(rooms), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, hookArgs(t, be.URL, "json", "--config", cfg, "--hook-disconnect-grace", "1s")...)
	dan, _ := connectAs(t, p.URL, wire.JSON, "user:dan")
	dan.join("p-1", nil)
	dan.join("quiet-1", nil)
	dan.join("p-2", nil)
	for _, room := range []string{"quiet-1", "p-1"} {
		dan.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: room}}})
	}
	want := []string{"KIND_JOIN dan p-1 join", "KIND_JOIN dan p-2 join", "KIND_LEAVE dan p-1 leave"}
	if got := be.waitNotifications(t, want...); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("notifications %v, want %v", got, want)
	}
	dan.close()
	dan2, _ := connectAs(t, p.URL, wire.JSON, "user:dan")
	dan2.join("p-2", nil)
	dan2.join("p-3", nil)
	be.waitNotifications(t, "KIND_JOIN dan p-3 join")
	time.Sleep(1500 * time.Millisecond) // past the window
	if got := be.notesNow(); len(got) != 4 {
		t.Fatalf("after the reload %v: only the join of p-3 is new", got)
	}
}

// With JWTs configured the connect hook runs after the token check: a bad
// token is refused without asking the backend, a good one is passed on and
// the backend names the user.
func TestHookAfterJWT(t *testing.T) {
	be := startHookBackend(t)
	secret := filepath.Join(t.TempDir(), "jwt")
	if err := os.WriteFile(secret, testSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, hookArgs(t, be.URL, "json", "--jwt-alg", "HS256", "--jwt-hmac-secret-file", secret)...)
	calls := len(be.calls())
	bad, r := connectAs(t, p.URL, wire.JSON, token(t, jwt.SigningMethodHS256, []byte("not the server's secret at all!!"), userClaims("eve", time.Hour)))
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED || closeCode(bad.waitClosed()) != wire.CloseUnauthorized || len(be.calls()) != calls {
		t.Fatalf("a bad token: %v (backend calls %v)", r, be.calls()[calls:])
	}
	_, r = connectAs(t, p.URL, wire.JSON, token(t, jwt.SigningMethodHS256, testSecret, userClaims("ann", time.Hour)))
	if r.GetConnect().GetClient().GetUser() != "jwt-ann" {
		t.Fatalf("a good token: %v", r)
	}
}
