package transport

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics adds the transport's gauges: open connections and the bytes
// waiting in outbound queues.
func (s *Server) RegisterMetrics(m metric.Meter) error {
	open, err := m.Int64ObservableUpDownCounter("hubbub.connections.active", metric.WithUnit("{connection}"),
		metric.WithDescription("open WebSocket connections"))
	if err != nil {
		return err
	}
	queued, err := m.Int64ObservableUpDownCounter("hubbub.outbound.queue.size", metric.WithUnit("By"),
		metric.WithDescription("bytes waiting in connections' outbound queues"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(open, s.open.Load())
		var total int64
		s.mu.Lock()
		for c := range s.conns {
			total += int64(c.q.queued())
		}
		s.mu.Unlock()
		o.ObserveInt64(queued, total)
		return nil
	}, open, queued)
	return err
}
