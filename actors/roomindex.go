package actors

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubbub-chat/hubbub/auth"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

// roomIndex is the list of rooms running on this node, for the server API's
// ListRooms and Info. Rooms add themselves when they learn their name and
// remove themselves when they stop; each keeps its own counts in its entry,
// written only by the room and read atomically by the users actor. Nothing
// on a message's path reads it.
type roomIndex struct {
	mu    sync.Mutex
	rooms map[string]*roomEntry
}

// roomEntry is one running room's public counts.
type roomEntry struct {
	pid     *actor.PID
	members atomic.Int64
	offset  atomic.Uint64
	rate    rateMeter // publishes per second
}

func newRoomIndex() *roomIndex { return &roomIndex{rooms: map[string]*roomEntry{}} }

// add registers a running room; a newer activation replaces an older one.
func (x *roomIndex) add(name string, pid *actor.PID) *roomEntry {
	e := &roomEntry{pid: pid}
	x.mu.Lock()
	x.rooms[name] = e
	x.mu.Unlock()
	return e
}

// remove forgets a stopped room unless a newer activation replaced it.
func (x *roomIndex) remove(name string, e *roomEntry) {
	x.mu.Lock()
	if x.rooms[name] == e {
		delete(x.rooms, name)
	}
	x.mu.Unlock()
}

// list returns the rooms whose names match pattern ("" or "*": all), in
// name order; with a non-nil all it filters that list instead.
func (x *roomIndex) list(pattern string, all []*nodev1.NodeRoom) []*nodev1.NodeRoom {
	if all == nil {
		now := time.Now()
		x.mu.Lock()
		all = make([]*nodev1.NodeRoom, 0, len(x.rooms))
		for name, e := range x.rooms {
			all = append(all, &nodev1.NodeRoom{Room: name, Members: uint32(e.members.Load()), Offset: e.offset.Load(), PublishRate: e.rate.rate(now)})
		}
		x.mu.Unlock()
		slices.SortFunc(all, func(a, b *nodev1.NodeRoom) int { return strings.Compare(a.GetRoom(), b.GetRoom()) })
	}
	if pattern == "" || pattern == "*" {
		return all
	}
	out := make([]*nodev1.NodeRoom, 0, len(all))
	for _, r := range all {
		if auth.Match(pattern, r.GetRoom()) {
			out = append(out, r)
		}
	}
	return out
}
