// Package server builds a whole Hubbub node from one configuration: the actor
// node (rooms, connections, relay, cluster membership), the WebSocket
// transport, health and metrics endpoints. `hubbub serve` and the end-to-end
// tests wire a node through New alone, so both run the same code.
//
// # Concurrency
//
// New and Shutdown are called by the node's owner; Serve blocks on its
// caller's goroutine until Shutdown. Handle must be called before Serve. All
// other goroutines (the transport's pumps and pinger, the actors) are owned by
// the transport and the actor node and end in Shutdown.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/api"
	"github.com/hubbub-chat/hubbub/auth"
	"github.com/hubbub-chat/hubbub/hooks"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/transport"
)

// Config is every setting of one node. The zero value is a single node with
// every default, history in memory, metrics and profiles off.
type Config struct {
	// Node configures the actors. Its PingInterval and MaxFrameBytes are
	// taken from Transport: set them there.
	Node actors.Config
	// Transport configures the HTTP and WebSocket side.
	Transport transport.Config
	// Metrics serves Prometheus metrics at /metrics.
	Metrics bool
	// Pprof serves Go profiles at /debug/pprof/.
	Pprof bool
	// API, when set, builds the server API for ServeAPI.
	API *api.Config
	// Hooks, when set, calls the backend's hooks on connect, join, publish and rpc.
	Hooks *hooks.Config
}

// Options are a node's collaborators; the zero value logs nothing, runs in
// development mode (no tokens) and traces nothing.
type Options struct {
	Logger  *slog.Logger
	Auth    *auth.Authenticator
	Tracing *telemetry.Tracing
	// Inject is for fault-injection tests only (see actors.Options.Inject).
	Inject func(kind string, msg any)
	// OnStall is called when the node finds it was frozen (see actors.Options.OnStall).
	OnStall func(gap time.Duration)
}

// Server is one running node.
type Server struct {
	node      *actors.Node
	transport *transport.Server
	metrics   *telemetry.Metrics
	counters  *telemetry.Counters
	api       *api.Handler
	apiSrv    *http.Server
	apiPages  map[string]http.Handler // beside the API on its listener (the admin console)
	apiMu     sync.Mutex
	apiDone   bool // Shutdown ran: ServeAPI returns at once
	stopOnce  sync.Once
	stopErr   error
}

// New builds a node and its transport. Nothing listens until Serve.
func New(cfg Config, opts Options) (*Server, error) {
	cfg.Transport = cfg.Transport.WithDefaults()
	// One place for settings both sides need: the transport enforces them,
	// the connect reply reports them.
	cfg.Node.PingInterval = cfg.Transport.PingInterval
	cfg.Node.MaxFrameBytes = cfg.Transport.MaxFrameBytes
	counters := &telemetry.Counters{}
	var hc *hooks.Client
	if cfg.Hooks != nil {
		cfg.Transport.HookHeaders = cfg.Hooks.Headers
		var err error
		if hc, err = hooks.New(*cfg.Hooks, hooks.Options{Logger: opts.Logger, Tracing: opts.Tracing, Counters: counters}); err != nil {
			return nil, err
		}
	}
	node, err := actors.StartNode(cfg.Node, actors.Options{Logger: opts.Logger, Auth: opts.Auth, Tracing: opts.Tracing,
		Counters: counters, Inject: opts.Inject, OnStall: opts.OnStall, Hooks: hc})
	if err != nil {
		return nil, err
	}
	s := &Server{node: node, counters: counters, transport: transport.NewServer(node, cfg.Transport, opts.Logger)}
	if cfg.Metrics {
		m, err := telemetry.NewMetrics(counters)
		if err == nil {
			err = s.transport.RegisterMetrics(m.Meter())
		}
		if err != nil {
			_ = node.Shutdown(context.Background())
			return nil, err
		}
		s.metrics = m
		s.transport.Handle("/metrics", m.Handler())
	}
	if cfg.API != nil {
		var meter metric.Meter
		if s.metrics != nil {
			meter = s.metrics.Meter()
		}
		h, err := api.New(node, *cfg.API, api.Options{Logger: opts.Logger, Tracing: opts.Tracing, Meter: meter})
		if err != nil {
			_ = node.Shutdown(context.Background())
			return nil, err
		}
		s.api = h
	}
	if cfg.Pprof {
		s.transport.Handle("/debug/pprof/", http.HandlerFunc(pprof.Index))
		s.transport.Handle("/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		s.transport.Handle("/debug/pprof/heap", pprof.Handler("heap"))
		s.transport.Handle("/debug/pprof/goroutine", pprof.Handler("goroutine"))
	}
	return s, nil
}

// Handle adds an HTTP handler (the chat page, for one); call it before Serve.
func (s *Server) Handle(pattern string, h http.Handler) { s.transport.Handle(pattern, h) }

// HandleAPI adds an HTTP handler on the API's listener (the admin console,
// for one); call it before ServeAPI.
func (s *Server) HandleAPI(pattern string, h http.Handler) {
	if s.apiPages == nil {
		s.apiPages = map[string]http.Handler{}
	}
	s.apiPages[pattern] = h
}

// Serve serves on l until Shutdown; it then returns nil.
func (s *Server) Serve(l net.Listener) error { return s.transport.Serve(l) }

// ServeTLS is Serve with TLS.
func (s *Server) ServeTLS(l net.Listener, certFile, keyFile string) error {
	return s.transport.ServeTLS(l, certFile, keyFile)
}

// ErrNoAPI is ServeAPI on a server built without Config.API.
var ErrNoAPI = errors.New("server: the server API is not configured")

// ServeAPI serves the server API on l (HTTP/1.1 and cleartext HTTP/2, so
// gRPC clients work without TLS) until Shutdown; it then returns nil.
func (s *Server) ServeAPI(l net.Listener) error { return s.serveAPI(l, "", "") }

// ServeAPITLS is ServeAPI with TLS (HTTP/2 through ALPN).
func (s *Server) ServeAPITLS(l net.Listener, certFile, keyFile string) error {
	return s.serveAPI(l, certFile, keyFile)
}

func (s *Server) serveAPI(l net.Listener, certFile, keyFile string) error {
	if s.api == nil {
		return ErrNoAPI
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	var h http.Handler = s.api
	if len(s.apiPages) > 0 {
		mux := http.NewServeMux()
		mux.Handle("/", s.api)
		for pattern, page := range s.apiPages {
			mux.Handle(pattern, page)
		}
		h = mux
	}
	srv := &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	s.apiMu.Lock()
	if s.apiDone {
		s.apiMu.Unlock()
		return nil
	}
	s.apiSrv = srv
	s.apiMu.Unlock()
	var err error
	if certFile != "" {
		err = srv.ServeTLS(l, certFile, keyFile)
	} else {
		err = srv.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Node returns the node's actors.
func (s *Server) Node() *actors.Node { return s.node }

// Counters returns the node's counters.
func (s *Server) Counters() *telemetry.Counters { return s.counters }

// Shutdown closes every connection with 1001, stops the rooms and the actor
// system, and flushes metrics. It is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.apiMu.Lock()
		s.apiDone = true
		if s.api != nil {
			s.api.Close() // Tail streams end; calls in flight finish
		}
		if s.apiSrv != nil {
			_ = s.apiSrv.Shutdown(ctx) // API calls in flight finish while the rooms still run
		}
		s.apiMu.Unlock()
		s.stopErr = s.transport.Shutdown(ctx)
		if s.metrics != nil {
			s.stopErr = errors.Join(s.stopErr, s.metrics.Shutdown(ctx))
		}
	})
	return s.stopErr
}
