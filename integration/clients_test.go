package integration

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	hubclient "github.com/hubbub-chat/hubbub/client"
	"github.com/hubbub-chat/hubbub/wire"
)

// lines streams a reader's lines to a channel.
func lines(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	go func() { // owner: the command; ends with its stdout
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return ch
}

func expectLine(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before %q", want)
			}
			if l == want {
				return
			}
			t.Logf("skipping line %q", l)
		case <-deadline:
			t.Fatalf("no line %q", want)
		}
	}
}

// Two `hubbub chat` processes talk through a `hubbub serve` process, with
// standard input as a pipe.
func TestChatCommand(t *testing.T) {
	p := startProcess(t, "--presence-interval", "20ms")
	bin := hubbubBinary(t)
	bob := exec.Command(bin, "chat", "--url", p.URL, "--room", "cli", "--name", "bob")
	bobIn, err := bob.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	bobOut := lines(t, bob)
	if err := bob.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bob.Process.Kill(); _ = bob.Wait() }()
	expectLine(t, bobOut, "* bob joined (1 here)")

	alice := exec.Command(bin, "chat", "--url", p.URL, "--room", "cli", "--name", "alice", "--json")
	alice.Stdin = strings.NewReader("hello\n\nworld, with spaces\n")
	if out, err := alice.CombinedOutput(); err != nil {
		t.Fatalf("alice: %v\n%s", err, out)
	}
	// alice's join and leave may fall within one presence interval, which
	// then pushes nothing: only her messages are certain.
	for _, want := range []string{"[1] alice: hello", "[2] alice: world, with spaces"} {
		expectLine(t, bobOut, want)
	}
	if _, err := bobIn.Write([]byte("bye\n")); err != nil {
		t.Fatal(err)
	}
	expectLine(t, bobOut, "[3] bob: bye")
	_ = bobIn.Close() // end of input: bob leaves and exits 0
	if err := bob.Wait(); err != nil {
		t.Fatalf("bob exit: %v", err)
	}
}

// kill -9 and restart of a server keeping history in memory: the Go client
// reconnects by itself and, as the history died with the process, says the
// gap is not recovered.
func TestClientAcrossServerRestart(t *testing.T) {
	addr := freePort(t)
	p1 := startProcess(t, "--listen", addr, "--history-store", "memory")
	url := p1.URL
	cfg := hubclient.Config{URL: url, MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond}
	subCfg, pubCfg := cfg, cfg
	subCfg.Name, pubCfg.Name = "sub", "pub"
	pubCfg.Encoding = wire.JSON
	sub, pub := hubclient.New(subCfg), hubclient.New(pubCfg)
	defer sub.Close()
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := sub.Join(ctx, "restart")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishText(ctx, "restart", "before"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, s, hubclient.EventMessage)
	epoch := s.Position().GetEpoch()

	if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p1.done
	p1.done <- nil
	startProcess(t, "--listen", addr, "--history-store", "memory")

	ev := waitEvent(t, s, hubclient.EventNotRecovered)
	if ev.Position.GetEpoch() == epoch {
		t.Fatalf("epoch unchanged across a restart: %v", ev.Position)
	}
	if _, err := pub.PublishText(ctx, "restart", "after"); err != nil {
		t.Fatal(err)
	}
	if m := waitEvent(t, s, hubclient.EventMessage); m.Message.GetBody().GetText() != "after" || m.Message.GetOffset() != 1 {
		t.Fatalf("after restart: %v", m.Message)
	}
}

func waitEvent(t *testing.T, s *hubclient.Subscription, kind hubclient.EventKind) hubclient.Event {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatal("events closed")
			}
			if ev.Kind == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event %d", kind)
		}
	}
}
