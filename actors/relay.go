package actors

import (
	"errors"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// relayID is the actor id of every node's relay (its first shard).
const relayID = "hubbub/relay"

// relay receives each room's pushes once per node and appends the encoded
// frame to the outbound queue of every local member. Because join and leave
// replies take the same path as pushes, each member's stream is ordered.
//
// A node's relay is sharded so its fan-out uses every core: each connection
// belongs to one shard (relayShard of its actor id), and rooms send to the
// first shard only (one message per node, as before), which hands pushes,
// joins and leaves on to the other shards in the order it got them. A
// member's stream therefore keeps the room's order, and a remote node's
// pushes cross the network once.
type relay struct {
	relayDeps
	conns  map[string]*localConn             // by connection actor id
	rooms  map[string]map[string]*roomMember // room -> actor id -> member
	shard  int
	shards []*actor.PID // every shard of the node, on the first shard only
	// The compact frames of the push being delivered, built for its first
	// compact member.
	compact struct {
		msg         *nodev1.RelayDeliver
		proto, json []byte
	}
	// Pushes waiting for the end of the mailbox's current backlog (see
	// queueDeliver), and the compact frames of a run being delivered.
	pending     []shardDeliver
	flushQueued bool
	runCompact  map[*nodev1.RelayDeliver][2][]byte
	runScratch  []runSlot
	runFrames   [][]byte // one member's share of a run, for a RunSink
	runInfos    []*PushInfo
	runIdx      []int // the run position of each of runFrames
	runErrs     []error
	runAll      []*PushInfo // the run's infos, shared by its members
	runShared   [2][][]byte // the run's frames per encoding (proto, JSON), shared by its full-push members
	runSharedOK [2]int8     // 0 not built, 1 built, -1 built with a frame missing
}

// runSlot is one push of a run: its ledger entry and how many members got it.
type runSlot struct {
	info      *PushInfo // its Ledger is the push's ledger entry, if any
	delivered int
}

// relayFlush is a shard's message to itself: deliver what queued before it.
type relayFlush struct{}

// maxRun bounds the pushes a shard holds back before delivering them. Only a
// shard that is behind reaches it (otherwise its mailbox drains first); then
// longer runs mean fewer, larger socket writes per delivery, which is what a
// saturated node spends most on. Pinned to one core at 2.8 M deliveries/s
// offered: 2.1-2.3 M deliveries per CPU-second with runs of 64, 2.7-2.8 M
// with 256; 1,024 was worse (writes larger than the pooled buffers and the
// sockets' send buffers).
const maxRun = 256

// relayDeps is what a node's relay shards share.
type relayDeps struct {
	log      *slog.Logger
	counters *telemetry.Counters
	tracing  *telemetry.Tracing
	recorder *fanoutRecorder // nil when tracing is off
	aliases  *aliasTable     // rooms' aliases for compact pushes on this node
	ledger   *ledger         // the delivery ledger; nil when off
	// runs the shards' mailboxes
	dispatcher actor.Dispatcher
}

// relayShard is the shard of the relay that serves a connection actor.
func relayShard(actorID string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(actorID))
	return int(h.Sum32() % uint32(shards))
}

// relayShardID is the actor id of a node's relay shard i.
func relayShardID(i int) string {
	if i == 0 {
		return relayID
	}
	return relayID + "-" + strconv.Itoa(i)
}

// Messages the first shard hands on to the others.
type (
	shardDeliver struct {
		msg   *nodev1.RelayDeliver
		tally *pushTally
	}
	shardSubscribe   struct{ msg *nodev1.RelaySubscribe }
	shardUnsubscribe struct{ msg *nodev1.RelayUnsubscribe }
)

type localConn struct {
	id    string
	sink  Sink
	rooms []string // the rooms it is a member of here, usually few
}

// roomMember is one local connection's membership of one room: where the
// room's pushes go, and where the member is in the room's stream.
type roomMember struct {
	conn     *localConn
	stream   memberStream
	compact  bool // gets CompactMessage pushes and holds a reference to the room's alias
	receipts bool // gets the room's read receipts
}

// memberStream is where one member is in one room's stream: the epoch and
// offset of the last message it was handed (or of its join reply).
type memberStream struct {
	epoch  string
	offset uint64
}

