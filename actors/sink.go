package actors

import (
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// Sink is what the actors need from a client's socket. The transport
// implements it with a byte-bounded outbound queue drained by a write pump.
type Sink interface {
	// Encoding is the connection's frame encoding; it never changes.
	Encoding() wire.Encoding
	// Send queues one encoded reply. It never blocks. The slice must not be
	// modified. It returns an error when the connection is closing or its
	// queue overflowed (the sink then closes itself as a slow consumer).
	Send(frame []byte) error
	// Push queues one encoded push of a room. The slice and the info are
	// shared with the push's other recipients and must not be modified. When the queue is full the room's overflow policy applies:
	// disconnect (ErrSlowConsumer), or drop the room's oldest queued pushes
	// (ErrDropped when even the new one did not fit), or conflate by key.
	Push(frame []byte, p *PushInfo) error
	// Close sends a Disconnect push and closes the socket with the code. It is
	// idempotent and never blocks; frames queued before it are written first.
	Close(code int, reason string)
}

// Overflow is a room's policy for members whose outbound queue is full.
type Overflow = nodev1.OverflowPolicy

// The overflow policies.
const (
	OverflowDisconnect = nodev1.OverflowPolicy_OVERFLOW_POLICY_UNSPECIFIED
	OverflowDropOldest = nodev1.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST
	OverflowConflate   = nodev1.OverflowPolicy_OVERFLOW_POLICY_CONFLATE
)

// RunSink is a Sink that takes several pushes of one room at once: a relay
// run's pushes for one member. Each gets the outcome Push would give it, in
// order (errs[k] for frames[k]); the queue's lock is taken once for all.
// The slices are the relay's and shared by members: PushRun keeps none of
// them (it may keep their elements).
type RunSink interface {
	Sink
	PushRun(frames [][]byte, infos []*PushInfo, errs []error)
}

// PushInfo describes a push for the outbound queue's overflow policy. One
// is made per push and shared by all its recipients on a relay shard.
type PushInfo struct {
	Room   string
	Key    string // conflation key
	Policy Overflow
	// Ledger, when set, is the message's delivery ledger entry: the sink
	// resolves the delivery (LedgerEntry.Resolve) once it is written,
	// dropped, conflated or lost with the connection.
	Ledger *LedgerEntry
}

// OverflowRule gives the rooms matching Pattern an overflow policy.
type OverflowRule struct {
	Pattern string
	Policy  Overflow
}

// ParseOverflow parses "disconnect", "drop-oldest" or "conflate".
func ParseOverflow(s string) (Overflow, bool) {
	switch s {
	case "disconnect", "":
		return OverflowDisconnect, true
	case "drop-oldest":
		return OverflowDropOldest, true
	case "conflate", "conflate-by-key":
		return OverflowConflate, true
	}
	return 0, false
}

// OverflowName is the inverse of ParseOverflow.
func OverflowName(o Overflow) string {
	switch o {
	case OverflowDropOldest:
		return "drop-oldest"
	case OverflowConflate:
		return "conflate"
	}
	return "disconnect"
}
