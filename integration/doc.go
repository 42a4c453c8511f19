// Package integration holds Hubbub's end-to-end tests: real servers on
// 127.0.0.1 (in-process, and the built binary as a separate process) driven
// by real WebSocket clients in both encodings.
//
// # Concurrency
//
// Each test client runs one reader goroutine, owned by the client and joined
// by its close; servers are shut down by test cleanup.
package integration
