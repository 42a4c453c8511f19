package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/client"
	"github.com/hubbub-chat/hubbub/internal/testproxy"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// protoactor's dead-letter throttle parks a goroutine for one interval; it ends by itself.
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}

const waitFor = 10 * time.Second

// startServer runs a real Hubbub server on 127.0.0.1 and returns its address.
func startServer(t *testing.T, nc actors.Config, tc transport.Config) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node := actors.NewNode(nc, actors.Options{})
	srv := transport.NewServer(node, tc, nil)
	done := make(chan struct{})
	go func() { // owner: the test; joined in cleanup
		_ = srv.Serve(l)
		close(done)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return l.Addr().String()
}

func wsURL(addr string) string { return "ws://" + addr + "/ws" }

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c := client.New(cfg)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect: %v", err)
	}
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func nextEvent(t *testing.T, s *client.Subscription, kind client.EventKind) client.Event {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatalf("events closed waiting for kind %d", kind)
			}
			if ev.Kind == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event of kind %d", kind)
		}
	}
}

func TestClientBasicsBothEncodings(t *testing.T) {
	addr := startServer(t, actors.Config{}, transport.Config{})
	for _, enc := range []wire.Encoding{wire.Proto, wire.JSON} {
		t.Run(enc.String(), func(t *testing.T) {
			room := "basics-" + enc.String()
			a := newClient(t, client.Config{URL: wsURL(addr), Encoding: enc, Name: "alice"})
			b := newClient(t, client.Config{URL: wsURL(addr), Encoding: enc, Name: "bob"})
			if a.Info().GetUser() != "alice" || a.State() != client.StateConnected {
				t.Fatalf("info %v state %v", a.Info(), a.State())
			}
			ctx := ctxT(t)
			sa, err := a.Join(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			sb, err := b.Join(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			// Both joins arrive as presence diffs (one, or two when they fall
			// in different presence intervals).
			var joined []string
			for len(joined) < 2 {
				ev := nextEvent(t, sa, client.EventPresence)
				joined = append(joined, ev.Presence.GetJoined()...)
				if ev.Presence.GetUsers() != uint32(len(joined)) {
					t.Fatalf("presence %v after %v", ev.Presence, joined)
				}
			}
			if slices.Sort(joined); fmt.Sprint(joined) != "[alice bob]" {
				t.Fatalf("joined %v", joined)
			}
			ack, err := b.PublishText(ctx, room, "hello")
			if err != nil || ack.GetOffset() != 1 {
				t.Fatalf("publish %v %v", ack, err)
			}
			if _, err := b.PublishData(ctx, room, map[string]any{"x": 2.0}); err != nil {
				t.Fatal(err)
			}
			if ev := nextEvent(t, sa, client.EventMessage); ev.Message.GetBody().GetText() != "hello" || ev.Message.GetSender().GetUser() != "bob" {
				t.Fatalf("message %v", ev.Message)
			}
			if ev := nextEvent(t, sa, client.EventMessage); ev.Message.GetBody().GetData().GetStructValue().GetFields()["x"].GetNumberValue() != 2 {
				t.Fatalf("data %v", ev.Message)
			}
			if p := sa.Position(); p.GetOffset() != 2 || p.GetEpoch() != ack.GetEpoch() {
				t.Fatalf("position %v", p)
			}
			h, err := a.History(ctx, room, client.HistoryOptions{Reverse: true, Limit: 1})
			if err != nil || len(h.GetMessages()) != 1 || h.GetMessages()[0].GetOffset() != 2 {
				t.Fatalf("history %v %v", h, err)
			}
			members, err := a.Presence(ctx, room)
			if err != nil || len(members) != 2 {
				t.Fatalf("presence %v %v", members, err)
			}
			if err := b.Typing(ctx, room, true); err != nil {
				t.Fatal(err)
			}
			if ev := nextEvent(t, sa, client.EventTyping); !ev.Typing.GetTyping() || ev.Typing.GetClient().GetUser() != "bob" {
				t.Fatalf("typing %v", ev.Typing)
			}
			if err := a.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			var se *client.ServerError
			if _, err := a.PublishText(ctx, "bad room", "x"); !errors.As(err, &se) || se.Code != hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM {
				t.Fatalf("bad room: %v", err)
			}
			if err := sb.Leave(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := <-sb.Events(); ok {
				// Events may still hold queued pushes; drain to the close.
				for range sb.Events() {
				}
			}
			if ev := nextEvent(t, sa, client.EventPresence); fmt.Sprint(ev.Presence.GetLeft()) != "[bob]" || ev.Presence.GetUsers() != 1 {
				t.Fatalf("leave %v", ev.Presence)
			}
		})
	}
}

// A subscriber whose TCP connection is cut twice mid-stream receives every
// message exactly once, in order.
func TestReconnectRecoversEveryMessageOnce(t *testing.T) {
	addr := startServer(t, actors.Config{Room: actors.RoomConfig{HistorySize: 1000}}, transport.Config{})
	p := testproxy.New(t, addr)
	var states []client.State
	var smu sync.Mutex
	sub := newClient(t, client.Config{URL: wsURL(p.Addr()), Encoding: wire.JSON, Name: "sub",
		MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 100 * time.Millisecond,
		OnState: func(sc client.StateChange) { smu.Lock(); states = append(states, sc.State); smu.Unlock() }})
	pub := newClient(t, client.Config{URL: wsURL(addr), Name: "pub"})
	ctx := ctxT(t)
	s, err := sub.Join(ctx, "stream")
	if err != nil {
		t.Fatal(err)
	}
	const total = 300
	done := make(chan error, 1)
	go func() { // owner: this test; joined through done
		for i := 1; i <= total; i++ {
			if _, err := pub.PublishText(ctx, "stream", fmt.Sprint(i)); err != nil {
				done <- err
				return
			}
			if i == 100 || i == 200 {
				p.Cut()
			}
			time.Sleep(time.Millisecond)
		}
		done <- nil
	}()
	for i := 1; i <= total; i++ {
		ev := nextEvent(t, s, client.EventMessage)
		if ev.Message.GetBody().GetText() != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, ev.Message.GetBody().GetText())
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-s.Events():
		if ev.Kind == client.EventMessage || ev.Kind == client.EventNotRecovered {
			t.Fatalf("extra event %v", ev)
		}
	case <-time.After(100 * time.Millisecond):
	}
	if p.Accepted.Load() < 3 {
		t.Fatalf("the client connected %d times, want 3", p.Accepted.Load())
	}
	smu.Lock()
	defer smu.Unlock()
	if !strings.Contains(fmt.Sprint(states), "disconnected connecting connected") {
		t.Fatalf("states %v", states)
	}
}

// When the gap is no longer in history the subscription says so.
func TestReconnectNotRecovered(t *testing.T) {
	addr := startServer(t, actors.Config{Room: actors.RoomConfig{HistorySize: 5}}, transport.Config{})
	p := testproxy.New(t, addr)
	sub := newClient(t, client.Config{URL: wsURL(p.Addr()), Name: "sub", MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 50 * time.Millisecond})
	pub := newClient(t, client.Config{URL: wsURL(addr), Name: "pub"})
	ctx := ctxT(t)
	s, err := sub.Join(ctx, "gap")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishText(ctx, "gap", "before"); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, s, client.EventMessage)
	p.Paused.Store(true)
	p.Cut()
	for i := 0; i < 20; i++ {
		if _, err := pub.PublishText(ctx, "gap", fmt.Sprint("missed ", i)); err != nil {
			t.Fatal(err)
		}
	}
	p.Paused.Store(false)
	ev := nextEvent(t, s, client.EventNotRecovered)
	if ev.Position.GetOffset() != 21 {
		t.Fatalf("position %v", ev.Position)
	}
	if _, err := pub.PublishText(ctx, "gap", "after"); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, s, client.EventMessage); ev.Message.GetBody().GetText() != "after" {
		t.Fatalf("after %v", ev.Message)
	}
}

