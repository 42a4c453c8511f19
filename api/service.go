package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"

	"github.com/hubbub-chat/hubbub/actors"
	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	"github.com/hubbub-chat/hubbub/proto/hubbub/api/v1/apiv1connect"
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// maxPage bounds one page of ListRooms.
const maxPage = 1000

// maxReasonBytes bounds a Disconnect's reason: it travels in a close frame.
const maxReasonBytes = 120

// service implements hubbub.api.v1.ServerAPI over a node.
type service struct {
	apiv1connect.UnimplementedServerAPIHandler
	node     *actors.Node
	maxBatch int
	closing  context.Context // done when the API shuts down: Tail streams end
}

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

// apiErr turns a node's error into the API's: a room's refusal keeps its
// message, gets the closest code and carries the protocol's Error as a detail.
func apiErr(err error) error {
	var re *actors.RoomError
	if !errors.As(err, &re) {
		return connect.NewError(connect.CodeInternal, err)
	}
	ce := connect.NewError(connectCode(re.Err.GetCode()), errors.New(re.Err.GetMessage()))
	if d, derr := connect.NewErrorDetail(re.Err); derr == nil {
		ce.AddDetail(d)
	}
	return ce
}

func connectCode(c hubbubv1.ErrorCode) connect.Code {
	switch c {
	case hubbubv1.ErrorCode_ERROR_CODE_BAD_REQUEST, hubbubv1.ErrorCode_ERROR_CODE_INVALID_ROOM, hubbubv1.ErrorCode_ERROR_CODE_MESSAGE_TOO_LARGE:
		return connect.CodeInvalidArgument
	case hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED:
		return connect.CodePermissionDenied
	case hubbubv1.ErrorCode_ERROR_CODE_RATE_LIMITED, hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED:
		return connect.CodeResourceExhausted
	case hubbubv1.ErrorCode_ERROR_CODE_UNAVAILABLE:
		return connect.CodeUnavailable
	case hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED:
		return connect.CodeUnauthenticated
	}
	return connect.CodeInternal
}

// protoErr is a node error as the protocol's Error, for per-item results.
func protoErr(err error) *hubbubv1.Error {
	var re *actors.RoomError
	if errors.As(err, &re) {
		return re.Err
	}
	return &hubbubv1.Error{Code: hubbubv1.ErrorCode_ERROR_CODE_INTERNAL, Message: err.Error(), Temporary: true}
}

func (s *service) Publish(ctx context.Context, req *connect.Request[apiv1.PublishRequest]) (*connect.Response[apiv1.PublishResponse], error) {
	p := toPublish(ctx, req.Msg.GetRoom(), req.Msg.GetBody(), req.Msg.GetMessageId(), req.Msg.GetKey())
	if err := s.node.CheckPublish(p); err != nil {
		return nil, apiErr(err)
	}
	res := s.node.Publish(ctx, keyOf(ctx).Name, []actors.ServerPublish{p})[0]
	if res.Err != nil {
		return nil, apiErr(res.Err)
	}
	return connect.NewResponse(published(ctx, res.Reply)), nil
}

func (s *service) SendToUser(ctx context.Context, req *connect.Request[apiv1.SendToUserRequest]) (*connect.Response[apiv1.SendToUserResponse], error) {
	p := toPublish(ctx, actors.UserRoom(req.Msg.GetUser()), req.Msg.GetBody(), req.Msg.GetMessageId(), "")
	p.Direct, p.RequireAck, p.TTLMs = true, req.Msg.GetRequireAck(), req.Msg.GetTtlMs()
	if err := s.node.CheckPublish(p); err != nil {
		return nil, apiErr(err)
	}
	res := s.node.Publish(ctx, keyOf(ctx).Name, []actors.ServerPublish{p})[0]
	if res.Err != nil {
		return nil, apiErr(res.Err)
	}
	r := res.Reply
	return connect.NewResponse(&apiv1.SendToUserResponse{Room: r.GetRoom(), Offset: r.GetOffset(), Epoch: r.GetEpoch(), Duplicate: r.GetDuplicate()}), nil
}

