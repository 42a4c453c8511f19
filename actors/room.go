package actors

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// room is the actor of one room: members, offsets, history, presence, typing.
type room struct {
	name  string
	cfg   RoomConfig
	prof  RoomProfile // resolved from the name when it is known
	named bool        // setName ran
	roomDeps
	onStop func(*actor.PID)

	epoch     string
	offset    uint64 // newest offset assigned
	committed uint64 // newest offset acknowledged and delivered
	store     store.Store
	loadErr   error
	pending   []*pendingPublish
	inflight  *appendBatch
	stopping  bool
	members   map[string]*nodev1.Member // by memberKey
	nodes     map[string]int            // members per node address
	relays    map[string]*actor.PID     // relay per node address
	json      int                       // members speaking JSON
	binary    int                       // members speaking protobuf
	// Members with compact pushes, by encoding: they need the CompactMessage
	// encodings of messages and the full frames of other pushes.
	compactJSON, compactBinary int
	history                    *history
	dedupe                     *dedupe
	typing                     *typingState
	presence                   *presence

	lastActive time.Time
	idleTimer  *time.Timer
	publishes  *rate.Limiter        // nil when unlimited
	reads      []deferredRead       // history requests waiting for earlier publishes to commit
	verified   uint64               // the node's stall count when the room last checked the store
	entry      *roomEntry           // this room in the node's room index (nil for health rooms)
	tails      tailState            // the server API's Tail streams watching the room
	marks      markState            // users' ack and read marks, and read receipts
	cmds       commandState         // a personal room's device commands
	reserved   map[string]time.Time // a personal room's granted connection slots, by client id
	userMax    int                  // a personal room's connection cap (0: none)
}

// roomDeps are a room's collaborators, shared by every room of a node.
type roomDeps struct {
	log      *slog.Logger
	counters *telemetry.Counters
	tracing  *telemetry.Tracing
	inject   func(kind string, msg any)                      // fault injection in tests; nil otherwise
	outcomes func(sender string, o *hubbubv1.CommandOutcome) // tells a command's sender its outcome
	stalls   *stallWatch                                     // the node's stall count
	index    *roomIndex                                      // the node's running rooms
	// runs the room's mailbox
	dispatcher actor.Dispatcher
}

// idleCheck is the room's own timer message for stopping when idle.
// (protoactor's SetReceiveTimeout races with its timer under -race, so rooms keep their own.)
type idleCheck struct{}

// roomProps returns the props of the room actor for one room name.
func roomProps(name string, cfg RoomConfig, deps roomDeps, onStop func(*actor.PID)) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &room{name: name, cfg: cfg, roomDeps: deps, onStop: onStop}
	}, actor.WithMailbox(actor.Unbounded(&deps.counters.Mailboxes.Room)), actor.WithDispatcher(deps.dispatcher))
}

func memberKey(m *nodev1.Member) string { return m.GetAddress() + "/" + m.GetActorId() }

// typingSweep is the room's own timer message for expiring typing indicators.
type typingSweep struct{}

