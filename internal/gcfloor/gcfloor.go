// Package gcfloor keeps the garbage collector's heap goal from falling
// below a floor.
//
// With GOGC's default of 100 a process collects whenever its heap doubles,
// starting from 4 MB. A node that has just started (after a deploy or a
// crash, when every client reconnects at once) holds a few megabytes, so it
// collects at 4, 8, 16, 32 and 64 MB while the connections come in, each
// collection marking the heap again and its idle-time marking taking the
// CPU that the accepting goroutines would use. A floor lets the heap grow
// to the floor before the first of them. Once the live heap passes
// floor/(1+GOGC/100) the floor no longer binds and the collector runs on the
// configured GOGC alone, so a node of any real size pays nothing in memory
// for it. A memory limit (GOMEMLIMIT) still caps the heap as before.
//
// It does what a heap ballast (a large allocation never touched, counted as
// live) was used for, without one: after every collection (observed through
// a finalizer on a sentinel object) it sets the GC percentage that makes the
// next goal the larger of the floor and what GOGC would give.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// maxPercent bounds the percentage set while the live heap is tiny.
const maxPercent = 100_000

// Floor is a running floor; Stop restores the GC percentage it found.
type Floor struct {
	floor   uint64
	base    int
	stopped atomic.Bool
	mu      sync.Mutex
	percent int // the percentage set last
	sample  []metrics.Sample
}

type sentinel struct{ f *Floor }

// active is set while a floor runs: the GC percentage is the process's, so
// one floor at most tunes it.
var active atomic.Bool

// Keep starts a floor of floor bytes under the heap goal. It does nothing
// (and Stop is a no-op) when floor is zero, GOGC turns the collector off or
// another floor runs; a GOGC other than 100 is the percentage it returns to.
func Keep(floor uint64) *Floor {
	f := &Floor{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	if floor == 0 || !active.CompareAndSwap(false, true) {
		f.base, f.percent = -2, -2 // not tuning: Percent reports that
		f.stopped.Store(true)
		return f
	}
	f.base = debug.SetGCPercent(100)
	debug.SetGCPercent(f.base)
	f.percent = f.base
	if f.base < 0 {
		f.stopped.Store(true)
		active.Store(false)
		return f
	}
	f.adjust()
	runtime.SetFinalizer(&sentinel{f: f}, afterGC)
	return f
}

// afterGC runs on the finalizer goroutine once per collection: the sentinel
// is unreachable at every cycle and re-armed here.
func afterGC(s *sentinel) {
	if s.f.stopped.Load() {
		return
	}
	s.f.adjust()
	runtime.SetFinalizer(s, afterGC)
}

// adjust sets the percentage for the live heap the last collection left.
func (f *Floor) adjust() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped.Load() {
		return
	}
	metrics.Read(f.sample)
	live := f.sample[0].Value.Uint64()
	p := f.base
	if live == 0 {
		live = 1
	}
	if goal := live + live*uint64(f.base)/100; goal < f.floor {
		p = int(min((f.floor-live)*100/live, maxPercent))
	}
	if p != f.percent {
		debug.SetGCPercent(p)
		f.percent = p
	}
}

// Percent is the GC percentage the floor set last (-2 when it is not
// tuning: no floor, or another floor runs).
func (f *Floor) Percent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.percent
}

// Stop ends the floor and restores the percentage Keep found.
func (f *Floor) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped.Swap(true) {
		return
	}
	debug.SetGCPercent(f.base)
	f.percent = f.base
	active.Store(false)
}
