package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

// relayProbe asks the relay to answer: its mailbox is moving.
type relayProbe struct{}

// defaultProbeTimeout bounds a probe when the caller's context has no deadline.
const defaultProbeTimeout = 2 * time.Second

// Probe checks that the node's actors work: the relay answers, and a room
// actor on this node (a health room no client can join, with no store)
// answers a presence request, each within the deadline. A stuck mailbox or a
// dead dispatcher fails it; failures are counted (ProbeFailures). In a
// cluster the health room is a local actor, not a grain, so one node's stall
// does not make the others unready.
func (n *Node) Probe(ctx context.Context) error {
	err := n.probe(ctx)
	if err != nil {
		n.counters.ProbeFailures.Add(1)
	}
	return err
}

func (n *Node) probe(ctx context.Context) error {
	if n.stopped.Load() {
		return ErrNodeStopped
	}
	timeout := defaultProbeTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	for i, pid := range n.relays {
		if _, err := n.system.Root.RequestFuture(pid, relayProbe{}, timeout).Result(); err != nil {
			return fmt.Errorf("relay shard %d: %w", i, err)
		}
	}
	room := healthRoomPrefix + n.nodeID
	pid := n.probes.RoomPID(room)
	res, err := n.system.Root.RequestFuture(pid, wrap(&nodev1.RoomPresence{Room: room}), timeout).Result()
	if err != nil {
		return fmt.Errorf("room: %w", err)
	}
	if _, ok := unwrap(res).(*nodev1.RoomReply); !ok {
		return errors.New("room: unexpected reply")
	}
	return nil
}

// probePlacement keeps the health room on this node whatever the placement of other rooms.
func (n *Node) probePlacement(rooms *actor.RootContext) *localPlacement {
	var lp *localPlacement
	lp = newLocalPlacement(n.system, rooms, func(name string) *actor.Props {
		return roomProps(name, n.cfg.Room, n.roomDeps(), func(pid *actor.PID) { lp.stopped(name, pid) })
	})
	return lp
}