func (r *room) Receive(ctx actor.Context) {
	msg := unwrap(ctx.Message())
	defer func() {
		if p := recover(); p != nil {
			r.onPanic(ctx, msg, p)
		}
	}()
	if r.inject != nil {
		r.inject("room", msg)
	}
	if _, ok := msg.(idleCheck); !ok {
		r.lastActive = time.Now()
	}
	if r.loadErr != nil && r.refuse(ctx, msg) {
		return
	}
	if r.stale(ctx, msg) {
		return
	}
	switch msg := msg.(type) {
	case *actor.Started:
		r.onStarted(ctx)
	case *cluster.ClusterInit:
		r.setName(ctx, msg.Identity.GetIdentity()) // a grain learns its name after Started
	case *nodev1.RoomJoin:
		r.onJoin(ctx, msg)
	case *nodev1.RoomLeave:
		r.onLeave(ctx, msg)
	case *nodev1.RoomPublish:
		r.onPublish(ctx, msg)
	case *nodev1.RoomHistory:
		r.onHistory(ctx, msg)
	case *nodev1.RoomPresence:
		r.onPresence(ctx, msg)
	case *nodev1.RoomTyping:
		r.onTyping(ctx, msg)
	case *nodev1.RoomInspect:
		r.onInspect(ctx, msg)
	case *nodev1.RoomTail:
		r.onTail(ctx, msg)
	case *nodev1.RoomReserve:
		r.onReserve(ctx, msg)
	case *nodev1.RoomMark:
		r.onMark(ctx, msg)
	case *nodev1.RoomCommand:
		r.onCommand(ctx, msg)
	case commandExpiry:
		r.onCommandExpiry(ctx)
	case marksSaved:
		r.onMarksSaved(ctx, msg)
	case receiptFlush:
		r.onReceiptFlush(ctx)
	case presenceFlush:
		r.onPresenceFlush(ctx)
	case appendDone:
		r.onAppendDone(ctx, msg.b)
	case typingSweep:
		r.onTypingSweep(ctx)
	case idleCheck:
		r.onIdle(ctx)
	case *actor.Stopping:
		r.stopping = true
		r.settle(ctx)
	case *actor.Stopped:
		r.typing.stop()
		r.stopMarks()
		r.stopCommands()
		r.presence.stop()
		if r.idleTimer != nil {
			r.idleTimer.Stop()
		}
		if !isHealthRoom(r.name) {
			r.counters.RoomsStopped.Add(1)
		}
		if r.entry != nil {
			r.index.remove(r.name, r.entry)
		}
		if r.onStop != nil {
			r.onStop(ctx.Self())
		}
	case *actor.Restarting:
	default:
		r.log.Warn("room: unexpected message dropped", "room", r.name, "type", slog.AnyValue(msg).String())
	}
}

func (r *room) onStarted(ctx actor.Context) {
	r.epoch = store.NewEpoch()
	r.members = map[string]*nodev1.Member{}
	r.nodes = map[string]int{}
	r.relays = map[string]*actor.PID{}
	r.dedupe = newDedupe(r.cfg.DedupeWindow)
	r.typing = newTypingState(r.cfg.TypingTTL)
	r.applyProfile(r.cfg.rules[len(r.cfg.rules)-1]) // until the name is known
	if r.name != "" {
		r.setName(ctx, r.name)
	}
	if !isHealthRoom(r.name) { // probes' rooms are not users' rooms
		r.counters.RoomsStarted.Add(1)
	}
	r.scheduleIdle(ctx, r.cfg.IdleTimeout)
}

func (r *room) scheduleIdle(ctx actor.Context, after time.Duration) {
	self, system := ctx.Self(), ctx.ActorSystem()
	r.idleTimer = time.AfterFunc(after, func() { system.Root.Send(self, idleCheck{}) })
}

// setName sets the room's name and what depends on it, loading the room's
// position and history when its history is durable. Loading blocks this
// room's mailbox only, as a first message would.
func (r *room) setName(ctx actor.Context, name string) {
	if r.named && name == r.name {
		return // once per activation: the profile and the loaded position stay
	}
	r.name, r.named = name, true
	r.applyProfile(profileFor(r.cfg.rules, name))
	if r.store = durableStore(r.cfg, &r.prof, name); r.store != nil {
		r.load(ctx)
	}
	if !isHealthRoom(name) && r.index != nil {
		r.entry = r.index.add(name, ctx.Self())
		r.entry.offset.Store(r.committed)
	}
}

// applyProfile sets up what the room's profile decides.
func (r *room) applyProfile(p RoomProfile) {
	r.prof = p
	r.history = newHistory(p.HistorySize, p.HistoryTTL)
	r.presence.stop()
	r.presence = newPresence(&r.prof)
	r.publishes = nil
	if p.PublishRate > 0 {
		r.publishes = rate.NewLimiter(rate.Limit(p.PublishRate), p.PublishBurst)
	}
}

