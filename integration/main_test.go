package integration

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/hubbub-chat/hubbub/store"
)

func TestMain(m *testing.M) {
	// The Redis client's own messages (failed dials while a test stops Redis)
	// go to a discarded log instead of the test output.
	store.SetRedisLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	if code == 0 {
		if err := goleak.Find(ignoreThrottle); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// protoactor's dead-letter throttle parks a goroutine for one throttle
// interval (1s) after a dead letter; it ends by itself.
var ignoreThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")
