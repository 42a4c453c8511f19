package client

import (
	"math/rand/v2"
	"time"
)

// backoff returns the delay before reconnect attempt n (1-based): a uniformly
// random duration in [0, min(max, base*2^(n-1))] ("full jitter"), which
// spreads a crowd of clients that lost the same server.
func backoff(n int, base, max time.Duration) time.Duration {
	ceiling := base
	for i := 1; i < n && ceiling < max; i++ {
		ceiling *= 2
	}
	if ceiling > max {
		ceiling = max
	}
	return rand.N(ceiling + 1)
}