// continues reports whether a message continues the member's stream, and
// moves the stream forward when it does. Pushes that are not messages
// (offset 0) always pass.
func (s *memberStream) continues(msg *nodev1.RelayDeliver) bool {
	if msg.GetOffset() == 0 || msg.GetEpoch() == "" {
		return true
	}
	if msg.GetEpoch() != s.epoch || msg.GetOffset() != s.offset+1 {
		return false
	}
	s.offset = msg.GetOffset()
	return true
}

// registerConn and unregisterConn are local messages from connection actors.
type registerConn struct {
	id   string
	sink Sink
}

type unregisterConn struct{ id string }

// relayProps is shard i's; shards lists every shard for the first one.
func relayProps(deps relayDeps, i int, shards []*actor.PID) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		r := &relay{relayDeps: deps, conns: map[string]*localConn{}, rooms: map[string]map[string]*roomMember{}, shard: i}
		if i == 0 && len(shards) > 1 {
			r.shards = shards
		}
		return r
	}, actor.WithMailbox(actor.Unbounded(&deps.counters.Mailboxes.Relay)), actor.WithDispatcher(deps.dispatcher))
}

// route returns the shard that serves a connection, nil for this one.
func (r *relay) route(actorID string) *actor.PID {
	if len(r.shards) == 0 {
		return nil
	}
	if k := relayShard(actorID, len(r.shards)); k != r.shard {
		return r.shards[k]
	}
	return nil
}

func (r *relay) Receive(ctx actor.Context) {
	msg := unwrap(ctx.Message())
	switch msg.(type) {
	case *nodev1.RelayDeliver, shardDeliver:
	default:
		// Anything else (a join, a leave, a connection's end, a stop) takes
		// effect after the pushes that came before it.
		r.flushDelivers()
	}
	switch msg := msg.(type) {
	case relayFlush:
		r.flushQueued = false
	case *nodev1.RelayDeliver:
		r.counters.RelayDelivers.Add(1)
		var t *pushTally
		// Presence and typing pushes (offset 0) that are not traced record
		// nothing per push, so their shards need no tally.
		if len(r.shards) > 1 && (msg.GetOffset() > 0 || r.traced(msg)) {
			t = &pushTally{}
			t.remaining.Store(int32(len(r.shards)))
		}
		for i, pid := range r.shards {
			if i != r.shard {
				ctx.Send(pid, shardDeliver{msg, t})
			}
		}
		r.queueDeliver(ctx, msg, t)
	case shardDeliver:
		r.queueDeliver(ctx, msg.msg, msg.tally)
	case *nodev1.RelaySubscribe:
		if pid := r.route(msg.GetActorId()); pid != nil {
			ctx.Send(pid, shardSubscribe{msg})
			return
		}
		r.onSubscribe(msg)
	case shardSubscribe:
		r.onSubscribe(msg.msg)
	case *nodev1.RelayUnsubscribe:
		if pid := r.route(msg.GetActorId()); pid != nil {
			ctx.Send(pid, shardUnsubscribe{msg})
			return
		}
		r.onUnsubscribe(msg)
	case shardUnsubscribe:
		r.onUnsubscribe(msg.msg)
	case registerConn:
		r.conns[msg.id] = &localConn{id: msg.id, sink: msg.sink}
	case unregisterConn:
		r.onUnregister(msg.id)
	case relayProbe:
		ctx.Respond(msg)
	case actor.SystemMessage, actor.AutoReceiveMessage:
	default:
		r.log.Warn("relay: unexpected message dropped", "type", slog.AnyValue(msg).String())
	}
}

// queueDeliver holds a push back until the shard has taken the pushes
// already in its mailbox (a message to itself marks the spot), so that
// consecutive pushes of one room reach each member together: every member's
// connection and queue is touched once per run instead of once per push,
// which under load is most of the relay's cost (cache misses), and its
// writer finds them in one batch. Order is kept: runs are consecutive pushes
// of one room, and any other message delivers what is held first. Traced
// pushes and read receipts go at once, after what is held.
func (r *relay) queueDeliver(ctx actor.Context, msg *nodev1.RelayDeliver, t *pushTally) {
	if r.traced(msg) || msg.GetKind() == kindReceipts {
		r.flushDelivers()
		r.onDeliverAny(ctx, msg, t)
		return
	}
	r.pending = append(r.pending, shardDeliver{msg, t})
	if len(r.pending) >= maxRun {
		r.flushDelivers()
		return
	}
	if !r.flushQueued {
		r.flushQueued = true
		ctx.Send(ctx.Self(), relayFlush{})
	}
}

