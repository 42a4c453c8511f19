package telemetry

import (
	"sync"
	"sync/atomic"
)

// Counters counts what happens on one node. The zero value is ready to use.
type Counters struct {
	ConnectionsOpened   atomic.Int64
	ConnectionsClosed   atomic.Int64
	UpgradesRefused     atomic.Int64
	FramesIn            atomic.Int64
	FramesOut           atomic.Int64
	BytesIn             atomic.Int64
	BytesOut            atomic.Int64
	SocketWrites        atomic.Int64 // socket writes (one writev each) that carried outbound frames
	MalformedFrames     atomic.Int64
	ErrorReplies        atomic.Int64
	SlowConsumers       atomic.Int64
	Publishes           atomic.Int64
	DuplicatePublish    atomic.Int64
	Deliveries          atomic.Int64
	DeliveryDrops       atomic.Int64
	RoomsStarted        atomic.Int64
	RoomsStopped        atomic.Int64
	ActorPanics         atomic.Int64
	RoomTimeouts        atomic.Int64
	RateLimited         atomic.Int64
	Unauthorized        atomic.Int64
	PermissionDenied    atomic.Int64
	OverflowDropped     atomic.Int64
	RelayDelivers       atomic.Int64
	FanoutNotesDropped  atomic.Int64 // fan-out spans not recorded because the recorder was behind
	RoomsLost           atomic.Int64
	Conflated           atomic.Int64
	StoreAppends        atomic.Int64 // batches the history store accepted
	StoreMessages       atomic.Int64 // messages in those batches
	StoreErrors         atomic.Int64 // failed appends and loads
	StoreConflicts      atomic.Int64 // appends refused because another activation wrote first
	RoomsLoaded         atomic.Int64 // room activations that loaded a position from the store
	ConnectTimeouts     atomic.Int64 // connections closed for sending no connect in time
	ProbeFailures       atomic.Int64 // readiness probes through the relay and a room that failed
	RoomFailures        atomic.Int64 // rooms stopped by a panic; their members were closed with 4004
	StreamGaps          atomic.Int64 // messages that did not continue a member's stream; the member was closed with 4004
	NodeStalls          atomic.Int64 // times this process found it had been frozen (a gap of over a second in its ticker)
	StaleRooms          atomic.Int64 // room activations that found the store ahead of them and stopped
	HookCalls           atomic.Int64 // calls to the backend's hooks
	HookFailures        atomic.Int64 // hook calls without a usable answer (down, slow, garbage, circuit open)
	HookRefusals        atomic.Int64 // connects, joins, publishes and rpcs the backend refused
	HookNotified        atomic.Int64 // leave and disconnect notifications the backend acknowledged
	HookNotifyDropped   atomic.Int64 // notifications dropped because the queue was full
	HookNotifyCoalesced atomic.Int64 // disconnect notifications dropped because the user reconnected within the grace window

	// Commands counts client commands by type; Pushes counts pushes handed to
	// connections by type. Index with CommandIndex and PushIndex.
	Commands [len(CommandNames)]atomic.Int64
	Pushes   [len(PushNames)]atomic.Int64

	// Hist holds the histograms once metrics are set up; nil records nothing.
	Hist atomic.Pointer[Histograms]
	// Mailboxes tracks the mailbox depth of each kind of actor.
	Mailboxes MailboxDepths

	mu         sync.Mutex
	closeCodes map[int]int64
	errorCodes map[string]int64
}

// CountClose records a connection closed with a WebSocket close code.
func (c *Counters) CountClose(code int) {
	c.ConnectionsClosed.Add(1)
	c.mu.Lock()
	if c.closeCodes == nil {
		c.closeCodes = map[int]int64{}
	}
	c.closeCodes[code]++
	c.mu.Unlock()
}

// CountError records an error reply by its code name.
func (c *Counters) CountError(code string) {
	c.ErrorReplies.Add(1)
	c.mu.Lock()
	if c.errorCodes == nil {
		c.errorCodes = map[string]int64{}
	}
	c.errorCodes[code]++
	c.mu.Unlock()
}

// Closes returns how many connections closed with each code.
func (c *Counters) Closes() map[int]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int]int64, len(c.closeCodes))
	for k, v := range c.closeCodes {
		out[k] = v
	}
	return out
}

// Errors returns how many error replies were sent per error code.
func (c *Counters) Errors() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.errorCodes))
	for k, v := range c.errorCodes {
		out[k] = v
	}
	return out
}

// CommandNames are the client commands counted in Counters.Commands.
var CommandNames = [...]string{"connect", "join", "leave", "publish", "history", "presence", "typing", "ping", "refresh", "rpc", "unknown"}

// PushNames are the push types counted in Counters.Pushes.
var PushNames = [...]string{"message", "presence", "typing", "receipts"}

// CountCommand counts one command by name.
func (c *Counters) CountCommand(name string) {
	for i, n := range CommandNames {
		if n == name {
			c.Commands[i].Add(1)
			return
		}
	}
	c.Commands[len(CommandNames)-1].Add(1)
}

// CountPushes counts n pushes of a type.
func (c *Counters) CountPushes(kind string, n int) {
	for i, k := range PushNames {
		if k == kind {
			c.Pushes[i].Add(int64(n))
			return
		}
	}
}
