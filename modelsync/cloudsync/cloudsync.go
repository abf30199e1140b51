// Package cloudsync keeps edged's device models in step with the cloud:
// it fetches the thing model of every product its devices use
// (thing/tsltemplate/get), stores each in the data dir, starts from the
// stored copies when the cloud is unreachable, and applies a new version
// live — the normaliser is rebuilt and swapped between two readings, with
// no reconnect to devices or to the cloud and no sample lost.
//
// A version that does not fit the gateway's mapping (a mapped measure point
// it no longer has, a type that cannot convert, a unit that cannot be
// converted) is refused: the gateway keeps running on the last good
// version, logs the reasons (device, point, model version) and counts the
// refusal in edged_model_rejected_total. A malformed model is refused the
// same way.
package cloudsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/config"
	"github.com/edged/edged/internal/atomicfile"
	"github.com/edged/edged/modelsync"
	"github.com/edged/edged/thingmodel"
)

// ErrNoModel: the cloud has no model for the product.
var ErrNoModel = errors.New("the cloud has no model for this product")

// ErrMalformed: the cloud sent a model that does not parse; it is refused
// like a version that does not fit.
var ErrMalformed = errors.New("malformed model")

// Fetcher gets the latest model of a product from the cloud.
type Fetcher interface {
	// FetchModel asks as device deviceKey (a device of the product the
	// gateway serves). ErrNoModel when the cloud has none.
	FetchModel(ctx context.Context, productKey, deviceKey string) (*thingmodel.Model, error)
}

// Requester is the cloud link's request/reply (cloudlink.Uplink.Request).
type Requester interface {
	Request(ctx context.Context, productKey, deviceKey, suffix string, params []byte) (enos.Reply, error)
}

// CloudFetcher fetches models with thing/tsltemplate/get.
type CloudFetcher struct{ R Requester }

// FetchModel implements Fetcher.
func (f CloudFetcher) FetchModel(ctx context.Context, productKey, deviceKey string) (*thingmodel.Model, error) {
	r, err := f.R.Request(ctx, productKey, deviceKey, enos.SuffixTSLTemplateGet, nil)
	if err != nil {
		return nil, err
	}
	switch r.Code {
	case enos.CodeOK:
	case enos.CodeNotFound:
		return nil, fmt.Errorf("%w (%s)", ErrNoModel, r.Message)
	default:
		return nil, fmt.Errorf("thing/tsltemplate/get of %s/%s: code %d: %s", productKey, deviceKey, r.Code, r.Message)
	}
	m, err := thingmodel.Parse(r.Data)
	if err != nil {
		return nil, fmt.Errorf("%w of %s from the cloud: %w", ErrMalformed, productKey, err)
	}
	if m.ProductKey != productKey {
		return nil, fmt.Errorf("the cloud answered %s's model request with product %q's", productKey, m.ProductKey)
	}
	return m, nil
}

// Options configure a Syncer.
type Options struct {
	Dir      string // where models are stored, one file per product
	Config   *config.Config
	Live     *modelsync.Live
	Fetcher  Fetcher
	Interval time.Duration // periodic check; default 10 minutes
	// Timeout bounds one product's fetch; default 15 s.
	Timeout    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Syncer keeps the models in step.
type Syncer struct {
	o       Options
	trigger chan struct{}
	m       metrics

	mu      sync.Mutex
	running map[string]*thingmodel.Model // the models the live normaliser was built with
	status  map[string]*ProductStatus
}

// ProductStatus is what /healthz shows per product.
type ProductStatus struct {
	ProductKey string    `json:"product_key"`
	Version    uint64    `json:"version"` // the version in use; 0: no model (profile only)
	Checked    time.Time `json:"checked,omitzero"`
	LastError  string    `json:"last_error,omitempty"`
	Rejected   uint64    `json:"rejected_version,omitempty"` // the last version refused
}

type metrics struct {
	version  *prometheus.GaugeVec
	rejected *prometheus.CounterVec
	errors   *prometheus.CounterVec
	applied  prometheus.Counter
}

// New builds a syncer. No I/O.
func New(o Options) *Syncer {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{o: o, trigger: make(chan struct{}, 1), running: map[string]*thingmodel.Model{}, status: map[string]*ProductStatus{}}
	s.m = metrics{
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edged_model_version",
			Help: "The version of each product's thing model in use; 0: none (profile-only mapping)."}, []string{"product_key"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_model_rejected_total",
			Help: "Model versions refused (malformed, or not fitting the gateway's mapping); the previous version stays in use."}, []string{"product_key"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_model_sync_errors_total",
			Help: "Model fetches that failed (cloud unreachable, no reply)."}, []string{"product_key"}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_model_applied_total",
			Help: "New model versions applied live."}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.m.version, s.m.rejected, s.m.errors, s.m.applied)
	}
	for _, pd := range s.products() {
		s.status[pd[0]] = &ProductStatus{ProductKey: pd[0]}
		s.m.version.WithLabelValues(pd[0]).Set(0)
	}
	return s
}

// products returns each product key the devices use, with the device key
// of its first device (the one the gateway asks as), in key order.
func (s *Syncer) products() [][2]string { return products(s.o.Config) }

