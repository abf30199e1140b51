// Package pipeline holds the producer stage: it takes readings from the
// connectivity engine, normalises them into records, applies the
// reporting policy, batches them, makes each batch durable on the bus
// (which numbers the records), and then updates the snapshot cache.
//
// The reporting policy decides what goes to the bus (and so to the
// cloud); the snapshot cache gets every normalised value, sent or not:
// it is the gateway's current state for local readers, and a value held
// back by a deadband is still the latest reading. A cache entry's Seq is
// the bus record of the poll the value came from, 0 when the policy sent
// no point of that poll (the record never reached the bus). A record left
// with no points is not published: it takes no sequence number, so the
// bus numbering stays dense.
package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/cache"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/internal/backoff"
	"github.com/edged/edged/modelsync"
	"github.com/edged/edged/telemetry"
)

// Producer is the poll → bus stage.
type Producer struct {
	opts ProducerOptions
	m    *producerMetrics
}

// ProducerOptions configure a Producer.
type ProducerOptions struct {
	In <-chan connectivity.Reading // closed by the owner once the engine has stopped
	// Normaliser holds the normaliser in use, loaded once per reading: a
	// new model version swapped in applies from the next reading on.
	Normaliser *modelsync.Live
	// Reporter applies the reporting policies; default a new one.
	Reporter   *modelsync.Reporter
	Bus        bus.Bus
	Cache      cache.Cache
	Gateway    string
	Epoch      uint64
	MaxRecords int           // records per bus message, default 500
	MaxPoints  int           // measure points per bus message, default 10000
	Linger     time.Duration // how long a partial batch waits, default 50ms
	// Tap, if set, is offered every message once it is durable, for the
	// uplink's real-time path (see bus.Tap).
	Tap        *bus.Tap
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// NewProducer builds the stage. No I/O.
func NewProducer(o ProducerOptions) *Producer {
	if o.MaxRecords <= 0 {
		o.MaxRecords = 500
	}
	if o.MaxPoints <= 0 {
		o.MaxPoints = 10000
	}
	if o.Linger <= 0 {
		o.Linger = 50 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Reporter == nil {
		o.Reporter = modelsync.NewReporter()
	}
	return &Producer{opts: o, m: newProducerMetrics(o.Registerer)}
}

// Run consumes readings until In is closed, flushing what it holds before it
// returns. ctx bounds only the retries of a batch the bus refuses (full): when
// ctx ends during such a retry, that batch is lost and Run says so.
func (p *Producer) Run(ctx context.Context) error {
	return p.RunWith(ctx, p.opts.In, p.opts.Epoch)
}

// RunWith is Run with readings from in, every record stamped with epoch
// (an HA node runs a producer per term, with the term's epoch). Never
// twice at once.
func (p *Producer) RunWith(ctx context.Context, in <-chan connectivity.Reading, epoch uint64) error {
	o := p.opts
	o.In, o.Epoch = in, epoch
	pending := make([]telemetry.Record, 0, o.MaxRecords)
	// full: every normalised record since the last flush, for the cache;
	// sent[i] is its index in pending, -1 when the policy left it empty
	full := make([]telemetry.Record, 0, o.MaxRecords)
	sent := make([]int, 0, o.MaxRecords)
	var buf []byte
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	points := 0 // in pending
	cachePut := func(seq uint64, published bool) {
		for i := range full {
			full[i].Seq = 0
			if published && sent[i] >= 0 {
				full[i].Seq = seq + uint64(sent[i])
			}
		}
		if len(full) > 0 {
			if err := o.Cache.Put(ctx, full); err != nil {
				p.m.cacheErrors.Inc()
			}
		}
		clear(full) // the cache copies what it keeps
		full, sent = full[:0], sent[:0]
	}
	flush := func() error {
		points = 0
		if armed {
			timer.Stop()
			armed = false
		}
		if len(pending) == 0 {
			cachePut(0, false)
			return nil
		}
		buf = telemetry.AppendBatch(buf[:0], o.Gateway, o.Epoch, pending)
		seq, err := p.publish(ctx, buf, uint32(len(pending)))
		if err != nil {
			o.Logger.Error("records lost: the bus did not take them before shutdown", "records", len(pending), "err", err)
			p.m.lost.Add(float64(len(pending)))
			pending = pending[:0]
			cachePut(0, false)
			return err
		}
		if o.Tap != nil {
			o.Tap.Offer(bus.Message{Seq: seq, Count: uint32(len(pending)), Published: time.Now(), Body: append([]byte(nil), buf...)})
		}
		n := 0
		for i := range pending {
			n += len(pending[i].Points)
		}
		p.m.records.Add(float64(len(pending)))
		p.m.points.Add(float64(n))
		cachePut(seq, true)
		clear(pending)
		pending = pending[:0]
		return nil
	}
	for {
		select {
		case r, ok := <-o.In:
			if !ok {
				return flush()
			}
			now := time.Now()
			norm := o.Normaliser.Load()
			rec := norm.Normalise(r, now)
			full = append(full, rec)
			o.Reporter.Filter(norm, &rec, now)
			p.m.withheld.Add(float64(len(full[len(full)-1].Points) - len(rec.Points)))
			if len(rec.Points) == 0 {
				sent = append(sent, -1)
			} else {
				sent = append(sent, len(pending))
				pending = append(pending, rec)
				points += len(rec.Points)
			}
			if len(pending) >= o.MaxRecords || points >= o.MaxPoints || len(full) >= 4*o.MaxRecords {
				if err := flush(); err != nil && ctx.Err() != nil {
					return err
				}
			} else if !armed {
				timer.Reset(o.Linger)
				armed = true
			}
		case <-timer.C:
			armed = false
			if err := flush(); err != nil && ctx.Err() != nil {
				return err
			}
		}
	}
}

// publish stores one batch, retrying while the bus is full or failing. While
// it retries, the producer does not read: polls back up and stall, which is
// the documented back-pressure policy (the oldest data is kept, new polls
// wait; nothing is overwritten).
func (p *Producer) publish(ctx context.Context, body []byte, count uint32) (uint64, error) {
	retry := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	var blockedSince time.Time
	for {
		start := time.Now()
		seq, err := p.opts.Bus.Publish(ctx, bus.Telemetry, count, body)
		if err == nil {
			p.m.publishSeconds.Observe(time.Since(start).Seconds())
			if !blockedSince.IsZero() {
				p.opts.Logger.Info("bus accepts records again", "blocked_for", time.Since(blockedSince).Round(time.Millisecond))
				p.m.blocked.Set(0)
			}
			return seq, nil
		}
		kind := "error"
		if errors.Is(err, bus.ErrFull) {
			kind = "full"
		}
		p.m.publishErrors.WithLabelValues(kind).Inc()
		if blockedSince.IsZero() {
			blockedSince = time.Now()
			p.m.blocked.Set(1)
			p.opts.Logger.Error("bus refused records; holding them and pausing polls until it accepts", "records", count, "err", err)
		}
		t := time.NewTimer(retry.Next())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, err
		}
	}
}

type producerMetrics struct {
	records, points, lost, cacheErrors prometheus.Counter
	withheld                           prometheus.Counter
	publishErrors                      *prometheus.CounterVec
	publishSeconds                     prometheus.Histogram
	blocked                            prometheus.Gauge
}

func newProducerMetrics(r prometheus.Registerer) *producerMetrics {
	m := &producerMetrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_bus_published_records_total", Help: "Records made durable on the bus."}),
		points:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_bus_published_points_total", Help: "Measure points made durable on the bus."}),
		withheld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_report_withheld_points_total", Help: "Measure points the reporting policy did not send (on change, deadband); the snapshot cache still has them.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_records_lost_total", Help: "Records the bus never accepted (only at shutdown while the bus was full)."}),
		cacheErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_cache_write_errors_total", Help: "Failed snapshot cache writes (best effort; data is not lost).",
		}),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_bus_publish_errors_total", Help: "Bus publishes refused, by kind (full, error).",
		}, []string{"kind"}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edged_bus_publish_duration_seconds", Help: "Time to make one batch durable.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .5},
		}),
		blocked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edged_bus_blocked", Help: "1 while the bus refuses records and polls are paused."}),
	}
	if r != nil {
		r.MustRegister(m.records, m.points, m.withheld, m.lost, m.cacheErrors, m.publishErrors, m.publishSeconds, m.blocked)
	}
	return m
}
