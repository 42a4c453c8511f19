// Package workers runs short functions on goroutines kept between runs.
//
// An actor's mailbox run and a connection's write pump are short and
// frequent; started with `go` each time, every run begins on a small stack
// and grows it by copying (the connection actor's and the writer's paths are
// deep), and at a connect storm or a fan-out that copying is a sixth of the
// server's CPU. A Pool hands a function to a goroutine that is idle and keeps
// its grown stack, or starts one when none is; at most MaxIdle wait between
// runs, so a burst's extra goroutines end with it.
package workers

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pool runs functions on kept goroutines. The zero value is not usable; use New.
type Pool struct {
	work    chan func()
	quit    chan struct{}
	maxIdle int32
	idle    atomic.Int32
	mu      sync.RWMutex // orders starting a worker before Close's wait
	closed  bool
	running sync.WaitGroup

	// Trimming (see Trim): the fewest goroutines idle since the last trim,
	// how many are always kept, and the timer of the next trim.
	low   atomic.Int32
	floor int32
	every time.Duration
	timer *time.Timer
}

// New returns a pool that keeps at most maxIdle goroutines waiting (at least one).
func New(maxIdle int) *Pool {
	return &Pool{work: make(chan func()), quit: make(chan struct{}), maxIdle: int32(max(maxIdle, 1))}
}

// Go runs fn on an idle goroutine of the pool, or on a new one. It never
// blocks. After Close it starts a plain goroutine.
func (p *Pool) Go(fn func()) {
	select {
	case p.work <- fn: // an idle worker takes it
		return
	default:
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		go fn() // owner: the caller; the pool is closed
		return
	}
	p.running.Add(1)
	go p.worker(fn) // owner: the pool; Close waits for it
}

func (p *Pool) worker(fn func()) {
	defer p.running.Done()
	for {
		fn()
		fn = nil
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		select {
		case fn = <-p.work:
			if n := p.idle.Add(-1); n < p.low.Load() {
				p.low.Store(n) // a race may lose a lower count; trimming is approximate
			}
			if fn == nil {
				return // trimmed
			}
		case <-p.quit:
			p.idle.Add(-1)
			return
		}
	}
}

// Trim lets idle goroutines beyond floor end when they were not needed: every
// interval, as many as stayed idle through the whole interval (the fewest
// idle at any moment of it) end, down to floor. A burst's goroutines are kept
// while bursts recur (a fan-out's write pumps every few milliseconds), so
// they keep their grown stacks, and end a little after the bursts stop, so an
// idle server holds few. Call it once, before the pool is used.
func (p *Pool) Trim(floor int, interval time.Duration) {
	p.mu.Lock() // trim reads the timer under the read lock
	defer p.mu.Unlock()
	p.floor, p.every = int32(floor), interval
	p.low.Store(p.idle.Load())
	p.timer = time.AfterFunc(interval, p.trim)
}

func (p *Pool) trim() {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return
	}
	for n := p.low.Swap(p.idle.Load()) - p.floor; n > 0; n-- {
		select {
		case p.work <- nil: // an idle goroutine takes it and ends
		default:
			n = 0
		}
	}
	p.timer.Reset(p.every)
}

// Idle is the number of goroutines waiting for work.
func (p *Pool) Idle() int { return int(p.idle.Load()) }

// Close ends the idle goroutines and waits for the running ones to finish
// their function. Go still works afterwards, on plain goroutines.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.quit)
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	p.mu.Unlock()
	p.running.Wait()
}

// Dispatcher adapts a Pool to an actor system's dispatcher interface
// (Schedule and Throughput).
type Dispatcher struct {
	Pool *Pool
	// N is how many messages a mailbox run handles before it yields.
	N int
}

// Schedule runs fn on the pool.
func (d Dispatcher) Schedule(fn func()) { d.Pool.Go(fn) }

// Throughput is the messages per mailbox run before it yields.
func (d Dispatcher) Throughput() int { return d.N }
