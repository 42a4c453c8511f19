package client

import (
	"context"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hubbub-chat/hubbub/wire"
)

// Config configures a Client. The zero value of each field means its default.
type Config struct {
	// URL of the server's WebSocket endpoint, such as ws://127.0.0.1:8080/ws. Required.
	URL string
	// URLs are more endpoints (other nodes of a cluster); reconnects go round
	// URL and URLs in turn.
	URLs []string
	// Encoding is wire.Proto (default) or wire.JSON.
	Encoding wire.Encoding
	// Name is the display name of an anonymous connection.
	Name string
	// Token returns the connection token for each (re)connect; nil sends none.
	Token func(ctx context.Context) (string, error)
	// MinReconnectDelay is the base of the exponential backoff. Default 200ms.
	MinReconnectDelay time.Duration
	// MaxReconnectDelay caps the backoff. Default 20s.
	MaxReconnectDelay time.Duration
	// DialTimeout bounds one dial and connect handshake. Default 10s.
	DialTimeout time.Duration
	// FailFast makes requests made while disconnected fail at once with
	// ErrDisconnected instead of waiting (bounded by their context) for the
	// reconnect.
	FailFast bool
	// OnState, when set, is called on every change of connection state.
	OnState func(StateChange)
	// TrackMembers makes every subscription to a room with full presence keep
	// its member list (Subscription.Members), fetched in pages after the join
	// and kept up to date from the pushed diffs.
	TrackMembers bool
	// Dialer dials the WebSocket. Default: websocket.DefaultDialer's settings.
	Dialer *websocket.Dialer
	// ConnectData is sent with every connect for the backend's connect hook
	// (a device id, an app version).
	ConnectData *structpb.Value
	// OnServerJoin, when set, is called with the subscription of each room
	// the server joined for this client (the backend's connect hook named
	// it), the first time it does. Such rooms are not joined with Join: the
	// client recovers them by passing their positions with each connect.
	OnServerJoin func(*Subscription)
	// Compact asks the server for compact message pushes (a room alias
	// instead of its name, no epoch, the sender's user only): about a third
	// fewer bytes per message for high-rate rooms. Messages still reach the
	// application as whole Messages, rebuilt from the subscription; their
	// Sender carries no client id or connect-hook info.
	Compact bool
	// UserStream asks for the user's personal stream: the server joins the
	// connection to the room "@<user>" (Client.UserStream), where direct
	// messages to the user arrive as messages, recovered across reconnects
	// like any room's. Its subscription comes to OnServerJoin.
	UserStream bool
	// Receipts joins rooms asking for their read receipts
	// (EventReadReceipts): who has read up to where, coalesced.
	Receipts bool
}

func (c Config) withDefaults() Config {
	if c.Encoding == 0 {
		c.Encoding = wire.Proto
	}
	if c.MinReconnectDelay <= 0 {
		c.MinReconnectDelay = 200 * time.Millisecond
	}
	if c.MaxReconnectDelay <= 0 {
		c.MaxReconnectDelay = 20 * time.Second
	}
	if c.MaxReconnectDelay < c.MinReconnectDelay {
		c.MaxReconnectDelay = c.MinReconnectDelay
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.Dialer == nil {
		d := *websocket.DefaultDialer
		c.Dialer = &d
	}
	return c
}
