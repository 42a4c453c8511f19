package actors

import (
	"time"

	"github.com/hubbub-chat/hubbub/store"
)

// Config configures a node's actors. The zero value means every default.
type Config struct {
	// Room configures every room.
	Room RoomConfig
	// Conn configures every connection.
	Conn ConnConfig
	// RelayShards is how many relay actors fan a node's pushes out to its
	// connections. Default GOMAXPROCS (one per core).
	RelayShards int
	// Ledger keeps the delivery ledger: what became of each recent message's
	// deliveries on this node (queued, written, acked, dropped, conflated,
	// gone), for the server API's Ledger.
	Ledger bool
	// Notify configures the leave and disconnect notifications to the backend's hooks.
	Notify NotifyConfig
	// ServerVersion is reported in ConnectReply. Default "dev".
	ServerVersion string
	// PingInterval is reported in ConnectReply (the transport does the
	// pinging). server.New sets it from the transport's configuration; set
	// it only when wiring a node by hand. Default 25s.
	PingInterval time.Duration
	// MaxFrameBytes is reported in ConnectReply; server.New sets it from the
	// transport's configuration like PingInterval. Default 65536.
	MaxFrameBytes int
	// Cluster joins the node to a cluster; the zero value is a single node.
	Cluster ClusterConfig
}

// RoomConfig configures rooms.
type RoomConfig struct {
	// HistorySize is how many recent messages a room keeps. Default 100; negative disables history.
	HistorySize int
	// HistoryTTL is how long a message stays in history. Default 10m.
	HistoryTTL time.Duration
	// HistoryMaxLimit caps one history query. Default 1000.
	HistoryMaxLimit int
	// IdleTimeout stops a room with no members after this long without messages. Default 1m.
	IdleTimeout time.Duration
	// MaxMembers caps the members of one room. Default 0 (unlimited).
	MaxMembers int
	// TypingTTL is how long a typing indicator lasts without a refresh. Default 5s.
	TypingTTL time.Duration
	// DedupeWindow is how many recent client message ids a room remembers for idempotent retries. Default 4096.
	DedupeWindow int
	// PublishRate limits accepted publishes per second in one room. Default 0 (unlimited).
	PublishRate float64
	// PublishBurst is the room's publish burst. Default max(1, 2*PublishRate).
	PublishBurst int
	// Overflow gives rooms matching a pattern an overflow policy for members
	// whose outbound queue is full; the first match wins. Default: disconnect.
	Overflow []OverflowRule
	// Store keeps history durably: a publish is acknowledged and delivered only
	// after the store accepted it, and a room that starts (first join, after a
	// move or a restart) continues from the stored position. Nil keeps history
	// in the room's memory only: it is lost when the room stops or moves.
	Store store.Store
	// Ephemeral lists room patterns whose history stays in memory even with a
	// Store: faster, but lost when the room stops.
	Ephemeral []string
	// StoreTimeout bounds one store operation. Default 5s.
	StoreTimeout time.Duration
	// Presence is the default presence mode. Default full.
	Presence PresenceMode
	// NoJoinLeave stops pushing presence changes by default.
	NoJoinLeave bool
	// PresenceInterval is how often a room pushes its presence changes at
	// most, coalesced into one diff. Default 1s.
	PresenceInterval time.Duration
	// PresenceMaxDiff is the most users one presence diff lists; more
	// changes push a reset with the counts. Default 100.
	PresenceMaxDiff int
	// PresenceMaxUsers is the most users a room lists in its diffs; larger
	// rooms push counts only (see RoomProfile). Default 1000.
	PresenceMaxUsers int
	// NoTyping turns typing indicators off by default.
	NoTyping bool
	// UserHistorySize is how many direct messages a user's personal stream
	// keeps for devices that were away. Default 100.
	UserHistorySize int
	// UserHistoryTTL is how long a direct message stays in a personal
	// stream. Default 24h.
	UserHistoryTTL time.Duration
	// Profiles give rooms matching a pattern their own settings; the first
	// match wins, before the Overflow and Ephemeral rules, and rooms that
	// match none take the settings above (DefaultProfile).
	Profiles []RoomProfile

	rules []RoomProfile // Profiles, the shorthand rules and the default, in order
}

