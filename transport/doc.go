// Package transport is Hubbub's HTTP and WebSocket layer: the upgrade (with
// subprotocol selection), the read loop that decodes client frames, the write
// pump that drains each connection's byte-bounded outbound queue, close
// codes, keep-alive pings and the health endpoints.
//
// Data frames are written by the pump directly to the TCP connection as
// unmasked server frames, many per writev system call; gorilla/websocket does
// the upgrade, reads client frames and writes control frames. Only the pump
// goroutine writes to a socket: the ping and close handlers hand their
// replies to it instead of writing themselves.
//
// # Concurrency
//
// For each WebSocket the HTTP handler goroutine owns the socket: it upgrades,
// spawns the connection actor, starts exactly one write pump goroutine, runs
// the read loop inline and, when the loop ends, waits for the pump and stops
// the actor before it returns. The Sink methods (Send, Close, Encoding) may be
// called from any goroutine and never block. Server methods may be called
// from any goroutine; Shutdown is idempotent.
package transport
