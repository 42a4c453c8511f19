package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// This file is the node's surface for backends (the server API): the same
// requests a connection actor sends to rooms, sent from the caller's
// goroutine and waited for there, never from an actor.

// RoomError is a refusal by a room or by a check before it, with the
// protocol's error code (the same a client would get).
type RoomError struct{ Err *hubbubv1.Error }

func (e *RoomError) Error() string { return e.Err.GetCode().String() + ": " + e.Err.GetMessage() }

func roomErr(code hubbubv1.ErrorCode, temporary bool, format string, args ...any) *RoomError {
	return &RoomError{Err: &hubbubv1.Error{Code: code, Message: fmt.Sprintf(format, args...), Temporary: temporary}}
}

// ServerPublish is one message a backend publishes.
type ServerPublish struct {
	Room      string
	Body      *hubbubv1.Body
	MessageID string
	Key       string
	// Trace carries the caller's trace context into the room.
	Trace map[string]string
	// Direct marks a direct message: Room is a user's personal room (UserRoom).
	Direct bool
	// RequireAck and TTLMs make a direct message a device command.
	RequireAck bool
	TTLMs      uint32
}

// PublishResult is one publish's outcome: the room's reply or an error
// (a *RoomError for a refusal).
type PublishResult struct {
	Reply *hubbubv1.PublishReply
	Err   error
}

// CheckRoomName returns a BAD_REQUEST-class error for a name no client could join.
func (n *Node) CheckRoomName(room string) error {
	if room == "" || len(room) > n.cfg.Conn.MaxRoomNameBytes || !validName(room) {
		return roomErr(hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM, false,
			"room: %q: names are 1-%d bytes of printable UTF-8 without spaces", room, n.cfg.Conn.MaxRoomNameBytes)
	}
	return nil
}

// CheckPublish applies a client publish's checks to a backend's: the room
// name, a body, the lengths of message_id and key, and the body's size. The
// error's message names the field.
func (n *Node) CheckPublish(p ServerPublish) error {
	if p.Direct {
		user := strings.TrimPrefix(p.Room, userRoomPrefix)
		if user == "" || len(user) > n.cfg.Conn.MaxNameBytes || !validDisplayName(user) || !isUserRoom(p.Room) {
			return roomErr(hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "user: %q: 1-%d bytes of printable UTF-8", user, n.cfg.Conn.MaxNameBytes)
		}
	} else if err := n.CheckRoomName(p.Room); err != nil {
		return err
	}
	if time.Duration(p.TTLMs)*time.Millisecond > maxCommandTTL {
		return roomErr(hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "ttl_ms: %d, at most %d", p.TTLMs, maxCommandTTL.Milliseconds())
	}
	if p.Body.GetKind() == nil {
		return roomErr(hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "body: required (text, data or binary)")
	}
	for _, f := range [...]struct{ name, v string }{{"message_id", p.MessageID}, {"key", p.Key}} {
		if len(f.v) > maxIDBytes {
			return roomErr(hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, false, "%s: %d bytes, at most %d", f.name, len(f.v), maxIDBytes)
		}
	}
	if size := BodyBytes(p.Body); size > n.cfg.Conn.MaxMessageBytes {
		return roomErr(hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE, false, "body: %d bytes, limit %d", size, n.cfg.Conn.MaxMessageBytes)
	}
	return nil
}

// Publish publishes items as the backend named sender (an API key's name):
// each goes through its room's actor like a client's publish, with the same
// order, durability, dedupe (per sender), limits and overflow policy. Items
// for one room are sent in their order, pipelined; rooms are published to
// concurrently. Items must have passed CheckPublish.
func (n *Node) Publish(ctx context.Context, sender string, items []ServerPublish) []PublishResult {
	out := make([]PublishResult, len(items))
	member := &nodev1.Member{Address: n.system.Address(), Client: &hubbubv1.ClientInfo{Server: sender}}
	byRoom := map[string][]int{}
	var order []string
	for i, it := range items {
		if _, ok := byRoom[it.Room]; !ok {
			order = append(order, it.Room)
		}
		byRoom[it.Room] = append(byRoom[it.Room], i)
	}
	var wg sync.WaitGroup
	for _, room := range order {
		idx := byRoom[room]
		msgs := make([]proto.Message, len(idx))
		for k, i := range idx {
			it := items[i]
			msgs[k] = &nodev1.RoomPublish{Room: room, Member: member, Body: it.Body, MessageId: it.MessageID, Key: it.Key,
				RequestId: uint64(i + 1), Trace: it.Trace, Direct: it.Direct, RequireAck: it.RequireAck, TtlMs: it.TTLMs}
		}
		wg.Go(func() {
			replies, errs := n.askRoom(ctx, room, msgs)
			for k, i := range idx {
				if errs[k] != nil {
					out[i].Err = errs[k]
					continue
				}
				f := replies[k].GetFrame()
				if e := f.GetError(); e != nil {
					out[i].Err = &RoomError{Err: e}
					continue
				}
				out[i].Reply = f.GetPublish()
			}
		})
	}
	wg.Wait()
	return out
}

