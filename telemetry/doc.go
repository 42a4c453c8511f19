// Package telemetry is Hubbub's observability: OpenTelemetry tracing setup
// and the W3C trace-context propagation over the trace maps inside Hubbub's
// protobuf messages; OpenTelemetry metrics exported for Prometheus; and the
// process-wide Counters every layer increments on its hot path with plain
// atomics, which the metrics read when scraped.
//
// Tracing is off by default. When off, Tracing.Enabled is false and callers
// skip span work entirely, so it costs one branch per message.
//
// # Concurrency
//
// Counters, Histograms and Tracing may be used from any goroutine. Setup and
// Shutdown are called once each, by the process's owner (cmd).
package telemetry