func (r *room) position() *hubbubv1.StreamPosition {
	return &hubbubv1.StreamPosition{Offset: r.committed, Epoch: r.epoch}
}

// refuse answers a request to a room whose history could not be loaded.
func (r *room) refuse(ctx actor.Context, msg any) bool {
	type request interface{ GetRequestId() uint64 }
	switch msg.(type) {
	case *nodev1.RoomJoin, *nodev1.RoomPublish, *nodev1.RoomHistory, *nodev1.RoomPresence, *nodev1.RoomTyping, *nodev1.RoomInspect, *nodev1.RoomTail, *nodev1.RoomReserve, *nodev1.RoomMark, *nodev1.RoomCommand:
		id := msg.(request).GetRequestId()
		r.reply(ctx, id, errFrame(id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q cannot load its history; retry", r.name))
		return true
	}
	return false
}

func (r *room) reply(ctx actor.Context, id uint64, f *hubbubv1.ServerFrame) {
	if ctx.Sender() != nil {
		ctx.Respond(wrap(&nodev1.RoomReply{RequestId: id, Frame: f}))
	}
}

func (r *room) fail(ctx actor.Context, id uint64, code hubbubv1.ErrorCode, format string, args ...any) {
	r.reply(ctx, id, errFrame(id, code, false, format, args...))
}

func (r *room) relay(address string) *actor.PID {
	pid, ok := r.relays[address]
	if !ok {
		pid = actor.NewPID(address, relayID)
		r.relays[address] = pid
	}
	return pid
}

func (r *room) onJoin(ctx actor.Context, msg *nodev1.RoomJoin) {
	m := msg.GetMember()
	key := memberKey(m)
	if _, ok := r.members[key]; ok {
		r.fail(ctx, msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_ALREADY_JOINED, "already joined %q", r.name)
		return
	}
	if r.prof.MaxMembers > 0 && len(r.members) >= r.prof.MaxMembers {
		r.reply(ctx, msg.GetRequestId(), errFrame(msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED,
			true, "room %q is full (%d members)", r.name, r.prof.MaxMembers))
		return
	}
	if isUserRoom(r.name) && !r.takeSlot(m) {
		r.reply(ctx, msg.GetRequestId(), errFrame(msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED,
			false, "at most %d connections per user", r.userMax))
		return
	}
	if isUserRoom(r.name) && m.GetCompact() { // commands and outcomes need whole messages
		m = proto.Clone(m).(*nodev1.Member)
		m.Compact = false
	}
	r.addMember(ctx, key, m)
	r.watchReceipts(key, msg.GetReceipts())
	reply := &hubbubv1.JoinReply{Room: r.name, Position: r.position(), Presence: r.presence.state(),
		Info: r.prof.info(r.store != nil, msg.GetMayPublish(), m.GetClient().GetUser()), HookData: msg.GetHookData()}
	reply.Marks, reply.Unread = r.userMarks(m.GetClient().GetUser())
	if isUserRoom(r.name) {
		reply.Commands = r.pendingCommands()
	}
	if since := msg.GetSince(); since != nil {
		reply.Recovered, reply.Messages = r.recover(since)
	}
	if since := msg.GetPresenceSince(); since != nil {
		r.presence.since(reply.Presence, since)
	}
	trace := msg.GetTrace()
	if span := r.startSpan(trace, "hubbub.room join"); span != nil {
		span.SetAttributes(attrMembers.Int(len(r.members)), attrRecovered.Bool(reply.GetRecovered()))
		trace = injectSpan(span)
		span.End()
	}
	ctx.Send(r.relay(m.GetAddress()), wrap(&nodev1.RelaySubscribe{
		Room: r.name, ActorId: m.GetActorId(), RequestId: msg.GetRequestId(), Reply: reply, Trace: trace, Compact: m.GetCompact(),
		Receipts: msg.GetReceipts(),
	}))
	r.reply(ctx, msg.GetRequestId(), nil)
}

// recover returns the messages after since, or false when they are gone.
func (r *room) recover(since *hubbubv1.StreamPosition) (bool, []*hubbubv1.Message) {
	if since.GetEpoch() != r.epoch || since.GetOffset() > r.committed {
		return false, nil
	}
	r.history.trim(time.Now())
	if !r.history.covers(since.GetOffset(), r.committed) {
		return false, nil
	}
	return true, r.history.since(since.GetOffset(), 0)
}

func (r *room) addMember(ctx actor.Context, key string, m *nodev1.Member) {
	r.members[key] = m
	r.countMembers()
	r.presence.add(m.GetClient().GetUser())
	r.presence.schedule(ctx)
	defer func() { r.counters.Hist.Load().RecordMembers(len(r.members)) }()
	r.nodes[m.GetAddress()]++
	r.countEncoding(m, 1)
}

// countEncoding counts the encodings the members need, so a push is
// encoded only in those.
func (r *room) countEncoding(m *nodev1.Member, d int) {
	json := m.GetEncoding() == nodev1.Encoding_ENCODING_JSON
	switch {
	case json && m.GetCompact():
		r.compactJSON += d
	case json:
		r.json += d
	case m.GetCompact():
		r.compactBinary += d
	default:
		r.binary += d
	}
}

func (r *room) removeMember(ctx actor.Context, key string, m *nodev1.Member) {
	delete(r.members, key)
	r.watchReceipts(key, false)
	r.countMembers()
	r.presence.remove(m.GetClient().GetUser())
	r.presence.schedule(ctx)
	defer func() { r.counters.Hist.Load().RecordMembers(len(r.members)) }()
	if r.nodes[m.GetAddress()]--; r.nodes[m.GetAddress()] <= 0 {
		delete(r.nodes, m.GetAddress())
	}
	r.countEncoding(m, -1)
}

func (r *room) onLeave(ctx actor.Context, msg *nodev1.RoomLeave) {
	key := memberKey(msg.GetMember())
	m, ok := r.members[key]
	if !ok {
		if !msg.GetDisconnect() {
			r.fail(ctx, msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_NOT_JOINED, "not joined to %q", r.name)
		}
		return
	}
	r.removeMember(ctx, key, m)
	ctx.Send(r.relay(m.GetAddress()), wrap(&nodev1.RelayUnsubscribe{
		Room: r.name, ActorId: m.GetActorId(), RequestId: msg.GetRequestId(), Reply: !msg.GetDisconnect(), Trace: msg.GetTrace(),
	}))
	r.reply(ctx, msg.GetRequestId(), nil)
	if r.typing.remove(m.GetClient().GetClientId()) {
		r.broadcastTyping(ctx, m.GetClient(), false)
	}
}

func (r *room) onPublish(ctx actor.Context, msg *nodev1.RoomPublish) {
	sender := msg.GetMember().GetClient()
	// A backend publishing through the server API (sender.server) is not
	// subject to the profile's publish policy: broadcast-only rooms are its.
	if sender.GetServer() == "" && !r.prof.mayPublish(sender.GetUser()) && !(msg.GetDirect() && isUserRoom(r.name)) {
		r.fail(ctx, msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "room %q takes no publishes from %q (its profile %q)", r.name, sender.GetUser(), r.prof.Name)
		return
	}
	if id := msg.GetMessageId(); id != "" {
		if off, ok := r.dedupe.get(dedupeScope(sender), id); ok {
			r.counters.DuplicatePublish.Add(1)
			if p := r.findPending(off); p != nil { // not stored yet: answer once it is
				p.retries = append(p.retries, waiter{to: ctx.Sender(), id: msg.GetRequestId(), dup: true})
				return
			}
			r.reply(ctx, msg.GetRequestId(), &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Publish{Publish: &hubbubv1.PublishReply{
				Room: r.name, Offset: off, Epoch: r.epoch, Duplicate: true,
			}}})
			return
		}
	}
	if r.publishes != nil {
		now := time.Now()
		if res := r.publishes.ReserveN(now, 1); res.DelayFrom(now) > 0 {
			wait := res.DelayFrom(now)
			res.CancelAt(now)
			r.counters.RateLimited.Add(1)
			f := errFrame(msg.GetRequestId(), hubbubv1.ErrorCode_ERROR_CODE_RATE_LIMITED, true, "room %q takes at most %g publishes/s", r.name, r.prof.PublishRate)
			f.GetError().RetryAfterMs = uint32(max(1, wait.Milliseconds()))
			r.reply(ctx, msg.GetRequestId(), f)
			return
		}
	}
	r.offset++
	m := &hubbubv1.Message{
		Room: r.name, Offset: r.offset, Epoch: r.epoch, Sender: sender, Body: msg.GetBody(),
		TimeUnixMs: time.Now().UnixMilli(), MessageId: msg.GetMessageId(), Key: msg.GetKey(),
	}
	r.stampCommand(m, msg)
	if id := msg.GetMessageId(); id != "" {
		r.dedupe.put(dedupeScope(sender), id, r.offset)
	}
	// p stays on the stack when history is in memory; only a durable room
	// keeps a copy until the store answers.
	p := pendingPublish{msg: m, publisher: waiter{to: ctx.Sender(), id: msg.GetRequestId()}}
	if p.span = r.startSpan(msg.GetTrace(), "hubbub.room publish"); p.span != nil {
		p.span.SetAttributes(attrOffset.Int64(int64(r.offset)), attrEpoch.String(r.epoch),
			attrMembers.Int(len(r.members)), attrNodes.Int(len(r.nodes)), attrDurable.Bool(r.store != nil))
		p.trace = injectSpan(p.span)
	}
	if r.store != nil {
		kept := p
		r.enqueue(ctx, &kept)
		return
	}
	r.commit(ctx, &p)
}

// commit delivers a stored (or in-memory) message to the members, adds it to
// the history and acknowledges it to its publisher and retries.
func (r *room) commit(ctx actor.Context, p *pendingPublish) {
	m := p.msg
	r.committed = m.GetOffset()
	if r.entry != nil {
		r.entry.offset.Store(r.committed)
		r.entry.rate.tick(time.Now())
	}
	r.history.append(m)
	r.counters.Publishes.Add(1)
	r.broadcastTraced(ctx, &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Message{Message: m}}, m.GetOffset(), p.trace)
	r.wakeTails(ctx, m, p.trace)
	r.addCommand(ctx, m)
	for w := range p.waiters {
		f := &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Publish{Publish: &hubbubv1.PublishReply{
			Room: r.name, Offset: m.GetOffset(), Epoch: r.epoch, Duplicate: w.dup,
		}}}
		ctx.Send(w.to, wrap(&nodev1.RoomReply{RequestId: w.id, Frame: f}))
	}
	if p.span != nil {
		p.span.End()
	}
}

