package integration

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/api"
	"github.com/hubbub-chat/hubbub/loadtest"
	"github.com/hubbub-chat/hubbub/server"
	"github.com/hubbub-chat/hubbub/wire"
)

// The load tool's scenarios run end to end at a small scale and account for
// every message.
func TestLoadToolScenarios(t *testing.T) {
	// No per-connection limits, as the load tool runs (scripts/perf.sh).
	s := startServerConfig(t, server.Config{Node: actors.Config{Room: actors.RoomConfig{Overflow: []actors.OverflowRule{}}, Conn: actors.ConnConfig{CommandRate: -1, ByteRate: -1}},
		API: &api.Config{Keys: []api.Key{{Name: "bench", Secret: pubKey, Scopes: []api.Scope{api.ScopePublish}}}}})
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.srv.ServeAPI(al) }() // owner: the test; returns at the server's Shutdown
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := loadtest.Options{URL: s.URL, Subscribers: 20, Publishers: 2, Rate: 200, Duration: 500 * time.Millisecond,
		Rooms: 20, Members: 3, RoomsPerConn: 5, RatePerRoom: 5, Conns: 30, Dialers: 5, Workers: 2,
		APIURL: "http://" + al.Addr().String(), APIKey: pubKey, Batch: 10}
	for _, name := range loadtest.Scenarios {
		if name == "maxtp" {
			continue // fanout at several rates: covered by fanout
		}
		t.Run(name, func(t *testing.T) {
			res, err := loadtest.Run(ctx, name, o)
			if name == "api" {
				// Three closed loops: unary Publish, BatchPublish and WebSocket publishes.
				if err != nil || len(res) != 3 {
					t.Fatalf("%+v %v", res, err)
				}
				for _, r := range res {
					if r.Published < 10 || r.PublishErrors != 0 || r.P99Ms <= 0 || r.Note != "" {
						t.Fatalf("%+v", r)
					}
				}
				if res[1].Scenario != "api-batch" || res[1].Published%10 != 0 {
					t.Fatalf("batch: %+v", res[1])
				}
				o2 := o
				o2.APIKey = "wrong"
				if res, err := loadtest.Run(ctx, name, o2); err == nil && res[0].PublishErrors == 0 {
					t.Fatalf("a wrong key published: %+v", res)
				}
				return
			}
			if err != nil || len(res) != 1 {
				t.Fatalf("%v %v", res, err)
			}
			r := res[0]
			switch name {
			case "fanout":
				if r.Published < 50 || r.Loss != 0 || r.Deliveries != r.Published*20 || r.P99Ms <= 0 {
					t.Fatalf("%+v", r)
				}
			case "rooms":
				if r.Published < 20 || r.Loss != 0 || r.Deliveries != r.Published*3 {
					t.Fatalf("%+v", r)
				}
			case "idle", "storm":
				if r.Conns != 30 || r.DurationSec <= 0 {
					t.Fatalf("%+v", r)
				}
			case "churn":
				if r.Cycles == 0 || r.Loss != 0 {
					t.Fatalf("%+v", r)
				}
			}
		})
	}
	if _, err := loadtest.Run(ctx, "nonsense", o); err == nil {
		t.Fatal("unknown scenario accepted")
	}
	// Fanout with subscribers in each encoding, full and compact: every
	// message timed and counted, and compact pushes are smaller.
	size := map[string]float64{}
	for _, enc := range []wire.Encoding{wire.Proto, wire.JSON} {
		for _, compact := range []bool{false, true} {
			name := fmt.Sprintf("fanout-%v-compact=%v", enc, compact)
			t.Run(name, func(t *testing.T) {
				o := o
				o.Encoding, o.Compact = enc, compact
				res, err := loadtest.Run(ctx, "fanout", o)
				if err != nil || len(res) != 1 {
					t.Fatalf("%v %v", res, err)
				}
				r := res[0]
				if r.Published < 50 || r.Loss != 0 || r.Deliveries != r.Published*20 || r.P99Ms <= 0 || r.BytesPerDelivery <= float64(o.Size) {
					t.Fatalf("%+v", r)
				}
				size[name] = r.BytesPerDelivery
			})
		}
		full, compact := size[fmt.Sprintf("fanout-%v-compact=false", enc)], size[fmt.Sprintf("fanout-%v-compact=true", enc)]
		t.Logf("%v: %.0f bytes per delivery full, %.0f compact", enc, full, compact)
		if compact >= full {
			t.Errorf("%v: compact pushes of %.0f bytes against %.0f full", enc, compact, full)
		}
	}
}
