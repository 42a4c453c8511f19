package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/signal"
	"strings"
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
	wait := f.Duration("wait", 30*time.Second, "give up (exit 1) when the server cannot be reached for this long, at start or while a line waits to be sent")
	forever := f.Bool("retry-forever", false, "never give up reconnecting (interactive use)")
	f.positive("wait", func() float64 { return float64(*wait) })
	if err := f.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return usageError("chat", err)
	}
	if err := checkWSURL(*url); err != nil {
		return usageError("chat", err)
	}
	enc := wire.Proto
	if *useJSON {
		enc = wire.JSON
	}
	if *forever {
		*wait = 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg := client.Config{URL: *url, Name: *name, Encoding: enc, OnState: reportState}
	if err := runChat(ctx, cfg, *room, *wait, os.Stdin, os.Stdout); err != nil {
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

// checkWSURL refuses a URL that is not ws:// or wss:// with a host.
func checkWSURL(raw string) error {
	u, err := neturl.Parse(raw)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	if (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("--url %q: want ws://host:port/ws or wss://host/ws", raw)
	}
	return nil
}

// bounded is ctx limited to wait, or ctx itself when wait is 0 (retry forever).
func bounded(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	if wait <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, wait)
}

// giveUp explains a connection that could not be made within wait.
func giveUp(err error, url string, wait time.Duration) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("could not reach %s within %v; giving up (--wait sets the bound, --retry-forever keeps trying)", url, wait)
	}
	return err
}

func runChat(ctx context.Context, cfg client.Config, room string, wait time.Duration, in io.Reader, out io.Writer) error {
	c := client.New(cfg)
	defer c.Close()
	connectCtx, cancel := bounded(ctx, wait)
	defer cancel()
	if err := c.Connect(connectCtx); err != nil {
		return giveUp(err, cfg.URL, wait)
	}
	sub, err := c.Join(connectCtx, room)
	if err != nil {
		return giveUp(err, cfg.URL, wait)
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
			pubCtx, cancel := bounded(ctx, wait)
			_, err := c.PublishText(pubCtx, room, line)
			cancel()
			if err != nil {
				runErr = giveUp(err, cfg.URL, wait)
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
		who := m.GetSender().GetUser()
		if s := m.GetSender().GetServer(); s != "" {
			who = "[" + s + "]" // a backend's message, through the server API
		}
		return fmt.Sprintf("[%d] %s: %s", m.GetOffset(), who, bodyText(m.GetBody()))
	case client.EventPresence:
		d := ev.Presence
		var parts []string
		if len(d.GetJoined()) > 0 {
			parts = append(parts, strings.Join(d.GetJoined(), ", ")+" joined")
		}
		if len(d.GetLeft()) > 0 {
			parts = append(parts, strings.Join(d.GetLeft(), ", ")+" left")
		}
		if d.GetReset_() {
			parts = append(parts, "many joined or left")
		}
		if len(parts) == 0 {
			parts = append(parts, "presence changed")
		}
		return fmt.Sprintf("* %s (%d here)", strings.Join(parts, "; "), d.GetUsers())
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