// HistoryQuery selects a room's retained messages for a backend (see
// hubbub.api.v1.HistoryRequest): after < offset < before.
type HistoryQuery struct {
	Room          string
	After, Before uint64
	Limit         int
	Reverse       bool
	Trace         map[string]string
}

// History reads a room's retained messages, through its store when its
// in-memory window does not cover them.
func (n *Node) History(ctx context.Context, q HistoryQuery) (*hubbubv1.HistoryReply, error) {
	f, err := n.askFrame(ctx, q.Room, &nodev1.RoomHistory{
		Request:      &hubbubv1.HistoryRequest{Room: q.Room, SinceOffset: q.After, Limit: uint32(max(0, q.Limit)), Reverse: q.Reverse},
		BeforeOffset: q.Before, Deep: true, RequestId: 1, Trace: q.Trace,
	})
	if err != nil {
		return nil, err
	}
	return f.GetHistory(), nil
}

// Presence reads one page of a room's users.
func (n *Node) Presence(ctx context.Context, room string, limit uint32, cursor string, trace map[string]string) (*hubbubv1.PresenceReply, error) {
	f, err := n.askFrame(ctx, room, &nodev1.RoomPresence{Room: room, Limit: limit, Cursor: cursor, RequestId: 1, Trace: trace})
	if err != nil {
		return nil, err
	}
	return f.GetPresence(), nil
}

// InspectRoom describes a room, starting it when it is not running.
func (n *Node) InspectRoom(ctx context.Context, room string) (*nodev1.RoomInspection, error) {
	replies, errs := n.askRoom(ctx, room, []proto.Message{&nodev1.RoomInspect{Room: room, RequestId: 1}})
	if errs[0] != nil {
		return nil, errs[0]
	}
	if e := replies[0].GetFrame().GetError(); e != nil {
		return nil, &RoomError{Err: e}
	}
	return replies[0].GetInspection(), nil
}

// askFrame asks a room one request and returns its reply frame, or the
// room's error as a *RoomError.
func (n *Node) askFrame(ctx context.Context, room string, msg proto.Message) (*hubbubv1.ServerFrame, error) {
	replies, errs := n.askRoom(ctx, room, []proto.Message{msg})
	if errs[0] != nil {
		return nil, errs[0]
	}
	f := replies[0].GetFrame()
	if e := f.GetError(); e != nil {
		return nil, &RoomError{Err: e}
	}
	return f, nil
}

// ErrRoomTimeout is a room that did not answer in time; a publish may or may
// not have been accepted (retry it with the same message id).
var ErrRoomTimeout = errors.New("the room did not answer in time")

