package transport

import (
	"errors"
	"sync"

	"github.com/hubbub-chat/hubbub/actors"
)

var (
	// ErrClosed is returned by Send after the connection started closing.
	ErrClosed = errors.New("transport: connection closed")
	// ErrSlowConsumer is returned by Send when the outbound queue overflowed.
	ErrSlowConsumer = actors.ErrSlowConsumer
)

// item is one queued frame: a reply (no info) or a room's push, whose info
// (room, overflow policy, delivery ledger entry) its other recipients share.
// A nil b is a conflated item's tombstone, with no info.
type item struct {
	b    []byte
	info *actors.PushInfo
}

func (it *item) room() string {
	if it.info == nil {
		return ""
	}
	return it.info.Room
}

func (it *item) key() string {
	if it.info == nil {
		return ""
	}
	return it.info.Key
}

func (it *item) policy() actors.Overflow {
	if it.info == nil {
		return actors.OverflowDisconnect
	}
	return it.info.Policy
}

// resolve settles the push's delivery in its ledger, if it has one.
func (it *item) resolve(o actors.Outcome) {
	if it.info != nil {
		it.info.Ledger.Resolve(o)
	}
}

// pushResult reports what an overflow policy did.
type pushResult struct {
	dropped   int // queued pushes evicted (or the new one refused)
	conflated int // older pushes replaced by this one
}

// outQueue is a connection's byte-bounded outbound queue of encoded frames.
// Producers (actors) push without blocking; the write pump takes everything
// queued at once. When the bound is reached, the pushing room's overflow
// policy decides: close the connection, drop that room's oldest pushes, or
// keep the newest push per key.
type outQueue struct {
	mu       sync.Mutex
	items    []item // nil while empty: an idle connection holds no slice
	bytes    int
	maxBytes int
	closed   bool
	latest   map[string]int // conflation key -> index of its newest queued item
}

// push queues it. It reports whether the queue was empty (the pump needs a
// wake-up), what an overflow policy did, or an error when closed or over the
// bound under the disconnect policy (the queue then closes).
func (q *outQueue) push(it item) (bool, pushResult, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var res pushResult
	err := q.pushLocked(it, &res)
	return err == nil && len(q.items) == 1, res, err
}

// pushRun queues a run of one room's pushes under one lock, each as push
// would (errs[k] is frames[k]'s outcome). It reports whether the queue went
// from empty to not, what overflow policies did, and whether the queue
// closed as a slow consumer.
func (q *outQueue) pushRun(frames [][]byte, infos []*actors.PushInfo, errs []error) (wake bool, res pushResult, slow bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	empty := len(q.items) == 0
	for k, b := range frames {
		errs[k] = q.pushLocked(item{b: b, info: infos[k]}, &res)
		if errs[k] == ErrSlowConsumer {
			slow = true
		}
	}
	return empty && len(q.items) > 0, res, slow
}

func (q *outQueue) pushLocked(it item, res *pushResult) error {
	if q.closed {
		return ErrClosed
	}
	ck := ""
	if it.policy() == actors.OverflowConflate && it.key() != "" {
		ck = it.room() + "\x00" + it.key()
		if i, ok := q.latest[ck]; ok {
			q.bytes -= len(q.items[i].b)
			q.items[i].b = nil // tombstone: the newer value goes to the back
			q.items[i].resolve(actors.OutcomeConflated)
			q.items[i].info = nil
			res.conflated++
		}
	}
	if q.bytes+len(it.b) > q.maxBytes {
		if it.policy() == actors.OverflowDisconnect {
			q.closed = true
			resolveAll(q.items, actors.OutcomeGone)
			q.items, q.bytes, q.latest = nil, 0, nil
			return ErrSlowConsumer
		}
		res.dropped += q.evict(it.room(), q.bytes+len(it.b)-q.maxBytes)
		if q.bytes+len(it.b) > q.maxBytes {
			res.dropped++
			return actors.ErrDropped
		}
	}
	if q.items == nil {
		q.items = (*itemSlices.Get().(*[]item))[:0]
	}
	q.items = append(q.items, it)
	q.bytes += len(it.b)
	if ck != "" {
		if q.latest == nil {
			q.latest = map[string]int{}
		}
		q.latest[ck] = len(q.items) - 1
	}
	return nil
}

// evict drops the oldest queued pushes of the room (never replies, never
// other rooms') until need bytes are free; it returns how many it dropped.
func (q *outQueue) evict(room string, need int) int {
	dropped, freed := 0, 0
	kept := q.items[:0]
	for _, it := range q.items {
		if freed < need && it.b != nil && it.room() == room && it.policy() != actors.OverflowDisconnect {
			freed += len(it.b)
			dropped++
			it.resolve(actors.OutcomeDropped)
			continue
		}
		kept = append(kept, it)
	}
	clear(q.items[len(kept):])
	q.items = kept
	q.bytes -= freed
	q.latest = nil // indexes moved
	for i, it := range q.items {
		if it.policy() == actors.OverflowConflate && it.key() != "" && it.b != nil {
			if q.latest == nil {
				q.latest = map[string]int{}
			}
			q.latest[it.room()+"\x00"+it.key()] = i
		}
	}
	return dropped
}

// take returns everything queued; give it back with recycle after writing.
func (q *outQueue) take() []item {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.items
	q.items = nil
	q.bytes = 0
	q.latest = nil
	return batch
}

// itemSlices holds written batches' slices for any connection's next push,
// so that busy connections do not allocate one per batch and idle ones keep none.
var itemSlices = sync.Pool{New: func() any { s := make([]item, 0, 8); return &s }}

// recycle returns a written batch's slice for reuse, dropping its references.
func (q *outQueue) recycle(batch []item) {
	if cap(batch) == 0 || cap(batch) > 1024 {
		return // do not keep a burst's large slice
	}
	clear(batch)
	batch = batch[:0]
	itemSlices.Put(&batch)
}

// close stops accepting frames; drop also discards what is queued.
func (q *outQueue) close(drop bool) {
	q.mu.Lock()
	q.closed = true
	if drop {
		resolveAll(q.items, actors.OutcomeGone)
		q.items, q.bytes, q.latest = nil, 0, nil
	}
	q.mu.Unlock()
}

// resolveAll moves the deliveries of items to an outcome in their ledger.
func resolveAll(items []item, o actors.Outcome) {
	for i := range items {
		items[i].resolve(o)
	}
}

// queued returns the bytes waiting.
func (q *outQueue) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}
