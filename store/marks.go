package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// Marks are one user's positions in one room's stream: the newest message
// delivered to the user's application (Ack) and the newest a person saw
// (Read), in Epoch. A room owns its users' marks (one activation at a time)
// and only ever raises them; a new epoch starts them again.
type Marks struct {
	Epoch     string
	Ack, Read uint64
}

// markStore is how the stores keep marks: SaveMarks writes the given users'
// marks of a room (durably, as appends are), LoadMarks returns every user's.
type markStore interface {
	SaveMarks(ctx context.Context, room string, marks map[string]Marks) error
	LoadMarks(ctx context.Context, room string) (map[string]Marks, error)
}

var (
	_ markStore = (*Embedded)(nil)
	_ markStore = (*Redis)(nil)
)

func (m Marks) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, m.Ack)
	b = binary.BigEndian.AppendUint64(b, m.Read)
	return append(b, m.Epoch...)
}

func decodeMarks(b []byte) (Marks, error) {
	if len(b) < 16 {
		return Marks{}, errors.New("store: marks record too short")
	}
	return Marks{Ack: binary.BigEndian.Uint64(b), Read: binary.BigEndian.Uint64(b[8:]), Epoch: string(b[16:])}, nil
}

// marksPrefix is the prefix of a room's marks keys: 'k', the room's length, the room.
func marksPrefix(room string) []byte {
	k := make([]byte, 0, 1+binary.MaxVarintLen64+len(room))
	k = append(k, 'k')
	k = binary.AppendUvarint(k, uint64(len(room)))
	return append(k, room...)
}

// SaveMarks implements Store: one synced batch.
func (s *Embedded) SaveMarks(_ context.Context, room string, marks map[string]Marks) error {
	b := s.db.NewBatch()
	defer b.Close()
	prefix := marksPrefix(room)
	for user, m := range marks {
		if err := b.Set(append(append([]byte(nil), prefix...), user...), m.encode(), nil); err != nil {
			return wrapErr(err)
		}
	}
	return wrapErr(b.Commit(pebble.Sync))
}

// LoadMarks implements Store.
func (s *Embedded) LoadMarks(_ context.Context, room string) (map[string]Marks, error) {
	prefix := marksPrefix(room)
	upper := append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0xff)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, wrapErr(err)
	}
	defer it.Close()
	out := map[string]Marks{}
	for it.First(); it.Valid(); it.Next() {
		m, err := decodeMarks(it.Value())
		if err != nil {
			return nil, err
		}
		out[string(it.Key()[len(prefix):])] = m
	}
	return out, wrapErr(it.Error())
}

func (s *Redis) marksKey(room string) string { return s.prefix + "{" + room + "}:k" }

// SaveMarks implements Store: one hash field per user, "epoch ack read".
func (s *Redis) SaveMarks(ctx context.Context, room string, marks map[string]Marks) error {
	args := make([]any, 0, 2*len(marks))
	for user, m := range marks {
		args = append(args, user, fmt.Sprintf("%d %d %s", m.Ack, m.Read, m.Epoch))
	}
	pipe := s.client.TxPipeline()
	pipe.HSet(ctx, s.marksKey(room), args...)
	pipe.PExpire(ctx, s.marksKey(room), s.ret.MetaTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("store: redis marks %q: %w", room, err)
	}
	return nil
}

// LoadMarks implements Store.
func (s *Redis) LoadMarks(ctx context.Context, room string) (map[string]Marks, error) {
	all, err := s.client.HGetAll(ctx, s.marksKey(room)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis marks %q: %w", room, err)
	}
	out := make(map[string]Marks, len(all))
	for user, v := range all {
		f := strings.SplitN(v, " ", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("store: redis marks %q: bad record %q", room, v)
		}
		ack, err1 := strconv.ParseUint(f[0], 10, 64)
		read, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("store: redis marks %q: bad record %q", room, v)
		}
		out[user] = Marks{Ack: ack, Read: read, Epoch: f[2]}
	}
	return out, nil
}