// ConnConfig configures connections.
type ConnConfig struct {
	// MaxRoomNameBytes limits a room name's length. Default 128.
	MaxRoomNameBytes int
	// MaxNameBytes limits an anonymous client's name. Default 64.
	MaxNameBytes int
	// MaxMessageBytes limits a published body. Default 32768.
	MaxMessageBytes int
	// MaxRooms caps the rooms one connection may join. Default 100.
	MaxRooms int
	// RequestTimeout bounds the wait for a room's answer. Default 5s.
	RequestTimeout time.Duration
	// ConnectTimeout closes a connection (4005) that has not completed a
	// connect this long after it opened. Default 10s; negative: never.
	ConnectTimeout time.Duration
	// MaxConnsPerUser caps one user's connections on this node. Default 0 (unlimited).
	MaxConnsPerUser int
	// CommandRate limits the commands per second of one connection. Default 1000; negative: unlimited.
	CommandRate float64
	// CommandBurst is the command bucket's size. Default 2*CommandRate.
	CommandBurst int
	// ByteRate limits the frame bytes per second of one connection. Default 8 MiB/s; negative: unlimited.
	ByteRate float64
	// ByteBurst is the byte bucket's size. Default 2*ByteRate.
	ByteBurst int
	// MaxStrikes is how many rate-limited commands within StrikeWindow close the
	// connection with 1008 (sustained abuse). Default 100.
	MaxStrikes int
	// StrikeWindow is the window of MaxStrikes. Default 10s.
	StrikeWindow time.Duration
}

func (c Config) withDefaults() Config {
	if c.ServerVersion == "" {
		c.ServerVersion = "dev"
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 64 << 10
	}
	c.Room = c.Room.withDefaults()
	c.Conn = c.Conn.withDefaults()
	return c
}

func (c RoomConfig) withDefaults() RoomConfig {
	if c.HistorySize == 0 {
		c.HistorySize = 100
	}
	if c.HistorySize < 0 {
		c.HistorySize = 0
	}
	if c.HistoryTTL <= 0 {
		c.HistoryTTL = 10 * time.Minute
	}
	if c.HistoryMaxLimit <= 0 {
		c.HistoryMaxLimit = 1000
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = time.Minute
	}
	if c.TypingTTL <= 0 {
		c.TypingTTL = 5 * time.Second
	}
	if c.DedupeWindow <= 0 {
		c.DedupeWindow = 4096
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.PublishRate > 0 && c.PublishBurst <= 0 {
		c.PublishBurst = max(1, int(2*c.PublishRate))
	}
	if c.Presence == 0 {
		c.Presence = PresenceFull
	}
	if c.PresenceInterval <= 0 {
		c.PresenceInterval = time.Second
	}
	if c.PresenceMaxDiff <= 0 {
		c.PresenceMaxDiff = 100
	}
	if c.PresenceMaxUsers <= 0 {
		c.PresenceMaxUsers = 1000
	}
	if c.UserHistorySize == 0 {
		c.UserHistorySize = 100
	}
	if c.UserHistorySize < 0 {
		c.UserHistorySize = 0
	}
	if c.UserHistoryTTL <= 0 {
		c.UserHistoryTTL = 24 * time.Hour
	}
	c.rules = c.profiles()
	return c
}

func (c ConnConfig) withDefaults() ConnConfig {
	if c.MaxRoomNameBytes <= 0 {
		c.MaxRoomNameBytes = 128
	}
	if c.MaxNameBytes <= 0 {
		c.MaxNameBytes = 64
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 32 << 10
	}
	if c.MaxRooms <= 0 {
		c.MaxRooms = 100
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.CommandRate == 0 {
		c.CommandRate = 1000
	}
	if c.CommandBurst <= 0 {
		c.CommandBurst = max(1, int(2*c.CommandRate))
	}
	if c.ByteRate == 0 {
		c.ByteRate = 8 << 20
	}
	if c.ByteBurst <= 0 {
		c.ByteBurst = max(1, int(2*c.ByteRate))
	}
	if c.MaxStrikes <= 0 {
		c.MaxStrikes = 100
	}
	if c.StrikeWindow <= 0 {
		c.StrikeWindow = 10 * time.Second
	}
	return c
}
