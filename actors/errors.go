package actors

import (
	"errors"
	"fmt"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

var (
	// ErrNodeStopped is returned by Node methods after Shutdown.
	ErrNodeStopped = errors.New("actors: node stopped")
	// ErrSlowConsumer is what a Sink's Send returns (or wraps) when the
	// connection's outbound queue overflowed.
	ErrSlowConsumer = errors.New("slow consumer")
	// ErrDropped is what Push returns when the room's overflow policy dropped the push.
	ErrDropped  = errors.New("dropped by the room's overflow policy")
	errNoFrame  = errors.New("no frame in the member's encoding")
	errRoomGone = errors.New("the room's actor terminated")
)

// errFrame builds an error ServerFrame for request id.
func errFrame(id uint64, code hubbubv1.ErrorCode, temporary bool, format string, args ...any) *hubbubv1.ServerFrame {
	return &hubbubv1.ServerFrame{Id: id, Body: &hubbubv1.ServerFrame_Error{Error: &hubbubv1.Error{
		Code: code, Message: fmt.Sprintf(format, args...), Temporary: temporary,
	}}}
}
