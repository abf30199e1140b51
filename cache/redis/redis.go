// Package redis is the snapshot cache on Redis
// (github.com/redis/go-redis/v9): the latest value, quality and time of every
// measure point, readable by other tools with plain Redis commands.
//
// # Key schema
//
// One hash per device, one field per measure point:
//
//	key    {prefix}{device}        edged:snapshot:meter-1 (prefix: Options.Prefix, default "edged:snapshot:")
//	field  {measure point id}      voltage_a
//	value  compact JSON            {"v":230.1,"q":"good","t":1700000000000,"seq":12}
//
// Members of the value, in this order:
//
//	v    the value: a JSON number for int, uint and float points, true or
//	     false for bool points, a JSON string for string points; absent when
//	     the point has no value (bad quality). Integers are written digit for
//	     digit, so 64-bit values beyond 2^53 are exact for a reader that
//	     parses them as integers. A float is the shortest decimal that reads
//	     back exactly, always with a '.' or an exponent (2.0, not 2).
//	k    the kind, only where v does not tell it: "uint" on unsigned
//	     integers; "float" on NaN and ±Inf, which JSON has no number for and
//	     which are written as the strings "NaN", "+Inf" and "-Inf".
//	q    the quality: "good", "bad" or "stale".
//	t    the time of the reading, unix milliseconds.
//	seq  the sequence number of the record that carried the reading.
//	r    why the point is bad, in the driver's words; only when there is a reason.
//
// For example:
//
//	HGETALL edged:snapshot:meter-1
//	voltage_a  {"v":230.1,"q":"good","t":1700000000000,"seq":12}
//	energy     {"v":18446744073709551615,"k":"uint","q":"good","t":1700000000000,"seq":12}
//	breaker    {"v":true,"q":"good","t":1700000000000,"seq":12}
//	serial     {"v":"A-113","q":"stale","t":1699999940000,"seq":7}
//	freq       {"q":"bad","t":1700000000000,"seq":12,"r":"timeout"}
//
// Without "k", a reader takes true/false as bool, a string as string, a
// number with a fraction or an exponent as float and any other number as int
// (uint beyond the int64 range). The cache reads fields back the same way
// and skips (and counts) a field it cannot read, so another tool may write
// fields too.
//
// With Options.TTL set, every write to a device's hash also sets its expiry
// (PEXPIRE) to TTL: a device that stops reporting disappears after TTL.
//
// The marker key {prefix}:marker (a string; a device name cannot contain
// ':', so it never collides with a device) holds the time, RFC 3339, at which
// the gateway last rewrote its whole snapshot. The gateway rewrites the
// whole snapshot and the marker on every new connection to Redis (startup,
// after an outage or a Redis restart) and checks that the marker exists on
// every flush; when it is gone (FLUSHALL, FLUSHDB, eviction, a restart
// without persistence) it rewrites everything it holds. Deleting the marker
// forces a full rewrite. Several gateways may share a Redis and a prefix
// provided their device names differ.
//
// # Behaviour
//
// The cache is best effort and never slows the pipeline: Put only records
// the points in memory (the latest of each, as the memory cache does) and
// marks them dirty; a background writer sends dirty points every
// Options.Flush, or sooner when many are dirty, one HSET per device with all
// its changed fields, in pipelines of at most Options.PipelineDepth
// commands (two pipelines in flight). A point written many times while Redis
// is slow or down is sent once; memory is bounded by the number of distinct
// points. The client's dial, read and write timeouts are 1 s, so a slow
// Redis only delays the writer. A failed flush keeps the points dirty and is
// retried with backoff (up to 5 s), logged once per outage and once when
// Redis is back. An error reply to one device's HSET (a key of another type,
// out of memory) is counted and that device is retried with the next flush.
// Get waits until everything Put before it has been flushed, reads the
// device's hash, and answers from the copy in memory when Redis cannot be
// reached.
//
// # Metrics
//
//	edged_cache_redis_write_errors_total  failed flushes and refused commands
//	edged_cache_points_written_total      points written (coalesced points count once)
//	edged_cache_resyncs_total             full rewrites (new connection, marker missing)
//	edged_cache_dirty_points              points not yet written (gauge)
//	edged_cache_read_fallbacks_total      Gets answered from memory
//	edged_cache_bad_fields_total          fields Get skipped (not snapshot entries)
package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/edged/edged/cache"
	"github.com/edged/edged/internal/backoff"
	"github.com/edged/edged/telemetry"
)