func (s *service) GetCommand(ctx context.Context, req *connect.Request[apiv1.GetCommandRequest]) (*connect.Response[apiv1.GetCommandResponse], error) {
	if err := s.node.CheckPublish(actors.ServerPublish{Room: actors.UserRoom(req.Msg.GetUser()), Direct: true,
		Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{}}}); err != nil {
		return nil, apiErr(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	o, err := s.node.Command(ctx, req.Msg.GetUser(), req.Msg.GetOffset(), req.Msg.GetWait())
	if err != nil {
		if ctx.Err() != nil {
			return nil, connect.NewError(connect.CodeCanceled, errors.New("the server is stopping or the call was cancelled"))
		}
		return nil, apiErr(err)
	}
	return connect.NewResponse(&apiv1.GetCommandResponse{Outcome: o}), nil
}

func toPublish(ctx context.Context, room string, body *hubbubv1.Body, id, key string) actors.ServerPublish {
	return actors.ServerPublish{Room: room, Body: body, MessageID: id, Key: key, Trace: telemetry.Inject(ctx)}
}

func published(ctx context.Context, r *hubbubv1.PublishReply) *apiv1.PublishResponse {
	out := &apiv1.PublishResponse{Offset: r.GetOffset(), Epoch: r.GetEpoch(), Duplicate: r.GetDuplicate()}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		out.TraceId = sc.TraceID().String()
	}
	return out
}

// publishAll checks every item, publishes the valid ones and gives a result per item.
func (s *service) publishAll(ctx context.Context, field string, items []actors.ServerPublish) []*apiv1.PublishResult {
	results := make([]*apiv1.PublishResult, len(items))
	var valid []actors.ServerPublish
	var at []int
	for i, p := range items {
		if err := s.node.CheckPublish(p); err != nil {
			e := protoErr(err)
			e.Message = fmt.Sprintf("%s[%d].%s", field, i, e.GetMessage())
			results[i] = &apiv1.PublishResult{Outcome: &apiv1.PublishResult_Error{Error: e}}
			continue
		}
		valid, at = append(valid, p), append(at, i)
	}
	for k, res := range s.node.Publish(ctx, keyOf(ctx).Name, valid) {
		if res.Err != nil {
			results[at[k]] = &apiv1.PublishResult{Outcome: &apiv1.PublishResult_Error{Error: protoErr(res.Err)}}
			continue
		}
		results[at[k]] = &apiv1.PublishResult{Outcome: &apiv1.PublishResult_Published{Published: published(ctx, res.Reply)}}
	}
	return results
}

func (s *service) checkBatch(field string, n int) error {
	switch {
	case n == 0:
		return invalid("%s: empty", field)
	case n > s.maxBatch:
		return invalid("%s: %d, at most %d", field, n, s.maxBatch)
	}
	return nil
}

func (s *service) BatchPublish(ctx context.Context, req *connect.Request[apiv1.BatchPublishRequest]) (*connect.Response[apiv1.BatchPublishResponse], error) {
	if err := s.checkBatch("items", len(req.Msg.GetItems())); err != nil {
		return nil, err
	}
	items := make([]actors.ServerPublish, len(req.Msg.GetItems()))
	for i, it := range req.Msg.GetItems() {
		items[i] = toPublish(ctx, it.GetRoom(), it.GetBody(), it.GetMessageId(), it.GetKey())
	}
	return connect.NewResponse(&apiv1.BatchPublishResponse{Results: s.publishAll(ctx, "items", items)}), nil
}

