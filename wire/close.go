package wire

import (
	"encoding/json"
	"slices"
)

// WebSocket close codes used by the server. Codes below 4000 are the
// standard ones (RFC 6455); 4000-4999 are Hubbub's own. Every close is
// preceded, where the socket still works, by a Disconnect push with the same
// code, the reason from CloseCodes and whether the client should reconnect.
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
	// ClosePolicy: the connection broke a policy (sustained abuse of the rate limits).
	ClosePolicy = 1008
	// CloseTooBig: a frame over the server's read limit.
	CloseTooBig = 1009
	// CloseInternal: the server failed while handling this connection; reconnect.
	CloseInternal = 1011
	// CloseTryAgainLater: the backend's connect hook did not answer; reconnect later.
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
	// died, it moved or it failed); reconnect and rejoin with the last positions.
	CloseRoomMoved = 4004
	// CloseConnectTimeout: no connect command arrived within the server's connect timeout.
	CloseConnectTimeout = 4005
	// CloseDisconnected: a backend disconnected the connection through the
	// server API and asked the client to reconnect.
	CloseDisconnected = 4006
	// CloseDisconnectedFinal: a backend disconnected the connection through
	// the server API; do not reconnect.
	CloseDisconnectedFinal = 4007
)

// CloseCode is one row of the close code table: the code, the fixed reason
// the server sends with it, and whether a client should reconnect.
type CloseCode struct {
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// CloseCodes is every close code the server sends, in code order. The
// server, the Go client and the browser page all read this one table.
var CloseCodes = []CloseCode{
	{CloseNormal, "normal close", false},
	{CloseGoingAway, "server shutting down", true},
	{CloseProtocolError, "protocol error", false},
	{CloseUnsupportedData, "wrong frame type for the subprotocol", false},
	{CloseInvalidPayload, "malformed frame", false},
	{ClosePolicy, "rate limit exceeded repeatedly", false},
	{CloseTooBig, "frame too big", false},
	{CloseInternal, "internal error", true},
	{CloseTryAgainLater, "try again later", true},
	{CloseSlowConsumer, "slow consumer", true},
	{CloseTokenExpired, "token expired", true},
	{CloseUnauthorized, "unauthorized", false},
	{CloseTooManyConnections, "too many connections for this user", false},
	{CloseRoomMoved, "a joined room moved; rejoin", true},
	{CloseConnectTimeout, "no connect in time", true},
	{CloseDisconnected, "disconnected by the server", true},
	{CloseDisconnectedFinal, "disconnected by the server; do not reconnect", false},
}

// LookupClose returns the table's row of a code.
func LookupClose(code int) (CloseCode, bool) {
	i, ok := slices.BinarySearchFunc(CloseCodes, code, func(c CloseCode, code int) int { return c.Code - code })
	if !ok {
		return CloseCode{Code: code}, false
	}
	return CloseCodes[i], true
}

// CloseReason is the fixed reason of a code ("" for a code not in the table).
func CloseReason(code int) string {
	c, _ := LookupClose(code)
	return c.Reason
}

// Reconnect reports whether a client should reconnect after a close code.
// Codes not in the table (a network failure's 1006, a proxy's own codes)
// are worth a reconnect.
func Reconnect(code int) bool {
	c, ok := LookupClose(code)
	return !ok || c.Reconnect
}

// CloseCodesJSON is the table as JSON, for clients in other languages.
func CloseCodesJSON() []byte {
	b, _ := json.Marshal(CloseCodes) // plain structs: cannot fail
	return b
}
