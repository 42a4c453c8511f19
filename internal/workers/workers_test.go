package workers

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPoolRunsEverythingAndKeepsAtMostMaxIdle(t *testing.T) {
	p := New(4)
	var ran atomic.Int64
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		p.Go(func() { ran.Add(1); wg.Done() })
	}
	wg.Wait()
	if ran.Load() != 1000 {
		t.Fatalf("ran %d of 1000", ran.Load())
	}
	deadline := time.Now().Add(2 * time.Second)
	for p.Idle() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := p.Idle(); n < 1 || n > 4 {
		t.Fatalf("idle workers %d, want 1..4", n)
	}
	p.Close()
	if n := p.Idle(); n != 0 {
		t.Fatalf("idle after Close: %d", n)
	}
}

func TestIdleWorkerIsReused(t *testing.T) {
	p := New(1)
	defer p.Close()
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	deadline := time.Now().Add(2 * time.Second)
	for p.Idle() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p.Idle() != 1 {
		t.Fatalf("idle %d after one run, want 1", p.Idle())
	}
	// The waiting goroutine takes the next function: while it runs none is idle.
	idleDuring := make(chan int, 1)
	p.Go(func() { idleDuring <- p.Idle() })
	if n := <-idleDuring; n != 0 {
		t.Fatalf("idle %d while the second function ran: a new goroutine was started", n)
	}
}

func TestGoAfterCloseStillRuns(t *testing.T) {
	p := New(2)
	p.Close()
	done := make(chan struct{})
	p.Go(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a function handed to a closed pool did not run")
	}
}

func TestCloseWaitsForRunning(t *testing.T) {
	p := New(2)
	release := make(chan struct{})
	var finished atomic.Bool
	p.Go(func() { <-release; finished.Store(true) })
	go func() { time.Sleep(20 * time.Millisecond); close(release) }()
	p.Close()
	if !finished.Load() {
		t.Fatal("Close returned before the running function finished")
	}
}

func TestTrimEndsGoroutinesThatStayIdle(t *testing.T) {
	p := New(1000)
	p.Trim(2, 50*time.Millisecond)
	defer p.Close()
	burst := func() {
		var wg sync.WaitGroup
		release := make(chan struct{})
		for range 100 {
			wg.Add(1)
			p.Go(func() { <-release; wg.Done() })
		}
		close(release)
		wg.Wait()
	}
	burst()
	deadline := time.Now().Add(2 * time.Second)
	for p.Idle() < 50 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := p.Idle(); n < 50 {
		t.Fatalf("idle %d after a burst of 100, want most of them kept", n)
	}
	// Bursts that recur within the interval keep the goroutines.
	for range 6 {
		burst()
		time.Sleep(10 * time.Millisecond)
	}
	if n := p.Idle(); n < 50 {
		t.Fatalf("idle %d while bursts recur, want them kept", n)
	}
	// Once the bursts stop, all but the floor end.
	deadline = time.Now().Add(5 * time.Second)
	for p.Idle() > 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := p.Idle(); n != 2 {
		t.Fatalf("idle %d after the bursts stopped, want the floor of 2", n)
	}
	// The pool still runs work.
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
}