func (s *service) Broadcast(ctx context.Context, req *connect.Request[apiv1.BroadcastRequest]) (*connect.Response[apiv1.BroadcastResponse], error) {
	rooms := req.Msg.GetRooms()
	if err := s.checkBatch("rooms", len(rooms)); err != nil {
		return nil, err
	}
	if req.Msg.GetBody().GetKind() == nil {
		return nil, invalid("body: required (text, data or binary)")
	}
	seen := make(map[string]bool, len(rooms))
	items := make([]actors.ServerPublish, len(rooms))
	for i, room := range rooms {
		if seen[room] {
			return nil, invalid("rooms[%d]: %q named twice", i, room)
		}
		seen[room] = true
		items[i] = toPublish(ctx, room, req.Msg.GetBody(), req.Msg.GetMessageId(), "")
	}
	return connect.NewResponse(&apiv1.BroadcastResponse{Results: s.publishAll(ctx, "rooms", items)}), nil
}

func (s *service) checkRoom(room string) error {
	if err := s.node.CheckRoomName(room); err != nil {
		return apiErr(err)
	}
	return nil
}

func (s *service) History(ctx context.Context, req *connect.Request[apiv1.HistoryRequest]) (*connect.Response[apiv1.HistoryResponse], error) {
	m := req.Msg
	if err := s.checkRoom(m.GetRoom()); err != nil {
		return nil, err
	}
	if m.GetBeforeOffset() != 0 && m.GetBeforeOffset() <= m.GetSinceOffset()+1 {
		return nil, invalid("before_offset: %d leaves nothing after since_offset %d", m.GetBeforeOffset(), m.GetSinceOffset())
	}
	h, err := s.node.History(ctx, actors.HistoryQuery{Room: m.GetRoom(), After: m.GetSinceOffset(), Before: m.GetBeforeOffset(),
		Limit: int(m.GetLimit()), Reverse: m.GetReverse(), Trace: telemetry.Inject(ctx)})
	if err != nil {
		return nil, apiErr(err)
	}
	return connect.NewResponse(&apiv1.HistoryResponse{Messages: h.GetMessages(), Position: h.GetPosition()}), nil
}

func (s *service) Presence(ctx context.Context, req *connect.Request[apiv1.PresenceRequest]) (*connect.Response[apiv1.PresenceResponse], error) {
	if err := s.checkRoom(req.Msg.GetRoom()); err != nil {
		return nil, err
	}
	p, err := s.node.Presence(ctx, req.Msg.GetRoom(), req.Msg.GetLimit(), req.Msg.GetCursor(), telemetry.Inject(ctx))
	if err != nil {
		return nil, apiErr(err)
	}
	return connect.NewResponse(&apiv1.PresenceResponse{Users: p.GetUsers(), NextCursor: p.GetNextCursor(), State: p.GetState()}), nil
}

func (s *service) RoomInfo(ctx context.Context, req *connect.Request[apiv1.RoomInfoRequest]) (*connect.Response[apiv1.RoomInfoResponse], error) {
	if err := s.checkRoom(req.Msg.GetRoom()); err != nil {
		return nil, err
	}
	in, err := s.node.InspectRoom(ctx, req.Msg.GetRoom())
	if err != nil {
		return nil, apiErr(err)
	}
	out := &apiv1.RoomInfoResponse{Position: in.GetPosition(), Info: in.GetInfo(), Presence: in.GetPresence(), Node: in.GetAddress(),
		PublishRate: in.GetPublishRate()}
	for addr, n := range in.GetNodes() {
		out.Members = append(out.Members, &apiv1.NodeMembers{Node: addr, Members: n})
	}
	slices.SortFunc(out.Members, func(a, b *apiv1.NodeMembers) int { return strings.Compare(a.GetNode(), b.GetNode()) })
	return connect.NewResponse(out), nil
}

