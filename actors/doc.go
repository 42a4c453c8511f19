// Package actors holds Hubbub's actor graph: one connection actor per socket,
// one room actor per room, and one relay per node that hands a room's pushes
// to the local connections that joined it.
//
// A client command travels transport -> connection actor -> room. The room
// assigns offsets, keeps presence, typing state and history, and sends every
// push for members once per node to that node's relay (RelayDeliver), already
// encoded, once per encoding in use. The relay appends the same bytes to each
// local member's outbound queue (the Sink the transport implements). Join
// replies and leave replies travel the same room -> relay path, so a member
// sees its join reply before the first push that follows it and no push after
// its leave reply.
//
// Room placement sits behind the Placement interface, so rooms can be local
// actors (one node) or protoactor cluster grains without the rest of the
// package knowing. Every message that may cross nodes travels in one
// hubbub.node.v1.Envelope, so a node never meets a message type it cannot
// decode. When a joined room dies (its node died or it moved), its members'
// connections are closed with 4004 and the clients rejoin.
//
// Users are actors too (user.go): a user's actor is the personal room
// "@<user>", a room grain whose members are the user's connections on every
// node. It holds the user's personal stream (direct messages, stored and
// recovered like any room's history), grants the user's connection slots
// across the cluster (RoomReserve), and keeps device commands pending until
// the user acks them or they expire (commands.go). Every room keeps its
// users' ack and read marks and pushes read receipts (marks.go), and answers
// the server API's long polls (Tail, GetCommand) by parking them until its
// next message or outcome (tail.go).
//
// # Concurrency
//
// Each actor's Receive runs on one goroutine at a time, owned by protoactor's
// dispatcher; actor state is touched only there. Connection actors never
// block: rooms are asked with RequestFuture and the answer is handled by
// ReenterAfter, and a room placement that is not cached is looked up on a
// short-lived goroutine whose result comes back to the connection actor as a
// message (see conn_ask.go for how a connection's requests keep their order).
// A room blocks its own mailbox, and nothing else, in three places: loading
// its position and history from the store when it starts, checking its
// position in the store after the node stalled (room.stale), both bounded by
// RoomConfig.StoreTimeout, and settling its pending appends when it stops;
// its appends while running go to the store on a goroutine per batch and come
// back as a message, and so do its marks' saves (one in flight per room) and
// a settled command's outcome, published to its sender's personal room from
// a goroutine (a room never waits on another). Rooms' timers (idle, typing) and the connection's
// connect and token-expiry timers send messages to their actor. Node's
// methods (Probe among them) and ConnHandle's methods may be called from any
// goroutine. A Sink's methods are called from actor goroutines and must not
// block.
package actors
