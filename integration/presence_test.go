package integration

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	hubclient "github.com/hubbub-chat/hubbub/client"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

func digestOf(users ...string) uint64 {
	var d uint64
	for _, u := range users {
		h := fnv.New64a()
		_, _ = h.Write([]byte(u))
		d ^= h.Sum64()
	}
	return d
}

func presenceFrame(room, cursor string, limit uint32) *hubbubv1.ClientFrame {
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: room, Cursor: cursor, Limit: limit}}}
}

func joinFrame(room string, presenceSince *hubbubv1.StreamPosition) *hubbubv1.ClientFrame {
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room, PresenceSince: presenceSince}}}
}

// diffsUntil reads the room's diffs until cond holds for the last one, checking that
// they are numbered one after another.
func (c *client) diffsUntil(room string, after *hubbubv1.StreamPosition, cond func(*hubbubv1.PresenceDiff) bool) []*hubbubv1.PresenceDiff {
	c.t.Helper()
	var out []*hubbubv1.PresenceDiff
	pos := after
	for {
		d := c.nextDiff()
		if d.GetRoom() != room {
			continue
		}
		if d.GetPosition().GetEpoch() != pos.GetEpoch() || d.GetPosition().GetOffset() != pos.GetOffset()+1 {
			c.t.Fatalf("diff at %v after %v", d.GetPosition(), pos)
		}
		pos = d.GetPosition()
		out = append(out, d)
		if cond(d) {
			return out
		}
	}
}

// Presence is by user: a user's second connection is no diff, its last
// leave is; the list is paged in user order; each diff carries the counts
// and the digest of the users.
func TestPresenceDiffsByUserAndPages(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{PresenceInterval: 50 * time.Millisecond}}, transport.Config{})
	for _, enc := range []wire.Encoding{wire.Proto, wire.JSON} {
		t.Run(enc.String(), func(t *testing.T) {
			room := "lobby-" + enc.String()
			a := connect(t, s.URL, enc, "alice")
			j := a.join(room, nil)
			if j.GetInfo().GetPresence() != actors.PresenceFull || !j.GetInfo().GetJoinLeave() || j.GetInfo().GetProfile() != "default" ||
				j.GetPresence().GetUsers() != 1 || j.GetPresence().GetMembers() != 1 {
				t.Fatalf("join reply %v", j)
			}
			pos := j.GetPresence().GetPosition()
			b := connect(t, s.URL, wire.JSON, "bob")
			b.join(room, nil)
			a2 := connect(t, s.URL, wire.Proto, "alice")
			a2.join(room, nil)
			var joined []string
			for _, d := range a.diffsUntil(room, pos, func(d *hubbubv1.PresenceDiff) bool { return d.GetMembers() == 3 }) {
				joined = append(joined, d.GetJoined()...)
				pos = d.GetPosition()
				if len(d.GetLeft()) > 0 {
					t.Fatalf("left %v", d)
				}
			}
			if slices.Sort(joined); fmt.Sprint(joined) != "[alice bob]" {
				t.Fatalf("joined %v: alice's second connection is no join", joined)
			}
			a2.close()
			d := a.diffsUntil(room, pos, func(*hubbubv1.PresenceDiff) bool { return true })[0]
			pos = d.GetPosition()
			if len(d.GetJoined())+len(d.GetLeft()) != 0 || d.GetMembers() != 2 || d.GetUsers() != 2 || d.GetDigest() != digestOf("alice", "bob") {
				t.Fatalf("after alice's second connection left: %v", d)
			}
			// Pages of one user, in order.
			p1 := a.request(presenceFrame(room, "", 1)).GetPresence()
			p2 := a.request(presenceFrame(room, p1.GetNextCursor(), 1)).GetPresence()
			if fmt.Sprint(p1.GetUsers(), p2.GetUsers()) != "[alice] [bob]" || p1.GetNextCursor() != "alice" || p2.GetNextCursor() != "" ||
				p2.GetState().GetDigest() != digestOf("alice", "bob") || p2.GetState().GetUsers() != 2 {
				t.Fatalf("pages %v / %v", p1, p2)
			}
			if all := a.request(presenceFrame(room, "", 0)).GetPresence(); fmt.Sprint(all.GetUsers()) != "[alice bob]" || all.GetNextCursor() != "" {
				t.Fatalf("one page of all: %v", all)
			}
			b.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: room}}})
			d = a.diffsUntil(room, pos, func(*hubbubv1.PresenceDiff) bool { return true })[0]
			if fmt.Sprint(d.GetLeft()) != "[bob]" || len(d.GetJoined()) != 0 || d.GetUsers() != 1 || d.GetDigest() != digestOf("alice") {
				t.Fatalf("bob's leave: %v", d)
			}
		})
	}
}

