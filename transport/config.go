package transport

import "time"

// Config configures the WebSocket transport. The zero value means every default.
type Config struct {
	// HookHeaders are the upgrade request's headers kept for the backend's
	// connect hook (actors.ConnInfo.Headers). Default none.
	HookHeaders []string
	// MaxFrameBytes is the largest client frame; a larger one closes the
	// connection with 1009. Default 65536.
	MaxFrameBytes int
	// MaxQueuedBytes bounds a connection's outbound queue; a client that falls
	// further behind is closed as a slow consumer (4000). Default 1 MiB.
	MaxQueuedBytes int
	// SocketSendBuffer sets each connection's kernel send buffer (SO_SNDBUF)
	// in bytes; 0 leaves the kernel's autotuning, which lets a client that
	// stopped reading hold up to a few MiB in the kernel before its outbound
	// queue (and the room's overflow policy) sees it fall behind.
	SocketSendBuffer int
	// PingInterval is how often the server pings each client. Default 25s.
	PingInterval time.Duration
	// PongTimeout is how long past a ping interval a silent peer is kept
	// before it is considered dead. Default 10s.
	PongTimeout time.Duration
	// WriteTimeout bounds every write to a socket (each gets at least three
	// quarters of it: the deadline moves once per quarter). Default 10s.
	WriteTimeout time.Duration
	// SlowConsumerGrace is how long a connection closed as a slow consumer
	// has to take the write in progress, the Disconnect push and the 4000
	// close frame before it is dropped without them. Default 1s.
	SlowConsumerGrace time.Duration
	// CloseTimeout is how long the server waits for the peer's close reply. Default 2s.
	CloseTimeout time.Duration
	// Reader is how connections are read: ReaderEpoll (the default on
	// Linux) keeps idle connections in one epoll set and starts a reader
	// goroutine only while a socket has input; ReaderGoroutine reads every
	// connection on a goroutine of its own (the only way elsewhere, and for
	// TLS served by Hubbub itself).
	Reader string
	// idleReaderAfter overrides idleReaderAfter (tests park sockets sooner).
	idleReaderAfter time.Duration
	// ReadBufferBytes is the size of each connection's socket read buffer. Default 1024.
	ReadBufferBytes int
	// Compression enables permessage-deflate for clients that offer it
	// (without context takeover). Default off: it costs server CPU per message
	// and recipient.
	Compression bool
	// CompressionLevel is the flate level, 1 (fastest) to 9. Default 1.
	CompressionLevel int
	// ReadyTimeout bounds the actor probe of /readyz. Default 2s.
	ReadyTimeout time.Duration
	// ShutdownTimeout bounds a graceful shutdown when the caller's context has no deadline. Default 10s.
	ShutdownTimeout time.Duration
	// AllowedOrigins lists the browser origins that may connect, exactly
	// ("https://chat.example.com") or by pattern ("https://*.example.com").
	// Default: the page's own origin only. Requests without an Origin header
	// (non-browser clients) are always allowed; a refused origin gets HTTP 403.
	AllowedOrigins []string
	// MaxConnections caps open WebSockets; beyond it upgrades get HTTP 503. Default 0 (unlimited).
	MaxConnections int
	// ConnectRatePerIP limits upgrade attempts per second from one IP address;
	// beyond it they get HTTP 429. Default 0 (unlimited).
	ConnectRatePerIP float64
	// ConnectBurstPerIP is the per-IP bucket's size. Default max(1, 2*ConnectRatePerIP).
	ConnectBurstPerIP int
}

// The ways of reading connections (Config.Reader).
const (
	ReaderEpoll     = "epoll"
	ReaderGoroutine = "goroutine"
)

// WithDefaults returns the configuration with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.MaxQueuedBytes <= 0 {
		c.MaxQueuedBytes = 1 << 20
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.SlowConsumerGrace <= 0 {
		c.SlowConsumerGrace = time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 2 * time.Second
	}
	if c.ReadBufferBytes <= 0 {
		c.ReadBufferBytes = 1024
	}
	if c.ConnectRatePerIP > 0 && c.ConnectBurstPerIP <= 0 {
		c.ConnectBurstPerIP = max(1, int(2*c.ConnectRatePerIP))
	}
	if c.CompressionLevel < 1 || c.CompressionLevel > 9 {
		c.CompressionLevel = 1
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 2 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	return c
}
