// Package transport is Hubbub's HTTP and WebSocket layer: the upgrade (with
// subprotocol selection), the read loop that decodes client frames, the write
// pump that drains each connection's byte-bounded outbound queue, close
// codes, keep-alive pings and the health endpoints.
//
// Data frames are written by the pump directly to the TCP connection as
// unmasked server frames, many per writev system call (compressed with
// permessage-deflate when negotiated); gorilla/websocket does the upgrade,
// reads client frames and writes control frames. Only the pump writes to a
// socket: the ping and close handlers hand their replies to it instead of
// writing themselves.
//
// # Concurrency
//
// The HTTP handler upgrades a WebSocket and hands it to a goroutine of its own
// (so net/http's per-request buffers are freed), which owns the socket: it
// spawns the connection actor, runs the read loop and, when that ends, waits
// for the write pump and stops the actor before it returns. The write pump is
// a goroutine that exists only while there is something to write (frames, a
// ping, a pong or the close); kick starts it, and at most one runs per
// connection. One server-wide pinger goroutine pings every connection. The
// Sink methods (Send, Push, Close, Encoding) may be called from any goroutine
// and never block. Server methods may be called from any goroutine; Shutdown
// is idempotent and joins every goroutine the server started.
package transport
