package telemetry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DeliveryDetail says how deliveries to recipients appear on a trace.
type DeliveryDetail int

const (
	// DeliveryCounts: one span per node's fan-out, with recipient counts (default).
	DeliveryCounts DeliveryDetail = iota
	// DeliveryEvents: also one span event per recipient.
	DeliveryEvents
	// DeliverySpans: also one child span per recipient.
	DeliverySpans
)

// TracingConfig configures tracing. Empty fields fall back to the standard
// OpenTelemetry environment variables (OTEL_TRACES_EXPORTER,
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
// OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_SERVICE_NAME), then to
// tracing off.
type TracingConfig struct {
	// Exporter: "otlp", "console" or "none". Default $OTEL_TRACES_EXPORTER, else "none".
	Exporter string
	// Protocol of the OTLP exporter: "grpc" or "http/protobuf". Default $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc.
	Protocol string
	// Endpoint of the OTLP exporter (e.g. http://127.0.0.1:4317). Default $OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string
	// Sampler name as in OTEL_TRACES_SAMPLER. Default $OTEL_TRACES_SAMPLER, else parentbased_always_on.
	Sampler string
	// SamplerArg as in OTEL_TRACES_SAMPLER_ARG.
	SamplerArg string
	// ServiceName. Default $OTEL_SERVICE_NAME, else "hubbub".
	ServiceName string
	// ServiceVersion is the resource's service.version (empty: not set).
	ServiceVersion string
	// InstanceID is the resource's service.instance.id, which tells the
	// nodes of a cluster apart in a trace. Default: a random UUID per process
	// (as OpenTelemetry's semantic conventions recommend), unless
	// OTEL_RESOURCE_ATTRIBUTES sets one.
	InstanceID string
	// NodeAddress is this node's address (its cluster transport, or its
	// listen address on a single node), the resource's hubbub.node.address.
	NodeAddress string
	// Deliveries sets how recipients appear on traces.
	Deliveries DeliveryDetail
	// SpanProcessor, when set, receives every span instead of an exporter (tests).
	SpanProcessor sdktrace.SpanProcessor
}

// Tracing is the tracer every layer uses. The zero value is tracing off.
type Tracing struct {
	Enabled    bool
	Tracer     trace.Tracer
	Deliveries DeliveryDetail
	provider   *sdktrace.TracerProvider
}

var propagator = propagation.TraceContext{}

// NewTracing sets tracing up. With tracing off it returns a disabled Tracing.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	exporter := firstNonEmpty(cfg.Exporter, os.Getenv("OTEL_TRACES_EXPORTER"), "none")
	if cfg.SpanProcessor == nil && (exporter == "none" || exporter == "") {
		return &Tracing{Tracer: noop.NewTracerProvider().Tracer("hubbub")}, nil
	}
	opts := []sdktrace.TracerProviderOption{}
	if cfg.SpanProcessor != nil {
		opts = append(opts, sdktrace.WithSpanProcessor(cfg.SpanProcessor))
	} else {
		exp, err := newExporter(ctx, exporter, cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	sampler, err := newSampler(firstNonEmpty(cfg.Sampler, os.Getenv("OTEL_TRACES_SAMPLER"), "parentbased_always_on"),
		firstNonEmpty(cfg.SamplerArg, os.Getenv("OTEL_TRACES_SAMPLER_ARG")))
	if err != nil {
		return nil, err
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	opts = append(opts, sdktrace.WithSampler(sampler), sdktrace.WithResource(res))
	tp := sdktrace.NewTracerProvider(opts...)
	return &Tracing{Enabled: true, Tracer: tp.Tracer("github.com/hubbub-chat/hubbub"), Deliveries: cfg.Deliveries, provider: tp}, nil
}

// newResource describes this process: the service, this node of it (so a
// trace across a cluster shows one process per node), and the host.
// OTEL_RESOURCE_ATTRIBUTES wins over the defaults.
func newResource(ctx context.Context, cfg TracingConfig) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{
		semconv.ServiceName(firstNonEmpty(cfg.ServiceName, os.Getenv("OTEL_SERVICE_NAME"), "hubbub")),
		semconv.ServiceInstanceID(firstNonEmpty(cfg.InstanceID, randomUUID())),
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.ServiceVersion))
	}
	if cfg.NodeAddress != "" {
		attrs = append(attrs, attribute.String("hubbub.node.address", cfg.NodeAddress))
	}
	// Options apply in order and later ones win: the environment last.
	return resource.New(ctx, resource.WithTelemetrySDK(), resource.WithHost(), resource.WithAttributes(attrs...), resource.WithFromEnv())
}

// randomUUID is a version 4 UUID.
func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func newExporter(ctx context.Context, name string, cfg TracingConfig) (sdktrace.SpanExporter, error) {
	switch name {
	case "console":
		return stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
	case "otlp":
		protocol := firstNonEmpty(cfg.Protocol, os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc")
		switch protocol {
		case "grpc":
			var opts []otlptracegrpc.Option
			if cfg.Endpoint != "" {
				opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
			}
			return otlptracegrpc.New(ctx, opts...)
		case "http/protobuf", "http":
			var opts []otlptracehttp.Option
			if cfg.Endpoint != "" {
				opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(cfg.Endpoint, "/")+"/v1/traces"))
			}
			return otlptracehttp.New(ctx, opts...)
		}
		return nil, fmt.Errorf("telemetry: unknown OTLP protocol %q (grpc or http/protobuf)", protocol)
	}
	return nil, fmt.Errorf("telemetry: unknown traces exporter %q (otlp, console or none)", name)
}

func newSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := 1.0
	if arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("telemetry: sampler argument %q is not a ratio in [0, 1]", arg)
		}
		ratio = r
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	}
	return nil, fmt.Errorf("telemetry: unknown sampler %q", name)
}

// Shutdown flushes and stops tracing.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Extract returns ctx carrying the span context in a trace map (W3C traceparent/tracestate).
func Extract(ctx context.Context, carrier map[string]string) context.Context {
	if len(carrier) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(carrier))
}

// ExtractHeaders returns ctx carrying the span context of HTTP headers
// (W3C traceparent/tracestate), as a backend's API call sends them.
func ExtractHeaders(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject returns a trace map carrying ctx's span context, or nil when there is none.
func Inject(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	m := map[string]string{}
	propagator.Inject(ctx, propagation.MapCarrier(m))
	return m
}

// SetGlobal installs the tracer provider and propagator as OpenTelemetry's globals.
func (t *Tracing) SetGlobal() {
	if t.provider != nil {
		otel.SetTracerProvider(t.provider)
	}
	otel.SetTextMapPropagator(propagator)
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// ErrBadDeliveryDetail is returned by ParseDeliveryDetail.
var ErrBadDeliveryDetail = errors.New("telemetry: delivery detail is counts, events or spans")

// ParseDeliveryDetail parses "counts", "events" or "spans".
func ParseDeliveryDetail(s string) (DeliveryDetail, error) {
	switch s {
	case "", "counts":
		return DeliveryCounts, nil
	case "events":
		return DeliveryEvents, nil
	case "spans":
		return DeliverySpans, nil
	}
	return 0, ErrBadDeliveryDetail
}
