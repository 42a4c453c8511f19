package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/proto/hubbub/api/v1/apiv1connect"
	"github.com/hubbub-chat/hubbub/telemetry"
)

// Config configures the server API.
type Config struct {
	// Keys are the API keys; with none every call is refused (Unauthenticated).
	Keys []Key
	// MaxBatch bounds the items of a BatchPublish and the rooms of a Broadcast. Default 1000.
	MaxBatch int
}

// Options are the API's collaborators; the zero value logs nothing, counts
// nothing and traces nothing.
type Options struct {
	Logger  *slog.Logger
	Tracing *telemetry.Tracing
	// Meter, when set, gets the hubbub.api.calls counter.
	Meter metric.Meter
}

// minCompressBytes is the smallest answer compressed for a caller that accepts it.
const minCompressBytes = 4 << 10

// scopes is the scope each method needs.
var scopes = map[string]Scope{
	"Publish": ScopePublish, "BatchPublish": ScopePublish, "Broadcast": ScopePublish, "SendToUser": ScopePublish, "GetCommand": ScopePublish,
	"History": ScopeRead, "Presence": ScopeRead, "RoomInfo": ScopeRead, "ListRooms": ScopeRead,
	"Connections": ScopeRead, "Info": ScopeRead, "Ledger": ScopeRead,
	"Disconnect": ScopeAdmin, "Tail": ScopeAdmin,
}

// callState follows one call from the HTTP middleware through the interceptor.
type callState struct {
	key     *Key
	counted bool
}

type stateKey struct{}

// Handler serves the server API, gRPC health checking and server reflection
// on one http.Handler. Serve it over HTTP/2 (TLS, or cleartext h2c) for gRPC;
// HTTP/1.1 is enough for Connect's HTTP+JSON.
type Handler struct {
	mux     *http.ServeMux
	keys    *keyring
	log     *slog.Logger
	tracing *telemetry.Tracing
	calls   metric.Int64Counter
	errw    *connect.ErrorWriter
	close   context.CancelFunc // ends the Tail streams
}

// New builds the API's handler over a node.
func New(node *actors.Node, cfg Config, opts Options) (*Handler, error) {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Tracing == nil {
		opts.Tracing = &telemetry.Tracing{}
	}
	h := &Handler{mux: http.NewServeMux(), keys: newKeyring(cfg.Keys), log: opts.Logger, tracing: opts.Tracing, errw: connect.NewErrorWriter()}
	if opts.Meter != nil {
		c, err := opts.Meter.Int64Counter("hubbub.api.calls", metric.WithUnit("{call}"),
			metric.WithDescription("server API calls by method, key name and code"))
		if err != nil {
			return nil, err
		}
		h.calls = c
	}
	closing, closeFn := context.WithCancel(context.Background())
	h.close = closeFn
	svc := &service{node: node, maxBatch: cfg.MaxBatch, closing: closing}
	// Most answers are a few dozen bytes: compressing them costs more CPU
	// than it saves (gzip's setup alone was a fifth of a publish's cost).
	path, api := apiv1connect.NewServerAPIHandler(svc, connect.WithInterceptors(interceptor{h}),
		connect.WithCompressMinBytes(minCompressBytes))
	h.mux.Handle(path, h.authenticate(api))
	h.mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(apiv1connect.ServerAPIName)))
	reflector := grpcreflect.NewStaticReflector(apiv1connect.ServerAPIName)
	h.mux.Handle(grpcreflect.NewHandlerV1(reflector))
	h.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Close ends the streams in progress (Tail), so an HTTP server's Shutdown
// need not wait for them; calls still answer.
func (h *Handler) Close() { h.close() }

// interceptor traces, counts and logs every call that decoded, unary or streaming.
type interceptor struct{ h *Handler }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return i.h.intercept(next) }

func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		var err error
		i.h.observe(ctx, conn.Spec().Procedure, conn.RequestHeader(), func(ctx context.Context) error {
			err = next(ctx, conn)
			return err
		})
		return err
	}
}

// authenticate checks the bearer key and the method's scope before the
// request body is read, answering in the caller's protocol (gRPC, gRPC-Web
// or Connect).
func (h *Handler) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var key *Key
		if ok {
			key = h.keys.find(strings.TrimSpace(token))
		}
		switch need, known := scopes[method]; {
		case !known:
			next.ServeHTTP(w, r) // connect answers an unknown method itself
			return
		case key == nil:
			msg := "missing API key: send Authorization: Bearer <key>"
			if ok {
				msg = "unknown API key"
			}
			h.refuse(w, r, method, "", connect.NewError(connect.CodeUnauthenticated, errors.New(msg)))
			return
		case !key.Allows(need):
			h.refuse(w, r, method, key.Name, connect.NewError(connect.CodePermissionDenied,
				errors.New("API key "+key.Name+" lacks the "+string(need)+" scope")))
			return
		}
		st := &callState{key: key}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
		if !st.counted { // the request never reached the method: it did not decode
			h.count(r.Context(), method, key.Name, "malformed")
		}
	})
}

func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, method, key string, err *connect.Error) {
	h.count(r.Context(), method, key, err.Code().String())
	h.log.Debug("api call refused", "method", method, "key", key, "code", err.Code().String())
	_ = h.errw.Write(w, r, err)
}

// intercept traces, counts and logs every unary call that decoded.
func (h *Handler) intercept(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		var res connect.AnyResponse
		err := h.observe(ctx, req.Spec().Procedure, req.Header(), func(ctx context.Context) error {
			var err error
			res, err = next(ctx, req)
			return err
		})
		return res, err
	}
}

// observe runs one authenticated call in its span, then counts and logs it.
func (h *Handler) observe(ctx context.Context, procedure string, header http.Header, call func(context.Context) error) error {
	st, _ := ctx.Value(stateKey{}).(*callState)
	if st == nil {
		return connect.NewError(connect.CodeInternal, errors.New("call not authenticated"))
	}
	st.counted = true
	method := procedure[strings.LastIndexByte(procedure, '/')+1:]
	start := time.Now()
	var span trace.Span
	if h.tracing.Enabled {
		ctx = telemetry.ExtractHeaders(ctx, header)
		ctx, span = h.tracing.Tracer.Start(ctx, "hubbub.api "+method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("rpc.system", "connect_rpc"), attribute.String("rpc.method", method),
				attribute.String("hubbub.api.key", st.key.Name)))
	}
	ctx = withKey(ctx, st.key)
	err := call(ctx)
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	if span != nil {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	h.count(ctx, method, st.key.Name, code)
	h.log.Debug("api call", "method", method, "key", st.key.Name, "code", code, "duration", time.Since(start))
	return err
}

func (h *Handler) count(ctx context.Context, method, key, code string) {
	if h.calls == nil {
		return
	}
	h.calls.Add(ctx, 1, metric.WithAttributes(attribute.String("rpc.method", method), attribute.String("hubbub.api.key", key),
		attribute.String("rpc.connect_rpc.error_code", code)))
}

type keyCtx struct{}

func withKey(ctx context.Context, k *Key) context.Context { return context.WithValue(ctx, keyCtx{}, k) }

func keyOf(ctx context.Context) *Key {
	k, _ := ctx.Value(keyCtx{}).(*Key)
	return k
}
