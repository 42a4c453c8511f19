package hooks

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	b := breaker{failures: 3, cooldown: time.Second}
	now := time.Unix(0, 0)
	for i := range 2 {
		if b.record(now, false) != unchanged || !b.allow(now) {
			t.Fatalf("failure %d opened the circuit", i)
		}
	}
	if b.record(now, false) != opened || b.allow(now.Add(999*time.Millisecond)) {
		t.Fatal("the third failure did not open it")
	}
	// After the cooldown a probe goes through; its failure reopens at once.
	if !b.allow(now.Add(time.Second)) || b.record(now.Add(time.Second), false) != unchanged || b.allow(now.Add(1500*time.Millisecond)) {
		t.Fatal("a failed probe did not hold the circuit open")
	}
	if !b.allow(now.Add(2*time.Second)) || b.record(now.Add(2*time.Second), true) != closed || !b.allow(now.Add(2*time.Second)) {
		t.Fatal("a good probe did not close it")
	}
	if b.record(now, false) != unchanged {
		t.Fatal("one failure after closing reopened it")
	}
}
