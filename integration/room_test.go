package integration

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

// Several clients, in both encodings, publishing concurrently, all see one
// order with consecutive offsets.
func TestRoomOrderConsecutiveOffsets(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	const perClient = 25
	encs := []wire.Encoding{wire.Proto, wire.JSON, wire.Proto, wire.JSON}
	clients := make([]*client, len(encs))
	for i, enc := range encs {
		clients[i] = connect(t, s.URL, enc, fmt.Sprintf("user%d", i))
		clients[i].join("order", nil)
	}
	// Publishing runs from separate goroutines through a second connection per
	// user, so the receiving clients' reads stay on the test goroutine.
	var wg sync.WaitGroup
	acks := make(chan uint64, perClient*len(encs))
	for i, enc := range encs {
		pub := connect(t, s.URL, enc, fmt.Sprintf("pub%d", i))
		wg.Add(1)
		go func() { // owner: this test; joined by wg.Wait
			defer wg.Done()
			for k := 0; k < perClient; k++ {
				id := pub.send(publishFrame("order", fmt.Sprintf("%d-%d", i, k), ""))
				acks <- id
			}
		}()
	}
	wg.Wait()
	total := perClient * len(encs)
	var first []string
	for ci, c := range clients {
		var got []string
		for k := 0; k < total; k++ {
			m := c.nextMessage()
			if m.GetOffset() != uint64(k+1) {
				t.Fatalf("client %d: message %d has offset %d", ci, k, m.GetOffset())
			}
			got = append(got, m.GetBody().GetText())
		}
		if first == nil {
			first = got
			continue
		}
		for k := range got {
			if got[k] != first[k] {
				t.Fatalf("client %d sees %q at %d, client 0 sees %q", ci, got[k], k, first[k])
			}
		}
	}
}

func TestPublishAckCarriesOffset(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	c := connect(t, s.URL, wire.Proto, "alice")
	j := c.join("acks", nil)
	for i := 1; i <= 3; i++ {
		r := c.publish("acks", "hi")
		if r.GetOffset() != uint64(i) || r.GetEpoch() != j.GetPosition().GetEpoch() {
			t.Fatalf("ack %d: %v (join epoch %s)", i, r, j.GetPosition().GetEpoch())
		}
	}
	// Publishing does not need membership.
	out := connect(t, s.URL, wire.JSON, "bob")
	if r := out.publish("acks", "from outside"); r.GetOffset() != 4 {
		t.Fatalf("outside publish: %v", r)
	}
	if m := c.nextMessage(); m.GetSender().GetUser() != "alice" {
		t.Fatalf("sender: %v", m.GetSender())
	}
}

func TestFanoutToHundreds(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	const members, msgs = 300, 5
	clients := make([]*client, members)
	for i := range clients {
		enc := wire.Proto
		if i%3 == 0 {
			enc = wire.JSON
		}
		clients[i] = connect(t, s.URL, enc, fmt.Sprintf("m%d", i))
		clients[i].join("big", nil)
	}
	pub := connect(t, s.URL, wire.Proto, "publisher")
	before := s.node.Counters().Deliveries.Load()
	for i := 0; i < msgs; i++ {
		pub.publish("big", fmt.Sprintf("msg %d", i))
	}
	for i, c := range clients {
		for k := 0; k < msgs; k++ {
			m := c.nextMessage()
			if want := fmt.Sprintf("msg %d", k); m.GetBody().GetText() != want {
				t.Fatalf("client %d got %q want %q", i, m.GetBody().GetText(), want)
			}
		}
	}
	if got := s.node.Counters().Deliveries.Load() - before; got < members*msgs {
		t.Fatalf("deliveries counted %d, want >= %d", got, members*msgs)
	}
}

