package actors

import (
	"os"
	"path/filepath"
	"testing"

	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

// A journal replays to the state it recorded: open connections with their
// rooms, the notifications not acknowledged, the stream and its seq; a torn
// last record is ignored; a second process on the directory is refused.
func TestNotifyJournal(t *testing.T) {
	dir := t.TempDir()
	j, st, err := openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.stream == "" || len(st.conns) != 0 || len(st.queued) != 0 {
		t.Fatalf("fresh journal: %+v", st)
	}
	if _, _, err := openJournal(dir); err == nil {
		t.Fatal("a second journal on the same directory opened")
	}
	conn := func(id, user, room string) *nodev1.JournalConn {
		return &nodev1.JournalConn{ClientId: id, User: user, Room: room}
	}
	queued := func(seq uint64, user string) *nodev1.NotifyJournalRecord {
		return &nodev1.NotifyJournalRecord{Entry: &nodev1.NotifyJournalRecord_Queued{Queued: &hooksv1.Notification{Seq: seq, User: user}}}
	}
	for _, r := range []*nodev1.NotifyJournalRecord{
		{Entry: &nodev1.NotifyJournalRecord_Open{Open: conn("a", "ann", "")}},
		{Entry: &nodev1.NotifyJournalRecord_Join{Join: conn("a", "", "r1")}},
		{Entry: &nodev1.NotifyJournalRecord_Join{Join: conn("a", "", "r2")}},
		{Entry: &nodev1.NotifyJournalRecord_Left{Left: conn("a", "", "r1")}},
		{Entry: &nodev1.NotifyJournalRecord_Open{Open: conn("b", "bob", "")}},
		{Entry: &nodev1.NotifyJournalRecord_Closed{Closed: conn("b", "", "")}},
		queued(1, "x"), queued(2, "y"), queued(3, "z"),
		{Entry: &nodev1.NotifyJournalRecord_Acked{Acked: 2}},
	} {
		j.append(r)
	}
	if err := j.flush(); err != nil {
		t.Fatal(err)
	}
	stream := st.stream
	j.close()
	// A torn record at the end, as a kill in the middle of a write leaves.
	f, _ := os.OpenFile(filepath.Join(dir, journalFile), os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.Write([]byte{40, 1, 2})
	_ = f.Close()

	j, st, err = openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	if st.stream != stream || st.seq != 3 || len(st.queued) != 1 || st.queued[0].GetUser() != "z" {
		t.Fatalf("replayed: stream %s seq %d queued %v", st.stream, st.seq, st.queued)
	}
	if len(st.conns) != 1 || st.conns["a"] == nil || len(st.conns["a"].rooms) != 1 || !st.conns["a"].rooms["r2"] {
		t.Fatalf("replayed conns: %+v", st.conns)
	}
	// The start rewrote it as a snapshot of that state.
	if j.records != 5 {
		t.Fatalf("snapshot of %d records, want 5 (stream, acked, open, join, queued)", j.records)
	}
}
