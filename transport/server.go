package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/internal/workers"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// Server serves Hubbub over HTTP: /ws (WebSocket), /healthz and /readyz.
type Server struct {
	cfg      Config
	node     *actors.Node
	log      *slog.Logger
	counters *telemetry.Counters
	upgrader websocket.Upgrader
	mux      *http.ServeMux
	http     *http.Server

	perIP    *ipLimiter
	open     atomic.Int64 // open WebSockets
	closing  atomic.Bool
	mu       sync.Mutex
	conns    map[*wsConn]struct{}
	handlers sync.WaitGroup
	stopOnce sync.Once
	stopErr  error

	pingerStop, pingerDone chan struct{}
	poll                   *poller   // nil: a goroutine reads each connection
	readers                sync.Pool // *bufio.Reader of ReadBufferBytes, lent to polled connections while they read
	pollUpgrader           websocket.Upgrader
	// run keeps goroutines for write pumps and polled reads, whose stacks
	// then need not grow again at every start
	run *workers.Pool
}

// pollHijacker hands gorilla a buffered reader of ours on the hijacked
// socket (gorilla reads through a hijacked reader it is given when its own
// ReadBufferSize is 0), so the poller can tell when the socket is drained.
type pollHijacker struct {
	http.ResponseWriter
	readers  *sync.Pool
	br, lent *bufio.Reader
}

func (h *pollHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return nc, brw, err // gorilla refuses input sent before the handshake's end
	}
	h.lent = h.readers.Get().(*bufio.Reader)
	h.lent.Reset(nc)
	h.br = new(bufio.Reader)
	*h.br = *h.lent
	// gorilla writes the handshake's answer from this writer's buffer (grown
	// as needed) and keeps neither.
	return nc, bufio.NewReadWriter(h.br, bufio.NewWriterSize(nc, 16)), nil
}

// NewServer returns a server for node. Extra handlers may be added with Handle
// before Serve.
func NewServer(node *actors.Node, cfg Config, log *slog.Logger) *Server {
	cfg = cfg.WithDefaults()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{cfg: cfg, node: node, log: log, counters: node.Counters(), conns: map[*wsConn]struct{}{}, mux: http.NewServeMux(),
		perIP: newIPLimiter(cfg.ConnectRatePerIP, cfg.ConnectBurstPerIP)}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout:  10 * time.Second,
		ReadBufferSize:    cfg.ReadBufferBytes,
		WriteBufferSize:   256, // data frames bypass gorilla's writer; see frame.go
		WriteBufferPool:   &sync.Pool{},
		Subprotocols:      wire.Subprotocols,
		CheckOrigin:       s.checkOrigin,
		EnableCompression: cfg.Compression,
		Error:             s.upgradeError,
	}
	s.readers.New = func() any { return bufio.NewReaderSize(nil, cfg.ReadBufferBytes) }
	s.pollUpgrader = s.upgrader
	s.pollUpgrader.ReadBufferSize = 0 // read through the hijacker's buffer
	// gorilla reads through the hijacked buffer only when it holds more
	// than 256 bytes.
	if cfg.Reader != ReaderGoroutine && cfg.ReadBufferBytes > 256 {
		if p, err := newPoller(); err == nil {
			s.poll = p
		} else {
			log.Info("reading every connection on a goroutine of its own", "why", err)
		}
	}
	s.mux.HandleFunc("/ws", s.serveWS)
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("/readyz", s.serveReady)
	s.http = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	// A fan-out kicks a write pump on every member's connection at once, and
	// again a few milliseconds later: the goroutines of one burst are kept
	// (with their grown stacks) while bursts recur, and trimmed to a few per
	// core within seconds of the last.
	s.run = workers.New(maxKeptRunners)
	s.run.Trim(32*runtime.GOMAXPROCS(0), time.Second)
	s.pingerStop, s.pingerDone = make(chan struct{}), make(chan struct{})
	go s.pinger() // owner: the server; joined by Shutdown
	return s
}

// maxKeptRunners bounds the goroutines kept idle for pumps and polled reads
// between bursts.
const maxKeptRunners = 1 << 14

