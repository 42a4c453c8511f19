package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	hubclient "github.com/hubbub-chat/hubbub/client"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// Members connected to different nodes see one identical, gapless stream and
// one presence list; each publish crosses to each node with members once,
// however many members that node has.
func TestClusterRoomAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	const perNode, msgs = 5, 20
	var members []*client
	for i, p := range nodes {
		for k := 0; k < perNode; k++ {
			enc := wire.Proto
			if k%2 == 1 {
				enc = wire.JSON
			}
			c := connect(t, p.URL, enc, fmt.Sprintf("n%d-m%d", i, k))
			c.join("global", nil)
			members = append(members, c)
		}
	}
	r := members[0].request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "global"}}})
	if got := int(r.GetPresence().GetState().GetMembers()); got != 3*perNode {
		t.Fatalf("presence lists %d members, want %d", got, 3*perNode)
	}
	before := make([]float64, len(nodes))
	for i, p := range nodes {
		before[i] = sum(scrape(t, httpBase(p.URL)), "hubbub_relay_delivers_total")
	}
	pubs := []*client{connect(t, nodes[1].URL, wire.Proto, "pub1"), connect(t, nodes[2].URL, wire.JSON, "pub2")}
	for i := 0; i < msgs; i++ {
		pubs[i%2].publish("global", fmt.Sprint("m", i))
	}
	var first []string
	for i, c := range members {
		var got []string
		for k := 0; k < msgs; k++ {
			m := c.nextMessage()
			if m.GetOffset() != uint64(k+1) {
				t.Fatalf("member %d: offset %d at %d", i, m.GetOffset(), k)
			}
			got = append(got, m.GetBody().GetText())
		}
		if first == nil {
			first = got
		} else if fmt.Sprint(got) != fmt.Sprint(first) {
			t.Fatalf("member %d saw %v, member 0 saw %v", i, got, first)
		}
	}
	// Recovery across nodes: leave node 0, miss three messages, come back on node 2.
	last := members[0]
	lastMsg := last.nextHistoryTop(t, "global")
	last.close()
	for i := 0; i < 3; i++ {
		pubs[0].publish("global", fmt.Sprint("missed ", i))
	}
	back := connect(t, nodes[2].URL, wire.Proto, "back")
	j := back.join("global", lastMsg)
	if !j.GetRecovered() || len(j.GetMessages()) != 3 || j.GetMessages()[0].GetBody().GetText() != "missed 0" {
		t.Fatalf("recovery on another node: %v", j)
	}
	// Typing crosses nodes too.
	members[perNode].request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: "global", Typing: true}}})
	for {
		f := members[2*perNode].nextPush()
		if ev := f.GetTypingEvent(); ev != nil && ev.GetTyping() {
			break
		}
	}
	for i, p := range nodes {
		// The typing event was seen on node 2; the other nodes' relays may
		// still be delivering it, so wait for the lower bound before
		// checking the upper one.
		var delivers float64
		eventually(t, fmt.Sprintf("node %d relay to count every push", i), func() bool {
			delivers = sum(scrape(t, httpBase(p.URL)), "hubbub_relay_delivers_total") - before[i]
			return delivers >= msgs+3+1
		})
		// One per message for this node's members, not one per member: the
		// messages, the three missed ones, one typing event and a few
		// presence diffs (one per interval at most: the joins, the member
		// who left and the one who came back), against 5x that per member.
		if delivers > msgs+3+1+4 {
			t.Fatalf("node %d relay got %v delivers for %d messages to %d local members", i, delivers, msgs, perNode)
		}
	}
}

// kill -9 (or SIGTERM) of the node hosting a room of a three-node cluster
// while clients publish and listen: every client
// (Go SDK, given every node's URL) keeps receiving, never sees a message twice
// or out of order within an epoch, and learns of a lost gap through
// EventNotRecovered rather than silently.
func TestClusterNodeLost(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) { testNodeLost(t, sig) })
	}
}

