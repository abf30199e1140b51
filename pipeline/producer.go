// Package pipeline holds the producer stage: it takes readings from the
// connectivity engine, normalises them into records, batches them, makes
// each batch durable on the bus (which numbers the records), and then
// updates the snapshot cache.
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
	In         <-chan connectivity.Reading // closed by the owner once the engine has stopped
	Normaliser *modelsync.Normaliser
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
	return &Producer{opts: o, m: newProducerMetrics(o.Registerer)}
}

// Run consumes readings until In is closed, flushing what it holds before it
// returns. ctx bounds only the retries of a batch the bus refuses (full): when
// ctx ends during such a retry, that batch is lost and Run says so.
func (p *Producer) Run(ctx context.Context) error {
	o := p.opts
	pending := make([]telemetry.Record, 0, o.MaxRecords)
	var buf []byte
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	points := 0 // in pending
	flush := func() error {
		points = 0
		if armed {
			timer.Stop()
			armed = false
		}
		if len(pending) == 0 {
			return nil
		}
		buf = telemetry.AppendBatch(buf[:0], o.Gateway, o.Epoch, pending)
		seq, err := p.publish(ctx, buf, uint32(len(pending)))
		if err != nil {
			o.Logger.Error("records lost: the bus did not take them before shutdown", "records", len(pending), "err", err)
			p.m.lost.Add(float64(len(pending)))
			pending = pending[:0]
			return err
		}
		if o.Tap != nil {
			o.Tap.Offer(bus.Message{Seq: seq, Count: uint32(len(pending)), Published: time.Now(), Body: append([]byte(nil), buf...)})
		}
		for i := range pending {
			pending[i].Seq = seq + uint64(i)
		}
		n := 0
		for i := range pending {
			n += len(pending[i].Points)
		}
		p.m.records.Add(float64(len(pending)))
		p.m.points.Add(float64(n))
		if err := o.Cache.Put(ctx, pending); err != nil {
			p.m.cacheErrors.Inc()
		}
		pending = pending[:0] // the cache copies what it keeps

		return nil
	}
	for {
		select {
		case r, ok := <-o.In:
			if !ok {
				return flush()
			}
			pending = append(pending, o.Normaliser.Normalise(r, time.Now()))
			points += len(r.Samples)
			if len(pending) >= o.MaxRecords || points >= o.MaxPoints {
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
	publishErrors                      *prometheus.CounterVec
	publishSeconds                     prometheus.Histogram
	blocked                            prometheus.Gauge
}

func newProducerMetrics(r prometheus.Registerer) *producerMetrics {
	m := &producerMetrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_bus_published_records_total", Help: "Records made durable on the bus."}),
		points:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_bus_published_points_total", Help: "Measure points made durable on the bus."}),
		lost:    prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_records_lost_total", Help: "Records the bus never accepted (only at shutdown while the bus was full)."}),
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
		r.MustRegister(m.records, m.points, m.lost, m.cacheErrors, m.publishErrors, m.publishSeconds, m.blocked)
	}
	return m
}
