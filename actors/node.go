package actors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	"github.com/hubbub-chat/hubbub/auth"
	"github.com/hubbub-chat/hubbub/hooks"
	"github.com/hubbub-chat/hubbub/internal/workers"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
)

// Node is one Hubbub node's actor system: its relay, its rooms (through a
// Placement) and the connection actors of its sockets.
type Node struct {
	cfg        Config
	workers    *workers.Pool    // goroutines for mailbox runs
	dispatcher actor.Dispatcher // runs mailboxes on workers
	log        *slog.Logger
	counters   *telemetry.Counters
	system     *actor.ActorSystem
	conns      *actor.RootContext // spawns connection actors: a panic stops only that actor
	relay      *actor.PID
	placement  Placement
	probes     *localPlacement // the health room of readiness probes
	stalls     *stallWatch     // notices that this process was frozen
	cluster    *cluster.Cluster
	users      *actor.PID
	auth       *auth.Authenticator
	hooks      *hooks.Client   // the backend's hooks; nil when off
	notifier   *actor.PID      // sends leave and disconnect notifications; nil without hooks
	relays     []*actor.PID    // the relay's shards; relay is the first
	fanouts    *fanoutRecorder // makes the relays' fan-out spans; nil when tracing is off
	tracing    *telemetry.Tracing
	inject     func(kind string, msg any)
	nodeID     string
	rooms      *roomIndex // the rooms running here, for the server API
	ledger     *ledger    // the delivery ledger; nil when off
	started    time.Time
	nextConn   atomic.Uint64
	stopped    atomic.Bool
	stopOnce   sync.Once
}

// Options are a node's collaborators. The zero value discards logs and
// allocates fresh counters.
type Options struct {
	Logger   *slog.Logger
	Counters *telemetry.Counters
	// Auth verifies connection tokens; nil means development mode (everyone anonymous).
	Auth *auth.Authenticator
	// Tracing traces commands, rooms and fan-out; nil means off.
	Tracing *telemetry.Tracing
	// Hooks, when set, lets a backend decide connects, joins, publishes and rpcs.
	Hooks *hooks.Client
	// Inject is for fault-injection tests only; leave it nil. It is called
	// with every message a room ("room", the unwrapped message) or a
	// connection actor ("conn", the client frame) is about to handle, on that
	// actor's goroutine; a panic in it is a panic of that actor.
	Inject func(kind string, msg any)
	// OnStall, when set, is called (on the stall watch's goroutine) when the
	// node finds it was frozen for gap (over a second). In a cluster the
	// other members may have evicted it meanwhile; the caller decides
	// whether to leave (see cmd/hubbub).
	OnStall func(gap time.Duration)
}

// NewNode starts a node: a single node with local room placement, or a
// cluster member when cfg.Cluster names a provider.
func NewNode(cfg Config, opts Options) *Node {
	n, err := StartNode(cfg, opts)
	if err != nil {
		panic(err) // only a cluster configuration can fail; use StartNode for those
	}
	return n
}

