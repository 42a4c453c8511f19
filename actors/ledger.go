package actors

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

// The delivery ledger counts what became of each recent message's
// deliveries on this node: every member the relay handed it to ends in
// exactly one state, so the states sum to the members. A delivery is queued
// (in the connection's outbound queue) until the write pump writes it to
// the socket (written), the room's overflow policy drops it (dropped) or
// replaces it with a newer one of the same key (conflated), or the
// connection goes first (gone; also a member whose connection was closing
// or whose stream check failed). A written delivery becomes acked when the
// member's connection acks exactly its offset. The server API sums the
// nodes' entries (Ledger).

// Outcome is where a queued delivery ended.
type Outcome int

// The outcomes of a queued delivery.
const (
	OutcomeWritten Outcome = iota
	OutcomeDropped
	OutcomeConflated
	OutcomeGone
)

// LedgerEntry counts one message's deliveries on this node. Sinks resolve
// the deliveries they queued; a nil entry (the ledger is off) does nothing.
type LedgerEntry struct {
	room                                                      string
	offset                                                    uint64
	members, queued, written, acked, dropped, conflated, gone atomic.Int64
}

// Resolve moves one queued delivery to its outcome.
func (e *LedgerEntry) Resolve(o Outcome) {
	if e == nil {
		return
	}
	e.queued.Add(-1)
	switch o {
	case OutcomeWritten:
		e.written.Add(1)
	case OutcomeDropped:
		e.dropped.Add(1)
	case OutcomeConflated:
		e.conflated.Add(1)
	default:
		e.gone.Add(1)
	}
}

// fail moves a delivery the relay counted queued, but that did not reach the
// queue, to its outcome: dropped by an overflow policy, or gone.
func (e *LedgerEntry) fail(err error) {
	if e == nil {
		return
	}
	e.queued.Add(-1)
	if errors.Is(err, ErrDropped) {
		e.dropped.Add(1)
	} else {
		e.gone.Add(1)
	}
}

func (e *LedgerEntry) count() *nodev1.LedgerCount {
	return &nodev1.LedgerCount{Offset: e.offset, Members: uint64(e.members.Load()), Queued: e.queued.Load(),
		Written: e.written.Load(), Acked: uint64(e.acked.Load()), Dropped: uint64(e.dropped.Load()),
		Conflated: uint64(e.conflated.Load()), Gone: uint64(e.gone.Load())}
}

// ledgerKey names one message.
type ledgerKey struct {
	room   string
	offset uint64
}

// ledger is a node's entries for its most recent messages (a ring).
type ledger struct {
	mu      sync.Mutex
	entries map[ledgerKey]*LedgerEntry
	ring    []ledgerKey
	next    int
}

// ledgerSize is how many messages a node's ledger remembers.
const ledgerSize = 1 << 14

func newLedger() *ledger {
	return &ledger{entries: make(map[ledgerKey]*LedgerEntry, ledgerSize), ring: make([]ledgerKey, ledgerSize)}
}

// entry returns a message's entry, making it (and forgetting the oldest) when new.
func (l *ledger) entry(room string, offset uint64) *LedgerEntry {
	if l == nil {
		return nil
	}
	k := ledgerKey{room, offset}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.entries[k]; e != nil {
		return e
	}
	if old := l.ring[l.next]; old.room != "" {
		delete(l.entries, old)
	}
	e := &LedgerEntry{room: room, offset: offset}
	l.entries[k] = e
	l.ring[l.next] = k
	l.next = (l.next + 1) % len(l.ring)
	return e
}

// find returns a message's entry, or nil.
func (l *ledger) find(room string, offset uint64) *LedgerEntry {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entries[ledgerKey{room, offset}]
}

// acked counts one written delivery of a room's message as acked.
func (l *ledger) acked(room string, offset uint64) {
	if e := l.find(room, offset); e != nil {
		e.written.Add(-1)
		e.acked.Add(1)
	}
}

// list returns the counts of a room's remembered messages after an offset,
// oldest first, at most limit.
func (l *ledger) list(room string, after uint64, limit int) []*nodev1.LedgerCount {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	var out []*nodev1.LedgerCount
	for k, e := range l.entries {
		if k.room == room && k.offset > after {
			out = append(out, e.count())
		}
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b *nodev1.LedgerCount) int { return cmpSeq(a.GetOffset(), b.GetOffset()) })
	return out[:min(limit, len(out))]
}
