// Package hooks calls a backend's hubbub.hooks.v1.Hooks service: the connect,
// join, publish and rpc hooks through which a backend decides who a
// connection is and what it may do.
//
// # Concurrency
//
// A Client is safe for concurrent use. Its methods block for at most the
// configured timeout; the actors call them from goroutines of their own and
// continue with the answer through ReenterAfter, never blocking an actor.
// The package starts no goroutines.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"

	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	"github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1/hooksv1connect"
	"github.com/hubbub-chat/hubbub/telemetry"
)

// Config configures the hook client. Zero values take the defaults noted.
type Config struct {
	// URL is the backend's base URL, e.g. http://127.0.0.1:9000.
	URL string
	// Protocol: "json" (Connect's HTTP+JSON, default), "proto" (Connect with
	// binary protobuf) or "grpc" (gRPC; over http:// it speaks HTTP/2 in the clear).
	Protocol string
	// Secret, when set, is sent as "Authorization: Bearer <secret>".
	Secret string
	// Timeout bounds one hook call. Default 2s.
	Timeout time.Duration
	// MaxConcurrent bounds the calls in flight; more wait within their timeout. Default 256.
	MaxConcurrent int
	// Headers are the WebSocket upgrade's HTTP headers the Connect hook
	// receives. Default none.
	Headers []string
	// BreakerFailures consecutive failures open the circuit. Default 5.
	BreakerFailures int
	// BreakerCooldown is how long an open circuit fails calls at once before
	// letting one through to try the backend again. Default 2s.
	BreakerCooldown time.Duration
}

// ErrUnavailable is a hook call that got no usable answer: the backend is
// down, slow, answered garbage or an error, or the circuit is open. Clients
// get a temporary error; connects are closed with 1013 (try again later).
var ErrUnavailable = errors.New("hooks: backend unavailable")

// Client calls the hooks.
type Client struct {
	api     hooksv1connect.HooksClient
	secret  string
	timeout time.Duration
	sem     chan struct{}
	br      breaker
	log     *slog.Logger
	tracing *telemetry.Tracing
	count   *telemetry.Counters
}

// Options are the client's collaborators; nil ones are off.
type Options struct {
	Logger   *slog.Logger
	Tracing  *telemetry.Tracing
	Counters *telemetry.Counters
}

// New builds a client; it does not contact the backend.
func New(cfg Config, o Options) (*Client, error) {
	log := o.Logger
	if cfg.URL == "" {
		return nil, errors.New("hooks: no URL")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 256
	}
	if cfg.BreakerFailures <= 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = 2 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.MaxConcurrent, DialContext: (&net.Dialer{Timeout: cfg.Timeout}).DialContext}
	var opts []connect.ClientOption
	switch cfg.Protocol {
	case "", "json":
		opts = append(opts, connect.WithProtoJSON())
	case "proto":
	case "grpc":
		opts = append(opts, connect.WithGRPC())
		p := new(http.Protocols)
		p.SetHTTP2(true)
		if strings.HasPrefix(cfg.URL, "http://") {
			p = new(http.Protocols)
			p.SetUnencryptedHTTP2(true)
		}
		tr.Protocols = p
	default:
		return nil, fmt.Errorf("hooks: protocol %q is not json, proto or grpc", cfg.Protocol)
	}
	c := &Client{
		api:    hooksv1connect.NewHooksClient(&http.Client{Transport: tr}, strings.TrimSuffix(cfg.URL, "/"), opts...),
		secret: cfg.Secret, timeout: cfg.Timeout, sem: make(chan struct{}, cfg.MaxConcurrent), log: log,
		br:      breaker{failures: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown},
		tracing: o.Tracing, count: o.Counters,
	}
	if c.tracing == nil {
		c.tracing = &telemetry.Tracing{}
	}
	if c.count == nil {
		c.count = &telemetry.Counters{}
	}
	return c, nil
}

// Timeout is the bound on one call.
func (c *Client) Timeout() time.Duration { return c.timeout }

// Connect calls the connect hook.
func (c *Client) Connect(trace map[string]string, req *hooksv1.ConnectRequest) (*hooksv1.ConnectResponse, error) {
	return call(c, "Connect", trace, req, c.api.Connect)
}

// Join calls the join hook.
func (c *Client) Join(trace map[string]string, req *hooksv1.JoinRequest) (*hooksv1.JoinResponse, error) {
	return call(c, "Join", trace, req, c.api.Join)
}

// Publish calls the publish hook.
func (c *Client) Publish(trace map[string]string, req *hooksv1.PublishRequest) (*hooksv1.PublishResponse, error) {
	return call(c, "Publish", trace, req, c.api.Publish)
}

// Rpc calls the rpc hook.
func (c *Client) Rpc(trace map[string]string, req *hooksv1.RpcRequest) (*hooksv1.RpcResponse, error) {
	return call(c, "Rpc", trace, req, c.api.Rpc)
}

// Notify sends a batch of notifications.
func (c *Client) Notify(req *hooksv1.NotifyRequest) error {
	_, err := call(c, "Notify", nil, req, c.api.Notify)
	return err
}

// call makes one hook call within the timeout, the concurrency limit and the breaker.
func call[Req, Res any](c *Client, method string, carrier map[string]string, msg *Req,
	do func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (*Res, error) {
	if !c.br.allow(time.Now()) {
		return nil, fmt.Errorf("%w: circuit open", ErrUnavailable)
	}
	c.count.HookCalls.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if c.tracing.Enabled && len(carrier) > 0 {
		var span trace.Span
		ctx, span = c.tracing.Tracer.Start(telemetry.Extract(ctx, carrier), "hubbub.hook "+method, trace.WithSpanKind(trace.SpanKindClient))
		defer span.End()
		carrier = telemetry.Inject(ctx) // the backend sees the hook span as its parent
	}
	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
	case <-ctx.Done():
		c.done(method, errors.New("too many hook calls in flight"))
		return nil, fmt.Errorf("%w: too many calls in flight", ErrUnavailable)
	}
	req := connect.NewRequest(msg)
	if c.secret != "" {
		req.Header().Set("Authorization", "Bearer "+c.secret)
	}
	for k, v := range carrier {
		req.Header().Set(k, v)
	}
	res, err := do(ctx, req)
	if err != nil {
		c.done(method, err)
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, method, err)
	}
	c.done(method, nil)
	return res.Msg, nil
}

// done records a call's outcome in the breaker and logs the breaker's state changes only.
func (c *Client) done(method string, err error) {
	if err != nil {
		c.count.HookFailures.Add(1)
	}
	switch c.br.record(time.Now(), err == nil) {
	case opened:
		c.log.Warn("hook backend failing: calls fail at once until it answers again", "method", method, "err", err)
	case closed:
		c.log.Info("hook backend answers again")
	}
}

type change int

const (
	unchanged change = iota
	opened
	closed
)

// breaker opens after consecutive failures; while open it fails calls at
// once, and after the cooldown lets calls through again (the next failure
// reopens it at once, a success closes it).
type breaker struct {
	failures int
	cooldown time.Duration

	mu       sync.Mutex
	fails    int
	open     bool
	openedAt time.Time
}

func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.open || now.Sub(b.openedAt) >= b.cooldown
}

func (b *breaker) record(now time.Time, ok bool) change {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		b.fails = 0
		if b.open {
			b.open = false
			return closed
		}
		return unchanged
	}
	b.fails++
	if b.open {
		b.openedAt = now // a probe failed: wait another cooldown
		return unchanged
	}
	if b.fails >= b.failures {
		b.open, b.openedAt = true, now
		return opened
	}
	return unchanged
}