func (r *room) publishRate() float64 {
	if r.entry == nil {
		return 0
	}
	return r.entry.rate.rate(time.Now())
}

// countMembers publishes the member count to the node's room index.
func (r *room) countMembers() {
	if r.entry != nil {
		r.entry.members.Store(int64(len(r.members)))
	}
}

// dedupeScope is whose message ids a publish's id is checked against: the
// user's, or an API key's (a scope no user name can take).
func dedupeScope(c *hubbubv1.ClientInfo) string {
	if c.GetServer() != "" {
		return "\x00server/" + c.GetServer()
	}
	return c.GetUser()
}

// onInspect describes the room for the server API.
func (r *room) onInspect(ctx actor.Context, msg *nodev1.RoomInspect) {
	nodes := make(map[string]uint32, len(r.nodes))
	for addr, n := range r.nodes {
		nodes[nodeName(addr)] = uint32(n)
	}
	ctx.Respond(wrap(&nodev1.RoomReply{RequestId: msg.GetRequestId(), Inspection: &nodev1.RoomInspection{
		Position: r.position(), Info: r.prof.info(r.store != nil, true, ""), Presence: r.presence.state(),
		Nodes: nodes, Address: nodeName(ctx.Self().Address), PublishRate: r.publishRate(),
	}}))
}