func TestDuplicatePublishAcceptedOnce(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	sub := connect(t, s.URL, wire.Proto, "sub")
	sub.join("dup", nil)
	pub := connect(t, s.URL, wire.JSON, "pub")
	r1 := pub.request(publishFrame("dup", "once", "m-1"))
	r2 := pub.request(publishFrame("dup", "once", "m-1"))
	if r1.GetPublish().GetDuplicate() || !r2.GetPublish().GetDuplicate() || r1.GetPublish().GetOffset() != r2.GetPublish().GetOffset() {
		t.Fatalf("first %v, retry %v", r1, r2)
	}
	// Another user may use the same id.
	other := connect(t, s.URL, wire.Proto, "other")
	r3 := other.request(publishFrame("dup", "mine", "m-1"))
	if r3.GetPublish().GetDuplicate() || r3.GetPublish().GetOffset() != 2 {
		t.Fatalf("other user's id: %v", r3)
	}
	if m := sub.nextMessage(); m.GetOffset() != 1 {
		t.Fatalf("first delivery %v", m)
	}
	if m := sub.nextMessage(); m.GetOffset() != 2 || m.GetBody().GetText() != "mine" {
		t.Fatalf("duplicate was delivered: %v", m)
	}
}

func TestTypingIndicatorsExpire(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{TypingTTL: 300 * time.Millisecond}}, transport.Config{})
	a := connect(t, s.URL, wire.Proto, "alice")
	b := connect(t, s.URL, wire.JSON, "bob")
	a.join("t", nil)
	b.join("t", nil)
	r := a.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: "t", Typing: true}}})
	if r.GetTyping() == nil {
		t.Fatalf("typing reply %v", r)
	}
	start := time.Now()
	var sawOn, sawOff bool
	for !sawOff {
		f := b.nextPush()
		ev := f.GetTypingEvent()
		if ev == nil {
			continue
		}
		if ev.GetClient().GetUser() != "alice" {
			t.Fatalf("typing from %v", ev.GetClient())
		}
		if ev.GetTyping() {
			sawOn = true
		} else {
			sawOff = true
		}
	}
	if !sawOn || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("typing on=%v, off after %v", sawOn, time.Since(start))
	}
	// Typing is never stored.
	h := b.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "t"}}})
	if len(h.GetHistory().GetMessages()) != 0 {
		t.Fatalf("history holds typing: %v", h)
	}
}

func TestHistoryQueries(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{HistorySize: 8}}, transport.Config{})
	c := connect(t, s.URL, wire.Proto, "h")
	for i := 1; i <= 10; i++ {
		c.publish("hist", fmt.Sprint(i))
	}
	hist := func(since uint64, limit uint32, reverse bool) []string {
		r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{
			Room: "hist", SinceOffset: since, Limit: limit, Reverse: reverse}}})
		if r.GetHistory().GetPosition().GetOffset() != 10 {
			t.Fatalf("position %v", r.GetHistory().GetPosition())
		}
		var out []string
		for _, m := range r.GetHistory().GetMessages() {
			out = append(out, m.GetBody().GetText())
		}
		return out
	}
	cases := []struct {
		name    string
		since   uint64
		limit   uint32
		reverse bool
		want    string
	}{
		{"all retained", 0, 0, false, "[3 4 5 6 7 8 9 10]"},
		{"since with limit", 4, 3, false, "[5 6 7]"},
		{"newest first", 0, 3, true, "[10 9 8]"},
		{"newest first since", 8, 5, true, "[10 9]"},
		{"nothing newer", 10, 0, false, "[]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(hist(tc.since, tc.limit, tc.reverse)); got != tc.want {
				t.Fatalf("got %s want %s", got, tc.want)
			}
		})
	}
}

func TestHistoryExpiresByAge(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{HistoryTTL: 200 * time.Millisecond}}, transport.Config{})
	c := connect(t, s.URL, wire.Proto, "h")
	c.publish("aged", "old")
	eventually(t, "history to expire", func() bool {
		r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "aged"}}})
		return len(r.GetHistory().GetMessages()) == 0
	})
}