func products(cfg *config.Config) [][2]string {
	seen := map[string]string{}
	for _, d := range cfg.Devices {
		// a key with '/' would escape the models dir (and is no valid
		// topic level): such a device cannot have a model
		if _, ok := seen[d.ProductKey]; !ok && enos.ValidKey(d.ProductKey) && enos.ValidKey(d.DeviceKey) {
			seen[d.ProductKey] = d.DeviceKey
		}
	}
	out := make([][2]string, 0, len(seen))
	for pk, dk := range seen {
		out = append(out, [2]string{pk, dk})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return out
}

func (s *Syncer) path(productKey string) string { return modelPath(s.o.Dir, productKey) }

// modelPath is where a product's model is stored. Product keys are
// validated by the config (no '/', no "..").
func modelPath(dir, productKey string) string {
	return filepath.Join(dir, productKey+".json")
}

// Stored loads the stored model (in dir) of every product cfg's devices
// use. A file that does not parse is reported (and left in place for
// inspection) and its product starts without a model.
func Stored(dir string, cfg *config.Config) (map[string]*thingmodel.Model, []error) {
	models := map[string]*thingmodel.Model{}
	var errs []error
	for _, pd := range products(cfg) {
		path := modelPath(dir, pd[0])
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			var m *thingmodel.Model
			m, err = thingmodel.Parse(b)
			if err == nil && m.ProductKey != pd[0] {
				err = fmt.Errorf("it holds product %q's model", m.ProductKey)
			}
			if err == nil {
				models[pd[0]] = m
				continue
			}
		}
		errs = append(errs, fmt.Errorf("stored model %s: %w", path, err))
	}
	return models, errs
}

// Started records the models the live normaliser was built with at start.
func (s *Syncer) Started(models map[string]*thingmodel.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pk, m := range models {
		s.running[pk] = m
		if st := s.status[pk]; st != nil {
			st.Version = m.Version
		}
		s.m.version.WithLabelValues(pk).Set(float64(m.Version))
	}
}

// Trigger asks for a check now (on reconnect, or when told). It never
// blocks.
func (s *Syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Status reports every product.
func (s *Syncer) Status() []ProductStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProductStatus, 0, len(s.status))
	for _, pd := range s.products() {
		out = append(out, *s.status[pd[0]])
	}
	return out
}

// Run checks on Trigger (the cloud link triggers at every connect) and
// every Interval, until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.trigger:
		}
		s.SyncOnce(ctx)
	}
}

// SyncOnce fetches every product's model and applies the new versions
// that fit. It returns how many products changed version.
func (s *Syncer) SyncOnce(ctx context.Context) int {
	fetched := map[string]*thingmodel.Model{}
	for _, pd := range s.products() {
		fctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
		m, err := s.o.Fetcher.FetchModel(fctx, pd[0], pd[1])
		cancel()
		s.mu.Lock()
		st := s.status[pd[0]]
		st.Checked = time.Now()
		cur := s.running[pd[0]]
		s.mu.Unlock()
		switch {
		case errors.Is(err, ErrNoModel):
			s.setError(pd[0], "")
			if cur != nil {
				// keep the last good one: a model does not disappear
				// under running devices
				s.o.Logger.Warn("the cloud has no model for this product any more; keeping the stored one", "product_key", pd[0], "version", cur.Version)
			}
			continue
		case errors.Is(err, ErrMalformed):
			s.m.rejected.WithLabelValues(pd[0]).Inc()
			s.setError(pd[0], err.Error())
			s.o.Logger.Error("model from the cloud refused; the current version stays in use", "product_key", pd[0], "err", err)
			continue
		case err != nil:
			if ctx.Err() != nil {
				return 0
			}
			s.m.errors.WithLabelValues(pd[0]).Inc()
			s.setError(pd[0], err.Error())
			s.o.Logger.Warn("model check failed; the current version stays in use", "product_key", pd[0], "err", err)
			continue
		}
		if cur != nil && cur.Version == m.Version {
			s.setError(pd[0], "")
			continue
		}
		fetched[pd[0]] = m
	}
	if len(fetched) == 0 {
		return 0
	}
	// Each new version is tried on its own, so one product's bad version
	// does not hold back another's good one.
	applied := 0
	for _, pd := range s.products() {
		m := fetched[pd[0]]
		if m == nil {
			continue
		}
		if err := s.apply(m); err != nil {
			s.m.rejected.WithLabelValues(m.ProductKey).Inc()
			s.mu.Lock()
			st := s.status[m.ProductKey]
			st.LastError, st.Rejected = err.Error(), m.Version
			s.mu.Unlock()
			s.o.Logger.Error("model version refused; the previous one stays in use", "product_key", m.ProductKey, "version", m.Version, "err", err)
			continue
		}
		applied++
	}
	return applied
}

func (s *Syncer) setError(pk, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[pk].LastError = msg
}

// apply builds a normaliser with m in place of its product's current
// model, stores m and swaps the normaliser in.
func (s *Syncer) apply(m *thingmodel.Model) error {
	s.mu.Lock()
	models := make(map[string]*thingmodel.Model, len(s.running)+1)
	for pk, cur := range s.running {
		models[pk] = cur
	}
	old := models[m.ProductKey]
	s.mu.Unlock()
	models[m.ProductKey] = m
	n, err := modelsync.Build(s.o.Config, models)
	if err != nil {
		return err
	}
	b, err := thingmodel.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.o.Dir, 0o750); err != nil {
		return fmt.Errorf("store model: %w", err)
	}
	if err := atomicfile.Write(s.path(m.ProductKey), b, 0o640); err != nil {
		return fmt.Errorf("store model: %w", err)
	}
	s.o.Live.Store(n)
	s.mu.Lock()
	s.running[m.ProductKey] = m
	st := s.status[m.ProductKey]
	st.Version, st.LastError, st.Rejected = m.Version, "", 0
	s.mu.Unlock()
	s.m.version.WithLabelValues(m.ProductKey).Set(float64(m.Version))
	s.m.applied.Inc()
	from := "none"
	if old != nil {
		from = strconv.FormatUint(old.Version, 10)
	}
	s.o.Logger.Info("model version applied", "product_key", m.ProductKey, "from", from, "to", m.Version)
	return nil
}
