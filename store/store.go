// Package store keeps rooms' history durably, so an acknowledged message
// survives a restart, a room moving to another node and the loss of a node.
//
// A room owns its history: it assigns offsets itself and hands each batch of
// new messages to a Store before it acknowledges or delivers them
// (write-through). The store accepts a batch only when it continues the
// room's stream exactly (same epoch, first offset = stored top + 1), so two
// activations of one room, for a moment alive on two nodes during a move,
// can never both write the same offset: the second gets ErrConflict.
//
// Two implementations: Embedded, an on-disk store for a single node (Pebble),
// and Redis, a Redis Streams store shared by the nodes of a cluster.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// ErrConflict means an append did not continue the stored stream: another
// activation of the room wrote first, or the store lost the room (its epoch
// changed). The room's state is stale; it must reload.
var ErrConflict = errors.New("store: append does not continue the stored stream")

// Position is where a room's stream stands: its newest offset and its epoch.
// The epoch names one unbroken stream; it changes only when the store lost
// the room's data (it was wiped, or its metadata expired).
type Position struct {
	Offset uint64
	Epoch  string
}

// Retention bounds what a store keeps of each room.
type Retention struct {
	// MaxLen is how many newest messages a room keeps. Zero or less: none.
	MaxLen int
	// MaxAge drops messages older than this. Zero: no age limit.
	MaxAge time.Duration
	// MetaTTL is how long a room's position outlives its last publish. After
	// it, the room starts over with a new epoch. Default 30 days.
	MetaTTL time.Duration
}

// Store is a durable history of rooms. It is safe for concurrent use; a room
// issues one Append at a time.
type Store interface {
	// Load returns the room's position, creating an empty stream with a new
	// epoch when the store has none, and up to limit of its newest retained
	// messages, oldest first.
	Load(ctx context.Context, room string, limit int) (Position, []*hubbubv1.Message, error)
	// Append stores msgs, whose offsets must be consecutive and continue the
	// room's stream at epoch: ErrConflict otherwise, and nothing is stored.
	// It returns once the batch is durable (as durable as the store is
	// configured to be) and trims the stream to the retention.
	Append(ctx context.Context, room, epoch string, msgs []*hubbubv1.Message) error
	// Read returns up to limit retained messages with offset > after, oldest
	// first (limit <= 0: all).
	Read(ctx context.Context, room string, after uint64, limit int) ([]*hubbubv1.Message, error)
	// SaveMarks stores some users' marks in a room (see Marks), as durably
	// as appends; LoadMarks returns every user's marks in a room.
	SaveMarks(ctx context.Context, room string, marks map[string]Marks) error
	LoadMarks(ctx context.Context, room string) (map[string]Marks, error)
	// Close releases the store.
	Close() error
}

func (r Retention) withDefaults() Retention {
	if r.MetaTTL <= 0 {
		r.MetaTTL = 30 * 24 * time.Hour
	}
	return r
}

// cutoffMs is the oldest message time (Unix ms) the retention keeps, or 0.
func (r Retention) cutoffMs(now time.Time) int64 {
	if r.MaxAge <= 0 {
		return 0
	}
	return now.Add(-r.MaxAge).UnixMilli()
}

// checkBatch verifies that msgs are non-empty and consecutive.
func checkBatch(msgs []*hubbubv1.Message) error {
	if len(msgs) == 0 {
		return errors.New("store: empty batch")
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].GetOffset() != msgs[0].GetOffset()+uint64(i) {
			return errors.New("store: batch offsets are not consecutive")
		}
	}
	return nil
}

// NewEpoch returns a new random epoch.
func NewEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
