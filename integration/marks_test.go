package integration

import (
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/internal/testredis"
	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

func markFrame(room string, offset uint64, epoch string, read bool) *hubbubv1.ClientFrame {
	if read {
		return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Read{Read: &hubbubv1.ReadRequest{Room: room, Offset: offset, Epoch: epoch}}}
	}
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Ack{Ack: &hubbubv1.AckRequest{Room: room, Offset: offset, Epoch: epoch}}}
}

// nextReceipts skips other pushes until a ReadReceipts push arrives.
func (c *client) nextReceipts() *hubbubv1.ReadReceipts {
	c.t.Helper()
	for {
		f := c.nextPush()
		if r := f.GetReadReceipts(); r != nil {
			return r
		}
		if f.GetError() != nil || f.GetDisconnect() != nil {
			c.t.Fatalf("unexpected frame %v", f)
		}
	}
}

// Ack and read marks are per user, only move forward, survive a kill -9
// with the embedded store, come back in join replies with the unread count,
// and reach the members that asked for receipts, coalesced; the personal
// stream has marks too.
func TestReadMarksAndReceipts(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startProcess(t, "--listen", addr, "--data-dir", dir, "--presence-interval", "300ms")
	alice := connect(t, p.URL, wire.Proto, "alice")
	bob := connect(t, p.URL, wire.JSON, "bob")
	carol := connect(t, p.URL, wire.Proto, "carol")
	jr := alice.join("team", nil)
	if jr.GetMarks().GetReadOffset() != 0 || jr.GetUnread() != 0 {
		t.Fatalf("first join: %v", jr)
	}
	epoch := jr.GetPosition().GetEpoch()
	bob.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "team", Receipts: true}}})
	carol.join("team", nil)
	for i := 0; i < 5; i++ {
		bob.publish("team", "m")
	}

	marks := func(r *hubbubv1.ServerFrame) (uint64, uint64, uint64) {
		t.Helper()
		m := r.GetAck()
		if m == nil {
			m = r.GetRead()
		}
		if m == nil {
			t.Fatalf("mark reply: %v", r)
		}
		return m.GetMarks().GetAckOffset(), m.GetMarks().GetReadOffset(), m.GetUnread()
	}
	if a, rd, u := marks(alice.request(markFrame("team", 3, epoch, false))); a != 3 || rd != 0 || u != 5 {
		t.Fatalf("ack 3: %d %d %d", a, rd, u)
	}
	if a, rd, u := marks(alice.request(markFrame("team", 2, epoch, true))); a != 3 || rd != 2 || u != 3 {
		t.Fatalf("read 2: %d %d %d", a, rd, u)
	}
	if a, rd, _ := marks(alice.request(markFrame("team", 1, "", true))); a != 3 || rd != 2 {
		t.Fatalf("a lower read moved the marks: %d %d", a, rd)
	}
	for _, f := range []*hubbubv1.ClientFrame{markFrame("team", 9, epoch, true), markFrame("team", 1, "other-epoch", false)} {
		if r := alice.request(f); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST {
			t.Fatalf("%v: %v", f, r)
		}
	}
	if r := carol.request(markFrame("elsewhere", 1, "", true)); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST {
		t.Fatalf("a mark past an empty room's position: %v", r)
	}
	if rc := bob.nextReceipts(); len(rc.GetReceipts()) != 1 || rc.GetReceipts()[0].GetUser() != "alice" || rc.GetReceipts()[0].GetOffset() != 2 {
		t.Fatalf("receipt: %v", rc)
	}
	// Three reads back to back: one receipt, with the newest.
	for off := uint64(3); off <= 5; off++ {
		alice.request(markFrame("team", off, epoch, true))
	}
	if rc := bob.nextReceipts(); len(rc.GetReceipts()) != 1 || rc.GetReceipts()[0].GetOffset() != 5 {
		t.Fatalf("coalesced receipt: %v", rc)
	}
	// carol did not ask for receipts: her next push is the next message.
	bob.publish("team", "after the reads")
	for {
		f := carol.nextPush()
		if f.GetReadReceipts() != nil {
			t.Fatalf("carol got receipts: %v", f)
		}
		if f.GetMessage().GetOffset() == 6 {
			break
		}
	}
	// Another device of alice sees her marks and the unread count.
	other := connect(t, p.URL, wire.JSON, "alice")
	if j := other.join("team", nil); j.GetMarks().GetReadOffset() != 5 || j.GetMarks().GetAckOffset() != 5 || j.GetUnread() != 1 {
		t.Fatalf("second device's join: marks %v unread %d", j.GetMarks(), j.GetUnread())
	}

	// The personal stream keeps marks too.
	dev, _ := userDevice(t, p.URL, "dana", nil)
	dm := bob.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Direct{Direct: &hubbubv1.DirectRequest{User: "dana",
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "hi dana"}}}}})
	if dm.GetDirect() == nil {
		t.Fatalf("direct: %v", dm)
	}
	if _, rd, _ := marks(dev.request(markFrame("@dana", dm.GetDirect().GetOffset(), "", true))); rd != dm.GetDirect().GetOffset() {
		t.Fatalf("personal stream read mark %d", rd)
	}
	if r := bob.request(markFrame("@dana", 1, "", true)); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("bob marking dana's stream: %v", r)
	}

	// kill -9 and restart: the marks were stored before they were answered.
	p = restartProcess(t, p, true, "--listen", addr, "--data-dir", dir)
	back := connect(t, p.URL, wire.Proto, "alice")
	if j := back.join("team", nil); j.GetMarks().GetReadOffset() != 5 || j.GetUnread() != 1 || j.GetPosition().GetEpoch() != epoch {
		t.Fatalf("after restart: marks %v unread %d", j.GetMarks(), j.GetUnread())
	}
	_, jd := userDevice(t, p.URL, "dana", nil)
	if jd.GetMarks().GetReadOffset() != dm.GetDirect().GetOffset() || jd.GetUnread() != 0 {
		t.Fatalf("dana's stream after restart: %v", jd)
	}
}

