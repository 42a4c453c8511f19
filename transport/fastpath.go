package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// upgradeListener takes the server's plain-TCP connections and upgrades the
// WebSocket ones itself: it reads the request with http.ReadRequest on a kept
// goroutine and hands it to the same handler (serveWS), with a response
// writer that only answers errors and hijacks. Every other request (health,
// readiness, anything an embedding program added) goes to net/http
// unchanged, through Accept, with the bytes already read in front.
//
// net/http serves each connection with a goroutine of its own, a context, a
// read deadline for the headers, a background read started for every request
// without a body (to notice a client that goes away), and on Hijack a stop
// of that read by moving the deadline into the past and back. For a socket
// that becomes a WebSocket all of that is thrown away at once, and in a
// connect storm it was a sixth of the server's CPU.
type upgradeListener struct {
	net.Listener
	s       *Server
	other   chan net.Conn // connections for net/http
	done    chan struct{} // closed by Close
	once    sync.Once
	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections whose request is being read
	acceptE error                 // the inner listener's error, under mu
	readers sync.Pool             // of *bufio.Reader
}

func newUpgradeListener(l net.Listener, s *Server) *upgradeListener {
	u := &upgradeListener{Listener: l, s: s, other: make(chan net.Conn), done: make(chan struct{}), pending: map[net.Conn]struct{}{}}
	u.readers.New = func() any { return bufio.NewReaderSize(nil, 4096) }
	return u
}

// acceptLoop accepts until the listener closes; it retries temporary errors
// (out of file descriptors) with a growing pause, as net/http does.
func (u *upgradeListener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := u.Listener.Accept()
		if err != nil {
			// Out of descriptors (EMFILE, ENFILE) and the like pass: wait and retry.
			var tmp interface{ Temporary() bool }
			if errors.As(err, &tmp) && tmp.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-u.done:
				}
			}
			u.mu.Lock()
			u.acceptE = err
			u.mu.Unlock()
			_ = u.Close()
			return
		}
		delay = 0
		u.mu.Lock()
		select {
		case <-u.done:
			u.mu.Unlock()
			_ = c.Close()
			return
		default:
		}
		u.pending[c] = struct{}{}
		u.mu.Unlock()
		u.s.run.Go(func() { u.serve(c) })
	}
}

// Accept hands net/http the connections that are not WebSocket upgrades.
func (u *upgradeListener) Accept() (net.Conn, error) {
	select {
	case c := <-u.other:
		return c, nil
	case <-u.done:
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.acceptE != nil {
			return nil, u.acceptE
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections whose request is still
// being read; upgrades under way finish on the server's goroutines, which
// Shutdown waits for.
func (u *upgradeListener) Close() error {
	var err error
	u.once.Do(func() {
		u.mu.Lock()
		close(u.done)
		for c := range u.pending {
			_ = c.Close()
		}
		u.mu.Unlock()
		err = u.Listener.Close()
	})
	return err
}

// wsRequestPrefix is how a request for the WebSocket endpoint starts.
var wsRequestPrefix = []byte("GET /ws")

func (u *upgradeListener) serve(c net.Conn) {
	br := u.readers.Get().(*bufio.Reader)
	br.Reset(c)
	_ = c.SetReadDeadline(time.Now().Add(u.s.http.ReadHeaderTimeout))
	head, err := br.Peek(len(wsRequestPrefix) + 1)
	isWS := err == nil && bytes.HasPrefix(head, wsRequestPrefix) && (head[len(head)-1] == ' ' || head[len(head)-1] == '?')
	if !isWS {
		u.forget(c)
		if err != nil && len(head) == 0 {
			u.readers.Put(br)
			_ = c.Close()
			return
		}
		// net/http reads the request again from the start and sets its own deadlines.
		select {
		case u.other <- &peekedConn{Conn: c, br: br}:
		case <-u.done:
			_ = c.Close()
		}
		return
	}
	req, err := http.ReadRequest(br)
	u.forget(c)
	if err != nil {
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"))
		_ = c.Close()
		u.readers.Put(br)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	req.RemoteAddr = c.RemoteAddr().String()
	w := &upgradeResponse{c: c, br: br, header: http.Header{}}
	u.s.serveWS(w, req)
	if !w.hijacked {
		w.finish()
		_ = c.Close()
	}
	if !w.hijacked || u.s.poll != nil {
		// Unless gorilla kept it to read the socket with (it does only when
		// it is given no buffer size of its own and no poller lends one).
		br.Reset(nil)
		u.readers.Put(br)
	}
}

// forget drops a connection whose request has been read (or given up on)
// from the ones Close closes.
func (u *upgradeListener) forget(c net.Conn) {
	u.mu.Lock()
	delete(u.pending, c)
	u.mu.Unlock()
}

// peekedConn is a connection for net/http whose first bytes were read into br.
type peekedConn struct {
	net.Conn
	br *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.br.Read(b) }

// upgradeResponse is the response writer of an upgrade read by the
// upgradeListener: gorilla hijacks it; an error reply (http.Error) is written
// as a complete HTTP/1.1 response and the connection closed.
type upgradeResponse struct {
	c        net.Conn
	br       *bufio.Reader
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (w *upgradeResponse) Header() http.Header { return w.header }

func (w *upgradeResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *upgradeResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// Hijack implements http.Hijacker for gorilla's Upgrade.
func (w *upgradeResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked || w.status != 0 {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	return w.c, bufio.NewReadWriter(w.br, bufio.NewWriterSize(w.c, 16)), nil
}

// finish writes the reply of a request that was not upgraded.
func (w *upgradeResponse) finish() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.header.Set("Connection", "close")
	_ = w.header.Write(&b)
	b.WriteString("\r\n")
	b.Write(w.body.Bytes())
	_ = w.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = w.c.Write(b.Bytes())
}
