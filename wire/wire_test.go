package wire

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// sampleClientFrames are real frames of every command, used as test cases and fuzz seeds.
func sampleClientFrames() []*hubbubv1.ClientFrame {
	data, _ := structpb.NewValue(map[string]any{"x": 1.5, "tags": []any{"a", "b"}})
	return []*hubbubv1.ClientFrame{
		{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "alice", Token: "t"}}},
		{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "lobby", Since: &hubbubv1.StreamPosition{Offset: 7, Epoch: "e1"}}}},
		{Id: 3, Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "lobby"}}},
		{Id: 4, Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: "lobby", MessageId: "m1", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "hi ✓"}}}}},
		{Id: 5, Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: "game", Key: "pos", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Data{Data: data}}}}},
		{Id: 6, Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: "iot", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: []byte{0, 1, 2, 255}}}}}},
		{Id: 7, Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "lobby", SinceOffset: 3, Limit: 10, Reverse: true}}},
		{Id: 8, Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "lobby"}}},
		{Id: 9, Command: &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: "lobby", Typing: true}}},
		{Id: 10, Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}, Trace: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
	}
}

func TestClientFramesRoundTrip(t *testing.T) {
	for _, enc := range []Encoding{Proto, JSON} {
		for _, f := range sampleClientFrames() {
			b, err := Marshal(f, enc)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeClientFrame(b, enc)
			if err != nil {
				t.Fatalf("%v: %v", enc, err)
			}
			if !proto.Equal(got, f) {
				t.Fatalf("%v: got %v want %v", enc, got, f)
			}
		}
	}
}