// pinger pings every connection once per PingInterval from one goroutine and
// one ticker, instead of a ticker per connection.
func (s *Server) pinger() {
	defer close(s.pingerDone)
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.pingerStop:
			return
		case <-t.C:
			// A polled connection has no read deadline running while idle:
			// one silent for longer than the keep-alive is dropped here.
			silent := time.Now().Add(-s.cfg.PingInterval - s.cfg.PongTimeout).UnixNano()
			s.mu.Lock()
			for c := range s.conns {
				if c.poll.Load() != nil && c.lastRead.Load() < silent {
					c.abort()
					continue
				}
				c.ping()
			}
			s.mu.Unlock()
		}
	}
}

// Handle registers an extra HTTP handler (for example a page or metrics).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	u := newUpgradeListener(l, s)
	go u.acceptLoop() // owner: the server; ends when the listener closes (Shutdown closes it)
	err := s.http.Serve(u)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeTLS is Serve with TLS from the certificate and key files.
func (s *Server) ServeTLS(l net.Listener, certFile, keyFile string) error {
	err := s.http.ServeTLS(l, certFile, keyFile)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// serveReady answers 200 while the server accepts connections, the node has
// joined its cluster, and a probe through the node's relay and a room actor
// answers within ReadyTimeout; 503 with the reason otherwise. /healthz stays
// a cheap liveness check that touches no actor.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if !s.node.Ready() {
		http.Error(w, "not ready: the node has not joined its cluster", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	if err := s.node.Probe(ctx); err != nil {
		http.Error(w, "not ready: actor probe failed: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

func (s *Server) upgradeError(w http.ResponseWriter, _ *http.Request, status int, reason error) {
	s.counters.UpgradesRefused.Add(1)
	http.Error(w, "hubbub: "+reason.Error(), status)
}

// selectEncoding picks the first of the client's subprotocols the server speaks.
func selectEncoding(r *http.Request) (wire.Encoding, bool) {
	for _, p := range websocket.Subprotocols(r) {
		if enc, ok := wire.EncodingFor(p); ok {
			return enc, true
		}
	}
	return 0, false
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		s.counters.UpgradesRefused.Add(1)
		http.Error(w, "hubbub: shutting down", http.StatusServiceUnavailable)
		return
	}
	if !s.perIP.allow(r.RemoteAddr) {
		s.counters.UpgradesRefused.Add(1)
		s.counters.RateLimited.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "hubbub: too many connection attempts from your address", http.StatusTooManyRequests)
		return
	}
	if max := s.cfg.MaxConnections; max > 0 && s.open.Load() >= int64(max) {
		s.counters.UpgradesRefused.Add(1)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "hubbub: server at its connection limit", http.StatusServiceUnavailable)
		return
	}
	enc, ok := selectEncoding(r)
	if !ok && websocket.IsWebSocketUpgrade(r) {
		s.counters.UpgradesRefused.Add(1)
		w.Header().Set("Sec-WebSocket-Protocol", strings.Join(wire.Subprotocols, ", "))
		http.Error(w, "hubbub: offer the WebSocket subprotocol "+wire.SubprotocolProto+" or "+wire.SubprotocolJSON, http.StatusBadRequest)
		return
	}
	// Count the handler before upgrading, under the lock Shutdown takes to
	// set closing: http.Server.Shutdown does not wait for hijacked
	// connections, so a handler counted any later could race Shutdown's Wait.
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		s.counters.UpgradesRefused.Add(1)
		http.Error(w, "hubbub: shutting down", http.StatusServiceUnavailable)
		return
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	// Upgrade answers with the first server subprotocol the client offered,
	// which is enc. A plain TCP socket is read through a buffer of ours, so
	// the poller can tell when it is drained (see wsConn.readSome).
	up, hj := &s.upgrader, (*pollHijacker)(nil)
	if s.poll != nil && r.TLS == nil {
		hj = &pollHijacker{ResponseWriter: w, readers: &s.readers}
		w, up = hj, &s.pollUpgrader
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		s.handlers.Done()
		return // the upgrader replied
	}
	info := actors.ConnInfo{Token: r.URL.Query().Get("token"), RemoteAddr: r.RemoteAddr}
	for _, name := range s.cfg.HookHeaders {
		if v := r.Header.Values(name); len(v) > 0 {
			if info.Headers == nil {
				info.Headers = make(map[string]string, len(s.cfg.HookHeaders))
			}
			sep := ", "
			if http.CanonicalHeaderKey(name) == "Cookie" {
				sep = "; " // how cookie headers combine (RFC 6265)
			}
			info.Headers[http.CanonicalHeaderKey(name)] = strings.Join(v, sep)
		}
	}
	c := newWSConn(ws, enc, &s.cfg, s.log, s.counters)
	c.run = s.run
	c.deflate = s.cfg.Compression && offersDeflate(r)
	s.open.Add(1)
	h := s.openConn(c, info)
	if h != nil && hj != nil && hj.br != nil {
		if sc, ok := c.nc.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				// No goroutine while idle: the poller starts a reader when
				// input arrives, and the last reader ends the connection.
				c.br, c.brLent, c.readers, c.h, c.raw, c.ended = hj.br, hj.lent, &s.readers, h, raw, func() { s.endConn(c, h) }
				c.setHandlers()
				c.reading.Store(true)
				c.poll.Store(s.poll)
				c.readFirst()
				return
			}
		}
	}
	// Otherwise the connection gets a goroutine of its own and the HTTP
	// handler returns: net/http's per-request state (its 4 KiB read and
	// write buffers, the request and its context) would otherwise live as
	// long as the socket.
	go func() { // owner: the server; joined by Shutdown through s.handlers
		if h != nil {
			c.readLoop(h)
		} else {
			close(c.readerDone)
		}
		s.endConn(c, h)
	}()
}

