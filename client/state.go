package client

// State is the state of a client's connection.
type State int

const (
	// StateDisconnected: not connected; a reconnect is scheduled.
	StateDisconnected State = iota
	// StateConnecting: dialing and handshaking.
	StateConnecting
	// StateConnected: connected, rooms rejoined.
	StateConnected
	// StateClosed: closed by Close or by the server's advice; final.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// StateChange is passed to Config.OnState.
type StateChange struct {
	State State
	// Err says why the client is disconnected or closed (a *DisconnectError
	// when the server closed the connection), nil otherwise.
	Err error
	// Attempt counts reconnect attempts since the last successful connect.
	Attempt int
}
