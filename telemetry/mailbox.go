package telemetry

import "sync/atomic"

// MailboxDepths counts messages posted to and received by the mailboxes of
// each kind of actor; posted minus received is the depth.
type MailboxDepths struct {
	Conn, Room, Relay MailboxDepth
}

// MailboxDepth implements protoactor's MailboxMiddleware for one kind of actor.
type MailboxDepth struct {
	posted, received atomic.Int64
}

// MailboxStarted implements actor.MailboxMiddleware.
func (m *MailboxDepth) MailboxStarted() {}

// MessagePosted implements actor.MailboxMiddleware.
func (m *MailboxDepth) MessagePosted(any) { m.posted.Add(1) }

// MessageReceived implements actor.MailboxMiddleware.
func (m *MailboxDepth) MessageReceived(any) { m.received.Add(1) }

// MailboxEmpty implements actor.MailboxMiddleware.
func (m *MailboxDepth) MailboxEmpty() {}

// Depth is the number of messages waiting in this kind's mailboxes.
func (m *MailboxDepth) Depth() int64 { return max(0, m.posted.Load()-m.received.Load()) }