// flushDelivers delivers the held pushes, each run of one room's together.
func (r *relay) flushDelivers() {
	p := r.pending
	for i := 0; i < len(p); {
		j := i + 1
		for j < len(p) && p[j].msg.GetRoom() == p[i].msg.GetRoom() {
			j++
		}
		if j-i == 1 {
			r.onDeliver(p[i].msg, p[i].tally)
		} else {
			r.deliverRun(p[i:j])
		}
		i = j
	}
	clear(p)
	r.pending = p[:0]
	r.runCompact = nil
}

// deliverRun delivers consecutive pushes of one room: member by member, each
// member gets the whole run in order. Each push's ledger entry counts all
// its members queued at once; a delivery that fails moves to its outcome.
func (r *relay) deliverRun(run []shardDeliver) {
	room := run[0].msg.GetRoom()
	subs := r.rooms[room]
	slots, all := r.runScratch[:0], r.runAll[:0]
	for _, d := range run {
		e := r.ledgerEntry(d.msg, len(subs))
		if e != nil {
			e.queued.Add(int64(len(subs)))
		}
		info := pushInfo(d.msg, e)
		slots = append(slots, runSlot{info: info})
		all = append(all, info)
	}
	r.runAll = all
	for _, m := range subs {
		if rs, ok := m.conn.sink.(RunSink); ok && len(run) > 1 {
			r.pushRun(rs, m, run, slots)
			continue
		}
		gap := false
		for k, d := range run {
			if gap { // closed at the gap: the rest of the run is not its
				slots[k].info.Ledger.fail(nil)
				continue
			}
			err := r.deliver(d.msg, m, slots[k].info, true)
			switch {
			case err == nil:
				slots[k].delivered++
			case errors.Is(err, errStreamGap):
				gap = true
			}
		}
	}
	for k, d := range run {
		r.finish(d.msg, d.tally, len(subs), slots[k].delivered, nil)
	}
	clear(slots)
	clear(all)
	r.runScratch, r.runAll = slots[:0], all[:0]
	for i := range r.runShared {
		clear(r.runShared[i])
		r.runShared[i], r.runSharedOK[i] = r.runShared[i][:0], 0
	}
}

// pushRun hands a member its share of a run in one call: what deliver does
// push by push (the stream check, the frame, the ledger), with the queue
// locked once. A gap queues the pushes before it, then closes the member;
// the gap's push and the rest of the run count as gone. Members that take
// full pushes share the run's frames and infos.
func (r *relay) pushRun(rs RunSink, m *roomMember, run []shardDeliver, slots []runSlot) {
	n := len(run) // the pushes that continue the member's stream
	for k, d := range run {
		if !m.stream.continues(d.msg) {
			n = k
			break
		}
	}
	var frames [][]byte
	var infos []*PushInfo
	var idx []int // the run position of each frame; nil when they are the run's own
	if shared := r.sharedFrames(run, m); shared != nil {
		frames, infos = shared[:n], r.runAll[:n]
	} else {
		frames, infos, idx = r.runFrames[:0], r.runInfos[:0], r.runIdx[:0]
		for k, d := range run[:n] {
			frame := r.frameFor(d.msg, m)
			if len(frame) == 0 {
				slots[k].info.Ledger.fail(errNoFrame)
				continue
			}
			frames = append(frames, frame)
			infos = append(infos, slots[k].info)
			idx = append(idx, k)
		}
		r.runFrames, r.runInfos, r.runIdx = frames, infos, idx
	}
	if cap(r.runErrs) < len(frames) {
		r.runErrs = make([]error, len(frames))
	}
	errs := r.runErrs[:len(frames)]
	if len(frames) > 0 {
		rs.PushRun(frames, infos, errs)
	}
	for j, err := range errs {
		k := j
		if idx != nil {
			k = idx[j]
		}
		if err == nil {
			slots[k].delivered++
			continue
		}
		slots[k].info.Ledger.fail(err)
	}
	if n < len(run) {
		r.streamGap(run[n].msg, m)
		for k := n; k < len(run); k++ {
			slots[k].info.Ledger.fail(errStreamGap)
		}
	}
	clear(errs)
	if idx != nil {
		clear(r.runFrames)
		clear(r.runInfos)
		r.runFrames, r.runInfos, r.runIdx = r.runFrames[:0], r.runInfos[:0], r.runIdx[:0]
	}
}

