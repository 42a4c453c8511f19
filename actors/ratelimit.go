package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/time/rate"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// inbound is one decoded client frame and its size on the wire.
type inbound struct {
	frame *hubbubv1.ClientFrame
	size  int
}

// connLimiter is a connection's token buckets for commands and bytes. It runs
// as receive middleware of the connection actor, so a flood is refused before
// the actor does any work, on the actor's own goroutine.
type connLimiter struct {
	cfg      *ConnConfig // the node's, shared
	sink     Sink
	counters *telemetry.Counters
	commands *rate.Limiter
	bytes    *rate.Limiter
	strikes  []time.Time // recent rejections, oldest first
	closed   bool
}

func newConnLimiter(cfg *ConnConfig, sink Sink, c *telemetry.Counters) *connLimiter {
	l := &connLimiter{cfg: cfg, sink: sink, counters: c}
	if cfg.CommandRate > 0 {
		l.commands = rate.NewLimiter(rate.Limit(cfg.CommandRate), cfg.CommandBurst)
	}
	if cfg.ByteRate > 0 {
		l.bytes = rate.NewLimiter(rate.Limit(cfg.ByteRate), cfg.ByteBurst)
	}
	return l
}

func (l *connLimiter) middleware(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(ctx actor.ReceiverContext, env *actor.MessageEnvelope) {
		in, ok := env.Message.(*inbound)
		if !ok || l.allow(in) {
			next(ctx, env)
		}
	}
}

// allow takes one command and its bytes from the buckets, or answers the
// client with RATE_LIMITED and a retry hint.
func (l *connLimiter) allow(in *inbound) bool {
	if l.closed {
		return false
	}
	now := time.Now()
	n := min(in.size, l.cfg.ByteBurst)
	wait := max(delay(l.commands, now, 1), delay(l.bytes, now, n))
	if wait == 0 {
		if l.commands != nil {
			l.commands.AllowN(now, 1)
		}
		if l.bytes != nil {
			l.bytes.AllowN(now, n)
		}
		return true
	}
	l.counters.RateLimited.Add(1)
	l.counters.CountError(hubbubv1.ErrorCode_ERROR_CODE_RATE_LIMITED.String())
	if l.strike(now) {
		l.closed = true
		l.sink.Close(wire.ClosePolicy, wire.CloseReason(wire.ClosePolicy))
		return false
	}
	f := errFrame(in.frame.GetId(), hubbubv1.ErrorCode_ERROR_CODE_RATE_LIMITED, true, "too many commands or bytes")
	f.GetError().RetryAfterMs = uint32(max(1, wait.Milliseconds()))
	if b, err := wire.Marshal(f, l.sink.Encoding()); err == nil {
		_ = l.sink.Send(b)
	}
	return false
}

// strike records a rejection and reports whether they amount to sustained abuse.
func (l *connLimiter) strike(now time.Time) bool {
	cutoff := now.Add(-l.cfg.StrikeWindow)
	i := 0
	for i < len(l.strikes) && l.strikes[i].Before(cutoff) {
		i++
	}
	l.strikes = append(l.strikes[i:], now)
	return len(l.strikes) >= l.cfg.MaxStrikes
}

// delay is how long until lim holds n tokens (0: now); a nil limiter never waits.
// A refused command takes no tokens.
func delay(lim *rate.Limiter, now time.Time, n int) time.Duration {
	if lim == nil {
		return 0
	}
	missing := float64(n) - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
}
