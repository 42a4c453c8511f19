package actors

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The library's repeated errors become one warning per state change.
func TestLibLogOncePerStateChange(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newLibLog(slog.NewTextHandler(&buf, nil))).With("lib", "protoactor")
	down := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	for i := 0; i < 5; i++ { // a peer down for five refreshes
		log.Error("Bad connection to the node health status", slog.Any("error", down), slog.String("autoManMemberUrl", "http://a/_health"))
	}
	log.Info("Started partition manager") // below WARN: dropped
	log.Error("Bad connection to the node health status", slog.Any("error", down), slog.String("autoManMemberUrl", "http://b/_health"))
	out := buf.String()
	if n := strings.Count(out, "Bad connection"); n != 2 || strings.Contains(out, "level=ERROR") || !strings.Contains(out, "level=WARN") ||
		strings.Contains(out, "Started") || !strings.Contains(out, "connection refused") {
		t.Fatalf("logged:\n%s", out)
	}
	// The same condition after a quiet spell is a new state change.
	seen := &libLogSeen{last: map[string]time.Time{}}
	now := time.Now()
	if !seen.fresh("k", now) || seen.fresh("k", now.Add(time.Second)) || !seen.fresh("k", now.Add(time.Second+libLogQuiet+time.Millisecond)) {
		t.Fatal("fresh")
	}
}