// sharedFrames is the run's frames in the member's encoding, built once per
// run; nil for a member that takes compact pushes, or when a push has no
// frame in that encoding.
func (r *relay) sharedFrames(run []shardDeliver, m *roomMember) [][]byte {
	if m.compact {
		return nil
	}
	enc, i := m.conn.sink.Encoding(), 0
	if enc == wire.JSON {
		i = 1
	}
	if r.runSharedOK[i] == 0 {
		fs := r.runShared[i][:0]
		r.runSharedOK[i] = 1
		for _, d := range run {
			f := fullFrame(d.msg, enc)
			if len(f) == 0 {
				r.runSharedOK[i] = -1
			}
			fs = append(fs, f)
		}
		r.runShared[i] = fs
	}
	if r.runSharedOK[i] < 0 {
		return nil
	}
	return r.runShared[i]
}

func (r *relay) onDeliverAny(ctx actor.Context, msg *nodev1.RelayDeliver, t *pushTally) {
	if r.traced(msg) {
		r.onDeliverTraced(msg, t, ctx.ActorSystem().Address()) // known once the cluster's transport runs
	} else {
		r.onDeliver(msg, t)
	}
}

// traced reports whether this node records a fan-out span for a push.
func (r *relay) traced(msg *nodev1.RelayDeliver) bool {
	return r.recorder != nil && len(msg.GetTrace()) > 0
}

// onDeliver is the hot path: the same bytes to every local member's queue.
func (r *relay) onDeliver(msg *nodev1.RelayDeliver, t *pushTally) {
	subs := r.rooms[msg.GetRoom()]
	delivered, recipients := 0, len(subs)
	if msg.GetKind() == kindReceipts { // only to the members that asked
		recipients = 0
		info := pushInfo(msg, nil)
		for _, m := range subs {
			if m.receipts {
				recipients++
				if r.deliver(msg, m, info, false) == nil {
					delivered++
				}
			}
		}
		r.finish(msg, t, recipients, delivered, nil)
		return
	}
	info := pushInfo(msg, r.ledgerEntry(msg, len(subs)))
	for _, m := range subs {
		if r.deliver(msg, m, info, false) == nil {
			delivered++
		}
	}
	r.finish(msg, t, recipients, delivered, nil)
}

// ledgerEntry is a message's delivery ledger entry, with this shard's
// members counted; nil for other pushes or when the ledger is off.
func (r *relay) ledgerEntry(msg *nodev1.RelayDeliver, members int) *LedgerEntry {
	if r.ledger == nil || msg.GetOffset() == 0 || members == 0 {
		return nil
	}
	e := r.ledger.entry(msg.GetRoom(), msg.GetOffset())
	e.members.Add(int64(members))
	return e
}

// pushTally sums what the shards of a node did with one push, so the node
// records one fan-out (its size histogram, its span) per push however many
// shards share it. The shard that finishes last records it.
type pushTally struct {
	remaining  atomic.Int32
	recipients atomic.Int64
	mu         sync.Mutex
	note       *fanoutNote // traced pushes only
}

// add adds a shard's part; last reports whether it was the last shard's.
func (t *pushTally) add(recipients int, n *fanoutNote) (total int, last bool) {
	if n != nil {
		t.mu.Lock()
		if t.note == nil {
			t.note = n
		} else {
			t.note.merge(n)
		}
		t.mu.Unlock()
	}
	total = int(t.recipients.Add(int64(recipients)))
	return total, t.remaining.Add(-1) == 0
}

