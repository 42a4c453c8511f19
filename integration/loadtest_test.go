package integration

import (
	"context"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/loadtest"
	"github.com/hubbub-chat/hubbub/transport"
)

// The load tool's scenarios run end to end at a small scale and account for
// every message.
func TestLoadToolScenarios(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{Overflow: []actors.OverflowRule{}}}, transport.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o := loadtest.Options{URL: s.URL, Subscribers: 20, Publishers: 2, Rate: 200, Duration: 500 * time.Millisecond,
		Rooms: 20, Members: 3, RoomsPerConn: 5, RatePerRoom: 5, Conns: 30, Dialers: 5, Workers: 2}
	for _, name := range loadtest.Scenarios {
		if name == "maxtp" {
			continue // fanout at several rates: covered by fanout
		}
		t.Run(name, func(t *testing.T) {
			res, err := loadtest.Run(ctx, name, o)
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
}
