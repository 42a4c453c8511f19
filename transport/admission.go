package transport

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/hubbub-chat/hubbub/auth"
)

// checkOrigin admits requests without an Origin, the page's own origin, and
// the configured allowlist.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, p := range s.cfg.AllowedOrigins {
		if auth.Match(strings.ToLower(p), strings.ToLower(origin)) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// ipLimiter is the per-IP token bucket of upgrade attempts.
type ipLimiter struct {
	rate    rate.Limit
	burst   int
	mu      sync.Mutex
	buckets map[string]*ipBucket
	inserts int
}

type ipBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// maxTrackedIPs bounds the table; idle entries are swept before it grows past this.
const maxTrackedIPs = 100_000

func newIPLimiter(r float64, burst int) *ipLimiter {
	if r <= 0 {
		return nil
	}
	return &ipLimiter{rate: rate.Limit(r), burst: burst, buckets: map[string]*ipBucket{}}
}

// allow takes one attempt for the request's IP.
func (l *ipLimiter) allow(remoteAddr string) bool {
	if l == nil {
		return true
	}
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		ip = remoteAddr
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[ip]
	if !ok {
		l.inserts++
		if l.inserts%1024 == 0 || len(l.buckets) >= maxTrackedIPs {
			l.sweep(now)
		}
		if len(l.buckets) >= maxTrackedIPs {
			return false // under a flood of addresses, refuse rather than grow
		}
		b = &ipBucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[ip] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// sweep forgets addresses whose bucket has refilled.
func (l *ipLimiter) sweep(now time.Time) {
	full := time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Second
	for ip, b := range l.buckets {
		if now.Sub(b.seen) > full {
			delete(l.buckets, ip)
		}
	}
}
