// Package memory is the default snapshot cache: a map in memory.
package memory

import (
	"context"
	"maps"
	"sync"

	"github.com/edged/edged/cache"
	"github.com/edged/edged/telemetry"
)

// Cache is safe for concurrent use.
type Cache struct {
	mu      sync.RWMutex
	devices map[string]cache.Snapshot
}

var _ cache.Cache = (*Cache)(nil)

// New returns an empty cache.
func New() *Cache { return &Cache{devices: map[string]cache.Snapshot{}} }

// Put implements cache.Cache. A value older than the one held is ignored.
func (c *Cache) Put(_ context.Context, recs []telemetry.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range recs {
		r := &recs[i]
		snap := c.devices[r.Device]
		if snap == nil {
			snap = make(cache.Snapshot, len(r.Points))
			c.devices[r.Device] = snap
		}
		for _, p := range r.Points {
			if old, ok := snap[p.ID]; ok && old.Time > r.Time {
				continue
			}
			snap[p.ID] = cache.Entry{Value: p.Value, Quality: p.Quality, Reason: p.Reason, Time: r.Time, Seq: r.Seq}
		}
	}
	return nil
}

// Get implements cache.Cache.
func (c *Cache) Get(_ context.Context, device string) (cache.Snapshot, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return maps.Clone(c.devices[device]), nil
}
