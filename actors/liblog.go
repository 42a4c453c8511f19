package actors

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// libLog passes on the actor library's records at WARN and above, as
// warnings, once per state change: the library logs the same ERROR every
// second while a peer is down (and one on every graceful stop), which
// would bury everything else. A record identical (message and attributes) to
// one logged less than libLogQuiet ago is dropped; once a condition has been
// quiet that long, its next record is logged again.
type libLog struct {
	slog.Handler
	seen *libLogSeen
}

type libLogSeen struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const libLogQuiet = 5 * time.Second

func newLibLog(h slog.Handler) libLog {
	return libLog{Handler: h, seen: &libLogSeen{last: map[string]time.Time{}}}
}

func (h libLog) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, slog.LevelWarn)
}

func (h libLog) Handle(ctx context.Context, r slog.Record) error {
	var key strings.Builder
	key.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		key.WriteString("|" + a.String())
		return true
	})
	if !h.seen.fresh(key.String(), r.Time) {
		return nil
	}
	if r.Level > slog.LevelWarn {
		warn := slog.NewRecord(r.Time, slog.LevelWarn, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool { warn.AddAttrs(a); return true })
		r = warn
	}
	return h.Handler.Handle(ctx, r)
}

// fresh records that key was seen at t and reports whether it was quiet before.
func (s *libLogSeen) fresh(key string, t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok := s.last[key]
	s.last[key] = t
	if len(s.last) > 1000 { // bounded: forget everything quiet
		for k, v := range s.last {
			if t.Sub(v) > libLogQuiet {
				delete(s.last, k)
			}
		}
	}
	return !ok || t.Sub(prev) > libLogQuiet
}

func (h libLog) WithAttrs(a []slog.Attr) slog.Handler {
	return libLog{Handler: h.Handler.WithAttrs(a), seen: h.seen}
}

func (h libLog) WithGroup(g string) slog.Handler {
	return libLog{Handler: h.Handler.WithGroup(g), seen: h.seen}
}
