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

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
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

// The server's upgrade checks see the same request through Serve as through
// net/http: the client's address for the per-IP limit (429 with Retry-After),
// the connection cap (503), and the subprotocol that picks JSON.
func TestServeUpgradeChecks(t *testing.T) {
	srv, addr, _ := serveTransport(t, Config{ConnectRatePerIP: 0.001, ConnectBurstPerIP: 2, MaxConnections: 1})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	dial := func(proto string) (*websocket.Conn, *http.Response, error) {
		return (&websocket.Dialer{Subprotocols: []string{proto}}).Dial("ws://"+addr+"/ws", nil)
	}
	ws, _, err := dial(wire.SubprotocolJSON)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ws.Subprotocol() != wire.SubprotocolJSON {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	b, _ := wire.Marshal(&hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "j"}}}, wire.JSON)
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	if mt, reply, err := ws.ReadMessage(); err != nil || mt != websocket.TextMessage || !strings.Contains(string(reply), `"connect"`) {
		t.Fatalf("JSON connect reply: %d %s %v", mt, reply, err)
	}
	// The second attempt is within the burst but over the connection cap.
	if _, resp, err := dial(wire.SubprotocolProto); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("over the cap: %v %v", resp, err)
	}
	// The third is over the address's rate.
	_, resp, err := dial(wire.SubprotocolProto)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the rate: %v %v", resp, err)
	}
	if n := srv.counters.RateLimited.Load(); n != 1 {
		t.Fatalf("rate limited %d", n)
	}
}

// FuzzUpgradeRequest feeds arbitrary bytes to the upgrade listener as a
// client's first bytes: it never panics or hangs, and whatever it answers
// is an HTTP/1.1 response (an upgrade, an error reply) or nothing.
func FuzzUpgradeRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: hubbub.v1.proto\r\n\r\n",
		"GET /ws?token=abc HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /ws HTTP/1.1\r\nno colon\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /ws",
		"\x00\x01\x02",
		"",
	} {
		f.Add([]byte(seed))
	}
	node := actors.NewNode(actors.Config{}, actors.Options{})
	srv := NewServer(node, Config{}, nil)
	srv.http.ReadHeaderTimeout = time.Second
	u := newUpgradeListener(nil, srv)
	drained := make(chan struct{})
	go func() { // owner: this fuzz target; ends when u.done closes
		defer close(drained)
		for {
			select {
			case c := <-u.other: // plain requests: net/http's, not served here
				_ = c.Close()
			case <-u.done:
				return
			}
		}
	}()
	f.Cleanup(func() {
		u.once.Do(func() { close(u.done) })
		<-drained
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = l.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		client, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		go func() { defer close(served); u.serve(server) }() // owner: this iteration
		_ = client.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := client.Write(data); err != nil {
			t.Fatal(err)
		}
		_ = client.(*net.TCPConn).CloseWrite() // the request ends here
		head := make([]byte, 9)
		n, _ := io.ReadFull(client, head)
		if n > 0 && string(head[:n]) != "HTTP/1.1 "[:n] {
			t.Fatalf("answer starts %q", head[:n])
		}
		_ = client.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("the upgrade listener did not finish with a closed client")
		}
	})
}
