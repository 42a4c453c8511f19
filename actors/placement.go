package actors

import (
	"errors"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Placement finds the actor of a room, activating the room when it is not
// running. A single node places rooms as local actors; a cluster places them
// as grains. Callers cache the PID they get and ask again after a dead letter
// or a timeout.
type Placement interface {
	// RoomPID returns the room's actor, starting it if needed. It may wait
	// (a cluster lookup): call it off actor goroutines unless Cached says yes.
	RoomPID(room string) *actor.PID
	// Cached returns the room's actor if it is known without waiting.
	Cached(room string) (*actor.PID, bool)
	// Forget drops a cached actor that turned out dead.
	Forget(room string, pid *actor.PID)
	// StopAll stops the rooms this node hosts, waiting at most timeout.
	StopAll(timeout time.Duration)
}

// localPlacement runs every room on this node as a named actor "room/<name>".
type localPlacement struct {
	system *actor.ActorSystem
	root   *actor.RootContext
	props  func(room string) *actor.Props

	mu     sync.RWMutex
	active map[string]*actor.PID // rooms spawned and not stopped: the only PIDs handed out
}

const roomPrefix = "room/"

func newLocalPlacement(system *actor.ActorSystem, root *actor.RootContext, props func(string) *actor.Props) *localPlacement {
	return &localPlacement{system: system, root: root, props: props, active: map[string]*actor.PID{}}
}

// RoomPID implements Placement. A room's PID is handed out only once its
// spawn has returned: protoactor registers a process before its mailbox is
// ready, so a PID found in the process registry mid-spawn must not be sent
// to (a data race in the mailbox). Spawns are serialised; lookups are not.
func (p *localPlacement) RoomPID(room string) *actor.PID {
	p.mu.RLock()
	pid, ok := p.active[room]
	p.mu.RUnlock()
	if ok {
		return pid
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pid, ok := p.active[room]; ok {
		return pid
	}
	id := roomPrefix + room
	pid, err := p.root.SpawnNamed(p.props(room), id)
	if err != nil {
		// ErrNameExists: the previous activation is still stopping; a request
		// to it dead-letters and the caller asks again.
		if !errors.Is(err, actor.ErrNameExists) {
			pid = actor.NewPID(p.system.Address(), id)
		}
		return pid
	}
	p.active[room] = pid
	return pid
}

// Cached implements Placement: spawning a local room never waits.
func (p *localPlacement) Cached(room string) (*actor.PID, bool) { return p.RoomPID(room), true }

// Forget implements Placement; the process registry already forgot a dead local room.
func (p *localPlacement) Forget(string, *actor.PID) {}

// stopped forgets a room that stopped by itself (idle).
func (p *localPlacement) stopped(room string, pid *actor.PID) {
	p.mu.Lock()
	if cur, ok := p.active[room]; ok && cur.Equal(pid) {
		delete(p.active, room)
	}
	p.mu.Unlock()
}

func (p *localPlacement) StopAll(timeout time.Duration) {
	p.mu.Lock()
	pids := make([]*actor.PID, 0, len(p.active))
	for _, pid := range p.active {
		pids = append(pids, pid)
	}
	p.mu.Unlock()
	futures := make([]*actor.Future, 0, len(pids))
	for _, pid := range pids {
		futures = append(futures, p.root.StopFuture(pid))
	}
	deadline := time.Now().Add(timeout)
	for _, f := range futures {
		if time.Now().After(deadline) {
			return
		}
		_ = f.Wait()
	}
}
