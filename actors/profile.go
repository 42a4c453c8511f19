package actors

import (
	"fmt"
	"time"

	"github.com/hubbub-chat/hubbub/auth"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// PresenceMode is what a room tells its members about who is in it.
type PresenceMode = hubbubv1.PresenceMode

// The presence modes.
const (
	// PresenceFull: the member list (paged) and pushed diffs of who came and went.
	PresenceFull = hubbubv1.PresenceMode_PRESENCE_MODE_FULL
	// PresenceCounts: member and user counts only, pushed when they change.
	PresenceCounts = hubbubv1.PresenceMode_PRESENCE_MODE_COUNTS
	// PresenceOff: counts on request only; nothing is pushed.
	PresenceOff = hubbubv1.PresenceMode_PRESENCE_MODE_OFF
)

// ParsePresenceMode parses full, counts or off.
func ParsePresenceMode(s string) (PresenceMode, error) {
	switch s {
	case "full":
		return PresenceFull, nil
	case "counts":
		return PresenceCounts, nil
	case "off":
		return PresenceOff, nil
	}
	return 0, fmt.Errorf("%q is not full, counts or off", s)
}

// PresenceModeName is the inverse of ParsePresenceMode.
func PresenceModeName(m PresenceMode) string {
	switch m {
	case PresenceCounts:
		return "counts"
	case PresenceOff:
		return "off"
	}
	return "full"
}

// PublishPolicy says who may publish to a room (besides what tokens allow).
type PublishPolicy int

// The publish policies.
const (
	// PublishMembers: every member whose token allows it (the default).
	PublishMembers PublishPolicy = iota
	// PublishListed: only users matching the profile's Publishers patterns.
	PublishListed
	// PublishNone: no client; only the server (broadcast-only rooms).
	PublishNone
)

// ParsePublishPolicy parses members, listed or none.
func ParsePublishPolicy(s string) (PublishPolicy, error) {
	switch s {
	case "members":
		return PublishMembers, nil
	case "listed":
		return PublishListed, nil
	case "none":
		return PublishNone, nil
	}
	return 0, fmt.Errorf("%q is not members, listed or none", s)
}

// String is the inverse of ParsePublishPolicy.
func (p PublishPolicy) String() string {
	switch p {
	case PublishListed:
		return "listed"
	case PublishNone:
		return "none"
	}
	return "members"
}

// RoomProfile is the settings of the rooms whose names match Pattern. A room
// resolves its profile once, when it starts: changing the profiles affects
// rooms started afterwards. Build one with RoomConfig.DefaultProfile and
// change what differs.
type RoomProfile struct {
	// Name is shown to clients in RoomInfo; default: the pattern.
	Name string
	// Pattern selects rooms by name ('*' any run, '?' one character).
	Pattern string
	// HistorySize is how many recent messages the room serves (0: none).
	HistorySize int
	// HistoryTTL is how long a message stays in history.
	HistoryTTL time.Duration
	// Durable keeps history in the node's store, when it has one; false keeps
	// it in the room's memory (faster; lost when the room stops).
	Durable bool
	// Presence is the presence mode.
	Presence PresenceMode
	// JoinLeave pushes presence changes (PresenceDiff) to the members.
	JoinLeave bool
	// PresenceInterval is how often presence changes are pushed at most:
	// every change within it is coalesced into one diff.
	PresenceInterval time.Duration
	// PresenceMaxDiff is the most users one diff lists; beyond it the diff
	// is a reset (counts only) and clients fetch the list again.
	PresenceMaxDiff int
	// PresenceMaxUsers is the most users a full-presence room lists in its
	// diffs; a larger room is large: its diffs carry counts only and
	// clients page the list when they need it (lists kept by every member
	// of a huge room cost members × changes).
	PresenceMaxUsers int
	// Typing turns typing indicators on.
	Typing bool
	// Overflow is the policy for members whose outbound queue is full.
	Overflow Overflow
	// PublishRate limits accepted publishes per second (0: unlimited).
	PublishRate float64
	// PublishBurst is the publish burst. Default max(1, 2*PublishRate).
	PublishBurst int
	// MaxMembers caps the room's connections (0: unlimited).
	MaxMembers int
	// Publish says who may publish; Publishers lists user patterns for PublishListed.
	Publish    PublishPolicy
	Publishers []string
	// SkipJoinHook and SkipPublishHook leave the backend's join and publish
	// hooks out for these rooms (when hooks are configured): joins and
	// publishes go by the token's permissions alone.
	SkipJoinHook, SkipPublishHook bool
	// HookNotify is what the backend hears of these rooms (when the Notify
	// hook is on): leaves (the default), presence (joins too) or nothing.
	HookNotify HookNotifyMode
}

// HookNotifyMode says which membership changes of a room are notified.
type HookNotifyMode int

const (
	// HookNotifyLeaves notifies leaves (the default).
	HookNotifyLeaves HookNotifyMode = iota
	// HookNotifyPresence notifies joins and leaves.
	HookNotifyPresence
	// HookNotifyOff notifies nothing of the room (disconnects still are).
	HookNotifyOff
)

var hookNotifyNames = []string{"leaves", "presence", "off"}

// ParseHookNotify reads a HookNotifyMode by name.
func ParseHookNotify(s string) (HookNotifyMode, error) {
	for i, n := range hookNotifyNames {
		if n == s {
			return HookNotifyMode(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not leaves, presence or off", s)
}

// String is the mode's name.
func (m HookNotifyMode) String() string { return hookNotifyNames[m] }

// DefaultProfile is the profile of rooms that no profile matches: the
// room-wide settings of c, defaults applied.
func (c RoomConfig) DefaultProfile() RoomProfile {
	c = c.withDefaults()
	return c.defaultProfile()
}

func (c RoomConfig) defaultProfile() RoomProfile {
	p := RoomProfile{
		Name: "default", Pattern: "*", HistorySize: c.HistorySize, HistoryTTL: c.HistoryTTL, Durable: true,
		Presence: c.Presence, JoinLeave: !c.NoJoinLeave, PresenceInterval: c.PresenceInterval,
		PresenceMaxDiff: c.PresenceMaxDiff, PresenceMaxUsers: c.PresenceMaxUsers, Typing: !c.NoTyping, Overflow: OverflowDisconnect,
		PublishRate: c.PublishRate, PublishBurst: c.PublishBurst, MaxMembers: c.MaxMembers,
	}
	return p
}

// profiles returns the rules in the order they are tried: the users'
// personal rooms ("@*"), Profiles, then the Overflow and Ephemeral
// shorthands (each a copy of the default profile with one setting changed),
// then the default.
func (c RoomConfig) profiles() []RoomProfile {
	def := c.defaultProfile()
	out := make([]RoomProfile, 0, len(c.Profiles)+len(c.Overflow)+len(c.Ephemeral)+2)
	out = append(out, c.userProfile())
	for _, p := range c.Profiles {
		out = append(out, p.withDefaults())
	}
	for _, rule := range c.Overflow {
		p := def
		p.Name, p.Pattern, p.Overflow = rule.Pattern, rule.Pattern, rule.Policy
		out = append(out, p)
	}
	for _, pattern := range c.Ephemeral {
		p := def
		p.Name, p.Pattern, p.Durable = pattern, pattern, false
		out = append(out, p)
	}
	return append(out, def)
}

func (p RoomProfile) withDefaults() RoomProfile {
	if p.Name == "" {
		p.Name = p.Pattern
	}
	if p.HistorySize < 0 {
		p.HistorySize = 0
	}
	if p.HistoryTTL <= 0 {
		p.HistoryTTL = 10 * time.Minute
	}
	if p.Presence == hubbubv1.PresenceMode_PRESENCE_MODE_UNSPECIFIED {
		p.Presence = PresenceFull
	}
	if p.PresenceInterval <= 0 {
		p.PresenceInterval = time.Second
	}
	if p.PresenceMaxDiff <= 0 {
		p.PresenceMaxDiff = 100
	}
	if p.PresenceMaxUsers <= 0 {
		p.PresenceMaxUsers = 1000
	}
	if p.PublishRate > 0 && p.PublishBurst <= 0 {
		p.PublishBurst = max(1, int(2*p.PublishRate))
	}
	return p
}

// profileFor returns the profile of a room: the first whose pattern matches.
func profileFor(rules []RoomProfile, name string) RoomProfile {
	for _, p := range rules {
		if auth.Match(p.Pattern, name) {
			return p
		}
	}
	return rules[len(rules)-1]
}

// mayPublish reports whether the profile lets a user publish.
func (p *RoomProfile) mayPublish(user string) bool {
	switch p.Publish {
	case PublishNone:
		return false
	case PublishListed:
		return auth.MatchAny(p.Publishers, user)
	}
	return true
}

// info is the profile as clients see it.
func (p *RoomProfile) info(durable, mayPublish bool, user string) *hubbubv1.RoomInfo {
	return &hubbubv1.RoomInfo{
		Profile: p.Name, Presence: p.Presence, JoinLeave: p.JoinLeave && p.Presence != PresenceOff, Typing: p.Typing,
		HistorySize: uint32(p.HistorySize), Durable: durable, CanPublish: mayPublish && p.mayPublish(user),
		PresenceIntervalMs: uint32(p.PresenceInterval.Milliseconds()), MaxMembers: uint32(p.MaxMembers),
	}
}
