package integration

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	connectrpc "connectrpc.com/connect"
	"github.com/gorilla/websocket"

	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// ledgerMember is one light member of the ledger test: it records the
// offsets it reads, and may ack each one.
type ledgerMember struct {
	ws    *websocket.Conn
	ack   bool
	mu    sync.Mutex
	got   map[uint64]bool
	acked atomic.Int64
	done  chan struct{}
}

func (m *ledgerMember) read(room string) {
	defer close(m.done)
	for {
		_, b, err := m.ws.ReadMessage()
		if err != nil {
			return
		}
		f, err := wire.DecodeServerFrame(b, wire.Proto)
		if err != nil {
			return
		}
		msg := f.GetMessage()
		if msg == nil {
			continue
		}
		m.mu.Lock()
		m.got[msg.GetOffset()] = true
		m.mu.Unlock()
		if m.ack {
			out, _ := wire.Marshal(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Ack{Ack: &hubbubv1.AckRequest{Room: room, Offset: msg.GetOffset()}}}, wire.Proto)
			if m.ws.WriteMessage(websocket.BinaryMessage, out) == nil {
				m.acked.Add(1)
			}
		}
	}
}

// The delivery ledger among 1,000 members: some ack every message, some
// read nothing (the room drops their oldest), some are killed halfway. For
// every message the counts sum to the members at publish time (the killed
// leave the room), nothing stays queued once the slow members are gone,
// acked matches the members that acked it, written covers every member that
// read it, and the slow members' deliveries show as dropped (their room drops
// the oldest) and, for what was still queued when they went, disconnected.
func TestDeliveryLedger(t *testing.T) {
	const (
		members  = 1000
		ackers   = 10
		slow     = 20
		killed   = 10
		messages = 200
		room     = "ledger"
	)
	// A long write timeout: the members that never read stay members (their
	// room drops their oldest) until the test closes them.
	p := startProcess(t, append(apiArgs(t), "--history-store", "memory", "--overflow-policy", room+"=drop-oldest",
		"--max-queued-bytes", "65536", "--socket-send-buffer", "16384", "--write-timeout", "2m", "--command-rate", "-1", "--byte-rate", "-1")...)
	hdr := http.Header{"Sec-WebSocket-Protocol": {wire.SubprotocolProto}}
	ms := make([]*ledgerMember, members)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range ms {
		wg.Add(1)
		sem <- struct{}{}
		go func() { // owner: the test; joined by wg
			defer wg.Done()
			defer func() { <-sem }()
			d := websocket.DefaultDialer
			if i < slow {
				d = smallBufferDialer()
			}
			ws, _, err := d.Dial(p.URL, hdr)
			if err != nil {
				t.Error(err)
				return
			}
			m := &ledgerMember{ws: ws, ack: i >= slow && i < slow+ackers, got: map[uint64]bool{}, done: make(chan struct{})}
			ms[i] = m
			for _, f := range []*hubbubv1.ClientFrame{
				{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: fmt.Sprint("m", i)}}},
				{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}},
			} {
				b, _ := wire.Marshal(f, wire.Proto)
				_ = ws.WriteMessage(websocket.BinaryMessage, b)
			}
			for { // the connect and join replies
				_, b, err := ws.ReadMessage()
				if err != nil {
					t.Error(err)
					return
				}
				if f, _ := wire.DecodeServerFrame(b, wire.Proto); f.GetJoin() != nil {
					break
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.ws.Close()
		}
	})
	for _, m := range ms[slow:] {
		go m.read(room) // owner: the member; ends with its socket
	}
	pub := connect(t, p.URL, wire.Proto, "pub")
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			publishKeyed(pub, room, "", i) // 2 KiB each: the slow members' queues overflow
		}
	}
	publish(0, messages/2)
	// Kill some readers: their sockets close without a close frame.
	for _, m := range ms[slow+ackers : slow+ackers+killed] {
		_ = m.ws.UnderlyingConn().Close()
	}
	publish(messages/2, messages)
	readers := ms[slow+ackers+killed:]
	eventually(t, "every live reader to read every message", func() bool {
		for _, m := range append(ms[slow:slow+ackers:slow+ackers], readers...) {
			m.mu.Lock()
			n := len(m.got)
			m.mu.Unlock()
			if n < messages {
				return false
			}
		}
		return true
	})
	// The slow members go: what they still had queued is disconnected.
	for _, m := range ms[:slow] {
		_ = m.ws.UnderlyingConn().Close()
	}
	api := apiClient(p.API, readKey)
	var ledger []*apiv1.Delivery
	eventually(t, "the ledger to settle", func() bool {
		r, err := api.Ledger(t.Context(), connectrpc.NewRequest(&apiv1.LedgerRequest{Room: room}))
		if err != nil {
			t.Fatal(err)
		}
		ledger = r.Msg.GetDeliveries()
		if len(ledger) != messages {
			return false
		}
		for _, d := range ledger {
			if d.GetQueued() != 0 || d.GetAcked() != ackers {
				return false
			}
		}
		return true
	})
	dropped, disconnected := uint64(0), uint64(0)
	for i, d := range ledger {
		off := uint64(i + 1)
		sum := uint64(d.GetWritten()) + d.GetAcked() + d.GetDropped() + d.GetConflated() + d.GetDisconnected()
		// The killed members leave the room as their node notices: members
		// at publish time are all 1,000 before the kill, 990 at the end.
		want := uint64(members)
		if off == messages {
			want = members - killed
		}
		if d.GetOffset() != off || (off <= messages/2 || off == messages) && d.GetMembers() != want ||
			d.GetMembers() < members-killed || d.GetMembers() > members || sum != d.GetMembers() {
			t.Fatalf("message %d: %v (sum %d)", off, d, sum)
		}
		read := 0
		for _, m := range readers {
			if m.got[off] {
				read++
			}
		}
		if w := uint64(d.GetWritten()); w < uint64(read) || w > uint64(read+slow+killed) {
			t.Fatalf("message %d: written %d, read by %d of the %d live readers", off, w, read, len(readers))
		}
		dropped += d.GetDropped()
		disconnected += d.GetDisconnected()
	}
	if dropped == 0 || disconnected < slow {
		t.Fatalf("dropped %d, disconnected %d: the %d slow members' queues should show both", dropped, disconnected, slow)
	}
	t.Logf("%d messages to %d members: %d deliveries dropped for the slow, %d disconnected", messages, members, dropped, disconnected)
}
