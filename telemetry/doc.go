// Package telemetry holds Hubbub's observability primitives. Today that is a
// set of process-wide counters that every layer increments (connections,
// frames, errors, closes by code, slow consumers, drops); they are read by
// tests and by the exporters that build on them.
//
// # Concurrency
//
// All counters are atomic and may be incremented from any goroutine.
package telemetry