// broadcast encodes a push once per encoding in use and sends it to the relay of every node with members.
func (r *room) broadcast(ctx actor.Context, f *hubbubv1.ServerFrame, offset uint64) {
	r.broadcastTraced(ctx, f, offset, nil)
}

func (r *room) broadcastTraced(ctx actor.Context, f *hubbubv1.ServerFrame, offset uint64, trace map[string]string) {
	if len(r.nodes) == 0 {
		return
	}
	d := &nodev1.RelayDeliver{Room: r.name, Offset: offset, Trace: trace, AcceptedUnixNano: time.Now().UnixNano(), Kind: pushKind(f),
		Policy: r.prof.Overflow, Key: f.GetMessage().GetKey(), Epoch: f.GetMessage().GetEpoch()}
	var err error
	if r.binary > 0 || (r.compactBinary > 0 && f.GetMessage() == nil) {
		if d.ProtoFrame, err = proto.Marshal(f); err != nil {
			r.log.Error("room: encode push", "room", r.name, "err", err)
			return
		}
	}
	if r.json > 0 || (r.compactJSON > 0 && f.GetMessage() == nil) {
		if d.JsonFrame, err = wire.Marshal(f, wire.JSON); err != nil {
			r.log.Error("room: encode push", "room", r.name, "err", err)
			return
		}
	}
	if m := f.GetMessage(); m != nil && r.compactJSON+r.compactBinary > 0 {
		c := compactMessage(m)
		if r.compactBinary > 0 {
			if d.CompactProto, err = proto.Marshal(c); err != nil {
				r.log.Error("room: encode push", "room", r.name, "err", err)
				return
			}
		}
		if r.compactJSON > 0 {
			if d.CompactJson, err = wire.Marshal(c, wire.JSON); err != nil {
				r.log.Error("room: encode push", "room", r.name, "err", err)
				return
			}
		}
	}
	env := wrap(d)
	for addr := range r.nodes {
		ctx.Send(r.relay(addr), env)
	}
}