// A client that acks every message without waiting: every ack gets its
// reply, the marks in the replies never go back, the last covers them all,
// and a publish sent right after the acks sees them applied (a join reply
// of another device of the user, after it, carries the final mark).
func TestPipelinedAcksMergeInOrder(t *testing.T) {
	s := startServer(t, actors.Config{Conn: actors.ConnConfig{CommandRate: -1, ByteRate: -1}}, transport.Config{})
	pub := connect(t, s.URL, wire.Proto, "pub")
	pub.join("feed", nil)
	const n = 200
	for i := 0; i < n; i++ {
		pub.publish("feed", "m")
	}
	reader := connect(t, s.URL, wire.Proto, "reader")
	reader.join("feed", nil)
	ids := make([]uint64, 0, n+1)
	for off := uint64(1); off <= n; off++ {
		ids = append(ids, reader.send(markFrame("feed", off, "", off%2 == 0)))
	}
	pubID := reader.send(publishFrame("feed", "after the acks", ""))
	got := reader.replies(append(ids, pubID)...)
	var last uint64
	for i, id := range ids {
		f := got[id]
		m := f.GetAck()
		if m == nil {
			m = f.GetRead()
		}
		if m == nil || (i%2 == 1) != (f.GetRead() != nil) {
			t.Fatalf("reply %d: %v", i, f)
		}
		ack := m.GetMarks().GetAckOffset()
		if ack < uint64(i+1) || ack < last {
			t.Fatalf("reply %d: ack mark %d after %d", i, ack, last)
		}
		last = ack
	}
	if last != n || got[pubID].GetPublish().GetOffset() != n+1 {
		t.Fatalf("last ack %d, publish %v", last, got[pubID])
	}
	other := connect(t, s.URL, wire.JSON, "reader")
	if j := other.join("feed", nil); j.GetMarks().GetAckOffset() != n || j.GetMarks().GetReadOffset() != n {
		t.Fatalf("marks seen by another device: %v", j.GetMarks())
	}
}

// Marks move with their room: a three-node cluster sharing Redis, the node
// hosting the room killed with -9; the room's next activation, elsewhere,
// answers a rejoin with the marks and unread count the dead one stored.
func TestMarksSurviveANodeKillInACluster(t *testing.T) {
	redisURL := testredis.Start(t)
	manage := []string{freePort(t), freePort(t), freePort(t)}
	binds := []string{freePort(t), freePort(t), freePort(t)}
	nodes := make([]*serverProcess, 3)
	for i := range nodes {
		_, port, _ := net.SplitHostPort(manage[i])
		nodes[i] = startProcess(t, append(apiArgs(t), "--cluster-provider", "automanaged", "--cluster-bind", binds[i],
			"--cluster-automanage-port", port, "--cluster-seeds", strings.Join(manage, ","),
			"--history-store", "redis", "--redis-url", redisURL)...)
	}
	for _, p := range nodes {
		eventually(t, "node ready", func() bool {
			code, err := httpGet(httpBase(p.URL) + "/readyz")
			return err == nil && code == 200
		})
	}
	// Five messages from the server API, which also places the room.
	for i := 0; i < 5; i++ {
		apiOK(t, nodes[0].API, pubKey, "Publish", `{"room":"moving","body":{"text":"m"}}`, &apiv1.PublishResponse{})
	}
	var info apiv1.RoomInfoResponse
	apiOK(t, nodes[0].API, readKey, "RoomInfo", `{"room":"moving"}`, &info)
	host := slices.Index(binds, info.GetNode())
	if host < 0 {
		t.Fatalf("room on %q, nodes %v", info.GetNode(), binds)
	}
	other := nodes[(host+1)%3]
	alice := connect(t, other.URL, wire.Proto, "alice")
	epoch := alice.join("moving", nil).GetPosition().GetEpoch()
	alice.request(markFrame("moving", 4, epoch, false))
	if r := alice.request(markFrame("moving", 3, epoch, true)); r.GetRead().GetMarks().GetReadOffset() != 3 {
		t.Fatalf("read: %v", r)
	}
	if err := nodes[host].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(alice.waitClosed()); code != wire.CloseRoomMoved {
		t.Fatalf("alice closed with %d when the room's node died", code)
	}
	var j *hubbubv1.JoinReply
	eventually(t, "the room back on another node", func() bool {
		c := connect(t, other.URL, wire.JSON, "alice")
		r := c.request(joinFrame("moving", nil))
		j = r.GetJoin()
		return j != nil
	})
	if j.GetPosition().GetEpoch() != epoch || j.GetPosition().GetOffset() != 5 || j.GetMarks().GetAckOffset() != 4 ||
		j.GetMarks().GetReadOffset() != 3 || j.GetUnread() != 2 {
		t.Fatalf("after the move: position %v marks %v unread %d", j.GetPosition(), j.GetMarks(), j.GetUnread())
	}
}
