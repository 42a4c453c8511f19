package actors

// dedupe remembers the offsets of recent client message ids, so a retried
// publish is accepted once. It forgets the oldest id beyond its window.
type dedupe struct {
	window int
	byKey  map[string]uint64
	order  []string // ring of keys in insertion order
	next   int
}

func newDedupe(window int) *dedupe {
	return &dedupe{window: window, byKey: map[string]uint64{}}
}

func dedupeKey(user, id string) string { return user + "\x00" + id }

func (d *dedupe) get(user, id string) (uint64, bool) {
	off, ok := d.byKey[dedupeKey(user, id)]
	return off, ok
}

func (d *dedupe) put(user, id string, offset uint64) {
	k := dedupeKey(user, id)
	if len(d.order) < d.window {
		d.order = append(d.order, k)
	} else {
		delete(d.byKey, d.order[d.next])
		d.order[d.next] = k
		d.next = (d.next + 1) % d.window
	}
	d.byKey[k] = offset
}

// forget drops an id that still maps to offset (its publish was not stored).
// Its slot in the ring stays until reused.
func (d *dedupe) forget(user, id string, offset uint64) {
	k := dedupeKey(user, id)
	if d.byKey[k] == offset {
		delete(d.byKey, k)
	}
}
