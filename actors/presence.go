package actors

import (
	"hash/fnv"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/btree"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
)

// presenceRing is how many recent diffs a room keeps for members that rejoin
// with presence_since.
const presenceRing = 64

// maxPresencePage is the most users one presence page lists.
const maxPresencePage = 1000

// presenceFlush is the room's own timer message for pushing its presence changes.
type presenceFlush struct{}

// presence is a room's presence by user: a user with several connections is
// one member, present from its first connection's join to its last one's
// leave. Joins and leaves cost O(log users); their pushes are coalesced into
// one diff per interval, so a join storm of n costs about n plus
// members × intervals pushes, not n × members.
type presence struct {
	prof    *RoomProfile
	track   bool // changes are pushed: pending is kept
	epoch   string
	seq     uint64
	conns   int
	users   map[string]int           // connections per user
	sorted  *btree.BTreeG[string]    // users in order, for pages (full mode)
	digest  uint64                   // XOR of userHash over the users
	pending map[string]bool          // users changed since the last diff: present at it?
	counted [2]int                   // conns and users at the last diff
	large   bool                     // the last diff was large (counts only)
	ring    []*hubbubv1.PresenceDiff // the newest diffs, oldest first
	timer   *time.Timer              // the pending presenceFlush, if any
}

func newPresence(prof *RoomProfile) *presence {
	p := &presence{prof: prof, track: prof.Presence != PresenceOff && prof.JoinLeave, epoch: store.NewEpoch(),
		users: map[string]int{}, pending: map[string]bool{}}
	if prof.Presence == PresenceFull {
		p.sorted = btree.NewOrderedG[string](32)
	}
	return p
}

// userHash is the 64-bit FNV-1a hash of a user id, the digest's term.
func userHash(user string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(user))
	return h.Sum64()
}

// add counts a connection of user.
func (p *presence) add(user string) {
	p.conns++
	if p.users[user]++; p.users[user] == 1 {
		p.toggle(user, false)
	}
}

// remove uncounts a connection of user.
func (p *presence) remove(user string) {
	p.conns--
	if p.users[user]--; p.users[user] <= 0 {
		delete(p.users, user)
		p.toggle(user, true)
	}
}

// toggle records that user's presence flipped from was.
func (p *presence) toggle(user string, was bool) {
	p.digest ^= userHash(user)
	if p.sorted != nil {
		if was {
			p.sorted.Delete(user)
		} else {
			p.sorted.ReplaceOrInsert(user)
		}
	}
	if !p.track {
		return
	}
	if _, ok := p.pending[user]; !ok {
		p.pending[user] = was
	} else if p.pending[user] == !was {
		delete(p.pending, user) // back to what the last diff said
	}
}

// interval is the time to the next diff: the profile's interval, stretched
// in a large room in proportion to its users, so that a room pushes about
// PresenceMaxUsers diffs per interval however big it grows (a 20,000-user
// room with the defaults pushes its counts every 20s).
func (p *presence) interval() time.Duration {
	if !p.isLarge() {
		return p.prof.PresenceInterval
	}
	return p.prof.PresenceInterval * time.Duration(len(p.users)) / time.Duration(p.prof.PresenceMaxUsers)
}

// isLarge reports whether the room has more users than its diffs list.
func (p *presence) isLarge() bool {
	return p.prof.Presence == PresenceFull && len(p.users) > p.prof.PresenceMaxUsers
}

func (p *presence) changed() bool {
	return len(p.pending) > 0 || p.counted != [2]int{p.conns, len(p.users)}
}

// schedule arranges one presenceFlush after the interval, unless one is pending.
func (p *presence) schedule(ctx actor.Context) {
	if p.timer != nil || !p.track {
		return
	}
	self, system := ctx.Self(), ctx.ActorSystem()
	p.timer = time.AfterFunc(p.interval(), func() { system.Root.Send(self, presenceFlush{}) })
}

func (p *presence) stop() {
	if p != nil && p.timer != nil {
		p.timer.Stop()
	}
}

// flush returns the diff of the changes since the last one, or nil when nothing changed.
func (p *presence) flush(room string) *hubbubv1.PresenceDiff {
	p.timer = nil
	if !p.changed() {
		return nil
	}
	d := &hubbubv1.PresenceDiff{Room: room, Members: uint32(p.conns), Users: uint32(len(p.users)), Digest: p.digest}
	if p.prof.Presence == PresenceFull {
		wasLarge := p.large
		p.large = p.isLarge()
		switch {
		case p.large:
			d.Large = true
		case wasLarge || len(p.pending) > p.prof.PresenceMaxDiff:
			d.Reset_ = true
		default:
			for user := range p.pending {
				if p.users[user] > 0 {
					d.Joined = append(d.Joined, user)
				} else {
					d.Left = append(d.Left, user)
				}
			}
			slices.Sort(d.Joined)
			slices.Sort(d.Left)
		}
	} else {
		d.Digest = 0
	}
	clear(p.pending)
	p.counted = [2]int{p.conns, len(p.users)}
	p.seq++
	d.Position = &hubbubv1.StreamPosition{Offset: p.seq, Epoch: p.epoch}
	if len(p.ring) == presenceRing {
		p.ring = slices.Delete(p.ring, 0, 1)
	}
	p.ring = append(p.ring, d)
	return d
}

// state returns the presence at the last diff's position with the current counts.
func (p *presence) state() *hubbubv1.PresenceState {
	s := &hubbubv1.PresenceState{
		Position: &hubbubv1.StreamPosition{Offset: p.seq, Epoch: p.epoch},
		Members:  uint32(p.conns), Users: uint32(len(p.users)), Large: p.isLarge(),
	}
	if p.prof.Presence == PresenceFull {
		s.Digest = p.digest
	}
	return s
}

// since fills s with the diffs after pos, or leaves recovered false when they are gone.
func (p *presence) since(s *hubbubv1.PresenceState, pos *hubbubv1.StreamPosition) {
	if pos.GetEpoch() != p.epoch || pos.GetOffset() > p.seq {
		return
	}
	first := p.seq - uint64(len(p.ring)) + 1 // the ring's oldest diff
	if pos.GetOffset()+1 < first {
		return
	}
	s.Recovered = true
	s.Diffs = p.ring[pos.GetOffset()+1-first:]
}

// page returns up to limit users after cursor and the next page's cursor.
func (p *presence) page(cursor string, limit int) (users []string, next string) {
	if p.sorted == nil {
		return nil, ""
	}
	if limit <= 0 || limit > maxPresencePage {
		limit = maxPresencePage
	}
	more := false
	p.sorted.AscendGreaterOrEqual(cursor, func(u string) bool {
		if u == cursor {
			return true
		}
		if len(users) == limit {
			more = true
			return false
		}
		users = append(users, u)
		return true
	})
	if more {
		next = users[len(users)-1]
	}
	return users, next
}

func (r *room) onPresence(ctx actor.Context, msg *nodev1.RoomPresence) {
	reply := &hubbubv1.PresenceReply{Room: r.name, State: r.presence.state()}
	reply.Users, reply.NextCursor = r.presence.page(msg.GetCursor(), int(msg.GetLimit()))
	r.reply(ctx, msg.GetRequestId(), &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Presence{Presence: reply}})
}

func (r *room) onPresenceFlush(ctx actor.Context) {
	if d := r.presence.flush(r.name); d != nil {
		r.broadcast(ctx, &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_PresenceDiff{PresenceDiff: d}}, 0)
	}
}
