//go:build hubbubfault

package main

import (
	"os"

	nodev1 "github.com/hubbub-chat/hubbub/proto/hubbub/node/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// With the hubbubfault build tag and HUBBUB_TEST_FAULT_TEXT set, a publish
// whose text equals it panics the room that handles it, and one whose text is
// it followed by "!conn" panics the publisher's connection actor. Only the
// end-to-end tests build this.
func init() {
	text := os.Getenv("HUBBUB_TEST_FAULT_TEXT")
	if text == "" {
		return
	}
	faultInjector = func(kind string, msg any) {
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
