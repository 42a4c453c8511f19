package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// hubbubBinary builds cmd/hubbub once per test run.
func hubbubBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hubbub-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "hubbub")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/hubbub").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return binPath
}

// serverProcess is `hubbub serve` running as a separate process.
type serverProcess struct {
	cmd  *exec.Cmd
	URL  string
	logs chan map[string]any
	done chan error
}

// startProcess starts `hubbub serve` with its data in a fresh temporary
// directory; args come after the defaults, so they override them.
func startProcess(t *testing.T, args ...string) *serverProcess {
	t.Helper()
	cmd := exec.Command(hubbubBinary(t), append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir", t.TempDir()}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, logs: make(chan map[string]any, 1000), done: make(chan error, 1)}
	go p.readLogs(stderr) // owner: the process; ends with its stderr
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	deadline := time.After(waitFor)
	for p.URL == "" {
		select {
		case rec := <-p.logs:
			if rec["msg"] == "hubbub listening" {
				p.URL, _ = rec["url"].(string)
			}
		case <-deadline:
			t.Fatal("server did not report its address")
		}
	}
	return p
}

func (p *serverProcess) readLogs(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			select {
			case p.logs <- rec:
			default:
			}
		}
	}
	p.done <- p.cmd.Wait()
}

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
	cmd := exec.Command(hubbubBinary(t), "serve", "--no-such-flag")
	if err := cmd.Run(); err == nil {
		t.Fatal("bad flag accepted")
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
