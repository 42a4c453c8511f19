package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

// Bad commands get an error reply and the connection stays usable.
func TestBadCommandsGetErrorReplies(t *testing.T) {
	s := startServer(t, actors.Config{Conn: actors.ConnConfig{MaxMessageBytes: 1024, MaxRooms: 2}}, transport.Config{})
	text := func(room, s string) *hubbubv1.ClientFrame { return publishFrame(room, s, "") }
	cases := []struct {
		name  string
		setup func(c *client)
		frame *hubbubv1.ClientFrame
		want  hubbubv1.ErrorCode
	}{
		{"unknown command", nil, &hubbubv1.ClientFrame{}, hubbubv1.ErrorCode_ERROR_CODE_UNKNOWN_COMMAND},
		{"second connect", nil, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{}}}, hubbubv1.ErrorCode_ERROR_CODE_ALREADY_CONNECTED},
		{"empty room", nil, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{}}}, hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM},
		{"long room", nil, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: longString(129)}}}, hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM},
		{"room with space", nil, text("a b", "x"), hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM},
		{"room with control char", nil, text("a\x01", "x"), hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM},
		{"oversized body", nil, text("r", longString(2000)), hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE},
		{"publish without body", nil, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: "r"}}}, hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"leave not joined", nil, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: "r"}}}, hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED},
		{"typing not joined", nil, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: "r", Typing: true}}}, hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED},
		{"join twice", func(c *client) { c.join("twice", nil) }, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "twice"}}}, hubbubv1.ErrorCode_ERROR_CODE_ALREADY_JOINED},
		{"too many rooms", func(c *client) { c.join("r1", nil); c.join("r2", nil) }, &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "r3"}}}, hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED},
	}
	for _, tc := range cases {
		for _, enc := range []wire.Encoding{wire.Proto, wire.JSON} {
			t.Run(tc.name+"/"+enc.String(), func(t *testing.T) {
				c := connect(t, s.URL, enc, "bad")
				if tc.setup != nil {
					tc.setup(c)
				}
				if r := c.request(tc.frame); errCode(r) != tc.want {
					t.Fatalf("got %v, want %v", r, tc.want)
				}
				// The connection still works.
				if r := c.publish("after-error", "ok"); r.GetOffset() == 0 {
					t.Fatalf("publish after error: %v", r)
				}
			})
		}
	}
	if s.node.Counters().Errors()["ERROR_CODE_INVALID_ROOM"] < 4 {
		t.Fatalf("errors not counted: %v", s.node.Counters().Errors())
	}
}

func TestCommandBeforeConnect(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	c := dial(t, s.URL, wire.JSON)
	r := c.request(publishFrame("r", "x", ""))
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_NOT_CONNECTED {
		t.Fatalf("got %v", r)
	}
	r = c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "late"}}})
	if r.GetConnect().GetClient().GetUser() != "late" {
		t.Fatalf("connect after error: %v", r)
	}
}

// Broken frames close the connection with a documented code and leave every
// other client's stream intact.
func TestMalformedFramesClose(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{MaxFrameBytes: 4096})
	bystander := connect(t, s.URL, wire.Proto, "bystander")
	bystander.join("calm", nil)
	cases := []struct {
		name string
		enc  wire.Encoding
		mt   int
		data []byte
		code int
	}{
		{"garbage protobuf", wire.Proto, websocket.BinaryMessage, []byte{0xff, 0xff, 0xff, 0x0f, 0x01}, wire.CloseInvalidPayload},
		{"garbage json", wire.JSON, websocket.TextMessage, []byte(`{"connect": 5`), wire.CloseInvalidPayload},
		{"json of wrong shape", wire.JSON, websocket.TextMessage, []byte(`{"id": "nope"}`), wire.CloseInvalidPayload},
		{"text on proto", wire.Proto, websocket.TextMessage, []byte(`{}`), wire.CloseUnsupportedData},
		{"binary on json", wire.JSON, websocket.BinaryMessage, []byte{0x08, 0x01}, wire.CloseUnsupportedData},
		{"oversized frame", wire.Proto, websocket.BinaryMessage, make([]byte, 5000), wire.CloseTooBig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, s.URL, tc.enc, "breaker")
			c.join("calm", nil)
			c.writeRaw(tc.mt, tc.data)
			var disc *hubbubv1.Disconnect
			for f := c.read(waitFor); f != nil; f = c.read(waitFor) {
				if d := f.GetDisconnect(); d != nil {
					disc = d
				}
			}
			if got := closeCode(c.err()); got != tc.code {
				t.Fatalf("close code %d (%v), want %d", got, c.err(), tc.code)
			}
			if disc == nil || int(disc.GetCode()) != tc.code || disc.GetReconnect() {
				t.Fatalf("disconnect push %v", disc)
			}
		})
	}
	pub := connect(t, s.URL, wire.JSON, "pub")
	pub.publish("calm", "still here")
	if m := bystander.nextMessage(); m.GetBody().GetText() != "still here" || m.GetOffset() != 1 {
		t.Fatalf("bystander got %v", m)
	}
	if got := s.node.Counters().MalformedFrames.Load(); got != int64(len(cases)) {
		t.Fatalf("malformed frames counted %d, want %d", got, len(cases))
	}
	eventually(t, "closes counted by code", func() bool {
		closes := s.node.Counters().Closes()
		return closes[wire.CloseInvalidPayload] == 3 && closes[wire.CloseTooBig] == 1 && closes[wire.CloseUnsupportedData] == 2
	})
}

