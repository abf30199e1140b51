package modbussim

import (
	"math"
	"time"
)

// A generator computes a signal's engineering value from the time elapsed
// since the server was created. Values are computed only when a client reads
// them, so idle signals cost nothing. value is called with the signal's table
// lock held and with non-decreasing t; only walkGen keeps state.
type generator interface {
	value(t time.Duration) float64
}

type constGen struct{ v float64 }

func (g *constGen) value(time.Duration) float64 { return g.v }

// counterGen is start + step*floor(t/per).
type counterGen struct {
	start, step float64
	per         time.Duration
}

func (g *counterGen) value(t time.Duration) float64 {
	return g.start + g.step*float64(t/g.per)
}

// sineGen is offset + amplitude*sin(2π(t+phase)/period).
type sineGen struct {
	amplitude, offset float64
	period, phase     time.Duration
}

func (g *sineGen) value(t time.Duration) float64 {
	x := float64((t+g.phase)%g.period) / float64(g.period)
	return g.offset + g.amplitude*math.Sin(2*math.Pi*x)
}

// squareGen is high for the first duty fraction of each period, then low.
type squareGen struct {
	low, high, duty float64
	period, phase   time.Duration
}

func (g *squareGen) value(t time.Duration) float64 {
	x := float64((t+g.phase)%g.period) / float64(g.period)
	if x < g.duty {
		return g.high
	}
	return g.low
}

// toggleGen is 0 for one period, then 1 for one period, and so on.
type toggleGen struct {
	period, phase time.Duration
}

func (g *toggleGen) value(t time.Duration) float64 {
	return float64(((t + g.phase) / g.period) % 2)
}

// maxCatchUp bounds the steps a random walk takes in one read: after a longer
// idle gap only the last maxCatchUp steps are walked (a bounded walk has
// forgotten its starting point by then anyway).
const maxCatchUp = 4096

// walkGen is a bounded random walk: every period it moves by a uniformly
// distributed amount in [-step, +step], clamped to [min, max]. Step k's move
// depends only on the seed and k, so the walk is reproducible.
type walkGen struct {
	cur, step, min, max float64
	every               time.Duration
	seed                uint64
	n                   int64 // steps taken
}

func (g *walkGen) value(t time.Duration) float64 {
	target := int64(t / g.every)
	if target-g.n > maxCatchUp {
		g.n = target - maxCatchUp
	}
	for g.n < target {
		g.n++
		u := float64(splitmix64(g.seed+uint64(g.n))>>11) / (1 << 53) // [0, 1)
		g.cur += (2*u - 1) * g.step
		g.cur = math.Max(g.min, math.Min(g.max, g.cur))
	}
	return g.cur
}

// splitmix64 is a fast, well-mixed hash of x (Steele, Lea, Flood 2014).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
