package actors

import (
	"bytes"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
)

// aliasTable numbers the rooms that have members with compact pushes on a
// node (CompactMessage.alias). A connection lives on one node, so a
// node-wide number is unique among the connection's rooms, and every compact
// member of a room on the node gets the same bytes. The relay's shards share
// the table; an alias is taken by a room's first compact member on the node
// and freed with its last, and the smallest free alias is reused so aliases
// stay one-byte varints.
type aliasTable struct {
	mu     sync.Mutex
	byRoom map[string]*aliasEntry
	free   []uint32 // freed aliases, largest first
	next   uint32   // the next alias never used
}

type aliasEntry struct {
	alias uint32
	refs  int
}

func newAliasTable() *aliasTable {
	return &aliasTable{byRoom: map[string]*aliasEntry{}, next: 1}
}

// acquire returns the room's alias, taking one for its first member.
func (t *aliasTable) acquire(room string) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byRoom[room]
	if e == nil {
		e = &aliasEntry{}
		if n := len(t.free); n > 0 {
			e.alias, t.free = t.free[n-1], t.free[:n-1]
		} else {
			e.alias = t.next
			t.next++
		}
		t.byRoom[room] = e
	}
	e.refs++
	return e.alias
}

// release gives back one member's reference to the room's alias.
func (t *aliasTable) release(room string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byRoom[room]
	if e == nil {
		return
	}
	if e.refs--; e.refs > 0 {
		return
	}
	delete(t.byRoom, room)
	i, _ := slices.BinarySearchFunc(t.free, e.alias, func(a, b uint32) int { return int(int64(b) - int64(a)) })
	t.free = slices.Insert(t.free, i, e.alias)
}

// lookup returns the room's alias, 0 when no compact member holds one.
func (t *aliasTable) lookup(room string) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byRoom[room]; e != nil {
		return e.alias
	}
	return 0
}

// compactFrames builds a compact push's frames for one node: the room's
// CompactMessage encodings, which leave out field 1, with the node's alias
// added. In protobuf a message's fields may come in any order, so the alias
// goes first inside ServerFrame.compact_message (field 25); in JSON it goes
// first in the object.
func compactFrames(alias uint32, protoBody, jsonBody []byte) (p, j []byte) {
	if len(protoBody) > 0 {
		inner := protowire.SizeTag(1) + protowire.SizeVarint(uint64(alias)) + len(protoBody)
		p = make([]byte, 0, protowire.SizeTag(25)+protowire.SizeBytes(inner))
		p = protowire.AppendTag(p, 25, protowire.BytesType)
		p = protowire.AppendVarint(p, uint64(inner))
		p = protowire.AppendTag(p, 1, protowire.VarintType)
		p = protowire.AppendVarint(p, uint64(alias))
		p = append(p, protoBody...)
	}
	if len(jsonBody) > 1 && jsonBody[0] == '{' {
		rest := bytes.TrimLeft(jsonBody[1:], " \t\r\n")
		j = make([]byte, 0, len(jsonBody)+24)
		j = append(j, `{"c":{"a":`...)
		j = strconv.AppendUint(j, uint64(alias), 10)
		if len(rest) > 0 && rest[0] != '}' {
			j = append(j, ',')
		}
		j = append(j, rest...)
		j = append(j, '}')
	}
	return p, j
}
