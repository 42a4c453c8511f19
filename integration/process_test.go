package integration

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// SIGTERM closes every client with 1001 and a reconnect hint, and the process exits 0.
func TestProcessGracefulShutdownOnSIGTERM(t *testing.T) {
	p := startProcess(t)
	a := connect(t, p.URL, wire.Proto, "a")
	b := connect(t, p.URL, wire.JSON, "b")
	a.join("proc", nil)
	b.join("proc", nil)
	b.publish("proc", "hello")
	if m := a.nextMessage(); m.GetBody().GetText() != "hello" {
		t.Fatalf("got %v", m)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a, b} {
		var disc *hubbubv1.Disconnect
		for f := c.read(waitFor); f != nil; f = c.read(waitFor) {
			if d := f.GetDisconnect(); d != nil {
				disc = d
			}
		}
		if closeCode(c.err()) != wire.CloseGoingAway || !disc.GetReconnect() {
			t.Fatalf("close %v, disconnect %v", c.err(), disc)
		}
	}
	select {
	case err := <-p.done:
		p.done <- err // for cleanup
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("process did not exit")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

func TestProcessVersionAndBadFlags(t *testing.T) {
	out, err := exec.Command(hubbubBinary(t), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "hubbub ") {
		t.Fatalf("version: %q %v", out, err)
	}
	// A parse error prints the error and a pointer to -h, not the whole help.
	cmd := exec.Command(hubbubBinary(t), "serve", "--max-frame-bytes", "-5")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--max-frame-bytes") || strings.Count(string(out), "\n") > 2 {
		t.Fatalf("bad flag value: %v\n%s", err, out)
	}
	// -h groups the flags by topic and lists no test-only switch.
	out, err = exec.Command(hubbubBinary(t), "serve", "-h").Output()
	if err != nil || !strings.Contains(string(out), "\nCluster:\n") || strings.Contains(string(out), "fault-") || strings.Contains(string(out), "FAULT") {
		t.Fatalf("serve -h: %v\n%s", err, out)
	}
	cmd = exec.Command(hubbubBinary(t), "serve", "--listen", "127.0.0.1:0", "--log-format", "xml")
	if err := cmd.Run(); err == nil {
		t.Fatal("bad log format accepted")
	}
}

// Flags have HUBBUB_* environment equivalents.
func TestProcessEnvironmentConfig(t *testing.T) {
	t.Setenv("HUBBUB_HISTORY_SIZE", "2")
	p := startProcess(t)
	c := connect(t, p.URL, wire.Proto, "env")
	for i := 0; i < 5; i++ {
		c.publish("envroom", "x")
	}
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "envroom"}}})
	if n := len(r.GetHistory().GetMessages()); n != 2 {
		t.Fatalf("history size from env: %d messages", n)
	}
}
