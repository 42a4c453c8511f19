// Package loadtest drives a running Hubbub server over real WebSockets on
// loopback and measures it: the engine behind `hubbub bench`.
//
// Scenarios: fanout (S subscribers in one room, P publishers at a fixed total
// rate, open loop), maxtp (fanout at rising rates until loss or a p99 bound),
// rooms (many rooms with few members each), idle (N idle connections, server
// RSS per connection), storm (time to open N connections with C dialers) and
// churn (connect/join/leave/disconnect in a loop while others publish),
// bigroom (N connections joining one room) and api (server API Publish and
// BatchPublish beside WebSocket publishes, closed loop).
// Payloads carry their send time, so latency is measured from the publisher's
// write to the subscriber's read. Every loop is bounded by count and time.
//
// The load clients are deliberately lean: one goroutine per connection,
// protobuf frames, and publish payloads parsed with protowire rather than
// full decoding, so the generator spends its CPU on sockets.
//
// # Concurrency
//
// A scenario owns every goroutine it starts and waits for them before it
// returns; Run may be called again afterwards.
package loadtest