// askRoom sends msgs to the room's actor in order, pipelined, and waits for
// every reply. Requests that dead-letter (the room stopped or moved) are sent
// again, in order, to the room's next actor, once: every request after a
// dead-lettered one went to the same dead actor, so the order holds.
func (n *Node) askRoom(ctx context.Context, room string, msgs []proto.Message) ([]*nodev1.RoomReply, []error) {
	replies, errs := make([]*nodev1.RoomReply, len(msgs)), make([]error, len(msgs))
	timeout := n.cfg.Conn.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	pending := make([]int, len(msgs))
	for i := range pending {
		pending[i] = i
	}
	for attempt := 0; attempt < 2 && len(pending) > 0; attempt++ {
		pid := n.placement.RoomPID(room)
		if pid == nil {
			for _, i := range pending {
				errs[i] = roomErr(hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q could not be placed; retry", room)
			}
			return replies, errs
		}
		futs := make([]*actor.Future, len(pending))
		for k, i := range pending {
			futs[k] = n.system.Root.RequestFuture(pid, wrap(msgs[i]), timeout)
		}
		var again []int
		for k, i := range pending {
			res, err := futs[k].Result()
			switch {
			case errors.Is(err, actor.ErrDeadLetter) && attempt == 0:
				again = append(again, i)
			case err != nil:
				n.counters.RoomTimeouts.Add(1)
				errs[i] = roomErr(hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q did not answer (%v); retry with the same message_id", room, err)
			default:
				rr, ok := unwrap(res).(*nodev1.RoomReply)
				if !ok {
					errs[i] = roomErr(hubbubv1.ErrorCode_ERROR_CODE_INTERNAL, true, "room %q: unexpected reply", room)
					continue
				}
				replies[i] = rr
			}
		}
		if len(again) > 0 {
			n.placement.Forget(room, pid)
		}
		pending = again
	}
	return replies, errs
}

// Tail returns a room's messages after a position, each with its publish's
// trace id; with wait and nothing newer it waits up to about 20 seconds for
// the next one (and then returns none), or until ctx ends. An empty after
// returns the room's position at once.
func (n *Node) Tail(ctx context.Context, room string, after *hubbubv1.StreamPosition, wait bool) (*nodev1.RoomTailReply, error) {
	rr, err := n.longAsk(ctx, room, &nodev1.RoomTail{Room: room, After: after, Wait: wait}, wait)
	if err != nil {
		return nil, err
	}
	if rr.GetTail() == nil {
		return nil, roomErr(hubbubv1.ErrorCode_ERROR_CODE_INTERNAL, true, "room %q: unexpected reply", room)
	}
	return rr.GetTail(), nil
}

// longAsk asks a room a question it may park until something happens (a
// long poll of up to about 20 seconds with wait), ending early when ctx
// does. A dead letter is asked again once at the room's new actor.
func (n *Node) longAsk(ctx context.Context, room string, m proto.Message, wait bool) (*nodev1.RoomReply, error) {
	msg := wrap(m)
	timeout := n.cfg.Conn.RequestTimeout
	if wait {
		timeout += tailWait
	}
	for attempt := 0; ; attempt++ {
		pid := n.placement.RoomPID(room)
		if pid == nil {
			return nil, roomErr(hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q could not be placed; retry", room)
		}
		fut := n.system.Root.RequestFuture(pid, msg, timeout)
		// A caller that goes away ends the wait: the future takes this as its answer.
		stop := context.AfterFunc(ctx, func() { n.system.Root.Send(fut.PID(), tailCanceled{}) })
		res, err := fut.Result()
		stop()
		switch {
		case errors.Is(err, actor.ErrDeadLetter) && attempt == 0:
			n.placement.Forget(room, pid)
			continue
		case err != nil:
			return nil, roomErr(hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "room %q did not answer (%v); retry", room, err)
		}
		if _, ok := res.(tailCanceled); ok {
			return nil, ctx.Err()
		}
		rr, ok := unwrap(res).(*nodev1.RoomReply)
		switch {
		case !ok:
			return nil, roomErr(hubbubv1.ErrorCode_ERROR_CODE_INTERNAL, true, "room %q: unexpected reply", room)
		case rr.GetFrame().GetError() != nil:
			return nil, &RoomError{Err: rr.GetFrame().GetError()}
		}
		return rr, nil
	}
}

// tailCanceled ends a Tail's wait when its caller goes away.
type tailCanceled struct{}

// Nodes asks every node of the cluster (this one alone when single) about
// itself, concurrently, and returns the reports of those that answered, in
// address order, with an error for those that did not.
func (n *Node) Nodes(ctx context.Context, q *nodev1.NodeInspect) ([]*nodev1.NodeReport, error) {
	return n.askNodes(ctx, q)
}

// Disconnect closes the connections of user on every node (only the one
// whose client id is clientID, when set) with code and reason; it returns how
// many it closed.
func (n *Node) Disconnect(ctx context.Context, user, clientID string, code int, reason string) (int, error) {
	if code == 0 {
		code = wire.CloseDisconnected
	}
	reports, err := n.askNodes(ctx, &nodev1.NodeDisconnect{User: user, ClientId: clientID, Code: uint32(code), Reason: reason})
	total := 0
	for _, r := range reports {
		total += int(r.GetClosed())
	}
	return total, err
}

// askNodes sends msg to every node's users actor and gathers the reports.
func (n *Node) askNodes(ctx context.Context, msg proto.Message) ([]*nodev1.NodeReport, error) {
	addrs := []string{n.system.Address()}
	if n.cluster != nil && n.cluster.MemberList != nil {
		addrs = addrs[:0]
		for _, m := range n.cluster.MemberList.Members().Members() {
			addrs = append(addrs, m.Address())
		}
	}
	timeout := n.cfg.Conn.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	futs := make([]*actor.Future, len(addrs))
	for i, a := range addrs {
		futs[i] = n.system.Root.RequestFuture(actor.NewPID(a, usersID), wrap(msg), timeout)
	}
	var reports []*nodev1.NodeReport
	var failed []string
	for i, f := range futs {
		res, err := f.Result()
		r, ok := unwrap(res).(*nodev1.NodeReport)
		if err != nil || !ok {
			failed = append(failed, addrs[i])
			continue
		}
		if r.GetAddress() == "" {
			r.Address = addrs[i]
		}
		reports = append(reports, r)
	}
	slices.SortFunc(reports, func(a, b *nodev1.NodeReport) int { return strings.Compare(a.GetAddress(), b.GetAddress()) })
	if len(failed) > 0 {
		return reports, roomErr(hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE, true, "nodes did not answer: %s", strings.Join(failed, ", "))
	}
	return reports, nil
}

// address is this node's address as reports give it: its cluster address,
// or "local" for a single node.
func (n *Node) address() string { return nodeName(n.system.Address()) }

// nodeName is how the server API names the node of an actor address:
// "local" for a single node's actors (protoactor's "nonhost").
func nodeName(address string) string {
	if address == "nonhost" {
		return "local"
	}
	return address
}
