// Package api serves hubbub.api.v1.ServerAPI, the server API for backends:
// publish, broadcast, direct messages and device commands to users
// (SendToUser, GetCommand), history, presence, room and node inspection,
// disconnects and a live tail of a room (Tail, streaming), over gRPC,
// gRPC-Web and Connect's HTTP+JSON from one connectrpc.com/connect handler,
// with gRPC health checking and server reflection beside it.
//
// Every call carries "Authorization: Bearer <key>"; keys come from a key file
// (ParseKeys) and each has scopes (publish, read, admin). The key is checked
// before the request body is read. A publish goes to its room's actor exactly
// as a client's does (see actors.Node.Publish); members see the key's name as
// the message's sender.server.
//
// # Concurrency
//
// A Handler is safe for concurrent use: each call runs on its HTTP server's
// goroutine and waits there for the rooms' and nodes' answers (futures), never
// inside an actor. The package starts no goroutines of its own.
package api