func (s *service) ListRooms(ctx context.Context, req *connect.Request[apiv1.ListRoomsRequest]) (*connect.Response[apiv1.ListRoomsResponse], error) {
	m := req.Msg
	if len(m.GetPattern()) > 256 {
		return nil, invalid("pattern: at most 256 bytes")
	}
	reports, err := s.node.Nodes(ctx, &nodev1.NodeInspect{Rooms: true, Pattern: m.GetPattern()})
	if err != nil && len(reports) == 0 {
		return nil, apiErr(err)
	}
	var all []*apiv1.RoomSummary
	for _, r := range reports {
		for _, room := range r.GetRoomList() {
			if room.GetRoom() > m.GetCursor() {
				all = append(all, &apiv1.RoomSummary{Room: room.GetRoom(), Node: r.GetAddress(), Members: room.GetMembers(), Offset: room.GetOffset(),
					PublishRate: room.GetPublishRate()})
			}
		}
	}
	slices.SortFunc(all, func(a, b *apiv1.RoomSummary) int {
		return cmpOr(strings.Compare(a.GetRoom(), b.GetRoom()), strings.Compare(a.GetNode(), b.GetNode()))
	})
	limit := int(m.GetLimit())
	if limit <= 0 || limit > maxPage {
		limit = maxPage
	}
	out := &apiv1.ListRoomsResponse{}
	for i, r := range all {
		if len(out.Rooms) >= limit && r.GetRoom() != all[i-1].GetRoom() {
			out.NextCursor = all[i-1].GetRoom()
			break
		}
		out.Rooms = append(out.Rooms, r)
	}
	return connect.NewResponse(out), nil
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func (s *service) Disconnect(ctx context.Context, req *connect.Request[apiv1.DisconnectRequest]) (*connect.Response[apiv1.DisconnectResponse], error) {
	m := req.Msg
	if m.GetUser() == "" && m.GetClientId() == "" {
		return nil, invalid("user or client_id: required")
	}
	if len(m.GetReason()) > maxReasonBytes {
		return nil, invalid("reason: %d bytes, at most %d", len(m.GetReason()), maxReasonBytes)
	}
	code := wire.CloseDisconnectedFinal
	if m.GetReconnect() {
		code = wire.CloseDisconnected
	}
	reason := m.GetReason()
	if reason == "" {
		reason = wire.CloseReason(code)
	}
	n, err := s.node.Disconnect(ctx, m.GetUser(), m.GetClientId(), code, reason)
	if err != nil && n == 0 {
		return nil, apiErr(err)
	}
	return connect.NewResponse(&apiv1.DisconnectResponse{Connections: uint32(n)}), nil
}

func (s *service) Connections(ctx context.Context, req *connect.Request[apiv1.ConnectionsRequest]) (*connect.Response[apiv1.ConnectionsResponse], error) {
	if req.Msg.GetUser() == "" {
		return nil, invalid("user: required")
	}
	reports, err := s.node.Nodes(ctx, &nodev1.NodeInspect{User: req.Msg.GetUser()})
	if err != nil && len(reports) == 0 {
		return nil, apiErr(err)
	}
	out := &apiv1.ConnectionsResponse{}
	for _, r := range reports {
		for _, c := range r.GetConnList() {
			out.Connections = append(out.Connections, connection(r, c))
		}
	}
	return connect.NewResponse(out), nil
}

func connection(r *nodev1.NodeReport, c *nodev1.NodeConn) *apiv1.Connection {
	return &apiv1.Connection{ClientId: c.GetClientId(), User: c.GetUser(), Node: r.GetAddress(),
		Rooms: c.GetRooms(), QueuedBytes: c.GetQueuedBytes(), ConnectedUnixMs: c.GetConnectedUnixMs()}
}

// maxSlowest bounds InfoRequest.slowest.
const maxSlowest = 100

func (s *service) Info(ctx context.Context, req *connect.Request[apiv1.InfoRequest]) (*connect.Response[apiv1.InfoResponse], error) {
	if req.Msg.GetSlowest() > maxSlowest {
		return nil, invalid("slowest: at most %d", maxSlowest)
	}
	reports, err := s.node.Nodes(ctx, &nodev1.NodeInspect{Slowest: req.Msg.GetSlowest()})
	if err != nil && len(reports) == 0 {
		return nil, apiErr(err)
	}
	out := &apiv1.InfoResponse{}
	if k := keyOf(ctx); k != nil {
		out.Key = k.Name
		for _, sc := range k.Scopes {
			out.Scopes = append(out.Scopes, string(sc))
		}
	}
	for _, r := range reports {
		n := &apiv1.NodeInfo{Node: r.GetAddress(), Version: r.GetVersion(), StartedUnixMs: r.GetStartedUnixMs(),
			Connections: r.GetConnections(), Users: r.GetUsers(), Rooms: r.GetRooms(), SlowConsumers: r.GetSlowConsumers(),
			OverflowDropped: r.GetOverflowDropped(), Conflated: r.GetConflated(), DeliveryDrops: r.GetDeliveryDrops()}
		for _, c := range r.GetConnList() {
			n.Slowest = append(n.Slowest, connection(r, c))
		}
		out.Nodes = append(out.Nodes, n)
	}
	return connect.NewResponse(out), nil
}

func (s *service) Ledger(ctx context.Context, req *connect.Request[apiv1.LedgerRequest]) (*connect.Response[apiv1.LedgerResponse], error) {
	m := req.Msg
	if err := s.checkRoom(m.GetRoom()); err != nil {
		return nil, err
	}
	limit := m.GetLimit()
	if limit == 0 || limit > maxPage {
		limit = maxPage
	}
	reports, err := s.node.Nodes(ctx, &nodev1.NodeInspect{LedgerRoom: m.GetRoom(), LedgerAfter: m.GetSinceOffset(), LedgerLimit: limit})
	if err != nil && len(reports) == 0 {
		return nil, apiErr(err)
	}
	sum := map[uint64]*apiv1.Delivery{}
	for _, r := range reports {
		for _, c := range r.GetLedger() {
			d := sum[c.GetOffset()]
			if d == nil {
				d = &apiv1.Delivery{Offset: c.GetOffset()}
				sum[c.GetOffset()] = d
			}
			d.Members += c.GetMembers()
			d.Queued += c.GetQueued()
			d.Written += c.GetWritten()
			d.Acked += c.GetAcked()
			d.Dropped += c.GetDropped()
			d.Conflated += c.GetConflated()
			d.Disconnected += c.GetGone()
		}
	}
	out := &apiv1.LedgerResponse{}
	for _, d := range sum {
		out.Deliveries = append(out.Deliveries, d)
	}
	slices.SortFunc(out.Deliveries, func(a, b *apiv1.Delivery) int { return cmp.Compare(a.GetOffset(), b.GetOffset()) })
	if len(out.Deliveries) > int(limit) {
		out.Deliveries = out.Deliveries[:limit]
	}
	return connect.NewResponse(out), nil
}

// Tail streams a room's messages: first the position it starts at, then
// each batch the room stores, until the caller goes or the API shuts down.
// A room that stops or moves is asked again, and says gap when messages
// were lost between.
func (s *service) Tail(ctx context.Context, req *connect.Request[apiv1.TailRequest], stream *connect.ServerStream[apiv1.TailResponse]) error {
	room := req.Msg.GetRoom()
	if err := s.checkRoom(room); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	pos := req.Msg.GetSince()
	if pos.GetEpoch() == "" {
		r, err := s.node.Tail(ctx, room, nil, false)
		if err != nil {
			return apiErr(err)
		}
		pos = r.GetPosition()
	}
	if err := stream.Send(&apiv1.TailResponse{Position: pos}); err != nil {
		return err
	}
	failures := 0
	for ctx.Err() == nil {
		r, err := s.node.Tail(ctx, room, pos, true)
		if err != nil {
			// A room that moved, stopped or is slow: ask again, a few times.
			if failures++; failures > 3 || ctx.Err() != nil {
				if ctx.Err() != nil {
					return nil
				}
				return apiErr(err)
			}
			continue
		}
		failures = 0
		if len(r.GetEntries()) == 0 && !r.GetGap() {
			continue // the wait ended with nothing new
		}
		out := &apiv1.TailResponse{Position: r.GetPosition(), Gap: r.GetGap()}
		for _, e := range r.GetEntries() {
			out.Messages = append(out.Messages, &apiv1.TailMessage{Message: e.GetMessage(), TraceId: e.GetTraceId()})
		}
		if err := stream.Send(out); err != nil {
			return err
		}
		pos = r.GetPosition()
	}
	return nil
}
