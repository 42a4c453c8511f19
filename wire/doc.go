// Package wire is Hubbub's frame codec: the two WebSocket subprotocols, the
// encoding each one implies, marshalling of ClientFrame and ServerFrame in
// either encoding, and the WebSocket close codes the server uses.
//
// The server (transport, actors) and the Go client share it, so both sides of
// the wire agree on one definition.
//
// # Concurrency
//
// Everything in this package is safe for concurrent use; it holds no state.
package wire
