package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/cache"
	"github.com/edged/edged/certs"
	"github.com/edged/edged/cloudlink"
	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/control"
	"github.com/edged/edged/ha"
	"github.com/edged/edged/modelsync"
	"github.com/edged/edged/modelsync/cloudsync"
	"github.com/edged/edged/pipeline"
)

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "edged.yaml", "config file")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	drain := fs.Duration("drain", 5*time.Second, "on shutdown, how long the uplink may keep delivering the backlog")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "edged:", err)
		return 2
	}
	cfg, err := load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runGateway(ctx, cfg, log, *drain); err != nil {
		log.Error("edged stopped", "err", err)
		return 1
	}
	return 0
}

// gateway is every stage of one running edged.
type gateway struct {
	cfg      *config.Config
	log      *slog.Logger
	role     role
	etcd     *ha.Etcd // nil unless ha.kind is etcd
	m        haMetrics
	bus      bus.Bus
	cache    cache.Cache
	norm     *modelsync.Live
	engine   *connectivity.Engine
	producer *pipeline.Producer
	uplink   *cloudlink.Uplink
	models   *cloudsync.Syncer
	blocked  prometheus.Gauge
}

// runGateway runs edged until ctx ends, then shuts down in order: stop
// polling → the producer flushes what it holds to the bus → the uplink
// delivers for up to drain → close the bus. What is not delivered stays on
// disk for the next start.
func runGateway(ctx context.Context, cfg *config.Config, log *slog.Logger, drain time.Duration) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.Gateway.GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" && cfg.Gateway.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.Gateway.MemoryLimit)
	}
	dataDir := cfg.Path(cfg.Gateway.DataDir)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b, err := openBus(ctx, cfg, dataDir, log, reg)
	if err != nil {
		return err
	}
	defer b.Close()
	snap, closeCache, err := openCache(cfg, log, reg)
	if err != nil {
		return err
	}
	defer closeCache()
	lead, etcdNode, err := leadership(cfg, dataDir, log)
	if err != nil {
		return err
	}
	if etcdNode != nil {
		defer etcdNode.Close() // resigns: the standby takes over at once
	}

	tlsCfg, _, err := certs.ClientConfig(cfg.Path(cfg.Cloud.CAFile), cfg.Path(cfg.Cloud.CertFile), cfg.Path(cfg.Cloud.KeyFile), cfg.Cloud.ServerName)
	if err != nil {
		return fmt.Errorf("cloud TLS: %w", err)
	}

	// The device models: the stored copies (the last good versions from
	// the cloud) until the cloud answers.
	modelsDir := filepath.Join(dataDir, "models")
	stored, errs := cloudsync.Stored(modelsDir, cfg)
	for _, err := range errs {
		log.Error("stored device model unusable; its product starts without a model", "err", err)
	}
	norm, err := modelsync.Build(cfg, stored)
	if err != nil {
		return fmt.Errorf("the configuration does not fit the device models stored in %s (fix the profiles, or remove a model file to start without it): %w", modelsDir, err)
	}
	for _, w := range norm.Warnings() {
		log.Info("device model", "note", w)
	}
	g := &gateway{cfg: cfg, log: log, etcd: etcdNode, m: newHAMetrics(reg), bus: b, cache: snap, norm: modelsync.NewLive(norm)}
	g.engine, err = connectivity.New(cfg, registry(cfg), nil, log.With("component", "connectivity"), reg)
	if err != nil {
		return err
	}
	// Fresh records reach the uplink ahead of a backlog through the tap.
	// Not with HA on a shared ActiveMQ queue: the queue then holds both
	// nodes' messages, whose sequence numbers come from two outboxes, and
	// the tap's claims are keyed by sequence number alone; everything goes
	// through the queue, in order.
	var tap *bus.Tap
	if !(cfg.HA.Kind == "etcd" && cfg.Bus.Kind == "activemq") {
		tap = bus.NewTap(0)
	}
	g.producer = pipeline.NewProducer(pipeline.ProducerOptions{
		Normaliser: g.norm, Bus: b, Cache: g.cache, // readings and epoch: per term
		Gateway: cfg.Gateway.ID, MaxRecords: cfg.Cloud.Batch, Tap: tap,
		Logger: log.With("component", "producer"), Registerer: reg,
	})
	g.uplink = cloudlink.New(cloudlink.Options{
		Broker: cfg.Cloud.Broker, TLS: tlsCfg,
		ProductKey: cfg.Cloud.ProductKey, DeviceKey: cfg.Cloud.DeviceKey,
		Secret: cfg.Cloud.Secret, SignMethod: cfg.Cloud.SignMethod,
		Gateway: cfg.Gateway.ID, ClientID: clientID(cfg), Bus: b, // activated per term
		MaxPayload: cfg.Cloud.MaxPayload, InFlight: cfg.Cloud.InFlight, AckTimeout: cfg.Cloud.AckTimeout,
		Tap: tap, ResumeAfter: cfg.Cloud.ResumeAfter, ResumeRate: cfg.Cloud.ResumeRate, ReconnectMax: cfg.Cloud.ReconnectMax,
		ConfirmByReply: cfg.Cloud.Confirm == "reply",
		Commander:      &control.Executor{Norm: g.norm, Writer: g.engine, Allow: g.mayWrite},
		OnConnect:      func() { g.models.Trigger() },
		Logger:         log.With("component", "uplink"), Registerer: reg,
	})
	g.models = cloudsync.New(cloudsync.Options{
		Dir: modelsDir, Config: cfg, Live: g.norm, Fetcher: cloudsync.CloudFetcher{R: g.uplink},
		Interval: cfg.Models.CheckInterval, Logger: log.With("component", "modelsync"), Registerer: reg,
	})
	g.models.Started(stored)
	registerBusMetrics(reg, b)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edged_uplink_tap_dropped_total",
		Help: "Fresh bus messages the uplink's real-time path did not take (link down or slower than polling); they stay queued and go out in order."},
		func() float64 {
			if tap == nil {
				return 0
			}
			return float64(tap.Dropped())
		}))

	srv, err := g.serveHTTP(reg)
	if err != nil {
		return err
	}
	log.Info("edged started", "version", version, "gateway", cfg.Gateway.ID, "ha", cfg.HA.Kind, "node", cfg.HA.Node, "bus", cfg.Bus.Kind, "cache", cfg.Cache.Kind,
		"links", len(cfg.Links), "devices", len(cfg.Devices), "data_dir", dataDir, "http", cfg.Metrics.Listen)

	// leadCtx ends leadership (after the drain at shutdown); pollCtx ends
	// polling (at the start of shutdown).
	leadCtx, stopLeading := context.WithCancel(context.Background())
	defer stopLeading()
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	upCtx, stopUplink := context.WithCancel(context.Background())
	defer stopUplink()
	prodCtx, stopProducer := context.WithCancel(context.Background())
	defer stopProducer()

	producerDone := make(chan error, 1)
	go func() { producerDone <- g.runTerms(leadCtx, pollCtx, prodCtx, lead) }()
	uplinkDone := make(chan error, 1)
	go func() { uplinkDone <- g.uplink.Run(upCtx) }()
	modelsDone := make(chan struct{})
	go func() { defer close(modelsDone); g.models.Run(upCtx) }()

	<-ctx.Done()
	log.Info("shutting down: polls stop, the backlog is flushed")
	stopPolling()
	// the engine stops, the producer flushes what it holds; give a full
	// bus a few seconds
	t := time.AfterFunc(5*time.Second, stopProducer)
	perr := <-producerDone
	t.Stop()
	deadline := time.Now().Add(drain)
	for time.Now().Before(deadline) {
		st, _ := b.Stats(bus.Telemetry)
		if active, _, _ := g.role.get(); st.Depth == 0 || !g.uplink.Health().Connected || !active {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopLeading()
	if active, epoch, _ := g.role.get(); active {
		g.setRole(false, epoch)
		log.Info("term ended: standing down", "epoch", epoch)
	}
	if etcdNode != nil {
		if err := etcdNode.Close(); err != nil {
			log.Warn("leadership: resign", "err", err)
		}
	}
	stopUplink()
	<-uplinkDone
	<-modelsDone
	if st, err := b.Stats(bus.Telemetry); err == nil && st.Depth > 0 {
		log.Info("undelivered records stay queued for the next start", "records", st.Records, "messages", st.Depth)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if perr != nil && !errors.Is(perr, context.Canceled) {
		return perr
	}
	return nil
}

func registerBusMetrics(reg prometheus.Registerer, b bus.Bus) {
	stat := func(f func(bus.Stats) float64) func() float64 {
		return func() float64 {
			st, err := b.Stats(bus.Telemetry)
			if err != nil {
				return 0
			}
			return f(st)
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edged_bus_depth_messages", Help: "Messages on the telemetry queue not yet acknowledged by the cloud."},
			stat(func(s bus.Stats) float64 { return float64(s.Depth) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edged_uplink_backlog_records", Help: "Records waiting for the cloud's acknowledgement."},
			stat(func(s bus.Stats) float64 { return float64(s.Records) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edged_bus_bytes", Help: "Bytes on the telemetry queue."},
			stat(func(s bus.Stats) float64 { return float64(s.Bytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edged_bus_oldest_age_seconds", Help: "Age of the oldest unacknowledged message."},
			stat(func(s bus.Stats) float64 {
				if s.Oldest.IsZero() {
					return 0
				}
				return time.Since(s.Oldest).Seconds()
			})),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edged_bus_dropped_records_total", Help: "Records dropped from a full queue to make room (bus.when_full: drop_oldest), since start."},
			stat(func(s bus.Stats) float64 { return float64(s.Dropped) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edged_bus_next_sequence", Help: "The sequence number the next record will get."},
			stat(func(s bus.Stats) float64 { return float64(s.NextSeq) })),
	)
}

// health is the /healthz document.
type health struct {
	Status  string                `json:"status"` // ok, degraded (a device, link or the cloud is down; the queue full and dropping its oldest), failing (the queue full: polls pause)
	Gateway string                `json:"gateway"`
	Epoch   uint64                `json:"epoch"`
	HA      haHealth              `json:"ha"`
	Links   []connectivity.Health `json:"links"`
	Bus     busHealth             `json:"bus"`
	Broker  *bus.LinkState        `json:"broker,omitempty"` // the ActiveMQ link, with bus kind activemq
	Uplink  cloudlink.Health      `json:"uplink"`
	// Models: the thing model version in use per product (0: none, the
	// profile-only mapping) and the last check's error or refusal.
	Models []cloudsync.ProductStatus `json:"models"`
}

type busHealth struct {
	Depth      int     `json:"depth"`
	Records    uint64  `json:"records"`
	Bytes      int64   `json:"bytes"`
	MaxBytes   int64   `json:"max_bytes"`
	OldestAgeS float64 `json:"oldest_age_seconds"`
	NextSeq    uint64  `json:"next_seq"`
	// Dropped: records dropped from the full queue to make room
	// (when_full: drop_oldest), since start.
	Dropped uint64 `json:"dropped_records"`
	// Stalled: the oldest queued record has waited longer than 3 ×
	// cloud.ack_timeout (at least a minute): data is not reaching the cloud,
	// even if the link is up (the cloud refusing or failing to store).
	Stalled bool `json:"stalled"`
}

func (g *gateway) health() (health, int) {
	_, epoch, _ := g.role.get()
	h := health{Status: "ok", Gateway: g.cfg.Gateway.ID, Epoch: epoch, HA: g.haHealth(context.Background()), Links: g.engine.Health(), Uplink: g.uplink.Health(), Models: g.models.Status()}
	if st, err := g.bus.Stats(bus.Telemetry); err == nil {
		h.Bus = busHealth{Depth: st.Depth, Records: st.Records, Bytes: st.Bytes, MaxBytes: st.MaxBytes, NextSeq: st.NextSeq, Dropped: st.Dropped}
		if !st.Oldest.IsZero() {
			h.Bus.OldestAgeS = time.Since(st.Oldest).Seconds()
			h.Bus.Stalled = time.Since(st.Oldest) > max(time.Minute, 3*g.cfg.Cloud.AckTimeout)
		}
		if st.Bytes > st.MaxBytes*9/10 {
			// Blocking: polls are about to pause. Dropping: polling goes on
			// and the oldest history is being dropped (counted).
			h.Status = "failing"
			if g.cfg.Bus.WhenFull == "drop_oldest" {
				h.Status = "degraded"
			}
		}
	}
	if l, ok := g.bus.(bus.Linked); ok {
		ls := l.LinkState()
		h.Broker = &ls
		if !ls.Up && h.Status == "ok" {
			h.Status = "degraded" // records spill to the local outbox meanwhile
		}
	}
	if h.Status == "ok" {
		if !h.Uplink.Connected || h.Bus.Stalled {
			h.Status = "degraded"
		}
		for _, l := range h.Links {
			for _, d := range l.Devices {
				if !d.Up {
					h.Status = "degraded"
				}
			}
		}
	}
	if active, _, _ := g.role.get(); active && h.Uplink.Fenced {
		// the active node's posts are refused as stale: nothing it sends
		// is stored (epochs reset by a rebuilt etcd, or a second active)
		h.Status = "failing"
	}
	code := http.StatusOK
	if h.Status == "failing" {
		code = http.StatusServiceUnavailable
	}
	return h, code
}

func (g *gateway) serveHTTP(reg *prometheus.Registry) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		h, code := g.health()
		writeJSON(w, code, h)
	})
	mux.HandleFunc("POST /api/v1/models/sync", func(w http.ResponseWriter, r *http.Request) {
		g.models.Trigger()
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "the models are checked now; see /healthz models"})
	})
	mux.HandleFunc("GET /api/v1/snapshot/{device}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("device")
		idx := -1
		for i, d := range g.cfg.Devices {
			if d.Name == name {
				idx = i
			}
		}
		if idx < 0 {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no device %q in this gateway's config", name)})
			return
		}
		snap, err := g.cache.Get(r.Context(), name)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		type point struct {
			ID      string `json:"id"`
			Value   any    `json:"value"`
			Unit    string `json:"unit,omitempty"`
			Quality string `json:"quality"`
			Reason  string `json:"reason,omitempty"`
			Time    int64  `json:"time"`
			Seq     uint64 `json:"seq"`
		}
		var out []point
		for _, mp := range g.norm.Load().Model(idx) {
			e, ok := snap[mp.ID]
			if !ok {
				continue
			}
			var v any
			if !e.Value.IsNone() {
				v = e.Value.String()
				if f, ok := e.Value.Float64(); ok {
					v = f
				}
			}
			out = append(out, point{ID: mp.ID, Value: v, Unit: mp.Unit, Quality: e.Quality.String(), Reason: e.Reason, Time: e.Time, Seq: e.Seq})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		writeJSON(w, http.StatusOK, map[string]any{"device": name, "points": out})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if g.cfg.Metrics.Listen == "off" {
		return srv, nil
	}
	ln, err := net.Listen("tcp", g.cfg.Metrics.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	go srv.Serve(ln)
	return srv, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// clientID is the cloud MQTT client id: the device key, with the node's
// name in HA (the nodes share the identity; equal ids would take over each
// other's session).
func clientID(cfg *config.Config) string {
	if cfg.HA.Kind == "etcd" {
		return cfg.Cloud.DeviceKey + "." + cfg.HA.Node
	}
	return cfg.Cloud.DeviceKey
}