func TestUpgradeWithoutSubprotocolRefused(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	for _, protos := range [][]string{nil, {"chat", "hubbub.v2.proto"}} {
		d := websocket.Dialer{Subprotocols: protos}
		_, resp, err := d.Dial(s.URL, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("offered %v: err %v resp %v", protos, err, resp)
		}
		resp.Body.Close()
	}
	// A browser page of another origin is refused.
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}}
	_, resp, err := d.Dial(s.URL, http.Header{"Origin": {"http://evil.example"}})
	if err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin: %v %v", err, resp)
	}
	resp.Body.Close()
	if s.node.Counters().UpgradesRefused.Load() != 3 {
		t.Fatalf("refusals counted %d", s.node.Counters().UpgradesRefused.Load())
	}
}

// The JSON encoding reads naturally: text is a JSON string, data is JSON.
func TestJSONEncodingIsReadable(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	c := connect(t, s.URL, wire.JSON, "reader")
	c.join("j", nil)
	raw := dial(t, s.URL, wire.JSON)
	raw.writeRaw(websocket.TextMessage, []byte(`{"id":"1","connect":{"name":"raw"}}`))
	raw.writeRaw(websocket.TextMessage, []byte(`{"id":"2","publish":{"room":"j","body":{"data":{"x":1,"tags":["a"]}}}}`))
	raw.writeRaw(websocket.TextMessage, []byte(`{"id":"3","publish":{"room":"j","body":{"text":"hello"}}}`))
	if r := raw.waitReply(3); r.GetPublish().GetOffset() != 2 {
		t.Fatalf("publish reply %v", r)
	}
	// Read c's raw frames to check the JSON itself.
	m1 := c.nextMessage()
	if m1.GetBody().GetData().GetStructValue().GetFields()["x"].GetNumberValue() != 1 {
		t.Fatalf("data body %v", m1)
	}
	b, _ := wire.Marshal(&hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Message{Message: c.nextMessage()}}, wire.JSON)
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	body := doc["message"].(map[string]any)["body"].(map[string]any)
	if body["text"] != "hello" || !strings.Contains(string(b), `"text":"hello"`) && !strings.Contains(string(b), `"text": "hello"`) {
		t.Fatalf("json frame %s", b)
	}
}

// Both encodings in one room see the same stream.
func TestEncodingsInteroperate(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	p := connect(t, s.URL, wire.Proto, "p")
	j := connect(t, s.URL, wire.JSON, "j")
	p.join("mix", nil)
	j.join("mix", nil)
	p.publish("mix", "from proto")
	j.publish("mix", "from json")
	for _, c := range []*client{p, j} {
		m1, m2 := c.nextMessage(), c.nextMessage()
		if m1.GetBody().GetText() != "from proto" || m2.GetBody().GetText() != "from json" || m2.GetOffset() != m1.GetOffset()+1 {
			t.Fatalf("%v saw %v, %v", c.enc, m1, m2)
		}
	}
}

func TestPingReply(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{})
	c := connect(t, s.URL, wire.Proto, "p")
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}})
	if d := time.Since(time.UnixMilli(r.GetPing().GetServerTimeUnixMs())); d < -time.Minute || d > time.Minute {
		t.Fatalf("ping %v", r)
	}
}
