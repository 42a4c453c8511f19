package integration

import (
	"context"
	"testing"
	"time"

	connectrpc "connectrpc.com/connect"

	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

func commandFrame(user, text, id string, ttl time.Duration) *hubbubv1.ClientFrame {
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Direct{Direct: &hubbubv1.DirectRequest{User: user, MessageId: id,
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: text}}, RequireAck: true, TtlMs: uint32(ttl.Milliseconds())}}}
}

// nextOutcome waits in a personal stream for a command's outcome.
func (c *client) nextOutcome() *hubbubv1.CommandOutcome {
	c.t.Helper()
	for {
		if o := c.nextMessage().GetOutcome(); o != nil {
			return o
		}
	}
}

// commandOffsets lists the offsets of messages.
func commandOffsets(ms []*hubbubv1.Message) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.GetOffset())
	}
	return out
}

// Device commands: delivered, sent again at every join until acked, the
// outcome (acked, by which connection; or expired) told to the sender's
// stream and to the server API, and a kill -9 of the node in the middle
// changes none of it.
func TestDeviceCommands(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	args := append(apiArgs(t), "--listen", addr, "--data-dir", dir)
	p := startProcess(t, args...)
	op, _ := userDevice(t, p.URL, "op", nil)
	dev, jr := userDevice(t, p.URL, "thermo", nil)
	seen := jr.GetPosition()

	r := op.request(commandFrame("thermo", "set 21", "cmd-1", 10*time.Second))
	o1 := r.GetDirect().GetOffset()
	if o1 == 0 {
		t.Fatalf("command: %v", r)
	}
	if m := dev.nextMessage(); m.GetOffset() != o1 || !m.GetRequireAck() || m.GetExpiresUnixMs() < time.Now().UnixMilli()+5000 {
		t.Fatalf("device got %v", m)
	}
	dev.close() // without acking
	// Back with a position past the command: recovery has nothing, the command comes again.
	dev2, jr := userDevice(t, p.URL, "thermo", map[string]*hubbubv1.StreamPosition{"@thermo": {Offset: o1, Epoch: seen.GetEpoch()}})
	if !jr.GetRecovered() || len(jr.GetMessages()) != 0 || len(jr.GetCommands()) != 1 || jr.GetCommands()[0].GetMessageId() != "cmd-1" {
		t.Fatalf("rejoin: recovered %v, %d messages, commands %v", jr.GetRecovered(), len(jr.GetMessages()), commandOffsets(jr.GetCommands()))
	}
	ack := dev2.request(markFrame("@thermo", o1, "", false))
	if ack.GetAck().GetMarks().GetAckOffset() != o1 {
		t.Fatalf("ack: %v", ack)
	}
	out := op.nextOutcome()
	if out.GetState() != hubbubv1.CommandState_COMMAND_STATE_ACKED || out.GetUser() != "thermo" || out.GetOffset() != o1 ||
		out.GetMessageId() != "cmd-1" || out.GetClientId() == "" || out.GetTimeUnixMs() == 0 {
		t.Fatalf("outcome: %v", out)
	}
	// Acked: a later join gets it no more.
	dev3, jr := userDevice(t, p.URL, "thermo", nil)
	if len(jr.GetCommands()) != 0 {
		t.Fatalf("an acked command sent again: %v", commandOffsets(jr.GetCommands()))
	}
	dev3.close()

	// Nobody acks: the sender hears it expired.
	op.request(commandFrame("ghost", "reboot", "cmd-2", 600*time.Millisecond))
	if out := op.nextOutcome(); out.GetState() != hubbubv1.CommandState_COMMAND_STATE_EXPIRED || out.GetUser() != "ghost" {
		t.Fatalf("expiry: %v", out)
	}

	// The server API sends one and waits for its outcome.
	api := apiClient(p.API, pubKey)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sr, err := api.SendToUser(ctx, connectrpc.NewRequest(&apiv1.SendToUserRequest{User: "thermo", RequireAck: true, TtlMs: 20000,
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "firmware 2.1"}}}))
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan *apiv1.GetCommandResponse, 1)
	go func() {
		r, err := api.GetCommand(ctx, connectrpc.NewRequest(&apiv1.GetCommandRequest{User: "thermo", Offset: sr.Msg.GetOffset(), Wait: true}))
		if err != nil {
			t.Error(err)
			close(waited)
			return
		}
		waited <- r.Msg
	}()
	if m := dev2.nextMessage(); m.GetOffset() != sr.Msg.GetOffset() || !m.GetRequireAck() {
		t.Fatalf("device got %v", m)
	}
	time.Sleep(100 * time.Millisecond) // the wait is parked in the room
	dev2.request(markFrame("@thermo", sr.Msg.GetOffset(), "", false))
	select {
	case got := <-waited:
		if got.GetOutcome().GetState() != hubbubv1.CommandState_COMMAND_STATE_ACKED || got.GetOutcome().GetClientId() != out.GetClientId() {
			t.Fatalf("GetCommand: %v (the device's id %q)", got, out.GetClientId())
		}
	case <-time.After(waitFor):
		t.Fatal("GetCommand did not answer")
	}

	// A command to an offline device, then kill -9: the restarted node still
	// has it pending, sends it at the device's join and tells the sender.
	dev2.close()
	opPos := op.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "@op", Limit: 1, Reverse: true}}}).
		GetHistory().GetMessages()[0]
	c4 := op.request(commandFrame("thermo", "lights off", "cmd-4", 30*time.Second)).GetDirect().GetOffset()
	p = restartProcess(t, p, true, args...)
	op2, jr := userDevice(t, p.URL, "op", map[string]*hubbubv1.StreamPosition{"@op": {Offset: opPos.GetOffset(), Epoch: opPos.GetEpoch()}})
	if !jr.GetRecovered() {
		t.Fatalf("op's stream after the restart: %v", jr)
	}
	dev4, jr := userDevice(t, p.URL, "thermo", nil)
	if got := commandOffsets(jr.GetCommands()); len(got) != 1 || got[0] != c4 {
		t.Fatalf("pending after kill -9: %v, want [%d]", got, c4)
	}
	dev4.request(markFrame("@thermo", c4, "", false))
	if out := op2.nextOutcome(); out.GetState() != hubbubv1.CommandState_COMMAND_STATE_ACKED || out.GetOffset() != c4 {
		t.Fatalf("outcome after the restart: %v", out)
	}
	// The first command is still known acked through the stored ack mark.
	api = apiClient(p.API, pubKey)
	g, err := api.GetCommand(ctx, connectrpc.NewRequest(&apiv1.GetCommandRequest{User: "thermo", Offset: o1}))
	if err != nil || g.Msg.GetOutcome().GetState() != hubbubv1.CommandState_COMMAND_STATE_ACKED {
		t.Fatalf("GetCommand of the first command after the restart: %v %v", g, err)
	}
}
