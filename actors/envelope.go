package actors

import (
	"google.golang.org/protobuf/proto"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
)

// wrap puts an actor message in the Envelope every cross-node message travels in.
func wrap(m proto.Message) *nodev1.Envelope {
	e := &nodev1.Envelope{}
	switch v := m.(type) {
	case *nodev1.RoomJoin:
		e.Body = &nodev1.Envelope_RoomJoin{RoomJoin: v}
	case *nodev1.RoomLeave:
		e.Body = &nodev1.Envelope_RoomLeave{RoomLeave: v}
	case *nodev1.RoomPublish:
		e.Body = &nodev1.Envelope_RoomPublish{RoomPublish: v}
	case *nodev1.RoomHistory:
		e.Body = &nodev1.Envelope_RoomHistory{RoomHistory: v}
	case *nodev1.RoomPresence:
		e.Body = &nodev1.Envelope_RoomPresence{RoomPresence: v}
	case *nodev1.RoomTyping:
		e.Body = &nodev1.Envelope_RoomTyping{RoomTyping: v}
	case *nodev1.RoomReply:
		e.Body = &nodev1.Envelope_RoomReply{RoomReply: v}
	case *nodev1.RelaySubscribe:
		e.Body = &nodev1.Envelope_RelaySubscribe{RelaySubscribe: v}
	case *nodev1.RelayUnsubscribe:
		e.Body = &nodev1.Envelope_RelayUnsubscribe{RelayUnsubscribe: v}
	case *nodev1.RelayDeliver:
		e.Body = &nodev1.Envelope_RelayDeliver{RelayDeliver: v}
	case *nodev1.RoomInspect:
		e.Body = &nodev1.Envelope_RoomInspect{RoomInspect: v}
	case *nodev1.NodeInspect:
		e.Body = &nodev1.Envelope_NodeInspect{NodeInspect: v}
	case *nodev1.NodeReport:
		e.Body = &nodev1.Envelope_NodeReport{NodeReport: v}
	case *nodev1.NodeDisconnect:
		e.Body = &nodev1.Envelope_NodeDisconnect{NodeDisconnect: v}
	case *nodev1.RoomTail:
		e.Body = &nodev1.Envelope_RoomTail{RoomTail: v}
	case *nodev1.RoomReserve:
		e.Body = &nodev1.Envelope_RoomReserve{RoomReserve: v}
	case *nodev1.RoomMark:
		e.Body = &nodev1.Envelope_RoomMark{RoomMark: v}
	case *nodev1.RoomCommand:
		e.Body = &nodev1.Envelope_RoomCommand{RoomCommand: v}
	default:
		panic("actors: no envelope for " + string(m.ProtoReflect().Descriptor().FullName())) // a programming error
	}
	return e
}

// unwrap returns an envelope's message, or the message itself when it is not
// an envelope (local messages), or nil for a body this build does not know.
func unwrap(m any) any {
	e, ok := m.(*nodev1.Envelope)
	if !ok {
		return m
	}
	switch b := e.GetBody().(type) {
	case *nodev1.Envelope_RoomJoin:
		return b.RoomJoin
	case *nodev1.Envelope_RoomLeave:
		return b.RoomLeave
	case *nodev1.Envelope_RoomPublish:
		return b.RoomPublish
	case *nodev1.Envelope_RoomHistory:
		return b.RoomHistory
	case *nodev1.Envelope_RoomPresence:
		return b.RoomPresence
	case *nodev1.Envelope_RoomTyping:
		return b.RoomTyping
	case *nodev1.Envelope_RoomReply:
		return b.RoomReply
	case *nodev1.Envelope_RelaySubscribe:
		return b.RelaySubscribe
	case *nodev1.Envelope_RelayUnsubscribe:
		return b.RelayUnsubscribe
	case *nodev1.Envelope_RelayDeliver:
		return b.RelayDeliver
	case *nodev1.Envelope_RoomInspect:
		return b.RoomInspect
	case *nodev1.Envelope_NodeInspect:
		return b.NodeInspect
	case *nodev1.Envelope_NodeReport:
		return b.NodeReport
	case *nodev1.Envelope_NodeDisconnect:
		return b.NodeDisconnect
	case *nodev1.Envelope_RoomTail:
		return b.RoomTail
	case *nodev1.Envelope_RoomReserve:
		return b.RoomReserve
	case *nodev1.Envelope_RoomMark:
		return b.RoomMark
	case *nodev1.Envelope_RoomCommand:
		return b.RoomCommand
	}
	return unknownEnvelope{}
}

// unknownEnvelope is an envelope whose body this build does not know (sent by
// a newer node); receivers log and drop it.
type unknownEnvelope struct{}
