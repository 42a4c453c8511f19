package actors

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
)

// Span names and attribute keys.
const (
	attrRoom       = attribute.Key("hubbub.room")
	attrOffset     = attribute.Key("hubbub.offset")
	attrDurable    = attribute.Key("hubbub.room.durable")
	attrEpoch      = attribute.Key("hubbub.epoch")
	attrCommand    = attribute.Key("hubbub.command")
	attrClient     = attribute.Key("hubbub.client_id")
	attrUser       = attribute.Key("enduser.id")
	attrNode       = attribute.Key("hubbub.node")
	attrMembers    = attribute.Key("hubbub.room.members")
	attrNodes      = attribute.Key("hubbub.room.nodes")
	attrRecipients = attribute.Key("hubbub.fanout.recipients")
	attrDelivered  = attribute.Key("hubbub.fanout.delivered")
	attrDropped    = attribute.Key("hubbub.fanout.dropped")
	attrRecovered  = attribute.Key("hubbub.join.recovered")
)

// commandName names a client command for spans and metrics.
func commandName(f *hubbubv1.ClientFrame) string {
	switch f.GetCommand().(type) {
	case *hubbubv1.ClientFrame_Connect:
		return "connect"
	case *hubbubv1.ClientFrame_Join:
		return "join"
	case *hubbubv1.ClientFrame_Leave:
		return "leave"
	case *hubbubv1.ClientFrame_Publish:
		return "publish"
	case *hubbubv1.ClientFrame_History:
		return "history"
	case *hubbubv1.ClientFrame_Presence:
		return "presence"
	case *hubbubv1.ClientFrame_Typing:
		return "typing"
	case *hubbubv1.ClientFrame_Ping:
		return "ping"
	case *hubbubv1.ClientFrame_Refresh:
		return "refresh"
	case *hubbubv1.ClientFrame_Rpc:
		return "rpc"
	}
	return "unknown"
}

// beginCommand starts the server span of one client command, continuing the
// client's trace when the frame carries one. It returns the trace map for the
// messages the command causes, nil when tracing is off.
func (c *conn) beginCommand(f *hubbubv1.ClientFrame, room string) map[string]string {
	t := c.node.tracing
	if !t.Enabled {
		return nil
	}
	ctx := telemetry.Extract(context.Background(), f.GetTrace())
	name := commandName(f)
	ctx, span := t.Tracer.Start(ctx, "hubbub "+name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrCommand.String(name), attrClient.String(c.clientID)))
	if room != "" {
		span.SetAttributes(attrRoom.String(room))
	}
	if c.identity != nil {
		span.SetAttributes(attrUser.String(c.identity.User))
	}
	if old, ok := c.spans[f.GetId()]; ok {
		old.End()
	}
	if c.spans == nil {
		c.spans = map[uint64]trace.Span{}
	}
	c.spans[f.GetId()] = span
	return telemetry.Inject(ctx)
}

// endCommand ends a command's span; a reply frame gets the trace id.
func (c *conn) endCommand(id uint64, reply *hubbubv1.ServerFrame) {
	span, ok := c.spans[id]
	if !ok {
		return
	}
	if delete(c.spans, id); len(c.spans) == 0 {
		c.spans = nil // between commands an idle connection keeps no map
	}
	if reply != nil {
		reply.TraceId = span.SpanContext().TraceID().String()
		if e := reply.GetError(); e != nil {
			span.SetStatus(codes.Error, e.GetCode().String())
		}
	}
	span.End()
}

// endAll ends the spans of commands still waiting when the connection stops.
func (c *conn) endAll() {
	for id, span := range c.spans {
		span.SetStatus(codes.Error, "connection closed")
		span.End()
		delete(c.spans, id)
	}
}

// traceID returns the trace id in a trace map, or "".
func traceID(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), m))
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