// Options configure the cache. Only Addr is required.
type Options struct {
	Addr          string        // host:port
	Password      string        // AUTH password, if any
	DB            int           // database number, default 0
	Prefix        string        // key prefix, default "edged:snapshot:"
	TTL           time.Duration // expiry of a device's hash after its last write; 0: none
	Flush         time.Duration // flush interval, default 50 ms
	PipelineDepth int           // commands per pipeline, default 256 (a device's HSET and PEXPIRE are never split)
	TLS           *tls.Config   // TLS to Redis when set
	Logger        *slog.Logger
	Registerer    prometheus.Registerer // metrics are registered here when set
}

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "edged:snapshot:"

const (
	defaultFlush    = 50 * time.Millisecond
	defaultDepth    = 256
	ioTimeout       = time.Second // dial, read and write timeouts of the client
	closeTimeout    = time.Second // the last flush in Close
	retryMin        = 100 * time.Millisecond
	retryMax        = 5 * time.Second
	replyErrLogGap  = time.Minute // at most one log line per minute for error replies
	markerSuffix    = ":marker"
	poolSize        = 4
	senders         = 2  // pipelines in flight at once (Get has the other connections)
	kickPerPipeline = 16 // flush early when this many pipelines' worth of points are dirty
)

var (
	errClosed      = errors.New("cache/redis: closed")
	errUnavailable = errors.New("cache/redis: redis unavailable")
)

// Cache is the snapshot cache on Redis. It is safe for concurrent use.
type Cache struct {
	o       Options
	log     *slog.Logger
	client  *goredis.Client
	m       metrics
	marker  string
	kickAt  int
	ctx     context.Context // cancelled when Close gives up on the writer
	cancel  context.CancelFunc
	newConn atomic.Bool // a connection to Redis was made: rewrite everything

	mu         sync.Mutex
	devices    map[string]*device // the latest of every point
	dirty      []*device          // devices with dirty points, in the order they became dirty
	ndirty     int                // dirty points
	putGen     uint64             // Put calls so far
	flushedGen uint64             // every Put up to this one is in Redis
	resync     bool               // rewrite everything on the next flush
	down       error              // the last flush failed with this; nil when Redis is fine
	closed     bool
	notify     chan struct{} // closed and replaced after each flush attempt

	kick      chan struct{} // flush now (cap 1)
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	lastReplyErrLog time.Time // the writer's
}

type device struct {
	name    string
	points  map[string]*point
	dirty   []*point  // points changed since the writer took them
	queued  bool      // in Cache.dirty
	touched time.Time // last Put, for TTL
}

type point struct {
	id    string
	e     cache.Entry
	dirty bool // in device.dirty
}

var _ cache.Cache = (*Cache)(nil)

