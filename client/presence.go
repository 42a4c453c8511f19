package client

import (
	"context"
	"hash/fnv"
	"slices"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// PresenceStats counts what a subscription did to keep its member list.
type PresenceStats struct {
	// Diffs is how many presence diffs were applied.
	Diffs uint64
	// Loads is how many times the list was fetched (first join, a gap, a
	// reset, a rejoin that could not recover the diffs, a mismatch).
	Loads uint64
	// Verified is how many times the list matched the room's digest.
	Verified uint64
	// Mismatches is how many times it did not (the list is then fetched again).
	Mismatches uint64
}

// memberList is a subscription's view of its room's presence. Guarded by the
// client's mu.
type memberList struct {
	pos      *hubbubv1.StreamPosition // the newest presence position seen
	digest   uint64                   // the room's digest at pos
	count    uint32                   // the room's users at pos
	users    map[string]struct{}      // nil until loaded (TrackMembers only)
	xor      uint64                   // digest of users
	gen      int                      // the newest load
	loading  bool
	buffered []*hubbubv1.PresenceDiff // diffs seen while loading
	pageAt   uint64                   // the newest position a page was taken at
	stats    PresenceStats
}

func userHash(user string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(user))
	return h.Sum64()
}

func (m *memberList) set(user string, present bool) {
	_, ok := m.users[user]
	switch {
	case present && !ok:
		m.users[user] = struct{}{}
	case !present && ok:
		delete(m.users, user)
	default:
		return
	}
	m.xor ^= userHash(user)
}

// drop stops keeping the list (a large room) and supersedes a load in progress.
func (m *memberList) drop() {
	m.gen++
	m.users, m.loading, m.buffered = nil, false, nil
}

func (m *memberList) apply(d *hubbubv1.PresenceDiff) {
	for _, u := range d.GetJoined() {
		m.set(u, true)
	}
	for _, u := range d.GetLeft() {
		m.set(u, false)
	}
	m.stats.Diffs++
}

// verify compares the list with the room's digest and user count once a
// diff newer than every page is applied (a page may hold changes that the
// next diff after its position lists); it reports false on a mismatch.
func (m *memberList) verify() bool {
	if m.users == nil || m.pos.GetOffset() <= m.pageAt {
		return true
	}
	if m.xor != m.digest || uint32(len(m.users)) != m.count {
		m.stats.Mismatches++
		return false
	}
	m.stats.Verified++
	return true
}

