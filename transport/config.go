package transport

import "time"

// Config configures the WebSocket transport. The zero value means every default.
type Config struct {
	// MaxFrameBytes is the largest client frame; a larger one closes the
	// connection with 1009. Default 65536.
	MaxFrameBytes int
	// MaxQueuedBytes bounds a connection's outbound queue; a client that falls
	// further behind is closed as a slow consumer (4000). Default 1 MiB.
	MaxQueuedBytes int
	// PingInterval is how often the server pings each client. Default 25s.
	PingInterval time.Duration
	// PongTimeout is how long past a ping interval a silent peer is kept
	// before it is considered dead. Default 10s.
	PongTimeout time.Duration
	// WriteTimeout bounds every write to a socket. Default 10s.
	WriteTimeout time.Duration
	// CloseTimeout is how long the server waits for the peer's close reply. Default 2s.
	CloseTimeout time.Duration
	// ReadBufferBytes is the size of each connection's socket read buffer. Default 1024.
	ReadBufferBytes int
	// ShutdownTimeout bounds a graceful shutdown when the caller's context has no deadline. Default 10s.
	ShutdownTimeout time.Duration
	// CheckOrigin decides whether a browser's Origin may connect. Default: same origin only
	// (requests without an Origin header, from non-browser clients, are allowed).
	CheckOrigin func(origin, host string) bool
}

func (c Config) withDefaults() Config {
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
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 2 * time.Second
	}
	if c.ReadBufferBytes <= 0 {
		c.ReadBufferBytes = 1024
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	return c
}