// finish counts one shard's part of a push and, once every shard of the
// node has had it (t is nil when no sum is needed), records the node's
// fan-out: the size and latency histograms, and the span's note.
func (r *relay) finish(msg *nodev1.RelayDeliver, t *pushTally, recipients, delivered int, n *fanoutNote) {
	if recipients > 0 {
		r.counters.Deliveries.Add(int64(delivered))
		r.counters.CountPushes(msg.GetKind(), delivered)
		r.counters.DeliveryDrops.Add(int64(recipients - delivered))
	}
	if t != nil {
		var last bool
		if recipients, last = t.add(recipients, n); !last {
			return
		}
		n = t.note // every shard has added its part: no lock needed
	}
	if msg.GetOffset() > 0 {
		r.counters.Hist.Load().RecordFanout(recipients, msg.GetAcceptedUnixNano())
	}
	if n != nil {
		r.recorder.note(n)
	}
}

// errStreamGap is a message that does not continue a member's stream.
var errStreamGap = errors.New("message does not continue the member's stream")

// deliver hands a push to one member. This is the last line of defence of
// the promise that a member never sees a silent gap: a message whose offset
// is not the next one of the member's stream in its epoch (a stale room
// activation, a push lost between nodes, anything) is never delivered;
// the member is unsubscribed and closed with 4004, so it rejoins with its
// last position and recovers exactly what it missed.
func (r *relay) deliver(msg *nodev1.RelayDeliver, m *roomMember, info *PushInfo, counted bool) error {
	e := info.Ledger
	if e != nil && !counted {
		e.queued.Add(1) // before the sink can resolve it
	}
	err := r.push(msg, m, info)
	if err != nil {
		e.fail(err)
	}
	return err
}

// push hands a push to one member's queue; with a ledger entry the queue
// resolves it later.
func (r *relay) push(msg *nodev1.RelayDeliver, m *roomMember, info *PushInfo) error {
	if !m.stream.continues(msg) {
		r.streamGap(msg, m)
		return errStreamGap
	}
	frame := r.frameFor(msg, m)
	if len(frame) == 0 {
		return errNoFrame
	}
	return m.conn.sink.Push(frame, info)
}

// pushInfo is what every recipient's queue is told of a push.
func pushInfo(msg *nodev1.RelayDeliver, e *LedgerEntry) *PushInfo {
	return &PushInfo{Room: msg.GetRoom(), Key: msg.GetKey(), Policy: msg.GetPolicy(), Ledger: e}
}

// streamGap counts and logs a push that does not continue a member's stream,
// and closes the member (4004) to resync.
func (r *relay) streamGap(msg *nodev1.RelayDeliver, m *roomMember) {
	c := m.conn
	r.counters.StreamGaps.Add(1)
	r.log.Warn("relay: a message does not continue a member's stream; closing it to resync", "room", msg.GetRoom(),
		"conn", c.id, "stream_epoch", m.stream.epoch, "stream_offset", m.stream.offset, "epoch", msg.GetEpoch(), "offset", msg.GetOffset())
	r.drop(msg.GetRoom(), c.id, c)
	c.sink.Close(wire.CloseRoomMoved, wire.CloseReason(wire.CloseRoomMoved))
}

// frameFor is the push's frame for one member: its encoding, full or compact.
func (r *relay) frameFor(msg *nodev1.RelayDeliver, m *roomMember) []byte {
	enc := m.conn.sink.Encoding()
	if m.compact && msg.GetOffset() > 0 {
		return r.compactFrame(msg, enc)
	}
	return fullFrame(msg, enc)
}

// fullFrame is a push's full frame in an encoding.
func fullFrame(msg *nodev1.RelayDeliver, enc wire.Encoding) []byte {
	if enc == wire.JSON {
		return msg.GetJsonFrame()
	}
	return msg.GetProtoFrame()
}

// compactFrame returns a message's compact push for this node: the room's
// CompactMessage encoding with the node's alias for the room, built once per
// push and shard and shared by its compact members.
func (r *relay) compactFrame(msg *nodev1.RelayDeliver, enc wire.Encoding) []byte {
	if r.compact.msg != msg {
		// A run alternates between its pushes member by member: keep each one's.
		f, ok := r.runCompact[msg]
		if !ok {
			f[0], f[1] = compactFrames(r.aliases.lookup(msg.GetRoom()), msg.GetCompactProto(), msg.GetCompactJson())
			if r.runCompact == nil {
				r.runCompact = map[*nodev1.RelayDeliver][2][]byte{}
			}
			r.runCompact[msg] = f
		}
		r.compact.msg, r.compact.proto, r.compact.json = msg, f[0], f[1]
	}
	if enc == wire.JSON {
		return r.compact.json
	}
	return r.compact.proto
}

