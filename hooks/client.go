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
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
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
	// Enabled names the hooks called, from Hooks: Connect, Join, Publish, Rpc
	// and Notify. Empty: all of them. A hook that is off is as without a
	// backend: connects take tokens (or anonymous names), joins and
	// publishes go by the token's grants, rpc is an unknown command, and
	// nothing is notified.
	Enabled []string
	// URLs give hooks a backend of their own, by hook name; the rest use URL.
	URLs map[string]string
	// Timeouts give hooks a timeout of their own, by hook name; the rest use Timeout.
	Timeouts map[string]time.Duration
	// TLS is the client's TLS configuration for https URLs: the CAs it
	// trusts, and its own certificate when the backend asks for one (mutual
	// TLS). Nil: the system's roots, no client certificate.
	TLS *tls.Config
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

// Names are the hooks' names, as Config.Enabled, URLs and Timeouts take them.
var Names = []string{"Connect", "Join", "Publish", "Rpc", "Notify"}

// Client calls the hooks.
type Client struct {
	hooks   map[string]*endpoint // the enabled hooks, by name
	secret  string
	timeout time.Duration // the longest of the hooks' timeouts
	sem     chan struct{}
	log     *slog.Logger
	tracing *telemetry.Tracing
	count   *telemetry.Counters
}

// endpoint is where one hook goes. Hooks at one URL share its client and
// its breaker: a backend that is down is down for all of them.
type endpoint struct {
	api     hooksv1connect.HooksClient
	timeout time.Duration
	br      *breaker
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
	c := &Client{hooks: map[string]*endpoint{}, secret: cfg.Secret, sem: make(chan struct{}, cfg.MaxConcurrent), log: log,
		tracing: o.Tracing, count: o.Counters}
	enabled := cfg.Enabled
	if len(enabled) == 0 {
		enabled = Names
	}
	for name := range cfg.URLs {
		if !slices.Contains(Names, name) {
			return nil, fmt.Errorf("hooks: no hook %q (hooks: %s)", name, strings.Join(Names, ", "))
		}
	}
	for name := range cfg.Timeouts {
		if !slices.Contains(Names, name) {
			return nil, fmt.Errorf("hooks: no hook %q (hooks: %s)", name, strings.Join(Names, ", "))
		}
	}
	byURL := map[string]*endpoint{}
	for _, name := range enabled {
		if !slices.Contains(Names, name) {
			return nil, fmt.Errorf("hooks: no hook %q (hooks: %s)", name, strings.Join(Names, ", "))
		}
		url := cmp.Or(cfg.URLs[name], cfg.URL)
		shared := byURL[url]
		if shared == nil {
			api, err := newAPI(url, cfg)
			if err != nil {
				return nil, err
			}
			shared = &endpoint{api: api, br: &breaker{failures: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown}}
			byURL[url] = shared
		}
		e := &endpoint{api: shared.api, br: shared.br, timeout: cmp.Or(cfg.Timeouts[name], cfg.Timeout)}
		c.hooks[name] = e
		c.timeout = max(c.timeout, e.timeout)
	}
	if c.tracing == nil {
		c.tracing = &telemetry.Tracing{}
	}
	if c.count == nil {
		c.count = &telemetry.Counters{}
	}
	return c, nil
}

// newAPI builds the client of one backend URL.
func newAPI(url string, cfg Config) (hooksv1connect.HooksClient, error) {
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("hooks: URL %q is not http:// or https://", url)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.MaxConcurrent, DialContext: (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
		TLSClientConfig: cfg.TLS, ForceAttemptHTTP2: true}
	var opts []connect.ClientOption
	switch cfg.Protocol {
	case "", "json":
		opts = append(opts, connect.WithProtoJSON())
	case "proto":
	case "grpc":
		opts = append(opts, connect.WithGRPC())
		p := new(http.Protocols)
		p.SetHTTP2(true)
		if strings.HasPrefix(url, "http://") {
			p = new(http.Protocols)
			p.SetUnencryptedHTTP2(true)
		}
		tr.Protocols = p
	default:
		return nil, fmt.Errorf("hooks: protocol %q is not json, proto or grpc", cfg.Protocol)
	}
	return hooksv1connect.NewHooksClient(&http.Client{Transport: tr}, strings.TrimSuffix(url, "/"), opts...), nil
}

// Name returns the hook's name as Names spell it, whatever the case of s.
func Name(s string) (string, bool) {
	for _, n := range Names {
		if strings.EqualFold(n, strings.TrimSpace(s)) {
			return n, true
		}
	}
	return "", false
}

// Has reports whether the hook of that name is called.
func (c *Client) Has(name string) bool { return c != nil && c.hooks[name] != nil }

// Timeout is the bound on one call (the longest of the hooks').
func (c *Client) Timeout() time.Duration { return c.timeout }

// Connect calls the connect hook.
func (c *Client) Connect(trace map[string]string, req *hooksv1.ConnectRequest) (*hooksv1.ConnectResponse, error) {
	return call(c, "Connect", trace, req, hooksv1connect.HooksClient.Connect)
}

// Join calls the join hook.
func (c *Client) Join(trace map[string]string, req *hooksv1.JoinRequest) (*hooksv1.JoinResponse, error) {
	return call(c, "Join", trace, req, hooksv1connect.HooksClient.Join)
}

// Publish calls the publish hook.
func (c *Client) Publish(trace map[string]string, req *hooksv1.PublishRequest) (*hooksv1.PublishResponse, error) {
	return call(c, "Publish", trace, req, hooksv1connect.HooksClient.Publish)
}

// Rpc calls the rpc hook.
func (c *Client) Rpc(trace map[string]string, req *hooksv1.RpcRequest) (*hooksv1.RpcResponse, error) {
	return call(c, "Rpc", trace, req, hooksv1connect.HooksClient.Rpc)
}

// Notify sends a batch of notifications.
func (c *Client) Notify(req *hooksv1.NotifyRequest) error {
	_, err := call(c, "Notify", nil, req, hooksv1connect.HooksClient.Notify)
	return err
}

// call makes one hook call within the timeout, the concurrency limit and the breaker.
func call[Req, Res any](c *Client, method string, carrier map[string]string, msg *Req,
	do func(hooksv1connect.HooksClient, context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (*Res, error) {
	e := c.hooks[method]
	if e == nil {
		return nil, fmt.Errorf("%w: the %s hook is off", ErrUnavailable, method)
	}
	if !e.br.allow(time.Now()) {
		return nil, fmt.Errorf("%w: circuit open", ErrUnavailable)
	}
	c.count.HookCalls.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
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
		c.done(e, method, errors.New("too many hook calls in flight"))
		return nil, fmt.Errorf("%w: too many calls in flight", ErrUnavailable)
	}
	req := connect.NewRequest(msg)
	if c.secret != "" {
		req.Header().Set("Authorization", "Bearer "+c.secret)
	}
	for k, v := range carrier {
		req.Header().Set(k, v)
	}
	res, err := do(e.api, ctx, req)
	if err != nil {
		c.done(e, method, err)
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, method, err)
	}
	c.done(e, method, nil)
	return res.Msg, nil
}

// done records a call's outcome in the breaker and logs the breaker's state changes only.
func (c *Client) done(e *endpoint, method string, err error) {
	if err != nil {
		c.count.HookFailures.Add(1)
	}
	switch e.br.record(time.Now(), err == nil) {
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