// New validates o, creates the client and starts the background writer. It
// does not connect: the gateway starts whether Redis is up or not.
func New(o Options) (*Cache, error) {
	if o.Addr == "" {
		return nil, errors.New("cache/redis: Addr is required")
	}
	if _, _, err := net.SplitHostPort(o.Addr); err != nil {
		return nil, fmt.Errorf("cache/redis: Addr %q: %w", o.Addr, err)
	}
	if o.DB < 0 {
		return nil, fmt.Errorf("cache/redis: DB %d: must be >= 0", o.DB)
	}
	if o.TTL < 0 || (o.TTL > 0 && o.TTL < time.Millisecond) {
		return nil, fmt.Errorf("cache/redis: TTL %s: use 0 (no expiry) or at least 1ms", o.TTL)
	}
	if o.Flush < 0 {
		return nil, fmt.Errorf("cache/redis: Flush %s: must be >= 0 (0: default %s)", o.Flush, defaultFlush)
	}
	if o.PipelineDepth < 0 {
		return nil, fmt.Errorf("cache/redis: PipelineDepth %d: must be >= 0 (0: default %d)", o.PipelineDepth, defaultDepth)
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Flush == 0 {
		o.Flush = defaultFlush
	}
	if o.PipelineDepth == 0 {
		o.PipelineDepth = defaultDepth
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m := newMetrics()
	if o.Registerer != nil {
		if err := m.register(o.Registerer); err != nil {
			return nil, fmt.Errorf("cache/redis: metrics: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		o:       o,
		log:     o.Logger.With("cache", "redis", "addr", o.Addr),
		m:       m,
		marker:  o.Prefix + markerSuffix,
		kickAt:  max(o.PipelineDepth*kickPerPipeline, 1024),
		ctx:     ctx,
		cancel:  cancel,
		devices: map[string]*device{},
		resync:  true,
		notify:  make(chan struct{}),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	c.client = goredis.NewClient(&goredis.Options{
		Addr:                  o.Addr,
		Password:              o.Password,
		DB:                    o.DB,
		TLSConfig:             o.TLS,
		DialTimeout:           ioTimeout,
		ReadTimeout:           ioTimeout,
		WriteTimeout:          ioTimeout,
		ContextTimeoutEnabled: true,
		DialerRetries:         1,  // we retry, with backoff
		MaxRetries:            -1, // a failed flush is ours to retry (and to notice)
		PoolSize:              poolSize,
		PoolTimeout:           ioTimeout,
		DisableIdentity:       true, // no CLIENT SETINFO: Redis before 7.2 refuses it
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
		OnConnect: func(context.Context, *goredis.Conn) error {
			// A new connection may be to a restarted server that lost
			// (part of) the snapshot: the writer rewrites all of it.
			c.newConn.Store(true)
			return nil
		},
	})
	go c.run()
	return c, nil
}

// Put implements cache.Cache: it records the points in memory and marks them
// for the writer; it does no I/O. A reading older than the one held for a
// point is ignored.
func (c *Cache) Put(_ context.Context, recs []telemetry.Record) error {
	var now time.Time
	if c.o.TTL > 0 {
		now = time.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	for i := range recs {
		r := &recs[i]
		d := c.devices[r.Device]
		if d == nil {
			d = &device{name: r.Device, points: make(map[string]*point, len(r.Points))}
			c.devices[r.Device] = d
		} else if c.expired(d, now) {
			// its hash expired in Redis: it comes back whole
			for _, p := range d.points {
				c.markLocked(d, p)
			}
		}
		d.touched = now
		for _, rp := range r.Points {
			p := d.points[rp.ID]
			if p == nil {
				p = &point{id: rp.ID}
				d.points[rp.ID] = p
			} else if p.e.Time > r.Time {
				continue
			}
			p.e = cache.Entry{Value: rp.Value, Quality: rp.Quality, Reason: rp.Reason, Time: r.Time, Seq: r.Seq}
			if !p.dirty {
				p.dirty = true
				d.dirty = append(d.dirty, p)
				c.ndirty++
			}
		}
		if len(d.dirty) > 0 && !d.queued {
			d.queued = true
			c.dirty = append(c.dirty, d)
		}
	}
	c.putGen++
	c.m.dirty.Set(float64(c.ndirty))
	if c.ndirty >= c.kickAt {
		c.poke()
	}
	return nil
}

// poke asks the writer to flush now.
func (c *Cache) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Get implements cache.Cache. It waits (bounded by ctx) until every point
// Put before the call is in Redis, then reads the device's hash. When Redis
// cannot be reached it returns the copy in memory.
func (c *Cache) Get(ctx context.Context, device string) (cache.Snapshot, error) {
	if err := c.barrier(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("cache/redis: get %q: %w", device, err)
		}
		return c.local(device, err), nil
	}
	fields, err := c.client.HGetAll(ctx, c.o.Prefix+device).Result()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("cache/redis: get %q: %w", device, err)
		}
		return c.local(device, err), nil
	}
	snap := make(cache.Snapshot, len(fields))
	for id, raw := range fields {
		e, err := decodeField([]byte(raw))
		if err != nil {
			c.m.badFields.Inc()
			c.log.Debug("skipping a field that is not a snapshot entry", "key", c.o.Prefix+device, "field", id, "err", err)
			continue
		}
		snap[id] = e
	}
	return snap, nil
}

// barrier waits until everything Put before the call has been flushed. It
// fails at once while Redis is down and after Close.
func (c *Cache) barrier(ctx context.Context) error {
	c.mu.Lock()
	want := c.putGen
	for c.flushedGen < want {
		if c.down != nil {
			err := c.down
			c.mu.Unlock()
			return err
		}
		if c.closed {
			c.mu.Unlock()
			return errClosed
		}
		ch := c.notify
		c.mu.Unlock()
		c.poke()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	return nil
}

// local is the fallback of Get: the copy in memory.
func (c *Cache) local(device string, why error) cache.Snapshot {
	c.m.fallbacks.Inc()
	c.log.Debug("reading the snapshot from memory", "device", device, "err", why)
	c.mu.Lock()
	defer c.mu.Unlock()
	snap := cache.Snapshot{}
	if d := c.devices[device]; d != nil && !c.expired(d, time.Now()) {
		for id, p := range d.points {
			snap[id] = p.e
		}
	}
	return snap
}

// expired reports whether d's hash has expired in Redis (TTL).
func (c *Cache) expired(d *device, now time.Time) bool {
	return c.o.TTL > 0 && now.Sub(d.touched) > c.o.TTL
}

// Close writes what is dirty (for at most about a second) and stops the
// writer. Put fails afterwards; Get returns the copy in memory.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		giveUp := time.AfterFunc(closeTimeout+closeTimeout/2, c.cancel)
		<-c.done
		giveUp.Stop()
		c.cancel()
		c.mu.Lock()
		c.closed = true
		close(c.notify)
		c.notify = make(chan struct{})
		c.mu.Unlock()
		if err := c.client.Close(); err != nil {
			c.closeErr = fmt.Errorf("cache/redis: close: %w", err)
		}
	})
	return c.closeErr
}

// run is the background writer.
func (c *Cache) run() {
	defer close(c.done)
	bo := backoff.Backoff{Min: retryMin, Max: retryMax}
	var downSince time.Time
	for {
		wait, kick := c.o.Flush, c.kick
		if !downSince.IsZero() {
			wait, kick = bo.Next(), nil // only the backoff ends a wait while Redis is down
		}
		t := time.NewTimer(wait)
		select {
		case <-c.stop:
			t.Stop()
			c.final()
			return
		case <-t.C:
		case <-kick:
			t.Stop()
		}
		for {
			more, err := c.flush(c.ctx)
			if err != nil {
				if downSince.IsZero() {
					downSince = time.Now()
					c.log.Warn("redis unavailable; snapshot kept in memory, retrying with backoff", "err", err)
				}
				break
			}
			if !downSince.IsZero() {
				c.log.Info("redis available again; rewriting the snapshot", "down_for", time.Since(downSince).Round(time.Millisecond), "attempts", bo.Attempts())
				downSince = time.Time{}
				bo.Reset()
			}
			if !more {
				break
			}
			select {
			case <-c.stop:
				c.final()
				return
			default:
			}
		}
	}
}

// final is the last flush, on Close.
func (c *Cache) final() {
	ctx, cancel := context.WithTimeout(c.ctx, closeTimeout)
	defer cancel()
	if _, err := c.flush(ctx); err != nil {
		c.mu.Lock()
		n := c.ndirty
		c.mu.Unlock()
		if n > 0 {
			c.log.Warn("closing with points not written to redis", "points", n, "err", err)
		}
	}
}

// batch is one device's dirty points, taken for a flush: the points and a
// copy of their entries as they were when taken.
type batch struct {
	dev     *device
	points  []*point
	entries []cache.Entry
}

// flush sends the dirty points and checks (or, on a resync, writes) the
// marker. more says another flush should follow at once: many points are
// dirty again, or the marker was missing. An error means Redis is down or
// failing: the points stay dirty, the next flush rewrites everything.
func (c *Cache) flush(ctx context.Context) (more bool, err error) {
	c.mu.Lock()
	wasDown := c.down != nil
	c.mu.Unlock()
	if wasDown {
		// probe before encoding everything for nothing
		if err := c.client.Ping(ctx).Err(); err != nil {
			return false, c.failed(nil, err)
		}
	}
	resync, batches, gen := c.take()

	// The commands: the marker first, then per device an HSET with all its
	// dirty points (and a PEXPIRE), sent in pipelines of at most
	// PipelineDepth commands (a device's HSET and PEXPIRE stay together) by
	// a few senders while the next pipeline is encoded.
	size := 1 + len(batches)
	if c.o.TTL > 0 {
		size += len(batches)
	}
	cmds := make([]goredis.Cmder, 0, size) // never grows: senders read it while it is filled
	owner := make([]int, 0, size)          // index in batches of each command's device; -1 for the marker
	var markerCmd *goredis.IntCmd
	if resync {
		cmds = append(cmds, goredis.NewStatusCmd(ctx, "set", c.marker, time.Now().UTC().Format(time.RFC3339Nano)))
	} else {
		markerCmd = goredis.NewIntCmd(ctx, "exists", c.marker)
		cmds = append(cmds, markerCmd)
	}
	owner = append(owner, -1)

	type span struct {
		lo, hi int
		err    error
	}
	spans := make(chan span, senders)
	var (
		wg      sync.WaitGroup
		errsMu  sync.Mutex
		errSpan []span             // pipelines that failed
		all     = cmds[:cap(cmds)] // what senders read: cmds is appended to meanwhile
	)
	for range min(senders, len(batches)/c.o.PipelineDepth+1) {
		wg.Go(func() {
			for sp := range spans {
				pipe := c.client.Pipeline()
				_ = pipe.BatchProcess(ctx, all[sp.lo:sp.hi]...)
				if _, err := pipe.Exec(ctx); err != nil {
					sp.err = err
					errsMu.Lock()
					errSpan = append(errSpan, sp)
					errsMu.Unlock()
				}
			}
		})
	}
	lo := 0
	npoints := 0
	buf := make([]byte, 0, 64*1024)
	ttl := c.o.TTL.Milliseconds()
	perDevice := 1
	if ttl > 0 {
		perDevice = 2
	}
	for i, b := range batches {
		if n := len(cmds) - lo; n > 0 && n+perDevice > c.o.PipelineDepth {
			spans <- span{lo: lo, hi: len(cmds)}
			lo = len(cmds)
		}
		key := c.o.Prefix + b.dev.name
		args := make([]any, 2, 2+2*len(b.points))
		args[0], args[1] = "hset", key
		for j, p := range b.points {
			start := len(buf)
			buf = appendField(buf, b.entries[j])
			args = append(args, p.id, buf[start:len(buf):len(buf)])
		}
		if len(buf) > cap(buf)/2 {
			buf = make([]byte, 0, 64*1024) // what was written stays referenced by args
		}
		cmds = append(cmds, goredis.NewIntCmd(ctx, args...))
		owner = append(owner, i)
		if ttl > 0 {
			cmds = append(cmds, goredis.NewBoolCmd(ctx, "pexpire", key, ttl))
			owner = append(owner, i)
		}
		npoints += len(b.points)
	}
	spans <- span{lo: lo, hi: len(cmds)}
	close(spans)
	wg.Wait()

	// A connection error fails the flush; an error reply to one command (a
	// foreign key of another type, out of memory…) only fails that device,
	// whose points are retried with the next flush.
	var refused map[int]bool
	var replyErr error
	for _, sp := range errSpan {
		if !isReply(sp.err) {
			// the connection failed (go-redis does not always set the
			// commands' errors then)
			return false, c.failed(batches, sp.err)
		}
		for i := sp.lo; i < sp.hi; i++ {
			cerr := cmds[i].Err()
			if cerr == nil {
				continue
			}
			if !isReply(cerr) || owner[i] < 0 {
				// the connection failed, or the marker could not be checked
				// or set (LOADING, NOAUTH, OOM…): Redis is not usable
				return false, c.failed(batches, cerr)
			}
			if refused == nil {
				refused = map[int]bool{}
			}
			refused[owner[i]] = true
			replyErr = cerr
		}
	}
	if replyErr != nil {
		c.m.writeErrors.Inc()
		c.logReplyError(replyErr)
		var again []batch
		for i := range refused {
			again = append(again, batches[i])
			npoints -= len(batches[i].points)
		}
		c.putBack(again)
	}
	c.m.written.Add(float64(npoints))
	if resync {
		c.m.resyncs.Inc()
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if markerCmd != nil && markerCmd.Val() == 0 {
		// Redis lost our keys (or some of them): rewrite everything now.
		c.resync = true
		c.log.Warn("snapshot marker key missing (redis flushed or restarted); rewriting the whole snapshot", "marker", c.marker)
	} else {
		c.flushedGen = gen
	}
	c.down = nil
	close(c.notify)
	c.notify = make(chan struct{})
	// Points refused by Redis are dirty again: do not hammer it with them.
	return c.resync || (replyErr == nil && c.ndirty >= c.kickAt), nil
}

// take hands the dirty points to the writer: all of them when a resync is
// due. gen is the Put the flush brings Redis up to.
func (c *Cache) take() (resync bool, batches []batch, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resync = c.resync || c.newConn.Swap(false)
	if resync {
		c.markAllLocked()
		c.resync = false
	}
	batches = make([]batch, len(c.dirty))
	entries := make([]cache.Entry, c.ndirty)
	for i, d := range c.dirty {
		b := &batches[i]
		b.dev, b.points, b.entries = d, d.dirty, entries[:len(d.dirty):len(d.dirty)]
		entries = entries[len(d.dirty):]
		for j, p := range d.dirty {
			b.entries[j] = p.e
			p.dirty = false
		}
		d.dirty, d.queued = nil, false
	}
	clear(c.dirty)
	c.dirty = c.dirty[:0]
	c.ndirty = 0
	c.m.dirty.Set(0)
	return resync, batches, c.putGen
}

// markLocked marks p, a point of d, dirty.
func (c *Cache) markLocked(d *device, p *point) {
	if p.dirty {
		return
	}
	p.dirty = true
	d.dirty = append(d.dirty, p)
	c.ndirty++
	if !d.queued {
		d.queued = true
		c.dirty = append(c.dirty, d)
	}
}

// markAllLocked marks every point dirty, except those of devices whose hash
// has expired (TTL): a stale device stays gone.
func (c *Cache) markAllLocked() {
	now := time.Now()
	for _, d := range c.devices {
		if c.expired(d, now) {
			continue
		}
		for _, p := range d.points {
			c.markLocked(d, p)
		}
	}
	c.m.dirty.Set(float64(c.ndirty))
}

// putBack marks the points of batches dirty again; they are sent with
// their latest entries.
func (c *Cache) putBack(batches []batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range batches {
		for _, p := range b.points {
			c.markLocked(b.dev, p)
		}
	}
	c.m.dirty.Set(float64(c.ndirty))
}

// failed records a failed flush: the points of batches are dirty again, Get
// answers from memory until a flush succeeds, and that flush rewrites
// everything (Redis may have restarted).
func (c *Cache) failed(batches []batch, err error) error {
	c.m.writeErrors.Inc()
	c.putBack(batches)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resync = true
	c.down = fmt.Errorf("%w: %w", errUnavailable, err)
	close(c.notify)
	c.notify = make(chan struct{})
	return fmt.Errorf("cache/redis: flush: %w", err)
}

// logReplyError logs an error reply, at most once per replyErrLogGap (the
// writer is the only caller).
func (c *Cache) logReplyError(err error) {
	if now := time.Now(); now.Sub(c.lastReplyErrLog) >= replyErrLogGap {
		c.lastReplyErrLog = now
	} else {
		return
	}
	c.log.Warn("redis refused a snapshot write; the points are retried (further refusals are counted, logged once a minute)", "err", err)
}

// isReply reports whether err is an error reply from Redis (the command was
// refused) rather than a connection or protocol failure.
func isReply(err error) bool {
	var re goredis.Error
	return errors.As(err, &re)
}

type metrics struct {
	writeErrors, written, resyncs, fallbacks, badFields prometheus.Counter
	dirty                                               prometheus.Gauge
}

func newMetrics() metrics {
	return metrics{
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_cache_redis_write_errors_total",
			Help: "Failed writes of the snapshot to Redis: failed flushes (Redis down or failing; retried with backoff) and refused commands.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_cache_points_written_total",
			Help: "Measure points written to Redis (a point changed many times between flushes is written once).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_cache_resyncs_total",
			Help: "Full rewrites of the snapshot to Redis: on each new connection and when the marker key was missing.",
		}),
		dirty: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edged_cache_dirty_points",
			Help: "Measure points changed in memory and not yet written to Redis.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_cache_read_fallbacks_total",
			Help: "Snapshot reads answered from memory because Redis could not be reached.",
		}),
		badFields: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_cache_bad_fields_total",
			Help: "Fields of a device's hash in Redis that are not snapshot entries (written by another tool), skipped on read.",
		}),
	}
}

func (m metrics) register(r prometheus.Registerer) error {
	for _, col := range []prometheus.Collector{m.writeErrors, m.written, m.resyncs, m.dirty, m.fallbacks, m.badFields} {
		if err := r.Register(col); err != nil {
			return err
		}
	}
	return nil
}