// onDeliverTraced is onDeliver noting what the fan-out span will say:
// counts, drops and slow consumers, and per-recipient deliveries when
// configured. The recorder makes the span (see fanouttrace.go).
func (r *relay) onDeliverTraced(msg *nodev1.RelayDeliver, t *pushTally, address string) {
	n := &fanoutNote{msg: msg, node: address, start: time.Now()}
	perRecipient := r.tracing.Deliveries != telemetry.DeliveryCounts
	subs := r.rooms[msg.GetRoom()]
	e := r.ledgerEntry(msg, len(subs))
	n.ledger = e
	info := pushInfo(msg, e)
	for _, m := range subs {
		err := r.deliver(msg, m, info, false)
		switch {
		case errors.Is(err, ErrSlowConsumer):
			n.events = append(n.events, deliveryEvent{name: "hubbub.slow_consumer", client: m.conn.id, at: time.Now()})
		case err != nil:
			n.events = append(n.events, deliveryEvent{name: "hubbub.drop", client: m.conn.id, err: err.Error(), at: time.Now()})
		default:
			n.delivered++
			if perRecipient {
				n.events = append(n.events, deliveryEvent{name: "hubbub.deliver", client: m.conn.id, at: time.Now()})
			}
		}
	}
	n.recipients = len(subs)
	n.end = time.Now()
	r.finish(msg, t, len(subs), n.delivered, n)
}

func (r *relay) onSubscribe(msg *nodev1.RelaySubscribe) {
	c, ok := r.conns[msg.GetActorId()]
	if !ok {
		return // the connection closed meanwhile; the room hears of it through its leave
	}
	subs := r.rooms[msg.GetRoom()]
	if subs == nil {
		subs = map[string]*roomMember{}
		r.rooms[msg.GetRoom()] = subs
	}
	pos := msg.GetReply().GetPosition()
	m := &roomMember{conn: c, stream: memberStream{epoch: pos.GetEpoch(), offset: pos.GetOffset()}, compact: msg.GetCompact(),
		receipts: msg.GetReceipts()}
	if old := subs[msg.GetActorId()]; old != nil && old.compact {
		r.aliases.release(msg.GetRoom())
	}
	if m.compact {
		msg.GetReply().Alias = r.aliases.acquire(msg.GetRoom())
	}
	subs[msg.GetActorId()] = m
	if !slices.Contains(c.rooms, msg.GetRoom()) {
		c.rooms = append(c.rooms, msg.GetRoom())
	}
	r.send(c, &hubbubv1.ServerFrame{Id: msg.GetRequestId(), Body: &hubbubv1.ServerFrame_Join{Join: msg.GetReply()}, TraceId: traceID(msg.GetTrace())})
}

func (r *relay) onUnsubscribe(msg *nodev1.RelayUnsubscribe) {
	c, ok := r.conns[msg.GetActorId()]
	if !ok {
		return
	}
	r.drop(msg.GetRoom(), msg.GetActorId(), c)
	if msg.GetReply() {
		r.send(c, &hubbubv1.ServerFrame{Id: msg.GetRequestId(), Body: &hubbubv1.ServerFrame_Leave{Leave: &hubbubv1.LeaveReply{Room: msg.GetRoom()}}})
	}
}

func (r *relay) drop(room, id string, c *localConn) {
	if i := slices.Index(c.rooms, room); i >= 0 {
		c.rooms = slices.Delete(c.rooms, i, i+1)
	}
	if subs := r.rooms[room]; subs != nil {
		if m := subs[id]; m != nil && m.compact {
			r.aliases.release(room)
		}
		delete(subs, id)
		if len(subs) == 0 {
			delete(r.rooms, room)
		}
	}
}

func (r *relay) onUnregister(id string) {
	c, ok := r.conns[id]
	if !ok {
		return
	}
	for _, room := range slices.Clone(c.rooms) {
		r.drop(room, id, c)
	}
	delete(r.conns, id)
}

func (r *relay) send(c *localConn, f *hubbubv1.ServerFrame) {
	b, err := wire.Marshal(f, c.sink.Encoding())
	if err != nil {
		r.log.Error("relay: encode reply", "err", err)
		return
	}
	_ = c.sink.Send(b)
}
