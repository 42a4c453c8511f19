package wire

// WebSocket close codes used by the server. Codes below 4000 are the
// standard ones (RFC 6455); 4000-4999 are Hubbub's own. Every close is
// preceded, where the socket still works, by a Disconnect push with the same
// code, a reason and whether the client should reconnect.
const (
	// CloseNormal: the client asked to close, or left cleanly.
	CloseNormal = 1000
	// CloseGoingAway: the server is shutting down; reconnect (to another node).
	CloseGoingAway = 1001
	// CloseProtocolError: the peer broke the WebSocket protocol.
	CloseProtocolError = 1002
	// CloseUnsupportedData: a text frame on a binary connection or the reverse.
	CloseUnsupportedData = 1003
	// CloseInvalidPayload: a frame that does not decode as a ClientFrame.
	CloseInvalidPayload = 1007
	// ClosePolicy: the connection broke a policy (for example sustained abuse).
	ClosePolicy = 1008
	// CloseTooBig: a frame over the server's read limit.
	CloseTooBig = 1009
	// CloseInternal: the server failed while handling this connection; reconnect.
	CloseInternal = 1011
	// CloseTryAgainLater: the server is overloaded; reconnect after a delay.
	CloseTryAgainLater = 1013

	// CloseSlowConsumer: the client read too slowly and its outbound queue
	// overflowed; reconnect and recover from history.
	CloseSlowConsumer = 4000
	// CloseTokenExpired: the connection token expired; reconnect with a new one.
	CloseTokenExpired = 4001
	// CloseUnauthorized: the token was refused; do not reconnect with it.
	CloseUnauthorized = 4002
	// CloseTooManyConnections: the user has the most connections allowed.
	CloseTooManyConnections = 4003
	// CloseRoomMoved: a room the connection had joined went away (its node
	// died or it moved); reconnect and rejoin with the last positions.
	CloseRoomMoved = 4004
)

// Reconnect reports whether a client should reconnect after a close code.
func Reconnect(code int) bool {
	switch code {
	case CloseNormal, CloseProtocolError, CloseUnsupportedData, CloseInvalidPayload,
		ClosePolicy, CloseTooBig, CloseUnauthorized, CloseTooManyConnections:
		return false
	}
	return true
}