func TestJSONFramesAreCanonicalAndReadable(t *testing.T) {
	f := sampleClientFrames()[3]
	b, err := Marshal(f, JSON)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeClientFrame([]byte(`{"id":"4","publish":{"room":"lobby","messageId":"m1","body":{"text":"hi ✓"}}}`), JSON)
	if err != nil || !proto.Equal(got, f) {
		t.Fatalf("hand-written JSON: %v %v (marshalled %s)", got, err, b)
	}
	// snake_case field names are accepted too, as protojson does.
	if _, err := DecodeClientFrame([]byte(`{"id":"4","publish":{"room":"r","message_id":"m"}}`), JSON); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownCommandDecodesEmpty(t *testing.T) {
	// Field 20 is no command today: a newer client's command decodes with no command set.
	f, err := DecodeClientFrame([]byte{0x08, 0x05, 0xa2, 0x01, 0x00}, Proto)
	if err != nil || f.GetCommand() != nil || f.GetId() != 5 {
		t.Fatalf("got %v %v", f, err)
	}
	f, err = DecodeClientFrame([]byte(`{"id":"6","teleport":{"to":"mars"}}`), JSON)
	if err != nil || f.GetCommand() != nil || f.GetId() != 6 {
		t.Fatalf("json: got %v %v", f, err)
	}
}

func TestMalformedFramesFail(t *testing.T) {
	cases := []struct {
		name string
		enc  Encoding
		data string
	}{
		{"truncated varint", Proto, "\x08\xff"},
		{"bad wire type", Proto, "\x0f"},
		{"length past end", Proto, "\x12\x10ab"},
		{"not json", JSON, "hello"},
		{"wrong type", JSON, `{"id":{}}`},
		{"two commands", JSON, `{"ping":{},"leave":{"room":"a"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeClientFrame([]byte(tc.data), tc.enc); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestEncodingForSubprotocol(t *testing.T) {
	for _, tc := range []struct {
		sub  string
		enc  Encoding
		okay bool
	}{{SubprotocolProto, Proto, true}, {SubprotocolJSON, JSON, true}, {"hubbub.v2.proto", 0, false}, {"", 0, false}} {
		if enc, ok := EncodingFor(tc.sub); enc != tc.enc || ok != tc.okay {
			t.Fatalf("%q: %v %v", tc.sub, enc, ok)
		}
	}
}

func TestReconnectAdvice(t *testing.T) {
	for code, want := range map[int]bool{CloseGoingAway: true, CloseSlowConsumer: true, CloseInternal: true, 1006: true,
		CloseTokenExpired: true, CloseUnauthorized: false, CloseInvalidPayload: false, CloseTooBig: false, ClosePolicy: false,
		CloseRoomMoved: true, CloseConnectTimeout: true, CloseTooManyConnections: false} {
		if Reconnect(code) != want {
			t.Fatalf("code %d: reconnect %v", code, !want)
		}
	}
}

// The close code table is sorted (LookupClose searches it), has one row per
// code with a reason, and round-trips through its JSON form.
func TestCloseCodeTable(t *testing.T) {
	for i, c := range CloseCodes {
		if c.Reason == "" {
			t.Errorf("code %d has no reason", c.Code)
		}
		if i > 0 && CloseCodes[i-1].Code >= c.Code {
			t.Fatalf("table not sorted at %d", c.Code)
		}
		if got, ok := LookupClose(c.Code); !ok || got != c {
			t.Fatalf("lookup %d: %v %v", c.Code, got, ok)
		}
	}
	if _, ok := LookupClose(1012); ok {
		t.Fatal("1012 is not sent by the server and must not be in the table")
	}
	if c, ok := LookupClose(CloseTryAgainLater); !ok || !c.Reconnect {
		t.Fatalf("1013 (connect hook unanswered) must be in the table with reconnect: %v %v", c, ok)
	}
	var back []CloseCode
	if err := json.Unmarshal(CloseCodesJSON(), &back); err != nil || !reflect.DeepEqual(back, CloseCodes) {
		t.Fatalf("json: %v %v", back, err)
	}
}

// FuzzDecodeClientFrame checks that decoding never panics and that whatever
// decodes survives a re-encode in both encodings.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, fr := range sampleClientFrames() {
		for _, enc := range []Encoding{Proto, JSON} {
			b, _ := Marshal(fr, enc)
			f.Add(b, enc == JSON)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		enc := Proto
		if isJSON {
			enc = JSON
		}
		fr, err := DecodeClientFrame(data, enc)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		// Protobuf keeps unknown fields, so it round-trips exactly.
		b, err := Marshal(fr, Proto)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeClientFrame(b, Proto)
		if err != nil || !proto.Equal(again, fr) {
			t.Fatalf("proto re-encode: %v %v", again, err)
		}
		// JSON drops unknown fields, so its encoding must be stable from the first re-encode on.
		j1, err := Marshal(fr, JSON)
		if err != nil {
			return // protojson refuses invalid UTF-8 that protobuf accepted
		}
		fromJSON, err := DecodeClientFrame(j1, JSON)
		if err != nil {
			t.Fatalf("json re-decode: %v", err)
		}
		j2, err := Marshal(fromJSON, JSON)
		if err != nil {
			t.Fatal(err)
		}
		j3, _ := Marshal(mustDecode(t, j2), JSON)
		if string(j2) != string(j3) {
			t.Fatalf("json not stable: %s vs %s", j2, j3)
		}
	})
}

func mustDecode(t *testing.T, b []byte) *hubbubv1.ClientFrame {
	f, err := DecodeClientFrame(b, JSON)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func BenchmarkDecodeClientFrame(b *testing.B) {
	for _, enc := range []Encoding{Proto, JSON} {
		data, _ := Marshal(sampleClientFrames()[3], enc)
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				if _, err := DecodeClientFrame(data, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeMessagePush(b *testing.B) {
	f := &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Message{Message: &hubbubv1.Message{
		Room: "lobby", Offset: 12345, Epoch: "a1b2c3d4e5f6", Sender: &hubbubv1.ClientInfo{User: "alice", ClientId: "0123456789abcdef-1"},
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: string(make([]byte, 128))}}, TimeUnixMs: 1764000000000,
	}}}
	for _, enc := range []Encoding{Proto, JSON} {
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := Marshal(f, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
