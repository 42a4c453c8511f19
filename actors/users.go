package actors

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// usersID names each node's users actor; other nodes' server API calls reach it there.
const usersID = "hubbub/users"

// users is a node's registry of its connections by user: it counts each
// user's connections for MaxConnsPerUser, and answers the server API's
// questions about this node (NodeInspect) and its disconnects
// (NodeDisconnect), which may come from any node.
type users struct {
	node  *Node
	count map[string]int          // connection slots held per user
	conns map[string][]*connEntry // user -> the user's connections on this node
	byID  map[string]*connEntry   // connection actor id -> entry
}

// connEntry is what the registry knows of one connection. It is kept small:
// a node holds one per connection, most of them idle.
type connEntry struct {
	pid         *actor.PID
	sink        Sink
	user        string
	clientID    string
	connectedMs int64
	rooms       []string // joined rooms, usually few
}

// acquireUser asks for one of the user's slots; the answer is a bool.
type acquireUser struct {
	user string
	max  int
}

// releaseUser gives a slot back.
type releaseUser struct{ user string }

// connUp registers a connection once its connect is accepted.
type connUp struct {
	pid      *actor.PID
	user     string
	clientID string
	sink     Sink
}

// connDown unregisters a connection that stopped.
type connDown struct{ pid *actor.PID }

// connRoom records that a connection joined (or left) a room.
type connRoom struct {
	pid    *actor.PID
	room   string
	joined bool
}

// kick tells a connection actor to close its socket for the server API.
type kick struct {
	code   int
	reason string
}

func usersProps(n *Node) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &users{node: n, count: map[string]int{}, conns: map[string][]*connEntry{}, byID: map[string]*connEntry{}}
	})
}

func (u *users) Receive(ctx actor.Context) {
	switch msg := unwrap(ctx.Message()).(type) {
	case acquireUser:
		ok := u.count[msg.user] < msg.max
		if ok {
			u.count[msg.user]++
		}
		ctx.Respond(ok)
	case releaseUser:
		if u.count[msg.user]--; u.count[msg.user] <= 0 {
			delete(u.count, msg.user)
		}
	case connUp:
		e := &connEntry{pid: msg.pid, sink: msg.sink, user: msg.user, clientID: msg.clientID, connectedMs: time.Now().UnixMilli()}
		u.conns[msg.user] = append(u.conns[msg.user], e)
		u.byID[msg.pid.Id] = e
	case connDown:
		if e := u.byID[msg.pid.Id]; e != nil {
			delete(u.byID, msg.pid.Id)
			list := slices.DeleteFunc(u.conns[e.user], func(o *connEntry) bool { return o == e })
			if len(list) == 0 {
				delete(u.conns, e.user)
			} else {
				u.conns[e.user] = list
			}
		}
	case connRoom:
		if e := u.byID[msg.pid.Id]; e != nil {
			i := slices.Index(e.rooms, msg.room)
			switch {
			case msg.joined && i < 0:
				e.rooms = append(e.rooms, msg.room)
			case !msg.joined && i >= 0:
				e.rooms = slices.Delete(e.rooms, i, i+1)
			}
		}
	case *nodev1.NodeInspect:
		ctx.Respond(wrap(u.report(ctx, msg)))
	case *nodev1.NodeDisconnect:
		ctx.Respond(wrap(&nodev1.NodeReport{RequestId: msg.GetRequestId(), Address: u.node.address(), Closed: u.disconnect(ctx, msg)}))
	case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
	case unknownEnvelope:
		u.node.log.Warn("users: message from a newer node dropped")
	default:
		u.node.log.Warn("users: unexpected message dropped")
	}
}

// report answers a NodeInspect: this node's counts, and its rooms or a user's connections when asked.
func (u *users) report(ctx actor.Context, msg *nodev1.NodeInspect) *nodev1.NodeReport {
	rooms := u.node.rooms.list("", nil)
	r := &nodev1.NodeReport{RequestId: msg.GetRequestId(), Address: u.node.address(), Version: u.node.cfg.ServerVersion,
		StartedUnixMs: u.node.started.UnixMilli(), Connections: uint32(len(u.byID)), Users: uint32(len(u.conns)), Rooms: uint32(len(rooms))}
	c := u.node.counters
	r.SlowConsumers, r.OverflowDropped = uint64(c.SlowConsumers.Load()), uint64(c.OverflowDropped.Load())
	r.Conflated, r.DeliveryDrops = uint64(c.Conflated.Load()), uint64(c.DeliveryDrops.Load())
	if msg.GetRooms() {
		r.RoomList = u.node.rooms.list(msg.GetPattern(), rooms)
	}
	if room := msg.GetLedgerRoom(); room != "" {
		r.Ledger = u.node.ledger.list(room, msg.GetLedgerAfter(), int(msg.GetLedgerLimit()))
	}
	if n := int(msg.GetSlowest()); n > 0 {
		r.ConnList = append(r.ConnList, u.slowest(n)...)
	}
	if user := msg.GetUser(); user != "" {
		for _, e := range u.conns[user] {
			queued := 0
			if q, ok := e.sink.(interface{ QueuedBytes() int }); ok {
				queued = q.QueuedBytes()
			}
			r.ConnList = append(r.ConnList, u.describe(e, queued))
		}
		slices.SortFunc(r.ConnList, func(a, b *nodev1.NodeConn) int { return strings.Compare(a.GetClientId(), b.GetClientId()) })
	}
	return r
}

// slowest lists the n connections with the most bytes queued (at least one).
func (u *users) slowest(n int) []*nodev1.NodeConn {
	var out []*nodev1.NodeConn
	for _, e := range u.byID {
		q, ok := e.sink.(interface{ QueuedBytes() int })
		if !ok || q.QueuedBytes() == 0 {
			continue
		}
		out = append(out, u.describe(e, q.QueuedBytes()))
	}
	slices.SortFunc(out, func(a, b *nodev1.NodeConn) int {
		if a.GetQueuedBytes() != b.GetQueuedBytes() {
			return cmp.Compare(b.GetQueuedBytes(), a.GetQueuedBytes())
		}
		return strings.Compare(a.GetClientId(), b.GetClientId())
	})
	return out[:min(n, len(out))]
}

func (u *users) describe(e *connEntry, queued int) *nodev1.NodeConn {
	c := &nodev1.NodeConn{ClientId: e.clientID, User: e.user, ConnectedUnixMs: e.connectedMs, QueuedBytes: uint64(queued)}
	c.Rooms = slices.Sorted(slices.Values(e.rooms))
	return c
}

// disconnect closes the connections a NodeDisconnect names and returns how many.
func (u *users) disconnect(ctx actor.Context, msg *nodev1.NodeDisconnect) uint32 {
	var targets []*connEntry
	if msg.GetUser() != "" {
		targets = slices.Clone(u.conns[msg.GetUser()])
	} else {
		for _, e := range u.byID {
			targets = append(targets, e)
		}
	}
	var n uint32
	for _, e := range targets {
		if msg.GetClientId() != "" && e.clientID != msg.GetClientId() {
			continue
		}
		code := int(msg.GetCode())
		if code == 0 {
			code = wire.CloseDisconnected
		}
		ctx.Send(e.pid, kick{code: code, reason: msg.GetReason()})
		n++
	}
	return n
}
