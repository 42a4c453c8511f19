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
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100 (4 MB); it
// scales with the percentage, so the percentage that makes the floor the
// goal of a tiny heap is floor/heapMinimum*100, not the live heap's ratio.
const heapMinimum = 4 << 20

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

// Keep starts a floor of floor bytes under the heap goal, at most a quarter
// of the memory the process may use (see Available), so a small container
// is not run out of memory by garbage the floor kept. It does nothing (and
// Stop is a no-op) when floor is zero, GOGC turns the collector off or
// another floor runs; a GOGC other than 100 is the percentage it returns to.
func Keep(floor uint64) *Floor {
	if avail := Available(); avail > 0 {
		floor = min(floor, avail/4)
	}
	f := &Floor{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	if floor == 0 || !active.CompareAndSwap(false, true) {
		f.floor, f.base, f.percent = 0, -2, -2 // not tuning: Floor and Percent report that
		f.stopped.Store(true)
		return f
	}
	f.base = debug.SetGCPercent(100)
	debug.SetGCPercent(f.base)
	f.percent = f.base
	if f.base < 0 {
		f.floor = 0
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
	live := f.sample[0].Value.Uint64() // 0 before the first collection
	p := f.base
	if goal := live + live*uint64(f.base)/100; goal < f.floor {
		// The runtime's goal is the larger of live*(1+p/100) and
		// heapMinimum*p/100: keep both at or under the floor.
		q := f.floor * 100 / heapMinimum
		if live > 0 {
			q = min(q, (f.floor-live)*100/live)
		}
		p = max(int(q), f.base)
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

// Floor is the floor in bytes (after the cap Keep applies); 0 when it is
// not tuning.
func (f *Floor) Floor() uint64 { return f.floor }

// Available is the memory the process may use: the smallest of GOMEMLIMIT,
// its cgroup's memory limit (v2 or v1) and the machine's memory; 0 when
// none is known.
func Available() uint64 {
	var avail uint64
	take := func(v uint64) {
		if v > 0 && v < 1<<60 && (avail == 0 || v < avail) {
			avail = v
		}
	}
	take(uint64(debug.SetMemoryLimit(-1)))
	for _, path := range cgroupLimitFiles() {
		if b, err := os.ReadFile(path); err == nil {
			if v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64); err == nil {
				take(v) // "max" (no limit) does not parse
			}
		}
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64); err == nil {
					take(kb << 10)
				}
				break
			}
		}
		_ = f.Close()
	}
	return avail
}

// cgroupLimitFiles are where the process's cgroup memory limit may be read:
// cgroup v2 at the root of the namespace's view and under the process's own
// path, and cgroup v1's memory controller.
func cgroupLimitFiles() []string {
	files := []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if path, ok := strings.CutPrefix(line, "0::"); ok && path != "/" && !strings.Contains(path, "..") {
				files = append(files, "/sys/fs/cgroup"+path+"/memory.max")
			}
		}
	}
	return files
}
