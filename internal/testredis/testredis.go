// Package testredis starts a real redis-server for tests: a private process
// on a free loopback port with its data in the test's temporary directory.
package testredis

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Server is a redis-server process that a test may stop and start again on
// the same port and data (append-only file fsync-ed on every write).
type Server struct {
	URL  string
	Addr string // host:port
	t    testing.TB
	args []string
	bin  string
	addr string
	dir  string
	cmd  *exec.Cmd
}

// Start starts redis-server and returns its redis:// URL. It skips the test
// when redis-server is not installed (./scripts/test.sh installs Debian's
// redis-server).
func Start(t testing.TB) string { return New(t).URL }

// New starts a redis-server that the test can stop and restart; args are
// more redis-server options (for example "--replicaof", host, port).
func New(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed; ./scripts/test.sh installs Debian's redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := &Server{t: t, bin: bin, addr: addr, Addr: addr, args: args, dir: t.TempDir(), URL: fmt.Sprintf("redis://%s/0", addr)}
	t.Cleanup(s.Stop)
	s.Restart()
	return s
}

// Stop kills the server (SIGKILL: what was acknowledged is in its
// append-only file).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server (again) on its port and data and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	_, port, _ := net.SplitHostPort(s.addr)
	logFile := filepath.Join(s.dir, "redis.log")
	cmd := exec.Command(s.bin, append([]string{"--bind", "127.0.0.1", "--port", port, "--dir", s.dir, "--logfile", logFile,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes", "--loglevel", "warning",
		"--repl-diskless-sync-delay", "0"}, s.args...)...)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			// Answering PING means the append-only file is loaded.
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 64)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			_ = c.Close()
			if n > 0 && string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			s.t.Fatalf("redis-server did not start: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Replica starts a redis-server replicating s.
func (s *Server) Replica() *Server {
	host, port, _ := net.SplitHostPort(s.addr)
	return New(s.t, "--replicaof", host, port)
}

// StartSentinel starts a Redis Sentinel (redis-server --sentinel) watching
// primary as master, alone in its quorum, declaring it down after 1 s of
// silence. It returns the sentinel's address.
func StartSentinel(t testing.TB, master string, primary *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	host, port, _ := net.SplitHostPort(primary.addr)
	_, own, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("bind 127.0.0.1\nport %s\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 1000\n"+
		"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
		own, dir, filepath.Join(dir, "sentinel.log"), master, host, port, master, master, master)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(primary.bin, conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Fatalf("redis sentinel did not start: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
