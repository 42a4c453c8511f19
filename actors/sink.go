package actors

import "github.com/hubbub-chat/hubbub/wire"

// Sink is what the actors need from a client's socket. The transport
// implements it with a byte-bounded outbound queue drained by a write pump.
type Sink interface {
	// Encoding is the connection's frame encoding; it never changes.
	Encoding() wire.Encoding
	// Send queues one encoded ServerFrame. It never blocks. The slice is shared
	// with other recipients and must not be modified. It returns an error when
	// the connection is closing or its queue overflowed (the sink then closes
	// itself as a slow consumer).
	Send(frame []byte) error
	// Close sends a Disconnect push and closes the socket with the code. It is
	// idempotent and never blocks; frames queued before it are written first.
	Close(code int, reason string)
}
