package actors

import (
	"fmt"
	"maps"
	"testing"
)

// roomMap behaves as a map through its move from slice to map, including
// deleting the entry being visited while ranging.
func TestRoomMapMatchesAMap(t *testing.T) {
	var m roomMap[int]
	want := map[string]int{}
	check := func(step string) {
		t.Helper()
		if m.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", step, m.len(), len(want))
		}
		got := maps.Collect(m.all())
		if !maps.Equal(got, want) {
			t.Fatalf("%s: %v, want %v", step, got, want)
		}
		for k, v := range want {
			if g, ok := m.lookup(k); !ok || g != v {
				t.Fatalf("%s: lookup %q = %d %v", step, k, g, ok)
			}
		}
		if m.has("absent") || m.get("absent") != 0 {
			t.Fatalf("%s: absent key found", step)
		}
	}
	check("empty")
	for i := range 20 {
		k := fmt.Sprint("room-", i)
		m.set(k, i)
		want[k] = i
		check(fmt.Sprint("set ", i))
	}
	m.set("room-3", 33)
	want["room-3"] = 33
	check("overwrite")
	for k := range m.all() { // delete while ranging
		if k != "room-5" {
			m.del(k)
			delete(want, k)
		}
	}
	check("deleted while ranging (map)")

	var s roomMap[int]
	for i := range 5 {
		s.set(fmt.Sprint("r", i), i)
	}
	visited := 0
	for k := range s.all() {
		visited++
		if k != "r2" {
			s.del(k)
		}
	}
	if visited != 5 || s.len() != 1 || !s.has("r2") {
		t.Fatalf("slice: visited %d, left %d", visited, s.len())
	}
	s.del("r2")
	if s.small != nil || s.len() != 0 {
		t.Fatalf("empty slice map holds %v", s.small)
	}
}