// openConn starts a connection's actor; nil when the node refused it (the
// connection is then closed with 1001).
func (s *Server) openConn(c *wsConn, info actors.ConnInfo) *actors.ConnHandle {
	if !s.track(c) {
		c.requestClose(wire.CloseGoingAway, wire.CloseReason(wire.CloseGoingAway), false)
	}
	s.counters.ConnectionsOpened.Add(1)
	h, err := s.node.OpenConn(c, info)
	if err != nil {
		c.requestClose(wire.CloseGoingAway, wire.CloseReason(wire.CloseGoingAway), false)
	}
	return h
}

// endConn ends a connection once its reading has ended: it waits for the
// write pump, closes the socket and stops the connection actor. It runs on
// the goroutine that read last.
func (s *Server) endConn(c *wsConn, h *actors.ConnHandle) {
	if c.closeReq.Load() == nil {
		c.abort() // the peer went away without a close frame
	}
	c.stopPumps() // the close, if any, is written by a pump
	if p := c.poll.Load(); p != nil {
		p.remove(c)
	}
	_ = c.nc.Close()
	_ = c.ws.Close()
	if h != nil {
		h.Close(s.cfg.WriteTimeout)
	}
	s.counters.CountClose(c.closeCode())
	s.untrack(c)
	s.open.Add(-1)
	s.handlers.Done()
}

func (s *Server) track(c *wsConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	return !s.closing.Load()
}

func (s *Server) untrack(c *wsConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting connections, closes every WebSocket with 1001
// (after writing what is queued to it), waits for their handlers, then stops
// the node's actors. It is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
			defer cancel()
		}
		// Order matters: no new sockets, then close the open ones, then stop
		// the rooms they were talking to, so no room outlives its members' actors.
		s.mu.Lock()
		s.closing.Store(true)
		for c := range s.conns {
			c.Close(wire.CloseGoingAway, wire.CloseReason(wire.CloseGoingAway))
		}
		s.mu.Unlock()
		s.stopErr = s.http.Shutdown(ctx)
		done := make(chan struct{})
		go func() { s.handlers.Wait(); close(done) }() // owner: Shutdown; ends when the handlers do
		select {
		case <-done:
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.abort()
			}
			s.mu.Unlock()
			<-done
		}
		close(s.pingerStop)
		<-s.pingerDone
		if s.poll != nil {
			s.poll.close()
		}
		s.run.Close()
		if err := s.node.Shutdown(ctx); err != nil && s.stopErr == nil {
			s.stopErr = err
		}
	})
	return s.stopErr
}
