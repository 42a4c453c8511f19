package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hubbub-chat/hubbub/loadtest"
	"github.com/hubbub-chat/hubbub/wire"
)

// bench drives a running server with one load scenario and prints the figures.
func bench(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(os.Stderr, "usage: hubbub bench <scenario> [flags]\nscenarios: %v\n(hubbub bench <scenario> -h lists the flags)\n", loadtest.Scenarios)
		return 2
	}
	name := args[0]
	var o loadtest.Options
	f := flag.NewFlagSet("bench "+name, flag.ContinueOnError)
	f.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/ws", "server WebSocket URL (loopback only)")
	f.IntVar(&o.ServerPID, "server-pid", 0, "server process id, to report its CPU seconds and RSS")
	f.IntVar(&o.Subscribers, "subscribers", 1000, "fanout, maxtp: subscribers in the room")
	f.IntVar(&o.Publishers, "publishers", 10, "publishing connections")
	f.Float64Var(&o.Rate, "rate", 1000, "fanout, churn: total publishes per second")
	f.IntVar(&o.Size, "size", 128, "payload bytes")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long publishing runs")
	f.IntVar(&o.SlowReaders, "slow-readers", 0, "fanout: subscribers that read only one message per 50ms")
	f.Float64Var(&o.StartRate, "start-rate", 1000, "maxtp: first rate")
	f.Float64Var(&o.MaxRate, "max-rate", 1e6, "maxtp: last rate")
	f.Float64Var(&o.Step, "step", 1.5, "maxtp: rate multiplier per step")
	f.DurationVar(&o.P99Bound, "p99-bound", 250*time.Millisecond, "maxtp: highest acceptable p99")
	f.IntVar(&o.Rooms, "rooms", 1000, "rooms: number of rooms")
	f.IntVar(&o.Members, "members", 10, "rooms: members per room")
	f.IntVar(&o.RoomsPerConn, "rooms-per-conn", 100, "rooms: memberships per subscriber connection")
	f.Float64Var(&o.RatePerRoom, "rate-per-room", 1, "rooms: publishes per second per room")
	f.IntVar(&o.Conns, "conns", 1000, "idle, storm, bigroom: connections; churn: stable subscribers")
	f.IntVar(&o.Dialers, "dialers", 50, "concurrent dialers")
	f.BoolVar(&o.ConnectOnly, "connect-only", false, "idle: connections join no room (by default each joins one of 100)")
	f.IntVar(&o.Workers, "workers", 20, "churn: connect/join/leave/disconnect loops")
	f.BoolVar(&o.Compression, "compression", false, "offer permessage-deflate (the server needs --compression)")
	encoding := f.String("encoding", "proto", "fanout, maxtp: the subscribers' encoding, proto or json")
	f.BoolVar(&o.Compact, "compact", false, "fanout, maxtp: subscribers ask for compact pushes")
	f.IntVar(&o.Devices, "devices", 3, "direct: connections of the user receiving the direct messages")
	f.BoolVar(&o.Ack, "ack", false, "fanout: every subscriber acks every message it gets (protobuf)")
	f.StringVar(&o.APIURL, "api-url", "http://127.0.0.1:8081", "api: the server API's base URL (loopback only)")
	f.StringVar(&o.APIKey, "api-key", "", "api: a server API key with the publish scope")
	f.IntVar(&o.Batch, "batch", 100, "api: messages per BatchPublish")
	jsonOnly := f.Bool("json", false, "print JSON lines only")
	timeout := f.Duration("timeout", 10*time.Minute, "bound on the whole run")
	if err := f.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	err := loopbackOnly(o.URL)
	switch *encoding {
	case "proto":
		o.Encoding = wire.Proto
	case "json":
		o.Encoding = wire.JSON
	default:
		err = fmt.Errorf("--encoding %q: proto or json", *encoding)
	}
	if err == nil && name == "api" {
		err = loopbackOnly(o.APIURL)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub bench:", err)
		return 2
	}
	if !*jsonOnly {
		o.Progress = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	results, err := loadtest.Run(ctx, name, o)
	for _, r := range results {
		if !*jsonOnly {
			fmt.Print(r.Table())
		}
		fmt.Println(r.JSON())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub bench:", err)
		return 1
	}
	return 0
}
