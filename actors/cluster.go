package actors

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClusterConfig joins the node to a cluster of Hubbub nodes through
// protoactor's cluster: rooms become virtual actors (grains) placed by its
// identity lookup, and room pushes reach other nodes' relays over its remote
// transport. The zero value is a single node with no cluster.
type ClusterConfig struct {
	// Provider is "" (single node), "automanaged" (a static list of seed
	// nodes, no external server) or "etcd" (membership in etcd).
	Provider string
	// Name is the cluster's name; nodes with other names do not join. Default "hubbub".
	Name string
	// Bind is the host:port of this node's actor transport (gRPC).
	Bind string
	// AutoManagePort is the HTTP port the automanaged provider serves on this node.
	AutoManagePort int
	// Seeds are the automanaged host:port of every node (this one included).
	Seeds []string
	// EtcdEndpoints are the etcd servers for the etcd provider. Default 127.0.0.1:2379.
	EtcdEndpoints []string
}

const roomKind = "room"

// startCluster starts the actor transport and cluster membership, with rooms as grains.
func (n *Node) startCluster(cc ClusterConfig, roomProps *actor.Props) (*cluster.Cluster, error) {
	host, portStr, err := net.SplitHostPort(cc.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster bind %q: %w", cc.Bind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster bind %q: %w", cc.Bind, err)
	}
	if cc.Name == "" {
		cc.Name = "hubbub"
	}
	// protoactor's remote panics when it cannot listen: check first.
	l, err := net.Listen("tcp", cc.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster bind: %w", err)
	}
	_ = l.Close()
	var provider cluster.ClusterProvider
	switch cc.Provider {
	case "automanaged":
		provider = automanaged.NewWithConfig(time.Second, cc.AutoManagePort, cc.Seeds...)
	case "etcd":
		endpoints := cc.EtcdEndpoints
		if len(endpoints) == 0 {
			endpoints = []string{"127.0.0.1:2379"}
		}
		if provider, err = etcd.NewWithConfig("/hubbub", clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second}); err != nil {
			return nil, fmt.Errorf("etcd: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown cluster provider %q (automanaged or etcd)", cc.Provider)
	}
	cfg := cluster.Configure(cc.Name, provider, disthash.New(), remote.Configure(host, port),
		cluster.WithKinds(cluster.NewKind(roomKind, roomProps)), cluster.WithRequestTimeout(n.cfg.Conn.RequestTimeout))
	c := cluster.New(n.system, cfg)
	c.StartMember()
	return c, nil
}

// clusterPlacement places rooms as grains of the cluster.
type clusterPlacement struct {
	c *cluster.Cluster

	mu   sync.Mutex
	down map[string]time.Time // addresses whose connection failed, and when
}

// downFor is how long a node whose connection failed is passed over by
// lookups: until the membership drops it (about a second with the
// automanaged provider) or it answers again.
const downFor = 10 * time.Second

func newClusterPlacement(c *cluster.Cluster) *clusterPlacement {
	p := &clusterPlacement{c: c, down: map[string]time.Time{}}
	c.ActorSystem.EventStream.Subscribe(func(ev any) {
		switch e := ev.(type) {
		case *remote.EndpointTerminatedEvent:
			p.mu.Lock()
			p.down[e.Address] = time.Now()
			p.mu.Unlock()
		case *remote.EndpointConnectedEvent:
			p.mu.Lock()
			delete(p.down, e.Address)
			p.mu.Unlock()
		}
	})
	return p
}

// ownerDown reports whether the node the cluster's hash gives the room to
// is one whose connection just failed. The cluster's own lookup would wait
// its fixed 5 s for that node's placement actor; a lookup that fails at once
// lets the client retry until the membership has moved the room.
func (p *clusterPlacement) ownerDown(room string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.down) == 0 {
		return false
	}
	rdv := cluster.NewRendezvous()
	rdv.UpdateMembers(p.c.MemberList.Members().Members())
	owner := rdv.GetByClusterIdentity(cluster.NewClusterIdentity(room, roomKind))
	at, ok := p.down[owner]
	if ok && time.Since(at) > downFor {
		delete(p.down, owner)
		return false
	}
	return ok
}

func (p *clusterPlacement) RoomPID(room string) *actor.PID {
	if pid, ok := p.c.PidCache.Get(room, roomKind); ok {
		return pid
	}
	if p.ownerDown(room) {
		return actor.NewPID("nonhost", "unplaced/"+room)
	}
	if pid := p.c.Get(room, roomKind); pid != nil {
		p.c.PidCache.Set(room, roomKind, pid)
		return pid
	}
	// The lookup failed (no member yet, or a node is gone): a PID that
	// dead-letters, so the caller's request fails and is retried.
	return actor.NewPID("nonhost", "unplaced/"+room)
}

func (p *clusterPlacement) Cached(room string) (*actor.PID, bool) {
	return p.c.PidCache.Get(room, roomKind)
}

func (p *clusterPlacement) Forget(room string, pid *actor.PID) {
	p.c.PidCache.RemoveByValue(room, roomKind, pid)
}

func (p *clusterPlacement) StopAll(time.Duration) {
	p.c.Shutdown(true)
}

// Ready reports whether the node can place rooms: always on a single node,
// once the cluster has members otherwise.
func (n *Node) Ready() bool {
	if n.cluster == nil {
		return true
	}
	return n.cluster.MemberList != nil && n.cluster.MemberList.Members().Len() > 0
}