// A join storm costs one diff per interval, and a diff with more changes than
// the limit becomes a reset carrying the counts.
func TestPresenceCoalescesAJoinStorm(t *testing.T) {
	const storm = 300
	s := startServer(t, actors.Config{Room: actors.RoomConfig{PresenceInterval: 200 * time.Millisecond, PresenceMaxDiff: 50}}, transport.Config{})
	obs := connect(t, s.URL, wire.Proto, "observer")
	pos := obs.join("storm", nil).GetPresence().GetPosition()
	// Connect everyone first, then send the joins back to back: the storm is
	// the joins, however long this machine takes to open 300 connections.
	clients := make([]*client, storm)
	for i := range storm {
		clients[i] = connect(t, s.URL, []wire.Encoding{wire.Proto, wire.JSON}[i%2], fmt.Sprint("s", i))
	}
	start := time.Now()
	for _, c := range clients {
		c.send(joinFrame("storm", nil))
	}
	diffs := obs.diffsUntil("storm", pos, func(d *hubbubv1.PresenceDiff) bool { return d.GetUsers() == storm+1 })
	elapsed := time.Since(start)
	if limit := int(elapsed/(200*time.Millisecond)) + 2; len(diffs) > limit {
		t.Fatalf("%d diffs for %d joins in %v: want at most one per interval (%d)", len(diffs), storm, elapsed, limit)
	}
	resets := 0
	for _, d := range diffs {
		if d.GetReset_() {
			resets++
			if len(d.GetJoined()) != 0 {
				t.Fatalf("a reset lists users: %v", d)
			}
		} else if len(d.GetJoined()) > 50 {
			t.Fatalf("a diff lists %d users, over the limit", len(d.GetJoined()))
		}
	}
	if resets == 0 {
		t.Fatalf("no reset among %d diffs for %d joins", len(diffs), storm)
	}
	if d := diffs[len(diffs)-1]; d.GetMembers() != storm+1 {
		t.Fatalf("last diff %v", d)
	}
}