func TestRecoveryAfterReconnect(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{HistorySize: 5}}, transport.Config{})
	pub := connect(t, s.URL, wire.Proto, "pub")
	pub.join("rec", nil) // keeps the room active
	a := connect(t, s.URL, wire.JSON, "a")
	a.join("rec", nil)
	pub.publish("rec", "m1")
	last := a.nextMessage()
	a.close()
	for i := 2; i <= 4; i++ {
		pub.publish("rec", fmt.Sprintf("m%d", i))
	}
	since := &hubbubv1.StreamPosition{Offset: last.GetOffset(), Epoch: last.GetEpoch()}
	t.Run("recovered", func(t *testing.T) {
		a2 := connect(t, s.URL, wire.JSON, "a")
		j := a2.join("rec", since)
		if !j.GetRecovered() || len(j.GetMessages()) != 3 || j.GetPosition().GetOffset() != 4 {
			t.Fatalf("join %v", j)
		}
		for i, m := range j.GetMessages() {
			if m.GetOffset() != uint64(i+2) {
				t.Fatalf("recovered offset %d at %d", m.GetOffset(), i)
			}
		}
		pub.publish("rec", "m5")
		if m := a2.nextMessage(); m.GetOffset() != 5 {
			t.Fatalf("live after recovery %v", m)
		}
	})
	t.Run("up to date", func(t *testing.T) {
		a3 := connect(t, s.URL, wire.Proto, "a")
		j := a3.join("rec", &hubbubv1.StreamPosition{Offset: 5, Epoch: last.GetEpoch()})
		if !j.GetRecovered() || len(j.GetMessages()) != 0 {
			t.Fatalf("join %v", j)
		}
	})
	t.Run("gone from history", func(t *testing.T) {
		for i := 6; i <= 12; i++ {
			pub.publish("rec", fmt.Sprintf("m%d", i))
		}
		a4 := connect(t, s.URL, wire.Proto, "a")
		j := a4.join("rec", since)
		if j.GetRecovered() || len(j.GetMessages()) != 0 || j.GetPosition().GetOffset() != 12 {
			t.Fatalf("join %v", j)
		}
	})
	t.Run("other epoch", func(t *testing.T) {
		a5 := connect(t, s.URL, wire.Proto, "a")
		j := a5.join("rec", &hubbubv1.StreamPosition{Offset: 11, Epoch: "not-the-epoch"})
		if j.GetRecovered() {
			t.Fatalf("join %v", j)
		}
	})
	t.Run("offset from the future", func(t *testing.T) {
		a6 := connect(t, s.URL, wire.Proto, "a")
		j := a6.join("rec", &hubbubv1.StreamPosition{Offset: 99, Epoch: last.GetEpoch()})
		if j.GetRecovered() {
			t.Fatalf("join %v", j)
		}
	})
}

func TestIdleRoomStopsAndComesBack(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{IdleTimeout: 100 * time.Millisecond}}, transport.Config{})
	c := connect(t, s.URL, wire.Proto, "idle")
	j1 := c.join("sleepy", nil)
	c.publish("sleepy", "before")
	// A room with a member never stops: once an empty room started after it
	// has stopped (its idle timer fired), this one is still running.
	c.publish("empty", "nobody here")
	eventually(t, "the empty room to stop", func() bool { return s.node.Counters().RoomsStopped.Load() >= 1 })
	if s.node.Counters().RoomsStopped.Load() != 1 {
		t.Fatal("room with a member stopped")
	}
	c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "sleepy"}}})
	eventually(t, "idle room to stop", func() bool { return s.node.Counters().RoomsStopped.Load() == 2 })
	j2 := c.join("sleepy", &hubbubv1.StreamPosition{Offset: 1, Epoch: j1.GetPosition().GetEpoch()})
	if j2.GetRecovered() || j2.GetPosition().GetEpoch() == j1.GetPosition().GetEpoch() || j2.GetPosition().GetOffset() != 0 {
		t.Fatalf("restarted room: %v (was %v)", j2, j1)
	}
	if r := c.publish("sleepy", "after"); r.GetOffset() != 1 {
		t.Fatalf("publish after restart %v", r)
	}
}
