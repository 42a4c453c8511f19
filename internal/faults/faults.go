// Package faults injects failures into a node's actors for tests. Only test
// code and the hubbubfault build of the binary import it, so a normal build
// carries no fault injection.
//
// # Concurrency
//
// The injector is called on the actors' goroutines; it only reads its text.
package faults

import (
	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// PanicOnText returns an injector for actors.Options.Inject: a publish whose
// text is text panics the room that handles it, and one whose text is
// text+"!conn" panics the publisher's connection actor.
func PanicOnText(text string) func(kind string, msg any) {
	return func(kind string, msg any) {
		switch m := msg.(type) {
		case *nodev1.RoomPublish:
			if kind == "room" && m.GetBody().GetText() == text {
				panic("injected room fault")
			}
		case *hubbubv1.ClientFrame:
			if kind == "conn" && m.GetPublish().GetBody().GetText() == text+"!conn" {
				panic("injected connection fault")
			}
		}
	}
}
