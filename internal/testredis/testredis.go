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
	t    testing.TB
	bin  string
	addr string
	dir  string
	cmd  *exec.Cmd
}

// Start starts redis-server and returns its redis:// URL. It skips the test
// when redis-server is not installed (./scripts/test.sh installs Debian's
// redis-server).
func Start(t testing.TB) string { return New(t).URL }

// New starts a redis-server that the test can stop and restart.
func New(t testing.TB) *Server {
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
	s := &Server{t: t, bin: bin, addr: addr, dir: t.TempDir(), URL: fmt.Sprintf("redis://%s/0", addr)}
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
	cmd := exec.Command(s.bin, "--bind", "127.0.0.1", "--port", port, "--dir", s.dir, "--logfile", logFile,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes", "--loglevel", "warning")
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