// Members returns the room's users, sorted, when Config.TrackMembers is set
// and the list is loaded; nil otherwise, and in a large room (one with more
// users than its diffs list: page it with PresencePage instead). It follows
// the pushed diffs and reloads itself after a gap, a reset or a reconnect it
// could not recover.
func (s *Subscription) Members() []string {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.members.users == nil {
		return nil
	}
	out := make([]string, 0, len(s.members.users))
	for u := range s.members.users {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// PresenceStats reports how the member list was kept.
func (s *Subscription) PresenceStats() PresenceStats {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.members.stats
}

// Info is the room's profile as of the last join.
func (s *Subscription) Info() *hubbubv1.RoomInfo {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.info
}

// onJoinPresence takes a join reply's presence. Called with c.mu held.
func (c *Client) onJoinPresence(s *Subscription, j *hubbubv1.JoinReply, sentSince bool) []Event {
	s.info = j.GetInfo()
	st := j.GetPresence()
	if sentSince && st.GetRecovered() {
		var evs []Event
		for _, d := range st.GetDiffs() {
			if ev, ok := c.onDiffLocked(s, d); ok {
				evs = append(evs, ev)
			}
		}
		return evs
	}
	s.members.pos, s.members.digest, s.members.count = st.GetPosition(), st.GetDigest(), st.GetUsers()
	if st.GetLarge() {
		s.members.drop()
		return nil
	}
	c.startLoadLocked(s)
	return nil
}

// onDiffLocked applies a pushed diff in order. Called with c.mu held.
func (c *Client) onDiffLocked(s *Subscription, d *hubbubv1.PresenceDiff) (Event, bool) {
	m := &s.members
	at := d.GetPosition()
	sameEpoch := m.pos != nil && m.pos.GetEpoch() == at.GetEpoch()
	if sameEpoch && at.GetOffset() <= m.pos.GetOffset() {
		return Event{}, false // seen already (a recovered diff pushed again)
	}
	ev := Event{Kind: EventPresence, Room: s.room, Presence: d}
	gap := !sameEpoch || at.GetOffset() != m.pos.GetOffset()+1
	if sameEpoch && gap {
		ev.Skipped = at.GetOffset() - m.pos.GetOffset() - 1
	}
	m.pos, m.digest, m.count = at, d.GetDigest(), d.GetUsers()
	switch {
	case d.GetLarge():
		m.drop()
	case gap || d.GetReset_():
		c.startLoadLocked(s)
	case m.loading:
		m.buffered = append(m.buffered, d)
	case m.users != nil:
		m.apply(d)
		if !m.verify() {
			c.startLoadLocked(s)
		}
	}
	return ev, true
}

// startLoadLocked starts fetching the member list, superseding a load in
// progress. Called with c.mu held.
func (c *Client) startLoadLocked(s *Subscription) {
	if !c.cfg.TrackMembers || s.info.GetPresence() != hubbubv1.PresenceMode_PRESENCE_MODE_FULL {
		return
	}
	m := &s.members
	m.gen++
	m.loading, m.buffered = true, nil
	m.stats.Loads++
	gen := m.gen
	s.loads.Add(1)
	go func() { // owner: the subscription; joined by close through s.loads
		defer s.loads.Done()
		c.loadMembers(s, gen)
	}()
}

// loadMembers pages through the room's users, then applies the diffs that
// arrived meanwhile: each diff says who is present or gone at its position,
// so the result is the member set at the newest diff.
func (c *Client) loadMembers(s *Subscription, gen int) {
	users, at, err := c.fetchMembers(s)
	c.mu.Lock()
	m := &s.members
	if m.gen != gen {
		c.mu.Unlock()
		return // superseded
	}
	m.loading = false
	if err != nil {
		m.users = nil // the next gap, reset or rejoin loads again
		c.mu.Unlock()
		return
	}
	m.users, m.xor, m.pageAt = map[string]struct{}{}, 0, at
	for _, u := range users {
		m.set(u, true)
	}
	for _, d := range m.buffered {
		m.apply(d)
	}
	m.buffered = nil
	ok := m.verify()
	if !ok {
		c.startLoadLocked(s)
	}
	c.mu.Unlock()
	if ok {
		s.queue.push(Event{Kind: EventMembers, Room: s.room})
	}
}

// fetchMembers reads every page of the room's users and the newest position
// a page was taken at.
func (c *Client) fetchMembers(s *Subscription) ([]string, uint64, error) {
	var users []string
	var at uint64
	cursor := ""
	for {
		var p *hubbubv1.PresenceReply
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if p, err = c.PresencePage(s.ctx, s.room, cursor, 0); err == nil || s.ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond << attempt)
		}
		if err != nil {
			return nil, 0, err
		}
		users = append(users, p.GetUsers()...)
		at = max(at, p.GetState().GetPosition().GetOffset())
		if cursor = p.GetNextCursor(); cursor == "" {
			return users, at, nil
		}
	}
}

// PresencePage reads one page of a room's users (sorted), starting after
// cursor ("" for the first page); limit 0 means the server's maximum. The
// reply's NextCursor is the next page's cursor, empty on the last page.
func (c *Client) PresencePage(ctx context.Context, room, cursor string, limit uint32) (*hubbubv1.PresenceReply, error) {
	f, err := c.do(ctx, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{
		Room: room, Cursor: cursor, Limit: limit}}}, true)
	if err != nil {
		return nil, err
	}
	return f.GetPresence(), nil
}

// Presence lists every user in a room, page by page.
func (c *Client) Presence(ctx context.Context, room string) ([]string, error) {
	var users []string
	cursor := ""
	for {
		p, err := c.PresencePage(ctx, room, cursor, 0)
		if err != nil {
			return nil, err
		}
		users = append(users, p.GetUsers()...)
		if cursor = p.GetNextCursor(); cursor == "" {
			return users, nil
		}
	}
}