// compactMessage is m as a CompactMessage without its alias, which each
// node's relay adds (see compactFrames).
func compactMessage(m *hubbubv1.Message) *hubbubv1.CompactMessage {
	c := &hubbubv1.CompactMessage{Offset: m.GetOffset(), User: m.GetSender().GetUser(), Server: m.GetSender().GetServer(),
		TimeUnixMs: m.GetTimeUnixMs(), MessageId: m.GetMessageId(), Key: m.GetKey()}
	switch b := m.GetBody().GetKind().(type) {
	case *hubbubv1.Body_Text:
		c.Body = &hubbubv1.CompactMessage_Text{Text: b.Text}
	case *hubbubv1.Body_Data:
		c.Body = &hubbubv1.CompactMessage_Data{Data: b.Data}
	case *hubbubv1.Body_Binary:
		c.Body = &hubbubv1.CompactMessage_Binary{Binary: b.Binary}
	}
	return c
}

// answerHistory sends the history a request asks for to the requester.
func (r *room) answerHistory(ctx actor.Context, to *actor.PID, msg *nodev1.RoomHistory) {
	req := msg.GetRequest()
	limit := int(req.GetLimit())
	if limit <= 0 || limit > r.cfg.HistoryMaxLimit {
		limit = r.cfg.HistoryMaxLimit
	}
	r.history.trim(time.Now())
	after, before := req.GetSinceOffset(), msg.GetBeforeOffset()
	if before == 0 || before > r.committed+1 {
		before = r.committed + 1
	}
	if msg.GetDeep() && r.store != nil && before > after+1 && !r.history.covers(after, before-1) {
		r.readStore(ctx, to, msg, after, before, limit)
		return
	}
	msgs := r.history.between(after, before, limit, req.GetReverse())
	if to == nil {
		return
	}
	f := &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_History{History: &hubbubv1.HistoryReply{
		Room: r.name, Messages: msgs, Position: r.position(),
	}}}
	ctx.Send(to, wrap(&nodev1.RoomReply{RequestId: msg.GetRequestId(), Frame: f}))
}