// A publish whose acknowledgement is lost is resent with the same message id
// after the reconnect and accepted once.
func TestPublishRetryIsIdempotent(t *testing.T) {
	addr := startServer(t, actors.Config{}, transport.Config{})
	p := testproxy.New(t, addr)
	pub := newClient(t, client.Config{URL: wsURL(p.Addr()), Name: "pub", MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 50 * time.Millisecond})
	ctx := ctxT(t)
	p.Deaf.Store(true) // the server gets the publish; its ack never comes back
	result := make(chan *hubbubv1.PublishReply, 1)
	go func() { // owner: this test; joined through result
		r, _ := pub.PublishText(ctx, "idem", "exactly once")
		result <- r
	}()
	reader := newClient(t, client.Config{URL: wsURL(addr), Name: "reader"})
	waitHistory := func(n int) {
		deadline := time.Now().Add(waitFor)
		for {
			h, err := reader.History(ctx, "idem", client.HistoryOptions{})
			if err == nil && len(h.GetMessages()) == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("history %v %v", h, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitHistory(1)
	p.Deaf.Store(false)
	p.Cut()
	r := <-result
	if r == nil || !r.GetDuplicate() || r.GetOffset() != 1 {
		t.Fatalf("retried publish %v", r)
	}
	waitHistory(1)
}

func TestPublishWhileDisconnected(t *testing.T) {
	addr := startServer(t, actors.Config{}, transport.Config{})
	p := testproxy.New(t, addr)
	waiting := newClient(t, client.Config{URL: wsURL(p.Addr()), Name: "w", MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 50 * time.Millisecond})
	fast := newClient(t, client.Config{URL: wsURL(p.Addr()), Name: "f", FailFast: true, MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 50 * time.Millisecond})
	p.Paused.Store(true)
	p.Cut()
	deadline := time.Now().Add(waitFor)
	for fast.State() == client.StateConnected || waiting.State() == client.StateConnected {
		if time.Now().After(deadline) {
			t.Fatal("clients did not notice the cut")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := fast.PublishText(ctxT(t), "r", "x"); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("fail-fast publish: %v", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := waiting.PublishText(short, "r", "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("bounded wait: %v", err)
	}
	result := make(chan error, 1)
	go func() { // owner: this test; joined through result
		_, err := waiting.PublishText(ctxT(t), "r", "queued")
		result <- err
	}()
	time.Sleep(50 * time.Millisecond)
	p.Paused.Store(false)
	if err := <-result; err != nil {
		t.Fatalf("queued publish: %v", err)
	}
}

// The server's advice not to reconnect is honoured.
func TestNoReconnectWhenServerSaysSo(t *testing.T) {
	addr := startServer(t, actors.Config{Conn: actors.ConnConfig{MaxMessageBytes: 1 << 20}}, transport.Config{MaxFrameBytes: 1024})
	var closed client.StateChange
	var mu sync.Mutex
	c := newClient(t, client.Config{URL: wsURL(addr), Name: "big", MinReconnectDelay: 10 * time.Millisecond,
		OnState: func(sc client.StateChange) {
			if sc.State == client.StateClosed {
				mu.Lock()
				closed = sc
				mu.Unlock()
			}
		}})
	_, err := c.PublishText(ctxT(t), "r", strings.Repeat("x", 4096))
	var de *client.DisconnectError
	if err == nil {
		t.Fatal("oversized publish succeeded")
	}
	deadline := time.Now().Add(waitFor)
	for c.State() != client.StateClosed {
		if time.Now().After(deadline) {
			t.Fatalf("state %v", c.State())
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !errors.As(closed.Err, &de) || de.Code != wire.CloseTooBig || de.Reconnect {
		t.Fatalf("closed with %v", closed.Err)
	}
	if _, err := c.PublishText(ctxT(t), "r", "x"); !errors.As(err, &de) {
		t.Fatalf("after close: %v", err)
	}
}

// Clients that lose the same server come back spread out by the jitter.
func TestReconnectStormIsSpread(t *testing.T) {
	addr := startServer(t, actors.Config{}, transport.Config{})
	p := testproxy.New(t, addr)
	const n = 20
	var mu sync.Mutex
	var cutAt time.Time
	var firstRetry []time.Duration
	for i := 0; i < n; i++ {
		newClient(t, client.Config{URL: wsURL(p.Addr()), Name: fmt.Sprint("c", i), MinReconnectDelay: 400 * time.Millisecond,
			OnState: func(sc client.StateChange) {
				if sc.State == client.StateConnecting && sc.Attempt == 1 {
					mu.Lock()
					firstRetry = append(firstRetry, time.Since(cutAt))
					mu.Unlock()
				}
			}})
	}
	mu.Lock()
	cutAt = time.Now()
	mu.Unlock()
	p.Cut()
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		got := len(firstRetry)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients retried", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	lo, hi := firstRetry[0], firstRetry[0]
	for _, d := range firstRetry {
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi-lo < 100*time.Millisecond || hi > 2*time.Second {
		t.Fatalf("first retries between %v and %v: not spread by jitter", lo, hi)
	}
}