func testNodeLost(t *testing.T, sig syscall.Signal) {
	nodes := startCluster(t, 3)
	urls := []string{nodes[0].URL, nodes[1].URL, nodes[2].URL}
	rotate := func(i int) hubclient.Config {
		return hubclient.Config{URL: urls[i%3], URLs: []string{urls[(i+1)%3], urls[(i+2)%3]},
			MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 500 * time.Millisecond, Name: fmt.Sprint("c", i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	type listener struct {
		c   *hubclient.Client
		sub *hubclient.Subscription
		evs []hubclient.Event
	}
	var ls []*listener
	for i := 0; i < 3; i++ {
		c := hubclient.New(rotate(i))
		defer c.Close()
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		sub, err := c.Join(ctx, "survive")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, &listener{c: c, sub: sub})
	}
	pub := hubclient.New(rotate(1))
	defer pub.Close()
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	publish := func(i int) {
		for ctx.Err() == nil {
			_, err := pub.Publish(ctx, "survive", &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: fmt.Sprint(i)}}, &hubclient.PublishOptions{MessageID: fmt.Sprint("m", i)})
			if err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // the room is moving: retry with the same id
		}
	}
	// collect reads a listener's events until a message numbered at least until.
	collect := func(l *listener, until int) {
		deadline := time.After(60 * time.Second)
		for {
			select {
			case ev := <-l.sub.Events():
				if ev.Kind == hubclient.EventMessage || ev.Kind == hubclient.EventNotRecovered {
					l.evs = append(l.evs, ev)
				}
				n := -1
				if ev.Kind == hubclient.EventMessage {
					fmt.Sscan(ev.Message.GetBody().GetText(), &n)
				}
				if n >= until {
					return
				}
			case <-deadline:
				var tail []string
				for _, ev := range l.evs[max(0, len(l.evs)-3):] {
					tail = append(tail, fmt.Sprint(ev.Kind, ":", ev.Message.GetBody().GetText(), "@", ev.Message.GetEpoch(), ev.Position))
				}
				t.Fatalf("no message >= %d at a listener in state %v; last events %v", until, l.c.State(), tail)
			}
		}
	}
	for i := 0; i < 20; i++ {
		publish(i)
	}
	// Kill the node that hosts the room: the hard case.
	host := -1
	for i, p := range nodes {
		if sum(scrape(t, httpBase(p.URL)), "hubbub_rooms_active") == 1 {
			host = i
		}
	}
	if host < 0 {
		t.Fatal("no node hosts the room")
	}
	if err := nodes[host].cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	publish(20)
	t.Logf("%v of the room's node: publishes accepted again after %v", sig, time.Since(killed).Round(10*time.Millisecond))
	for i := 21; i < 40; i++ {
		publish(i)
	}
	// Keep publishing until every listener, however late it rejoined, has a
	// message from after the kill.
	stop := make(chan struct{})
	tailDone := make(chan struct{})
	go func() { // owner: this test; joined through tailDone
		defer close(tailDone)
		for i := 40; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				publish(i)
			}
		}
	}()
	for _, l := range ls {
		collect(l, 40)
	}
	close(stop)
	<-tailDone
	resets := 0
	for li, l := range ls {
		last := -1
		epoch := ""
		for _, ev := range l.evs {
			if ev.Kind == hubclient.EventNotRecovered {
				last, epoch = -1, ev.Position.GetEpoch()
				resets++
				continue
			}
			n := 0
			fmt.Sscan(ev.Message.GetBody().GetText(), &n)
			if epoch != "" && ev.Message.GetEpoch() != epoch {
				t.Fatalf("listener %d: message of epoch %s after a reset to %s", li, ev.Message.GetEpoch(), epoch)
			}
			if n <= last {
				t.Fatalf("listener %d: %d after %d in one epoch (events %d)", li, n, last, len(l.evs))
			}
			last = n
		}
	}
	// The room's in-memory history died with its node: listeners are told.
	if resets == 0 {
		t.Fatal("no listener was told its messages were not recovered")
	}
}

// Two nodes find each other through a real etcd and share a room.
func TestClusterWithEtcd(t *testing.T) {
	endpoint := startEtcd(t)
	var nodes []*serverProcess
	for i := 0; i < 2; i++ {
		nodes = append(nodes, startProcess(t, "--cluster-provider", "etcd", "--etcd-endpoints", endpoint, "--cluster-bind", freePort(t)))
	}
	for _, p := range nodes {
		eventually(t, "node ready", func() bool {
			code, err := httpGet(httpBase(p.URL) + "/readyz")
			return err == nil && code == 200
		})
	}
	a := connect(t, nodes[0].URL, wire.Proto, "a")
	b := connect(t, nodes[1].URL, wire.JSON, "b")
	a.join("etcd-room", nil)
	b.join("etcd-room", nil)
	eventually(t, "both members listed", func() bool {
		r := a.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "etcd-room"}}})
		return int(r.GetPresence().GetState().GetMembers()) == 2
	})
	b.publish("etcd-room", "through etcd")
	if m := a.nextMessage(); m.GetBody().GetText() != "through etcd" {
		t.Fatalf("got %v", m)
	}
}

