package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// serveTransport runs a Server on a real listener through Serve, the way the
// binary does (the upgradeListener in front of net/http).
func serveTransport(t *testing.T, cfg Config) (*Server, string, chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(actors.NewNode(actors.Config{}, actors.Options{}), cfg, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }() // owner: this test; ends at Shutdown
	return srv, l.Addr().String(), done
}

func rawRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// Through Serve, WebSocket upgrades are read by the server itself and every
// other request reaches net/http with nothing lost: both work on one port,
// refused upgrades get complete HTTP answers, a socket that never sends a
// request does not hold up Shutdown, and nothing is left running after it.
func TestServeUpgradesAndPlainHTTPOnOnePort(t *testing.T) {
	srv, addr, done := serveTransport(t, Config{})
	ws := dialConnected(t, "ws://"+addr+"/ws?token=") // a query after /ws takes the same path

	// Plain requests, including one whose path only starts like the endpoint's.
	if resp, body := rawRequest(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
	if resp, _ := rawRequest(t, addr, "GET /wsx HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/wsx: %d", resp.StatusCode)
	}
	// Refused upgrades: not a WebSocket request, no subprotocol, a request that does not parse.
	if resp, body := rawRequest(t, addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "websocket") {
		t.Fatalf("plain GET /ws: %d %q", resp.StatusCode, body)
	}
	resp, body := rawRequest(t, addr, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "subprotocol") || resp.Header.Get("Sec-WebSocket-Protocol") == "" {
		t.Fatalf("no subprotocol: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ := rawRequest(t, addr, "GET /ws HTTP/1.1\r\nno colon here\r\n\r\n"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed request: %d", resp.StatusCode)
	}
	if n := srv.counters.UpgradesRefused.Load(); n < 2 {
		t.Fatalf("refused upgrades counted %d", n)
	}
	// The upgraded connection still works after all that.
	writeCommand(t, ws, &hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}})
	if f := readServerFrame(t, ws); f.GetId() != 2 {
		t.Fatalf("after the plain requests: %v", f)
	}

	_ = ws.Close()
	// A socket that sent half a request line, and one that sent nothing.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	half, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	_, _ = io.WriteString(half, "GET /w")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %v with sockets that sent no request", d)
	}
	if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent socket is still open after Shutdown")
	}
}