// readStore answers a deep history request from the store, off the room's
// goroutine (the read may take a round trip to Redis): messages with
// after < offset < before, the oldest or (reverse) the newest limit of them.
// Offsets are consecutive in a stream, so a backwards page reads only its own
// range.
func (r *room) readStore(ctx actor.Context, to *actor.PID, msg *nodev1.RoomHistory, after, before uint64, limit int) {
	reverse := msg.GetRequest().GetReverse()
	from := after
	if reverse && before > uint64(limit)+1 && before-uint64(limit)-1 > after {
		from = before - uint64(limit) - 1
	}
	st, name, pos, id, timeout := r.store, r.name, r.position(), msg.GetRequestId(), r.cfg.StoreTimeout
	root := ctx.ActorSystem().Root
	go func() { // owner: the room; ends with the store's timeout
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		msgs, err := st.Read(c, name, from, int(before-from-1))
		var f *hubbubv1.ServerFrame
		if err != nil {
			f = errFrame(id, hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q: history store: %v", name, err)
		} else {
			msgs = cutAt(msgs, before)
			if reverse {
				slices.Reverse(msgs)
				msgs = msgs[:min(len(msgs), limit)]
			} else {
				msgs = msgs[:min(len(msgs), limit)]
			}
			f = &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_History{History: &hubbubv1.HistoryReply{Room: name, Messages: msgs, Position: pos}}}
		}
		if to != nil {
			root.Send(to, wrap(&nodev1.RoomReply{RequestId: id, Frame: f}))
		}
	}()
}

// cutAt drops the messages (oldest first) from offset before on.
func cutAt(msgs []*hubbubv1.Message, before uint64) []*hubbubv1.Message {
	for i, m := range msgs {
		if m.GetOffset() >= before {
			return msgs[:i]
		}
	}
	return msgs
}

func (r *room) onIdle(ctx actor.Context) {
	quiet := time.Since(r.lastActive)
	if len(r.members) == 0 && quiet >= r.cfg.IdleTimeout {
		ctx.Stop(ctx.Self())
		return
	}
	r.scheduleIdle(ctx, max(r.cfg.IdleTimeout-quiet, r.cfg.IdleTimeout/4))
}

// startSpan starts a room span continuing the trace map, or returns nil when
// tracing is off or the request carries no trace.
func (r *room) startSpan(carrier map[string]string, name string) trace.Span {
	if !r.tracing.Enabled || len(carrier) == 0 {
		return nil
	}
	ctx := telemetry.Extract(context.Background(), carrier)
	_, span := r.tracing.Tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrRoom.String(r.name)))
	return span
}

// injectSpan returns the trace map of a span.
func injectSpan(span trace.Span) map[string]string {
	return telemetry.Inject(trace.ContextWithSpan(context.Background(), span))
}

func pushKind(f *hubbubv1.ServerFrame) string {
	switch f.GetBody().(type) {
	case *hubbubv1.ServerFrame_Message:
		return "message"
	case *hubbubv1.ServerFrame_PresenceDiff:
		return "presence"
	case *hubbubv1.ServerFrame_TypingEvent:
		return "typing"
	case *hubbubv1.ServerFrame_ReadReceipts:
		return kindReceipts
	}
	return ""
}
