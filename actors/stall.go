package actors

import (
	"sync/atomic"
	"time"
)

// A node that was frozen (SIGSTOP, a VM stall, a long pause) may come back
// holding room activations the rest of the cluster has replaced meanwhile.
// The stall watch notices the freeze from inside: a ticker that fires every
// stallTick and finds that much more time passed than that. Each stall bumps
// a counter; a durable room that has not checked its position against the
// store since the last stall does so before it answers anything (see
// room.verify), so a stale activation never answers a join or history with
// an old position.

const (
	stallTick      = 200 * time.Millisecond
	stallThreshold = time.Second // a gap this much longer than the tick is a stall
)

// stallWatch counts the node's stalls.
type stallWatch struct {
	stalls atomic.Uint64
	stop   chan struct{}
	done   chan struct{}
}

func startStallWatch(onStall func(gap time.Duration)) *stallWatch {
	w := &stallWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(onStall) // owner: the node; joined by close in Node.Shutdown
	return w
}

func (w *stallWatch) run(onStall func(time.Duration)) {
	defer close(w.done)
	t := time.NewTicker(stallTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			// The time of receipt, not the tick's: a tick sent just before a
			// freeze arrives after it with its old time.
			now := time.Now()
			if gap := now.Sub(last); gap > stallTick+stallThreshold {
				w.stalls.Add(1)
				onStall(gap)
			}
			last = now
		}
	}
}

// count is how many stalls the node has seen.
func (w *stallWatch) count() uint64 {
	if w == nil {
		return 0
	}
	return w.stalls.Load()
}

func (w *stallWatch) close() {
	close(w.stop)
	<-w.done
}
