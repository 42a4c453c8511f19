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

// outQueue is a connection's byte-bounded outbound queue of encoded frames.
// Producers (actors) push without blocking; the write pump takes everything
// queued at once.
type outQueue struct {
	mu       sync.Mutex
	items    [][]byte
	spare    [][]byte
	bytes    int
	maxBytes int
	closed   bool
}

// push queues b. It reports whether the queue was empty (the pump needs a
// wake-up), or an error when closed or over the byte bound (it then closes).
func (q *outQueue) push(b []byte) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false, ErrClosed
	}
	if q.bytes+len(b) > q.maxBytes {
		q.closed = true
		q.items, q.bytes = nil, 0
		return false, ErrSlowConsumer
	}
	q.items = append(q.items, b)
	q.bytes += len(b)
	return len(q.items) == 1, nil
}

// take returns everything queued; give it back with recycle after writing.
func (q *outQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.items
	q.items, q.spare = q.spare[:0], nil
	q.bytes = 0
	return batch
}

// recycle returns a written batch's slice for reuse, dropping its references.
func (q *outQueue) recycle(batch [][]byte) {
	clear(batch)
	if cap(batch) > 1024 {
		return // do not keep a burst's large slice on an idle connection
	}
	q.mu.Lock()
	if q.spare == nil {
		q.spare = batch[:0]
	}
	q.mu.Unlock()
}

// close stops accepting frames; drop also discards what is queued.
func (q *outQueue) close(drop bool) {
	q.mu.Lock()
	q.closed = true
	if drop {
		q.items, q.bytes = nil, 0
	}
	q.mu.Unlock()
}

// queued returns the bytes waiting.
func (q *outQueue) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}
