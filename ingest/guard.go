package ingest

import (
	"net"
	"sync"
	"time"
)

// connGuard refuses connections before their TLS handshake when a flood
// would otherwise crowd out other clients: more than maxConns open at
// once, or more new connections from one IP address than its rate allows
// (a token bucket per address). A refused connection costs an accept and
// a close, not a handshake.
type connGuard struct {
	maxConns int
	rate     float64 // new connections per second per IP
	burst    float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the per-address state; past it, full buckets (idle
// addresses) are forgotten.
const maxBuckets = 65536

func newConnGuard(maxConns int, rate float64, burst int) *connGuard {
	return &connGuard{maxConns: maxConns, rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// admit reports whether a new connection from addr may go on, with open
// connections already open; the reason when it may not.
func (g *connGuard) admit(addr net.Addr, open int, now time.Time) (bool, string) {
	if g == nil {
		return true, ""
	}
	if g.maxConns > 0 && open >= g.maxConns {
		return false, refusedTooManyConns
	}
	if g.rate <= 0 {
		return true, ""
	}
	ip := addr.String()
	if ta, ok := addr.(*net.TCPAddr); ok {
		ip = ta.IP.String()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.buckets[ip]
	if b == nil {
		if len(g.buckets) >= maxBuckets {
			g.prune(now)
		}
		b = &bucket{tokens: g.burst, last: now}
		g.buckets[ip] = b
	}
	b.tokens = min(g.burst, b.tokens+now.Sub(b.last).Seconds()*g.rate)
	b.last = now
	if b.tokens < 1 {
		return false, refusedConnRate
	}
	b.tokens--
	return true, ""
}

// prune forgets the addresses whose bucket has refilled. Callers hold g.mu.
func (g *connGuard) prune(now time.Time) {
	for ip, b := range g.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*g.rate >= g.burst {
			delete(g.buckets, ip)
		}
	}
}

// logOnce lets a noisy event through at most once per interval per key,
// reporting how many it held back, so a flood is logged, not replayed.
type logOnce struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

func newLogOnce(every time.Duration) *logOnce {
	return &logOnce{every: every, last: map[string]time.Time{}, held: map[string]int{}}
}

// allow reports whether to log key now, and how many were held back since
// the last one logged.
func (l *logOnce) allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.every {
		l.held[key]++
		return false, 0
	}
	held := l.held[key]
	l.last[key], l.held[key] = now, 0
	if len(l.last) > 1024 { // keys are reasons: a bound for safety only
		clear(l.last)
		clear(l.held)
	}
	return true, held
}
