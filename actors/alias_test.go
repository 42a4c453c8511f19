package actors

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

func TestAliasTableReusesSmallestFree(t *testing.T) {
	a := newAliasTable()
	x, y, z := a.acquire("x"), a.acquire("y"), a.acquire("z")
	if x != 1 || y != 2 || z != 3 || a.acquire("y") != 2 {
		t.Fatalf("aliases %d %d %d", x, y, z)
	}
	a.release("y") // still one reference
	if a.lookup("y") != 2 {
		t.Fatal("y freed while referenced")
	}
	a.release("y")
	a.release("x")
	if a.lookup("y") != 0 || a.lookup("x") != 0 {
		t.Fatal("released aliases still listed")
	}
	if got := a.acquire("w"); got != 1 {
		t.Fatalf("w got %d, want the smallest free 1", got)
	}
	if got := a.acquire("v"); got != 2 {
		t.Fatalf("v got %d, want 2", got)
	}
	if got := a.acquire("u"); got != 4 {
		t.Fatalf("u got %d, want 4", got)
	}
	a.release("nothing") // no panic, no effect
}

// A node's compact frame decodes, in both encodings, to the room's compact
// message with the node's alias, for every kind of body and sender.
func TestCompactFramesDecode(t *testing.T) {
	data, _ := structpb.NewValue(map[string]any{"a": 1.5})
	msgs := []*hubbubv1.Message{
		{Room: "r", Offset: 7, Epoch: "e", Sender: &hubbubv1.ClientInfo{User: "u", ClientId: "c"}, TimeUnixMs: 1796000000000,
			Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "héllo \"q\""}}, MessageId: "id", Key: "k"},
		{Room: "r", Offset: 1 << 40, Sender: &hubbubv1.ClientInfo{Server: "backend"}, Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Data{Data: data}}},
		{Room: "r", Offset: 1, Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: []byte{0, 255}}}},
	}
	for _, m := range msgs {
		c := compactMessage(m)
		pb, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		js, err := wire.Marshal(c, wire.JSON)
		if err != nil {
			t.Fatal(err)
		}
		for _, alias := range []uint32{1, 300, 1 << 31} {
			p, j := compactFrames(alias, pb, js)
			want := proto.Clone(c).(*hubbubv1.CompactMessage)
			want.Alias = alias
			for enc, frame := range map[wire.Encoding][]byte{wire.Proto: p, wire.JSON: j} {
				f, err := wire.DecodeServerFrame(frame, enc)
				if err != nil {
					t.Fatalf("%v %q: %v", enc, frame, err)
				}
				if !proto.Equal(f.GetCompactMessage(), want) {
					t.Fatalf("%v: %v, want %v", enc, f.GetCompactMessage(), want)
				}
			}
		}
	}
	// An empty message (no fields but the alias) is still valid JSON.
	if _, j := compactFrames(5, nil, []byte("{}")); string(j) != `{"c":{"a":5}}` {
		t.Fatalf("empty: %s", j)
	}
}
