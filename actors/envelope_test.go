package actors

import (
	"testing"

	"google.golang.org/protobuf/proto"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	msgs := []proto.Message{&nodev1.RoomJoin{Room: "a"}, &nodev1.RoomLeave{Room: "a"}, &nodev1.RoomPublish{Room: "a"},
		&nodev1.RoomHistory{RequestId: 1}, &nodev1.RoomPresence{Room: "a"}, &nodev1.RoomTyping{Room: "a"}, &nodev1.RoomReply{RequestId: 2},
		&nodev1.RelaySubscribe{Room: "a"}, &nodev1.RelayUnsubscribe{Room: "a"}, &nodev1.RelayDeliver{Room: "a", Offset: 3},
		&nodev1.RoomInspect{Room: "a"}, &nodev1.NodeInspect{Pattern: "a*"}, &nodev1.NodeReport{Address: "x"}, &nodev1.NodeDisconnect{User: "u"}, &nodev1.RoomTail{Room: "t"}, &nodev1.RoomReserve{Room: "@u"}, &nodev1.RoomMark{Room: "m"}, &nodev1.RoomCommand{Room: "@c"}}
	if n := (&nodev1.Envelope{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields().Len(); n != len(msgs) {
		t.Fatalf("the envelope has %d bodies; the test covers %d", n, len(msgs))
	}
	for _, m := range msgs {
		b, err := proto.Marshal(wrap(m))
		if err != nil {
			t.Fatal(err)
		}
		var e nodev1.Envelope
		if err := proto.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		got, ok := unwrap(&e).(proto.Message)
		if !ok || !proto.Equal(got, m) {
			t.Fatalf("%T came back as %v", m, got)
		}
	}
	// A body from a newer node: field 99 is unknown here.
	var e nodev1.Envelope
	if err := proto.Unmarshal([]byte{0x9a, 0x06, 0x00}, &e); err != nil {
		t.Fatal(err)
	}
	if _, ok := unwrap(&e).(unknownEnvelope); !ok {
		t.Fatalf("unknown body unwrapped as %v", unwrap(&e))
	}
	if unwrap("local") != "local" {
		t.Fatal("local messages pass through")
	}
}
