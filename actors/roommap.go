package actors

import "iter"

// roomMap maps room names to V. A connection is in a few rooms, and a Go map
// holding even one entry costs about 200 bytes, so the first smallRooms
// entries live in a slice (searched in order) and only more move to a map.
// The zero value is empty and allocates nothing.
type roomMap[V any] struct {
	small []roomSlot[V]
	big   map[string]V
}

type roomSlot[V any] struct {
	room string
	v    V
}

// smallRooms is how many entries a roomMap keeps in its slice.
const smallRooms = 8

func (m *roomMap[V]) lookup(room string) (V, bool) {
	if m.big != nil {
		v, ok := m.big[room]
		return v, ok
	}
	for i := range m.small {
		if m.small[i].room == room {
			return m.small[i].v, true
		}
	}
	var zero V
	return zero, false
}

// get returns the entry, or the zero value.
func (m *roomMap[V]) get(room string) V {
	v, _ := m.lookup(room)
	return v
}

func (m *roomMap[V]) has(room string) bool {
	_, ok := m.lookup(room)
	return ok
}

func (m *roomMap[V]) set(room string, v V) {
	if m.big != nil {
		m.big[room] = v
		return
	}
	for i := range m.small {
		if m.small[i].room == room {
			m.small[i].v = v
			return
		}
	}
	if len(m.small) < smallRooms {
		m.small = append(m.small, roomSlot[V]{room, v})
		return
	}
	m.big = make(map[string]V, 2*smallRooms)
	for _, e := range m.small {
		m.big[e.room] = e.v
	}
	m.big[room] = v
	m.small = nil
}

func (m *roomMap[V]) del(room string) {
	if m.big != nil {
		delete(m.big, room)
		return
	}
	for i := range m.small {
		if m.small[i].room == room {
			m.small = append(m.small[:i], m.small[i+1:]...)
			m.small[len(m.small):cap(m.small)][0] = roomSlot[V]{} // drop the moved-out copy's references
			if len(m.small) == 0 {
				m.small = nil
			}
			return
		}
	}
}

func (m *roomMap[V]) len() int {
	if m.big != nil {
		return len(m.big)
	}
	return len(m.small)
}

// all yields every entry. The loop body may delete the entry it was given
// (and only that one).
func (m *roomMap[V]) all() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		if m.big != nil {
			for k, v := range m.big {
				if !yield(k, v) {
					return
				}
			}
			return
		}
		for i := len(m.small) - 1; i >= 0; i-- { // backwards: deleting entry i moves only those after it
			if i >= len(m.small) {
				continue
			}
			if e := m.small[i]; !yield(e.room, e.v) {
				return
			}
		}
	}
}
