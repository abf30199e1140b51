// Package cachetest is the conformance suite every cache.Cache passes.
package cachetest

import (
	"context"
	"testing"

	"github.com/edged/edged/cache"
	"github.com/edged/edged/telemetry"
)

// Run runs the suite; newCache returns an empty cache.
func Run(t *testing.T, newCache func(t *testing.T) cache.Cache) {
	ctx := context.Background()
	t.Run("LatestWins", func(t *testing.T) {
		c := newCache(t)
		put(t, c, rec("m1", 1000, 1, telemetry.Point{ID: "v", Value: telemetry.Float(1.5)}, telemetry.Point{ID: "s", Value: telemetry.Bool(true)}))
		put(t, c, rec("m1", 2000, 2, telemetry.Point{ID: "v", Value: telemetry.Float(2.5)}))
		put(t, c, rec("m1", 1500, 3, telemetry.Point{ID: "v", Value: telemetry.Float(9)})) // older reading, arrives late
		s, err := c.Get(ctx, "m1")
		if err != nil {
			t.Fatal(err)
		}
		if e := s["v"]; e.Value != telemetry.Float(2.5) || e.Time != 2000 || e.Seq != 2 {
			t.Fatalf("v = %+v, want 2.5 at 2000 seq 2", e)
		}
		if e := s["s"]; e.Value != telemetry.Bool(true) || e.Time != 1000 {
			t.Fatalf("s = %+v", e)
		}
	})
	t.Run("QualityAndReason", func(t *testing.T) {
		c := newCache(t)
		put(t, c, rec("m1", 1000, 1, telemetry.Point{ID: "v", Quality: telemetry.Bad, Reason: "timeout"}))
		s, _ := c.Get(ctx, "m1")
		if e := s["v"]; e.Quality != telemetry.Bad || e.Reason != "timeout" || !e.Value.IsNone() {
			t.Fatalf("v = %+v", e)
		}
	})
	t.Run("UnknownDeviceIsEmpty", func(t *testing.T) {
		c := newCache(t)
		s, err := c.Get(ctx, "nope")
		if err != nil || len(s) != 0 {
			t.Fatalf("got %v, %v", s, err)
		}
	})
	t.Run("GetReturnsACopy", func(t *testing.T) {
		c := newCache(t)
		put(t, c, rec("m1", 1000, 1, telemetry.Point{ID: "v", Value: telemetry.Int(1)}))
		s, _ := c.Get(ctx, "m1")
		s["v"] = cache.Entry{}
		s2, _ := c.Get(ctx, "m1")
		if s2["v"].Value != telemetry.Int(1) {
			t.Fatal("changing a snapshot changed the cache")
		}
	})
	t.Run("CallerMayReuseRecords", func(t *testing.T) {
		c := newCache(t)
		recs := []telemetry.Record{rec("m1", 1000, 1, telemetry.Point{ID: "v", Value: telemetry.Int(1)})}
		put(t, c, recs...)
		recs[0].Points[0] = telemetry.Point{ID: "v", Value: telemetry.Int(99)}
		s, _ := c.Get(ctx, "m1")
		if s["v"].Value != telemetry.Int(1) {
			t.Fatal("the cache kept a reference to the caller's records")
		}
	})
}

func rec(dev string, ms int64, seq uint64, pts ...telemetry.Point) telemetry.Record {
	return telemetry.Record{Device: dev, Time: ms, Seq: seq, Points: pts}
}

func put(t *testing.T, c cache.Cache, recs ...telemetry.Record) {
	t.Helper()
	if err := c.Put(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}
