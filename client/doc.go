// Package client is the Go client for Hubbub.
//
// A Client keeps one WebSocket to a Hubbub server, in either encoding, and
// reconnects by itself with exponential backoff and full jitter. It rejoins
// every room after a reconnect with the last position it delivered, so a
// Subscription's Events carry each message exactly once and in order while the
// server's history still holds the gap, and an EventNotRecovered when it does
// not (reload the room's state then). Publishes carry a client message id and
// are retried with the same id after a reconnect, so the server accepts them
// once.
//
// Presence arrives as numbered diffs (EventPresence). With Config.TrackMembers
// a Subscription keeps its room's member list (Members): it pages the list
// after the join, applies the diffs, rejoins with the last diff position to
// get the diffs it missed, reloads the list after a gap or a reset, and checks
// it against the room's digest at every diff (PresenceStats).
//
//	c := client.New(client.Config{URL: "ws://127.0.0.1:8080/ws", Name: "alice"})
//	defer c.Close()
//	if err := c.Connect(ctx); err != nil { ... }
//	sub, err := c.Join(ctx, "lobby")
//	go func() {
//		for ev := range sub.Events() {
//			if ev.Kind == client.EventMessage { fmt.Println(ev.Message.GetBody().GetText()) }
//		}
//	}()
//	_, err = c.PublishText(ctx, "lobby", "hello")
//
// # Concurrency
//
// Every method of Client and Subscription is safe for concurrent use. The
// client runs one goroutine that owns the connection cycle (dial, read,
// reconnect) and one goroutine per Subscription that feeds its Events channel
// from an unbounded queue, so a slow reader of one room never stalls the
// connection; a Subscription that keeps its member list runs one goroutine
// while it pages the list, joined when the Subscription ends. Close stops them all and waits for them. The OnState callback
// is called from the connection goroutine and must not block for long.
package client
