package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hubbub-chat/hubbub/client"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// chat joins a room and bridges it to standard input and output: each input
// line is published, each message and presence change is printed as a line.
func chat(args []string) int {
	f := newEnvFlags("chat")
	url := f.String("url", "ws://127.0.0.1:8080/ws", "server WebSocket URL")
	room := f.String("room", "lobby", "room to join")
	name := f.String("name", "", "display name")
	useJSON := f.Bool("json", false, "speak the JSON subprotocol instead of protobuf")
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "hubbub chat:", err)
		return 2
	}
	enc := wire.Proto
	if *useJSON {
		enc = wire.JSON
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runChat(ctx, client.Config{URL: *url, Name: *name, Encoding: enc, OnState: reportState}, *room, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hubbub chat:", err)
		return 1
	}
	return 0
}

func reportState(sc client.StateChange) {
	switch sc.State {
	case client.StateDisconnected:
		fmt.Fprintf(os.Stderr, "* disconnected (%v); reconnecting\n", sc.Err)
	case client.StateClosed:
		if sc.Err != nil && !errors.Is(sc.Err, client.ErrClosed) {
			fmt.Fprintf(os.Stderr, "* closed: %v\n", sc.Err)
		}
	}
}

func runChat(ctx context.Context, cfg client.Config, room string, in io.Reader, out io.Writer) error {
	c := client.New(cfg)
	defer c.Close()
	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Connect(connectCtx); err != nil {
		return err
	}
	sub, err := c.Join(connectCtx, room)
	if err != nil {
		return err
	}
	var printer sync.WaitGroup
	printer.Add(1)
	go func() { // owner: runChat; joined after Leave closes Events
		defer printer.Done()
		for ev := range sub.Events() {
			if line := formatEvent(ev); line != "" {
				fmt.Fprintln(out, line)
			}
		}
	}()
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() { // owner: runChat; ends at end of input (or with the process on a signal)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		readErr <- sc.Err()
		close(lines)
	}()
	var runErr error
loop:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				runErr = <-readErr
				break loop
			}
			if line == "" {
				continue
			}
			if _, err := c.PublishText(ctx, room, line); err != nil {
				runErr = err
				break loop
			}
		case <-ctx.Done():
			break loop
		}
	}
	leaveCtx, cancelLeave := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelLeave()
	_ = sub.Leave(leaveCtx)
	printer.Wait()
	return runErr
}

// formatEvent renders one room event as a line of chat output.
func formatEvent(ev client.Event) string {
	switch ev.Kind {
	case client.EventMessage:
		m := ev.Message
		return fmt.Sprintf("[%d] %s: %s", m.GetOffset(), m.GetSender().GetUser(), bodyText(m.GetBody()))
	case client.EventPresence:
		verb := "joined"
		if ev.Presence.GetAction() == hubbubv1.PresenceAction_PRESENCE_ACTION_LEAVE {
			verb = "left"
		}
		return fmt.Sprintf("* %s %s", ev.Presence.GetClient().GetUser(), verb)
	case client.EventNotRecovered:
		return "* some messages were missed while disconnected and are no longer available"
	}
	return ""
}

func bodyText(b *hubbubv1.Body) string {
	switch k := b.GetKind().(type) {
	case *hubbubv1.Body_Text:
		return k.Text
	case *hubbubv1.Body_Data:
		j, _ := protojson.Marshal(k.Data)
		return string(j)
	case *hubbubv1.Body_Binary:
		return fmt.Sprintf("<%d bytes>", len(k.Binary))
	}
	return ""
}
