package telemetry

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics exports Hubbub's instruments for Prometheus.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	meter    metric.Meter
	handler  http.Handler
}

// NewMetrics builds the meter provider and its Prometheus exporter, registers
// observable instruments over c, and installs c's histograms.
func NewMetrics(c *Counters) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	m := &Metrics{provider: mp, meter: mp.Meter("github.com/hubbub-chat/hubbub"),
		handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	if err := m.observeCounters(c); err != nil {
		return nil, err
	}
	h, err := newHistograms(m.meter)
	if err != nil {
		return nil, err
	}
	c.Hist.Store(h)
	return m, nil
}

// Meter is for other packages' own instruments.
func (m *Metrics) Meter() metric.Meter { return m.meter }

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Shutdown stops the meter provider.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }

type counterSpec struct {
	name, unit, desc string
	v                *atomic.Int64
	attrs            []attribute.KeyValue
}

func (m *Metrics) observeCounters(c *Counters) error {
	dir := func(d string) []attribute.KeyValue {
		return []attribute.KeyValue{attribute.String("network.io.direction", d)}
	}
	specs := []counterSpec{
		{"hubbub.connections.opened", "{connection}", "WebSocket connections opened", &c.ConnectionsOpened, nil},
		{"hubbub.upgrades.refused", "{request}", "WebSocket upgrades refused (subprotocol, origin, limits)", &c.UpgradesRefused, nil},
		{"hubbub.frames", "{frame}", "WebSocket frames", &c.FramesIn, dir("receive")},
		{"hubbub.frames", "{frame}", "WebSocket frames", &c.FramesOut, dir("transmit")},
		{"hubbub.socket.writes", "{write}", "socket writes (one system call each) that carried outbound frames; frames transmitted per write is how well writes are batched", &c.SocketWrites, nil},
		{"hubbub.io", "By", "WebSocket payload bytes", &c.BytesIn, dir("receive")},
		{"hubbub.io", "By", "WebSocket payload bytes", &c.BytesOut, dir("transmit")},
		{"hubbub.frames.malformed", "{frame}", "client frames that did not decode or were too big", &c.MalformedFrames, nil},
		{"hubbub.slow_consumers", "{connection}", "connections closed because their outbound queue overflowed", &c.SlowConsumers, nil},
		{"hubbub.publishes", "{message}", "publishes accepted by rooms", &c.Publishes, nil},
		{"hubbub.publishes.duplicate", "{message}", "retried publishes recognised by message id", &c.DuplicatePublish, nil},
		{"hubbub.deliveries", "{message}", "pushes handed to connections' outbound queues", &c.Deliveries, nil},
		{"hubbub.relay.delivers", "{message}", "pushes this node's relay received from rooms: one per push per node with members", &c.RelayDelivers, nil},
		{"hubbub.trace.notes_dropped", "{span}", "fan-out spans not recorded because the fan-out recorder was behind", &c.FanoutNotesDropped, nil},
		{"hubbub.deliveries.dropped", "{message}", "pushes not queued (connection closing or overflowing)", &c.DeliveryDrops, nil},
		{"hubbub.rooms.started", "{room}", "room activations", &c.RoomsStarted, nil},
		{"hubbub.rooms.stopped", "{room}", "room passivations", &c.RoomsStopped, nil},
		{"hubbub.actor.panics", "{panic}", "panics caught by supervision", &c.ActorPanics, nil},
		{"hubbub.room.timeouts", "{request}", "room requests that got no answer in time", &c.RoomTimeouts, nil},
		{"hubbub.rate_limited", "{request}", "commands, publishes and upgrades refused by a rate limit", &c.RateLimited, nil},
		{"hubbub.auth.unauthorized", "{request}", "refused or expired tokens", &c.Unauthorized, nil},
		{"hubbub.auth.denied", "{request}", "commands refused for lack of permission", &c.PermissionDenied, nil},
		{"hubbub.overflow.dropped", "{message}", "pushes dropped by a room's drop-oldest or conflate policy", &c.OverflowDropped, nil},
		{"hubbub.store.appends", "{batch}", "batches of messages the history store accepted", &c.StoreAppends, nil},
		{"hubbub.store.messages", "{message}", "messages the history store accepted", &c.StoreMessages, nil},
		{"hubbub.store.errors", "{error}", "history store appends and loads that failed", &c.StoreErrors, nil},
		{"hubbub.store.conflicts", "{batch}", "appends refused because another activation of the room wrote first", &c.StoreConflicts, nil},
		{"hubbub.rooms.loaded", "{room}", "room activations that loaded their position from the history store", &c.RoomsLoaded, nil},
		{"hubbub.hooks.calls", "{call}", "calls to the backend's hooks", &c.HookCalls, nil},
		{"hubbub.hooks.failures", "{call}", "hook calls without a usable answer (backend down or slow, garbage, circuit open)", &c.HookFailures, nil},
		{"hubbub.hooks.refusals", "{command}", "connects, joins, publishes and rpcs the backend refused", &c.HookRefusals, nil},
		{"hubbub.hooks.notified", "{notification}", "leave and disconnect notifications the backend acknowledged", &c.HookNotified, nil},
		{"hubbub.hooks.notify_dropped", "{notification}", "notifications dropped because the notification queue was full", &c.HookNotifyDropped, nil},
		{"hubbub.hooks.notify_coalesced", "{notification}", "disconnect and leave notifications dropped because the user reconnected or rejoined within the grace window", &c.HookNotifyCoalesced, nil},
		{"hubbub.connect_timeouts", "{connection}", "connections closed for sending no connect within the connect timeout", &c.ConnectTimeouts, nil},
		{"hubbub.readiness.probe_failures", "{probe}", "readiness probes through the relay and a room that failed or timed out", &c.ProbeFailures, nil},
		{"hubbub.rooms.failed", "{room}", "rooms stopped by a panic (their members were closed with 4004)", &c.RoomFailures, nil},
		{"hubbub.stream_gaps", "{message}", "messages that did not continue a member's stream (a fault); the member was closed with 4004 to resync", &c.StreamGaps, nil},
		{"hubbub.node.stalls", "{stall}", "times this process found it had been frozen for over a second", &c.NodeStalls, nil},
		{"hubbub.rooms.stale", "{room}", "room activations that found the store ahead of them (another activation served the room) and stopped", &c.StaleRooms, nil},
		{"hubbub.overflow.conflated", "{message}", "queued pushes replaced by a newer one with the same key", &c.Conflated, nil},
	}
	instruments := map[string]metric.Int64ObservableCounter{}
	var obs []metric.Observable
	for _, s := range specs {
		if _, ok := instruments[s.name]; ok {
			continue
		}
		in, err := m.meter.Int64ObservableCounter(s.name, metric.WithUnit(s.unit), metric.WithDescription(s.desc))
		if err != nil {
			return err
		}
		instruments[s.name] = in
		obs = append(obs, in)
	}
	closed, err := m.meter.Int64ObservableCounter("hubbub.connections.closed", metric.WithUnit("{connection}"),
		metric.WithDescription("WebSocket connections closed, by close code"))
	if err != nil {
		return err
	}
	errs, err := m.meter.Int64ObservableCounter("hubbub.errors", metric.WithUnit("{reply}"),
		metric.WithDescription("error replies, by error code"))
	if err != nil {
		return err
	}
	rooms, err := m.meter.Int64ObservableUpDownCounter("hubbub.rooms.active", metric.WithUnit("{room}"),
		metric.WithDescription("rooms running on this node"))
	if err != nil {
		return err
	}
	mailbox, err := m.meter.Int64ObservableGauge("hubbub.actor.mailbox.depth", metric.WithUnit("{message}"),
		metric.WithDescription("messages waiting in actor mailboxes, by kind of actor"))
	if err != nil {
		return err
	}
	commands, err := m.meter.Int64ObservableCounter("hubbub.commands", metric.WithUnit("{command}"),
		metric.WithDescription("client commands received, by command"))
	if err != nil {
		return err
	}
	pushes, err := m.meter.Int64ObservableCounter("hubbub.pushes", metric.WithUnit("{push}"),
		metric.WithDescription("pushes handed to connections, by type"))
	if err != nil {
		return err
	}
	obs = append(obs, closed, errs, rooms, mailbox, commands, pushes)
	_, err = m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, s := range specs {
			o.ObserveInt64(instruments[s.name], s.v.Load(), metric.WithAttributes(s.attrs...))
		}
		for code, n := range c.Closes() {
			o.ObserveInt64(closed, n, metric.WithAttributes(attribute.String("websocket.close_code", strconv.Itoa(code))))
		}
		for code, n := range c.Errors() {
			o.ObserveInt64(errs, n, metric.WithAttributes(attribute.String("error.type", code)))
		}
		o.ObserveInt64(rooms, c.RoomsStarted.Load()-c.RoomsStopped.Load())
		for i, name := range CommandNames {
			o.ObserveInt64(commands, c.Commands[i].Load(), metric.WithAttributes(attribute.String("hubbub.command", name)))
		}
		for i, name := range PushNames {
			o.ObserveInt64(pushes, c.Pushes[i].Load(), metric.WithAttributes(attribute.String("hubbub.push", name)))
		}
		for kind, d := range map[string]*MailboxDepth{"connection": &c.Mailboxes.Conn, "room": &c.Mailboxes.Room, "relay": &c.Mailboxes.Relay} {
			o.ObserveInt64(mailbox, d.Depth(), metric.WithAttributes(attribute.String("hubbub.actor.kind", kind)))
		}
		return nil
	}, obs...)
	return err
}

