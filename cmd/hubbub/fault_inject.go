//go:build hubbubfault

package main

import (
	"os"

	"github.com/hubbub-chat/hubbub/internal/faults"
)

// With the hubbubfault build tag and HUBBUB_TEST_FAULT_TEXT set, a publish
// whose text equals it panics the room that handles it, and one whose text is
// it followed by "!conn" panics the publisher's connection actor. Only the
// end-to-end tests build this.
func init() {
	if text := os.Getenv("HUBBUB_TEST_FAULT_TEXT"); text != "" {
		faultInjector = faults.PanicOnText(text)
	}
}
