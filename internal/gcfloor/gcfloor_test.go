package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink [][]byte

// churn allocates n bytes of garbage in 1 KB pieces and returns how many
// collections ran meanwhile.
func churn(n int) uint64 {
	before := readMetric("/gc/cycles/total:gc-cycles")
	for i := 0; i < n/1024; i++ {
		sink = append(sink[:0], make([]byte, 1024))
	}
	sink = nil
	return readMetric("/gc/cycles/total:gc-cycles") - before
}

// With a small live heap, the floor holds the goal up: garbage below the
// floor causes no collection, where GOGC alone collects several times.
func TestFloorHoldsTheGoalUpWhileTheHeapIsSmall(t *testing.T) {
	runtime.GC()
	without := churn(48 << 20)
	if without < 2 {
		t.Fatalf("without a floor, 48 MB of garbage caused %d collections; the test needs a small live heap", without)
	}
	f := Keep(256 << 20)
	defer f.Stop()
	runtime.GC()
	if p := f.Percent(); p <= 100 {
		t.Fatalf("percent %d with a small live heap and a 256 MB floor", p)
	}
	// The goal is the floor: not less, and not more either (the runtime's
	// minimum goal grows with the percentage).
	if goal := readMetric("/gc/heap/goal:bytes"); goal < 200<<20 || goal > 270<<20 {
		t.Fatalf("heap goal %d MB with a 256 MB floor", goal>>20)
	}
	if with := churn(48 << 20); with != 0 {
		t.Fatalf("with the floor, 48 MB of garbage caused %d collections (%d without)", with, without)
	}
	f.Stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("Stop left the percent at %d", p)
	}
}

// Once the live heap is large enough, the floor lets go: the percentage
// returns to GOGC's after the next collection.
func TestFloorLetsGoOfALargeHeap(t *testing.T) {
	f := Keep(32 << 20)
	defer f.Stop()
	runtime.GC()
	if p := f.Percent(); p <= 100 {
		t.Fatalf("percent %d with a small live heap", p)
	}
	live := make([][]byte, 0, 40<<10)
	for range 40 << 10 { // 40 MB kept live
		live = append(live, make([]byte, 1024))
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.Percent() != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("percent %d with 40 MB live and a 32 MB floor", f.Percent())
		}
		runtime.GC() // the finalizer adjusts after the cycle
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(live)
	live = nil
	// And takes hold again when the heap shrinks.
	for f.Percent() == 100 {
		if time.Now().After(deadline) {
			t.Fatal("the floor did not take hold again once the heap shrank")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// No floor when it is zero, the collector is off or another floor runs.
func TestFloorOff(t *testing.T) {
	f := Keep(0)
	f.Stop()
	if p := f.Percent(); p != -2 {
		t.Fatalf("percent %d with no floor", p)
	}
	first := Keep(1 << 30)
	second := Keep(1 << 20)
	if p, fl := second.Percent(), second.Floor(); p != -2 || fl != 0 {
		t.Fatalf("a second floor tunes too: percent %d, floor %d", p, fl)
	}
	second.Stop()
	if p := first.Percent(); p <= 100 {
		t.Fatalf("the first floor's percent %d after the second stopped", p)
	}
	first.Stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("percent %d after both stopped", p)
	}
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	f = Keep(1 << 30)
	if p, fl := f.Percent(), f.Floor(); p != -1 || fl != 0 {
		t.Fatalf("percent %d, floor %d with GOGC off", p, fl)
	}
	f.Stop()
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Fatalf("a floor changed GOGC=off to %d", p)
	}
}

// The floor is capped at a quarter of the memory the process may use, and
// GOMEMLIMIT counts.
func TestFloorCappedByAvailableMemory(t *testing.T) {
	if runtime.GOOS == "linux" && Available() == 0 {
		t.Fatal("no memory size found on Linux (/proc/meminfo)")
	}
	old := debug.SetMemoryLimit(200 << 20)
	defer debug.SetMemoryLimit(old)
	if a := Available(); a > 200<<20 {
		t.Fatalf("available %d MB under GOMEMLIMIT=200MiB", a>>20)
	}
	f := Keep(1 << 30)
	defer f.Stop()
	if got := f.Floor(); got > 50<<20 {
		t.Fatalf("floor %d MB with 200 MiB available", got>>20)
	}
	runtime.GC()
	if goal := readMetric("/gc/heap/goal:bytes"); goal > 60<<20 {
		t.Fatalf("heap goal %d MB with a floor capped at 50 MB", goal>>20)
	}
}