// Histograms are the distributions recorded on the hot path. A nil
// *Histograms records nothing.
type Histograms struct {
	fanoutSize    metric.Int64Histogram
	fanoutLatency metric.Float64Histogram
	roomMembers   metric.Int64Histogram
	storeLatency  metric.Float64Histogram
}

func newHistograms(m metric.Meter) (*Histograms, error) {
	h := &Histograms{}
	var err error
	if h.fanoutSize, err = m.Int64Histogram("hubbub.fanout.size", metric.WithUnit("{connection}"),
		metric.WithDescription("local recipients of one push on one node"),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)); err != nil {
		return nil, err
	}
	if h.fanoutLatency, err = m.Float64Histogram("hubbub.delivery.latency", metric.WithUnit("s"),
		metric.WithDescription("from a room accepting a publish to its node's fan-out queueing it for every local recipient"),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)); err != nil {
		return nil, err
	}
	if h.roomMembers, err = m.Int64Histogram("hubbub.room.members", metric.WithUnit("{member}"),
		metric.WithDescription("members of a room, recorded at every join and leave"),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)); err != nil {
		return nil, err
	}
	if h.storeLatency, err = m.Float64Histogram("hubbub.store.append.latency", metric.WithUnit("s"),
		metric.WithDescription("time for the history store to accept one batch of a room's messages"),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)); err != nil {
		return nil, err
	}
	return h, nil
}

// RecordStoreAppend records how long one store append took.
func (h *Histograms) RecordStoreAppend(d time.Duration) {
	if h == nil {
		return
	}
	h.storeLatency.Record(context.Background(), d.Seconds())
}

// RecordFanout records one push fanned out to n local recipients, accepted at acceptedNano.
func (h *Histograms) RecordFanout(n int, acceptedNano int64) {
	if h == nil {
		return
	}
	ctx := context.Background()
	h.fanoutSize.Record(ctx, int64(n))
	if acceptedNano > 0 {
		h.fanoutLatency.Record(ctx, time.Since(time.Unix(0, acceptedNano)).Seconds())
	}
}

// RecordMembers records a room's member count.
func (h *Histograms) RecordMembers(n int) {
	if h == nil {
		return
	}
	h.roomMembers.Record(context.Background(), int64(n))
}