// A node that joins later takes its share of new rooms, and members of
// existing rooms keep receiving (after a rejoin if their room moved).
func TestClusterNodeJoinsLater(t *testing.T) {
	manage := []string{freePort(t), freePort(t), freePort(t)}
	seeds := strings.Join(manage, ",")
	start := func(i int) *serverProcess {
		_, port, _ := net.SplitHostPort(manage[i])
		p := startProcess(t, "--cluster-provider", "automanaged", "--cluster-bind", freePort(t), "--cluster-automanage-port", port, "--cluster-seeds", seeds)
		eventually(t, "node ready", func() bool {
			code, err := httpGet(httpBase(p.URL) + "/readyz")
			return err == nil && code == 200
		})
		return p
	}
	nodes := []*serverProcess{start(0), start(1)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := hubclient.Config{URL: nodes[0].URL, URLs: []string{nodes[1].URL}, Name: "member",
		MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 300 * time.Millisecond}
	member := hubclient.New(cfg)
	defer member.Close()
	if err := member.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := member.Join(ctx, "stay")
	if err != nil {
		t.Fatal(err)
	}
	nodes = append(nodes, start(2))
	pub := connect(t, nodes[1].URL, wire.Proto, "pub")
	for i := 0; i < 60; i++ {
		pub.publish(fmt.Sprint("new-", i), "x")
	}
	if n := sum(scrape(t, httpBase(nodes[2].URL)), "hubbub_rooms_active"); n == 0 {
		t.Fatal("the new node hosts none of 60 new rooms")
	}
	// The member of "stay" keeps receiving.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the member of an existing room stopped receiving after a node joined")
		}
		pub.request(publishFrame("stay", fmt.Sprint("after-join-", i), ""))
		select {
		case ev := <-sub.Events():
			if ev.Kind == hubclient.EventMessage {
				return
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// nextHistoryTop returns the room's current position as seen in history.
func (c *client) nextHistoryTop(t *testing.T, room string) *hubbubv1.StreamPosition {
	t.Helper()
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: room, Limit: 1, Reverse: true}}})
	return r.GetHistory().GetPosition()
}

// A room that panics in a cluster (where its parent is protoactor's
// placement actor, not Hubbub's supervisor) answers the failing request with
// INTERNAL at once and stops; its members on every node are closed with 4004
// and, on rejoining, learn explicitly whether their messages survived
// (history in memory: recovered false, a new epoch), instead of meeting a
// room silently restarted empty under the same PID.
func TestClusterRoomPanicClosesMembersWith4004(t *testing.T) {
	t.Setenv("HUBBUB_TEST_FAULT_TEXT", "boom") // read by the test build of the binary only
	nodes := startCluster(t, 3)
	var members []*client
	for i, p := range nodes {
		c := connect(t, p.URL, wire.Proto, fmt.Sprint("m", i))
		c.join("fragile", nil)
		members = append(members, c)
	}
	one := members[0].publish("fragile", "one")
	for _, c := range members {
		if m := c.nextMessage(); m.GetOffset() != 1 {
			t.Fatalf("first message %v", m)
		}
	}
	start := time.Now()
	r := members[1].request(publishFrame("fragile", "boom", ""))
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_INTERNAL || r.GetError().GetTemporary() {
		t.Fatalf("faulting publish: %v", r)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the failing request waited %v", took)
	}
	for i, c := range members {
		if code := closeCode(c.waitClosed()); code != wire.CloseRoomMoved {
			t.Fatalf("member %d closed with %d, want 4004", i, code)
		}
	}
	back := connect(t, nodes[2].URL, wire.JSON, "back")
	j := back.join("fragile", &hubbubv1.StreamPosition{Offset: 1, Epoch: one.GetEpoch()})
	if j.GetRecovered() || j.GetPosition().GetEpoch() == one.GetEpoch() {
		t.Fatalf("rejoin after the room failed: %v (was %v)", j, one)
	}
	if got := back.publish("fragile", "two"); got.GetOffset() != 1 {
		t.Fatalf("publish after the failure: %v", got)
	}
}
