package client

import (
	"errors"
	"fmt"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

var (
	// ErrClosed is returned after Close, or after the server told the client not to reconnect.
	ErrClosed = errors.New("hubbub client: closed")
	// ErrDisconnected is returned with FailFast while the client is not connected,
	// and by requests that are not retried when the connection drops under them.
	ErrDisconnected = errors.New("hubbub client: disconnected")
)

// ServerError is an error reply from the server.
type ServerError struct {
	Code       hubbubv1.ErrorCode
	Message    string
	Temporary  bool
	RetryAfter time.Duration
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("hubbub: %s: %s", e.Code, e.Message)
}

func serverError(e *hubbubv1.Error) *ServerError {
	return &ServerError{Code: e.GetCode(), Message: e.GetMessage(), Temporary: e.GetTemporary(),
		RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond}
}

// DisconnectError says why the server ended a connection.
type DisconnectError struct {
	Code      int
	Reason    string
	Reconnect bool
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("hubbub: disconnected by server: %d %s", e.Code, e.Reason)
}
