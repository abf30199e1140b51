// Package backoff computes jittered exponential retry delays.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields delays Min, 2·Min, 4·Min … capped at Max, each with full
// jitter in [d/2, d] so that many gateways restarting together do not retry
// in lockstep. The zero value is not usable; set Min and Max.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the delay before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	d := b.Min << min(b.attempt, 30)
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	b.attempt++
	half := d / 2
	return half + rand.N(half+1)
}

// Attempts returns how many delays have been handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Reset starts over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }
