// Package cache defines the snapshot cache: the latest value, quality and
// time of every measure point. It is best effort: it must never slow or stop
// the pipeline.
package cache

import (
	"context"

	"github.com/edged/edged/telemetry"
)

// Entry is the latest state of one measure point.
type Entry struct {
	Value   telemetry.Value
	Quality telemetry.Quality
	Reason  string
	Time    int64  // unix ms of the reading
	Seq     uint64 // the record's sequence number
}

// Snapshot is a device's measure points by id.
type Snapshot map[string]Entry

// Cache is the contract: memory (the default) and, later, Redis.
type Cache interface {
	// Put records the points of recs. It must not block for long; an
	// implementation that cannot keep up counts and drops, the bus is the
	// system of record.
	Put(ctx context.Context, recs []telemetry.Record) error
	// Get returns a copy of the device's snapshot; unknown devices give an
	// empty snapshot.
	Get(ctx context.Context, device string) (Snapshot, error)
}