// StartNode is NewNode that reports configuration errors.
func StartNode(cfg Config, opts Options) (*Node, error) {
	cfg = cfg.withDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Counters == nil {
		opts.Counters = &telemetry.Counters{}
	}
	log := opts.Logger
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(newLibLog(log.Handler())).With("lib", "protoactor")
	}))
	if opts.Auth == nil {
		opts.Auth, _ = auth.New(auth.Config{}) // development mode cannot fail
	}
	if opts.Tracing == nil {
		opts.Tracing = &telemetry.Tracing{}
	}
	n := &Node{cfg: cfg, log: log, counters: opts.Counters, system: system, nodeID: randomID(4), auth: opts.Auth, tracing: opts.Tracing,
		inject: opts.Inject, rooms: newRoomIndex(), started: time.Now(), hooks: opts.Hooks}
	// Mailbox runs of connections, rooms and relays go to kept goroutines.
	n.workers = workers.New(16 * runtime.GOMAXPROCS(0))
	n.dispatcher = workers.Dispatcher{Pool: n.workers, N: mailboxThroughput}
	if cfg.Ledger {
		n.ledger = newLedger()
	}
	var nt *notifier
	if n.hooks.Has("Notify") {
		var err error
		if nt, err = newNotifier(n); err != nil {
			return nil, err
		}
	}
	n.stalls = startStallWatch(func(gap time.Duration) {
		n.counters.NodeStalls.Add(1)
		log.Warn("this node was stalled; durable rooms check their position against the store before answering", "gap", gap.Round(time.Millisecond))
		if opts.OnStall != nil {
			opts.OnStall(gap)
		}
	})
	// WithGuardian sets the strategy on the context it is called on, so each
	// kind of actor gets a root context of its own.
	//
	// A connection that panics stops: its socket closes with 1011 and the
	// client reconnects. A room recovers its own panics (room.onPanic: it
	// stops and its members are closed with 4004), because in a cluster its
	// parent is protoactor's placement actor, whose strategy would restart it
	// empty under the same PID without telling its members; the Stop here
	// covers anything that escapes. The relay and the users actor resume: a
	// restart would lose the relay's subscriptions (members would silently
	// stop receiving) and the users' connection counts, while the message
	// that failed is only one push or one count.
	n.conns = actor.NewRootContext(system, nil).WithGuardian(actor.NewOneForOneStrategy(0, 0, n.decide("connection", actor.StopDirective)))
	rooms := actor.NewRootContext(system, nil).WithGuardian(actor.NewOneForOneStrategy(0, 0, n.decide("room", actor.StopDirective)))
	keep := actor.NewRootContext(system, nil).WithGuardian(actor.NewOneForOneStrategy(0, 0, n.decide("node", actor.ResumeDirective)))
	if n.tracing.Enabled {
		n.fanouts = startFanoutRecorder(n.tracing, n.counters)
	}
	shards := cfg.RelayShards
	if shards <= 0 {
		shards = runtime.GOMAXPROCS(0)
	}
	n.relays = make([]*actor.PID, shards)
	for i := range n.relays {
		n.relays[i] = actor.NewPID(system.Address(), relayShardID(i))
	}
	deps := relayDeps{log: log, counters: n.counters, tracing: n.tracing, recorder: n.fanouts, aliases: newAliasTable(), ledger: n.ledger,
		dispatcher: n.dispatcher}
	for i := shards - 1; i >= 0; i-- { // the first shard, which hands on to the others, last
		n.relays[i], _ = keep.SpawnNamed(relayProps(deps, i, n.relays), relayShardID(i))
	}
	n.relay = n.relays[0]
	if cfg.Cluster.Provider != "" {
		props := roomProps("", cfg.Room, n.roomDeps(), nil).
			Configure(actor.WithSupervisor(actor.NewOneForOneStrategy(0, 0, n.decide("room", actor.StopDirective))))
		c, err := n.startCluster(cfg.Cluster, props)
		if err != nil {
			n.stalls.close()
			if n.fanouts != nil {
				n.fanouts.close()
			}
			if nt != nil && nt.journal != nil {
				nt.journal.close()
			}
			return nil, err
		}
		n.cluster = c
		n.placement = newClusterPlacement(c)
	} else {
		var lp *localPlacement
		lp = newLocalPlacement(system, rooms, func(name string) *actor.Props {
			return roomProps(name, cfg.Room, n.roomDeps(), func(pid *actor.PID) { lp.stopped(name, pid) })
		})
		n.placement = lp
	}
	n.users, _ = keep.SpawnNamed(usersProps(n), usersID)
	if nt != nil {
		n.notifier, _ = keep.SpawnNamed(notifierProps(nt), "hubbub/notifier")
	}
	n.probes = n.probePlacement(rooms)
	return n, nil
}

// roomDeps are what every room of this node shares.
func (n *Node) roomDeps() roomDeps {
	return roomDeps{log: n.log, counters: n.counters, tracing: n.tracing, inject: n.inject, stalls: n.stalls, index: n.rooms, outcomes: n.sendOutcome,
		dispatcher: n.dispatcher}
}

