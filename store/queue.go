package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Both stores write the same way: rooms submit operations to a queue, and
// writer goroutines take them in groups (whatever queued while the previous
// group was being written) and answer each one. A group is one commit with
// one fsync (embedded) or one pipeline (Redis).

// maxGroup bounds the operations written as one group.
const maxGroup = 512

// Under load (the previous group held at least lingerAfter operations) a
// writer waits up to linger for a group of lingerEnough: fewer, larger
// groups cost fewer fsyncs, and the wait is one the operations would mostly
// have spent in line anyway.
const (
	linger       = time.Millisecond
	lingerStep   = 100 * time.Microsecond
	lingerAfter  = 4
	lingerEnough = 32
)

var errClosed = errors.New("store: closed")

// request is an operation with the channel (buffered, 1) that carries its answer.
type request interface{ answer() chan error }

// queue hands a store's operations to its writers and their answers back.
type queue[T request] struct {
	reqs chan T
	quit chan struct{} // closed by stop: no new operations, writers return
	done chan struct{} // closed by stop once the writers returned and the queue is drained
	wg   sync.WaitGroup
	once sync.Once
}

func newQueue[T request]() *queue[T] {
	return &queue[T]{reqs: make(chan T, maxGroup), quit: make(chan struct{}), done: make(chan struct{})}
}

// start runs n writers, each handing its groups to write, which answers them.
func (q *queue[T]) start(n int, write func(group []T)) {
	for range n {
		q.wg.Add(1)
		go func() { // owner: the queue; joined by stop
			defer q.wg.Done()
			group := make([]T, 0, maxGroup)
			for {
				busy := len(group) >= lingerAfter // the previous group was shared
				select {
				case r := <-q.reqs:
					group = gather(q.reqs, append(group[:0], r), busy)
					write(group)
				case <-q.quit:
					return
				}
			}
		}()
	}
}

// every runs f every d until the queue stops.
func (q *queue[T]) every(d time.Duration, f func()) {
	q.wg.Add(1)
	go func() { // owner: the queue; joined by stop
		defer q.wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f()
			case <-q.quit:
				return
			}
		}
	}()
}

// gather adds to group what is queued on reqs, lingering when busy.
func gather[T any](reqs <-chan T, group []T, busy bool) []T {
	deadline := time.Now().Add(linger)
	for {
	drain:
		for len(group) < maxGroup {
			select {
			case r := <-reqs:
				group = append(group, r)
			default:
				break drain
			}
		}
		if !busy || len(group) >= lingerEnough || len(group) >= maxGroup || time.Now().After(deadline) {
			return group
		}
		time.Sleep(lingerStep)
	}
}

// submit queues req and waits for its answer. When ctx ends first the
// operation may still be written: the caller must treat the outcome as unknown.
func (q *queue[T]) submit(ctx context.Context, req T) error {
	select {
	case <-q.quit:
		return errClosed
	default:
	}
	select {
	case q.reqs <- req:
	case <-q.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.answer():
		return err
	case <-q.done:
		select {
		case err := <-req.answer():
			return err
		default:
			return errClosed // queued after the drain
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop makes the writers return, then fails what is still queued.
func (q *queue[T]) stop() {
	q.once.Do(func() {
		close(q.quit)
		q.wg.Wait()
		for {
			select {
			case r := <-q.reqs:
				r.answer() <- errClosed
			default:
				close(q.done)
				return
			}
		}
	})
}

func wrapErr(err error) error {
	if err == nil || errors.Is(err, ErrConflict) {
		return err
	}
	return fmt.Errorf("store: %w", err)
}
