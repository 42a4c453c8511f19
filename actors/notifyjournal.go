package actors

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"google.golang.org/protobuf/proto"

	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

// The notification journal keeps, under a node's data directory, what the
// backend has not yet acknowledged: the notifications queued and the
// connections open (with their rooms), whose leaves and disconnect a node
// killed with them still owes. A node restarted on the same directory sends
// the queue again and a disconnect (reason "node_restarted") for every
// connection it had. Records are length-prefixed NotifyJournalRecords,
// appended and written out after every notifier message (so a kill -9 loses
// at most what was still in the notifier's mailbox); the file is rewritten
// as a snapshot at start and when it grows.
type journal struct {
	dir     string
	f       *os.File
	w       *bufio.Writer
	lock    *os.File
	records int // records in the file
	dirty   bool
	buf     []byte
}

// journalState is what a journal holds.
type journalState struct {
	stream string
	seq    uint64 // the highest seq given
	acked  uint64 // every seq up to it was acknowledged (or dropped)
	conns  map[string]*journalConn
	queued []*hooksv1.Notification
}

type journalConn struct {
	user  string
	rooms map[string]bool
}

const journalFile = "journal"

// openJournal loads the journal under dir (creating it) and returns it with
// its state. A second process on the same dir is refused.
func openJournal(dir string) (*journal, *journalState, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, nil, err
	}
	st, err := readJournal(filepath.Join(dir, journalFile))
	if err != nil {
		_ = lock.Close()
		return nil, nil, err
	}
	if st.stream == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		st.stream = "n-" + hex.EncodeToString(b[:])
	}
	j := &journal{dir: dir, lock: lock}
	if err := j.rewrite(st); err != nil {
		_ = lock.Close()
		return nil, nil, err
	}
	return j, st, nil
}

// readJournal replays a journal file; a torn last record is ignored.
func readJournal(path string) (*journalState, error) {
	st := &journalState{conns: map[string]*journalConn{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			break // the end, or a torn length
		}
		if n > 1<<20 {
			return nil, fmt.Errorf("notification journal %s: a record of %d bytes", path, n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			break // torn by a kill mid-write
		}
		rec := &nodev1.NotifyJournalRecord{}
		if err := proto.Unmarshal(b, rec); err != nil {
			return nil, fmt.Errorf("notification journal %s: %w", path, err)
		}
		st.apply(rec)
	}
	st.queued = slices.DeleteFunc(st.queued, func(n *hooksv1.Notification) bool { return n.GetSeq() <= st.acked })
	return st, nil
}

func (st *journalState) apply(rec *nodev1.NotifyJournalRecord) {
	switch e := rec.GetEntry().(type) {
	case *nodev1.NotifyJournalRecord_Stream:
		st.stream = e.Stream
	case *nodev1.NotifyJournalRecord_Open:
		st.conns[e.Open.GetClientId()] = &journalConn{user: e.Open.GetUser(), rooms: map[string]bool{}}
	case *nodev1.NotifyJournalRecord_Join:
		if c := st.conns[e.Join.GetClientId()]; c != nil {
			c.rooms[e.Join.GetRoom()] = true
		}
	case *nodev1.NotifyJournalRecord_Left:
		if c := st.conns[e.Left.GetClientId()]; c != nil {
			delete(c.rooms, e.Left.GetRoom())
		}
	case *nodev1.NotifyJournalRecord_Closed:
		delete(st.conns, e.Closed.GetClientId())
	case *nodev1.NotifyJournalRecord_Queued:
		st.queued = append(st.queued, e.Queued)
		st.seq = max(st.seq, e.Queued.GetSeq())
	case *nodev1.NotifyJournalRecord_Acked:
		st.acked = max(st.acked, e.Acked)
		st.seq = max(st.seq, e.Acked)
		st.queued = slices.DeleteFunc(st.queued, func(n *hooksv1.Notification) bool { return n.GetSeq() <= st.acked })
	}
}

// rewrite replaces the file with a snapshot of st and appends from there.
func (j *journal) rewrite(st *journalState) error {
	tmp := filepath.Join(j.dir, journalFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	old := j.f
	j.f, j.w, j.records = f, bufio.NewWriter(f), 0
	acked := st.seq
	if len(st.queued) > 0 {
		acked = st.queued[0].GetSeq() - 1
	}
	j.append(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Stream{Stream: st.stream}})
	j.append(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Acked{Acked: acked}})
	for id, c := range st.conns {
		j.append(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Open{Open: &nodev1.JournalConn{ClientId: id, User: c.user}}})
		for room := range c.rooms {
			j.append(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Join{Join: &nodev1.JournalConn{ClientId: id, Room: room}}})
		}
	}
	for _, n := range st.queued {
		j.append(&nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Queued{Queued: n}})
	}
	err = j.w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(j.dir, journalFile))
	}
	if old != nil {
		_ = old.Close()
	}
	j.dirty = false
	return err
}

func (j *journal) append(rec *nodev1.NotifyJournalRecord) {
	b, _ := proto.MarshalOptions{}.MarshalAppend(j.buf[:0], rec)
	j.buf = b
	var l [binary.MaxVarintLen64]byte
	_, _ = j.w.Write(l[:binary.PutUvarint(l[:], uint64(len(b)))])
	_, _ = j.w.Write(b)
	j.records++
	j.dirty = true
}

// flush writes out what was appended (to the OS: it survives the process).
func (j *journal) flush() error {
	if !j.dirty {
		return nil
	}
	j.dirty = false
	return j.w.Flush()
}

func (j *journal) close() {
	_ = j.flush()
	_ = j.f.Close()
	_ = j.lock.Close()
}