// decide returns a supervisor decider that logs and counts a panic and applies
// the directive: a room resumes with its state (the failing message is
// dropped), a connection stops and its socket is closed with 1011.
func (n *Node) decide(kind string, d actor.Directive) actor.DeciderFunc {
	return func(reason any) actor.Directive {
		n.counters.ActorPanics.Add(1)
		n.log.Error("actor panicked", "kind", kind, "reason", reason, "directive", d.String())
		return d
	}
}

// Counters returns the node's counters.
func (n *Node) Counters() *telemetry.Counters { return n.counters }

// Config returns the node's configuration with defaults applied.
func (n *Node) Config() Config { return n.cfg }

// ConnHandle is the transport's handle on one connection actor.
type ConnHandle struct {
	pid  *actor.PID
	root *actor.RootContext
	done chan struct{}
}

// ConnInfo is what the transport knows of a connection before its first frame.
type ConnInfo struct {
	// Token from the upgrade request's query, used when connect carries none.
	Token string
	// RemoteAddr is the peer's address.
	RemoteAddr string
	// Headers are the upgrade's HTTP headers the connect hook receives
	// (transport.Config.HookHeaders), by canonical name.
	Headers map[string]string
}

// OpenConn spawns the actor of a new connection whose frames go to sink.
func (n *Node) OpenConn(sink Sink, info ConnInfo) (*ConnHandle, error) {
	if n.stopped.Load() {
		return nil, ErrNodeStopped
	}
	// Unique in the cluster: a random id per node process, then a counter.
	clientID := n.nodeID + "-" + strconv.FormatUint(n.nextConn.Add(1), 16)
	done := make(chan struct{})
	limiter := newConnLimiter(&n.cfg.Conn, sink, n.counters)
	props := actor.PropsFromProducer(func() actor.Actor {
		return &conn{node: n, cfg: &n.cfg.Conn, sink: sink, info: info, clientID: clientID, done: done}
	}, actor.WithReceiverMiddleware(limiter.middleware), actor.WithMailbox(actor.Unbounded(&n.counters.Mailboxes.Conn)),
		actor.WithDispatcher(n.dispatcher))
	pid := n.conns.SpawnPrefix(props, "conn")
	n.system.Root.Send(n.relays[relayShard(pid.Id, len(n.relays))], registerConn{id: pid.Id, sink: sink})
	return &ConnHandle{pid: pid, root: n.system.Root, done: done}, nil
}

// Receive hands a decoded client frame, size bytes on the wire, to the connection actor.
func (h *ConnHandle) Receive(f *hubbubv1.ClientFrame, size int) {
	h.root.Send(h.pid, &inbound{frame: f, size: size})
}

// Close tells the connection actor its socket is gone and waits (at most
// timeout) until it has left its rooms and stopped.
func (h *ConnHandle) Close(timeout time.Duration) {
	h.root.Send(h.pid, connGone{})
	select {
	case <-h.done:
	case <-time.After(timeout):
	}
}

// Done is closed when the connection actor has stopped.
func (h *ConnHandle) Done() <-chan struct{} { return h.done }

// Shutdown stops the rooms and the relay. Close every connection first. It is
// idempotent; it returns when the actors stopped or ctx ended.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		n.stopped.Store(true)
		timeout := 5 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		if n.notifier != nil {
			// The connections' disconnects are queued: give them a chance to reach the backend.
			_, _ = n.system.Root.RequestFuture(n.notifier, notifyFlush{}, min(timeout, 3*time.Second)).Result()
			_ = n.system.Root.StopFuture(n.notifier).Wait()
		}
		n.probes.StopAll(timeout)
		n.placement.StopAll(timeout)
		for _, pid := range n.relays {
			_ = n.system.Root.StopFuture(pid).Wait()
		}
		if n.fanouts != nil {
			n.fanouts.close()
		}
		_ = n.system.Root.StopFuture(n.users).Wait()
		if n.cluster == nil {
			n.system.Shutdown() // cluster.Shutdown closed it already
		}
		n.stalls.close()
		n.workers.Close()
	})
	return ctx.Err()
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// mailboxThroughput is how many messages a mailbox run handles before it
// yields (protoactor's default).
const mailboxThroughput = 300

// IdleWorkers is the number of goroutines kept waiting for mailbox runs.
func (n *Node) IdleWorkers() int { return n.workers.Idle() }
