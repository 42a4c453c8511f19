package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hubbub-chat/hubbub/actors"
	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

func TestMain(m *testing.M) {
	// protoactor's dead-letter throttle keeps a goroutine per actor system.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}

const fuzzKey = "fuzz-key-0123456789"

// newTestHandler is the API over a single in-memory node.
func newTestHandler(t testing.TB) (*Handler, *actors.Node) {
	node := actors.NewNode(actors.Config{Conn: actors.ConnConfig{MaxMessageBytes: 1024}}, actors.Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
	})
	h, err := New(node, Config{Keys: []Key{{Name: "fuzz", Secret: fuzzKey, Scopes: []Scope{ScopeAdmin}}}, MaxBatch: 20}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return h, node
}

// call runs one request through the handler as a client would send it.
func call(h http.Handler, method, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/hubbub.api.v1.ServerAPI/"+method, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+fuzzKey)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// FuzzPublishRequests sends arbitrary Publish and BatchPublish bodies, as
// JSON and as protobuf: every answer is a success whose items respect the
// limits, or a Connect error with a client-side code; nothing panics and
// nothing is published that a check should have refused.
func FuzzPublishRequests(f *testing.F) {
	for _, s := range []string{
		`{"room":"lobby","body":{"text":"hi"}}`,
		`{"room":"lobby","body":{"data":{"a":[1,2,{"b":null}]}},"messageId":"m1","key":"k"}`,
		`{"room":"a b","body":{"binary":"AAE="}}`,
		`{"room":"lobby"}`,
		`{"items":[{"room":"x","body":{"text":"1"}},{"room":"","body":{"text":"2"}}]}`,
		`{"items":[]}`,
		`{"room":"lobby","body":{"text":1}}`,
		`not json`,
	} {
		f.Add([]byte(s), false, false)
		f.Add([]byte(s), false, true)
	}
	for _, m := range []proto.Message{
		&apiv1.PublishRequest{Room: "lobby", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "hi"}}},
		&apiv1.BatchPublishRequest{Items: []*apiv1.PublishRequest{{Room: "r", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: []byte{0, 1}}}}}},
	} {
		b, _ := proto.Marshal(m)
		_, batch := m.(*apiv1.BatchPublishRequest)
		f.Add(b, true, batch)
	}
	h, node := newTestHandler(f)
	f.Fuzz(func(t *testing.T, body []byte, binary, batch bool) {
		method, ct := "Publish", "application/json"
		if batch {
			method = "BatchPublish"
		}
		if binary {
			ct = "application/proto"
		}
		rec := call(h, method, ct, body)
		if rec.Code != http.StatusOK {
			var e struct{ Code string }
			if binary {
				return // a binary error body is protobuf-free JSON too, but its code is in the status
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("%d with a body that is not a Connect error: %q", rec.Code, rec.Body.String())
			}
			switch e.Code {
			case "invalid_argument", "resource_exhausted", "permission_denied":
			default:
				t.Fatalf("code %q (%d) for %q", e.Code, rec.Code, body)
			}
			return
		}
		// Connect, like protojson's DiscardUnknown, ignores fields it does not know.
		unmarshal := protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal
		if binary {
			unmarshal = proto.Unmarshal
		}
		var reqItems []*apiv1.PublishRequest
		if batch {
			var req apiv1.BatchPublishRequest
			var res apiv1.BatchPublishResponse
			if unmarshal(body, &req) != nil || unmarshal(rec.Body.Bytes(), &res) != nil || len(res.GetResults()) != len(req.GetItems()) {
				t.Fatalf("batch answer %q for %q", rec.Body.String(), body)
			}
			reqItems = req.GetItems()
			for i, r := range res.GetResults() {
				if r.GetPublished() != nil {
					checkAccepted(t, node, reqItems[i])
				}
			}
			return
		}
		var req apiv1.PublishRequest
		if unmarshal(body, &req) != nil {
			t.Fatalf("accepted a body that does not decode: %q", body)
		}
		checkAccepted(t, node, &req)
	})
}

// checkAccepted fails when a published item should have been refused.
func checkAccepted(t *testing.T, node *actors.Node, p *apiv1.PublishRequest) {
	t.Helper()
	if err := node.CheckPublish(actors.ServerPublish{Room: p.GetRoom(), Body: p.GetBody(), MessageID: p.GetMessageId(), Key: p.GetKey()}); err != nil {
		t.Fatalf("published %v despite %v", p, err)
	}
	if actors.BodyBytes(p.GetBody()) > 1024 {
		t.Fatalf("published an oversized body")
	}
}