// A member that comes back with presence_since gets the diffs it missed, in
// order, or recovered false when they are gone (another epoch, too many).
func TestPresenceRecoversMissedDiffs(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{PresenceInterval: 20 * time.Millisecond}}, transport.Config{})
	watch := connect(t, s.URL, wire.Proto, "watch")
	pos := watch.join("r", nil).GetPresence().GetPosition()
	o := connect(t, s.URL, wire.JSON, "o")
	o.join("r", nil)
	ds := watch.diffsUntil("r", pos, func(d *hubbubv1.PresenceDiff) bool { return slices.Contains(d.GetJoined(), "o") })
	away := ds[len(ds)-1].GetPosition()
	o.close()
	x := connect(t, s.URL, wire.Proto, "x")
	x.join("r", nil)
	watch.diffsUntil("r", away, func(d *hubbubv1.PresenceDiff) bool { return slices.Contains(d.GetJoined(), "x") })
	back := connect(t, s.URL, wire.JSON, "o")
	j := back.request(joinFrame("r", away)).GetJoin()
	set := map[string]bool{"watch": true, "o": true}
	prev := away
	for _, d := range j.GetPresence().GetDiffs() {
		if d.GetPosition().GetOffset() != prev.GetOffset()+1 {
			t.Fatalf("recovered diff at %v after %v", d.GetPosition(), prev)
		}
		prev = d.GetPosition()
		for _, u := range d.GetJoined() {
			set[u] = true
		}
		for _, u := range d.GetLeft() {
			delete(set, u)
		}
	}
	users := slices.Sorted(func(yield func(string) bool) {
		for u := range set {
			if !yield(u) {
				return
			}
		}
	})
	if !j.GetPresence().GetRecovered() || len(j.GetPresence().GetDiffs()) == 0 || fmt.Sprint(users) != "[watch x]" {
		t.Fatalf("recovery %v: set %v (o's own rejoin comes in a later diff)", j.GetPresence(), users)
	}
	// Another epoch: not recovered.
	other := connect(t, s.URL, wire.Proto, "p")
	if j := other.request(joinFrame("r", &hubbubv1.StreamPosition{Offset: 1, Epoch: "nope"})).GetJoin(); j.GetPresence().GetRecovered() || len(j.GetPresence().GetDiffs()) != 0 {
		t.Fatalf("another epoch recovered: %v", j.GetPresence())
	}
	// More diffs than the room keeps: not recovered.
	last := x.request(presenceFrame("r", "", 0)).GetPresence().GetState().GetPosition()
	for i := 0; i < 70; i++ {
		c := connect(t, s.URL, wire.Proto, fmt.Sprint("c", i))
		c.join("r", nil)
		eventually(t, "a diff", func() bool {
			p := x.request(presenceFrame("r", "", 1)).GetPresence().GetState().GetPosition()
			return p.GetOffset() > last.GetOffset()
		})
		last = x.request(presenceFrame("r", "", 1)).GetPresence().GetState().GetPosition()
	}
	late := connect(t, s.URL, wire.Proto, "late")
	if j := late.request(joinFrame("r", away)).GetJoin(); j.GetPresence().GetRecovered() {
		t.Fatalf("recovered across more diffs than kept: %d diffs", len(j.GetPresence().GetDiffs()))
	}
}

// A room with more users than its diffs list pushes counts only; the Go
// client stops keeping the list and loads it again once the room shrinks.
func TestLargeRoomPushesCountsOnly(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{PresenceInterval: 20 * time.Millisecond, PresenceMaxUsers: 5}}, transport.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cl := hubclient.New(hubclient.Config{URL: s.URL, Name: "keeper", TrackMembers: true})
	defer cl.Close()
	if err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := cl.Join(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the list", func() bool { return fmt.Sprint(sub.Members()) == "[keeper]" })
	watch := connect(t, s.URL, wire.JSON, "watch")
	pos := watch.join("big", nil).GetPresence().GetPosition()
	var crowd []*client
	for i := range 6 {
		c := connect(t, s.URL, wire.Proto, fmt.Sprint("c", i))
		c.join("big", nil)
		crowd = append(crowd, c)
	}
	ds := watch.diffsUntil("big", pos, func(d *hubbubv1.PresenceDiff) bool { return d.GetUsers() == 8 })
	last := ds[len(ds)-1]
	if !last.GetLarge() || len(last.GetJoined()) != 0 || last.GetReset_() {
		t.Fatalf("diff of a large room: %v", last)
	}
	eventually(t, "the client to stop keeping the list", func() bool { return sub.Members() == nil })
	if j := connect(t, s.URL, wire.Proto, "late").join("big", nil); !j.GetPresence().GetLarge() {
		t.Fatalf("join reply of a large room: %v", j.GetPresence())
	}
	if p := watch.request(presenceFrame("big", "", 3)).GetPresence(); len(p.GetUsers()) != 3 || p.GetNextCursor() == "" {
		t.Fatalf("a large room still pages: %v", p)
	}
	for _, c := range crowd {
		c.close()
	}
	ds = watch.diffsUntil("big", last.GetPosition(), func(d *hubbubv1.PresenceDiff) bool { return d.GetUsers() == 3 })
	if d := ds[len(ds)-1]; !d.GetReset_() || d.GetLarge() {
		t.Fatalf("diff after the room shrank: %v", d)
	}
	eventually(t, "the list again", func() bool { return fmt.Sprint(sub.Members()) == "[keeper late watch]" })
}
