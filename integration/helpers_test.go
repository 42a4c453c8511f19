package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/server"
	"github.com/hubbub-chat/hubbub/transport"
)

const waitFor = 10 * time.Second

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// testServer is an in-process Hubbub server on 127.0.0.1, wired by
// server.New exactly as `hubbub serve` wires one.
type testServer struct {
	URL  string
	node *actors.Node
	srv  *server.Server
	done chan struct{}
}

// startServer starts an in-process server on a listener it holds from the
// start, so no other process can take its port.
func startServer(t testing.TB, nc actors.Config, tc transport.Config, opts ...server.Options) *testServer {
	t.Helper()
	return startServerConfig(t, server.Config{Node: nc, Transport: tc}, opts...)
}

func startServerConfig(t testing.TB, cfg server.Config, opts ...server.Options) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var o server.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	srv, err := server.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{URL: "ws://" + l.Addr().String() + "/ws", node: srv.Node(), srv: srv, done: make(chan struct{})}
	go func() { // owner: the test; joined in shutdown
		_ = s.srv.Serve(l)
		close(s.done)
	}()
	t.Cleanup(s.shutdown)
	return s
}

func (s *testServer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}

// eventually polls cond until it holds or the wait ends.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func longString(n int) string { return strings.Repeat("x", n) }

// freePort returns a 127.0.0.1 port for a server process that must know
// its port before it starts (cluster transports and membership ports, which
// peers are told in advance). Ports come from below the kernel's ephemeral
// range (32768-60999), so no socket bound to port 0 can take one between
// this check and the process binding it; a lock file per port, held until
// the test binary exits, keeps test binaries running in parallel apart.
func freePort(t *testing.T) string {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	dir := filepath.Join(os.TempDir(), "hubbub-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for tries := 0; tries < 2000; tries++ {
		port := portBase + (nextPort+os.Getpid()*37)%portSpan
		nextPort++
		lock, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			lock.Close() // another test binary holds it
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			lock.Close() // in use by something else
			continue
		}
		_ = l.Close()
		heldPorts = append(heldPorts, lock) // released when the test binary exits
		return addr
	}
	t.Fatal("no free port")
	return ""
}

const portBase, portSpan = 20000, 12000

var (
	portMu    sync.Mutex
	nextPort  int
	heldPorts []*os.File
)

func httpBase(wsURL string) string {
	return strings.TrimSuffix(strings.Replace(wsURL, "ws://", "http://", 1), "/ws")
}

// startCluster starts n `hubbub serve` processes forming an automanaged
// cluster on 127.0.0.1, each with the extra flags.
func startCluster(t *testing.T, n int, extra ...string) []*serverProcess {
	t.Helper()
	manage := make([]string, n)
	for i := range manage {
		manage[i] = freePort(t)
	}
	seeds := strings.Join(manage, ",")
	nodes := make([]*serverProcess, n)
	for i := range nodes {
		_, port, _ := net.SplitHostPort(manage[i])
		nodes[i] = startProcess(t, append([]string{"--cluster-provider", "automanaged", "--cluster-bind", freePort(t),
			"--cluster-automanage-port", port, "--cluster-seeds", seeds}, extra...)...)
	}
	for _, p := range nodes {
		eventually(t, "node ready", func() bool {
			resp, err := httpGet(httpBase(p.URL) + "/readyz")
			return err == nil && resp == 200
		})
	}
	return nodes
}

func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// startEtcd runs a real etcd (Debian's etcd-server) on 127.0.0.1 and returns its client endpoint.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed; ./scripts/test.sh installs Debian's etcd-server")
	}
	client, peer := freePort(t), freePort(t)
	cmd := exec.Command(bin, "--name", "hubbub-test", "--data-dir", t.TempDir(),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "hubbub-test=http://"+peer, "--log-level", "error")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	eventually(t, "etcd to answer", func() bool {
		code, err := httpGet("http://" + client + "/health")
		return err == nil && code == 200
	})
	return client
}

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
		// The hubbubfault tag adds the fault injection some tests use
		// (HUBBUB_TEST_FAULT_TEXT); a normal build has none.
		out, err := exec.Command("go", "build", "-tags", "hubbubfault", "-o", binPath, "../cmd/hubbub").CombinedOutput()
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
	API  string // the server API's base URL, with --api-listen
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
	wantAPI := slices.Contains(args, "--api-listen")
	go p.readLogs(stderr) // owner: the process; ends with its stderr
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	deadline := time.After(waitFor)
	for p.URL == "" || (wantAPI && p.API == "") {
		select {
		case rec := <-p.logs:
			switch rec["msg"] {
			case "hubbub listening":
				p.URL, _ = rec["url"].(string)
			case "server API listening":
				addr, _ := rec["addr"].(string)
				p.API = "http://" + addr
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

// restartProcess stops p (SIGTERM, or SIGKILL when kill) and starts it again
// on the same address with args.
func restartProcess(t *testing.T, p *serverProcess, kill bool, args ...string) *serverProcess {
	t.Helper()
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err := <-p.done
	p.done <- err // for the cleanup
	if !kill && err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(p.URL, "ws://"), "/ws")
	return startProcess(t, append([]string{"--listen", addr}, args...)...)
}
