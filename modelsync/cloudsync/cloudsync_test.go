package cloudsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/modelsync"
	"github.com/edged/edged/telemetry"
	"github.com/edged/edged/thingmodel"
)

// cloud is a Fetcher serving models from memory: the syncer's own logic is
// under test here; the real exchange with ingestd is in e2e/model_test.go.
type cloud struct {
	mu     sync.Mutex
	models map[string]*thingmodel.Model
	err    error
}

func (c *cloud) FetchModel(_ context.Context, pk, _ string) (*thingmodel.Model, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	m, ok := c.models[pk]
	if !ok {
		return nil, ErrNoModel
	}
	return m, nil
}

func (c *cloud) set(m *thingmodel.Model, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m != nil {
		c.models[m.ProductKey] = m
	}
	c.err = err
}

func testConfig() *config.Config {
	scale := 0.1
	return &config.Config{
		Profiles: []config.Profile{{Name: "meter", ProductKey: "meterPK", Points: []config.Point{
			{Name: "v", Measure: "voltage", Type: "uint16", Table: "input_register", Scale: &scale, Unit: "V"},
		}}},
		Devices: []config.Device{{Name: "m1", Profile: "meter", ProductKey: "meterPK", DeviceKey: "m1"}},
	}
}

func model(version uint64, unit string, ids ...string) *thingmodel.Model {
	m := &thingmodel.Model{ProductKey: "meterPK", Version: version}
	for _, id := range ids {
		m.MeasurePoints = append(m.MeasurePoints, thingmodel.MeasurePoint{Identifier: id, DataType: thingmodel.Float, Unit: unit})
	}
	return m
}

// voltage normalises a raw 2301 with the live normaliser.
func voltage(t *testing.T, l *modelsync.Live) float64 {
	t.Helper()
	now := time.Now()
	rec := l.Load().Normalise(connectivity.Reading{Device: 0, Time: now, Samples: []telemetry.Sample{{Point: 0, Value: telemetry.Uint(2301), Time: now}}}, now)
	if len(rec.Points) != 1 || rec.Points[0].Quality != telemetry.Good {
		t.Fatalf("record %+v", rec)
	}
	f, _ := rec.Points[0].Value.Float64()
	return f
}

func TestSyncAppliesRefusesAndKeeps(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	n, err := modelsync.Build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	live := modelsync.NewLive(n)
	c := &cloud{models: map[string]*thingmodel.Model{}}
	s := New(Options{Dir: dir, Config: cfg, Live: live, Fetcher: c})
	ctx := context.Background()

	// no model in the cloud: the profile-only mapping stays
	if got := s.SyncOnce(ctx); got != 0 || voltage(t, live) != 230.10000000000002 {
		t.Fatalf("applied %d, voltage %v", got, voltage(t, live))
	}
	// v1 in kV: applied, stored
	c.set(model(1, "kV", "voltage"), nil)
	if got := s.SyncOnce(ctx); got != 1 {
		t.Fatalf("applied %d, want 1: %+v", got, s.Status())
	}
	if v := voltage(t, live); v < 0.23009 || v > 0.23011 || live.Load().ModelVersion("meterPK") != 1 {
		t.Fatalf("voltage %v with model v%d, want 0.2301 (kV)", v, live.Load().ModelVersion("meterPK"))
	}
	if _, err := os.Stat(filepath.Join(dir, "meterPK.json")); err != nil {
		t.Fatal(err)
	}
	// the same version again: nothing to do
	if got := s.SyncOnce(ctx); got != 0 {
		t.Fatalf("applied %d for an unchanged version", got)
	}
	// v2 lacks the mapped measure point: refused, v1 stays
	c.set(model(2, "V", "current"), nil)
	if got := s.SyncOnce(ctx); got != 0 || live.Load().ModelVersion("meterPK") != 1 {
		t.Fatalf("applied %d, running v%d: want v2 refused", got, live.Load().ModelVersion("meterPK"))
	}
	st := s.Status()[0]
	if st.Version != 1 || st.Rejected != 2 || !strings.Contains(st.LastError, "voltage") {
		t.Fatalf("status %+v", st)
	}
	// a malformed model: refused and counted, v1 stays
	c.set(nil, fmt.Errorf("%w of meterPK from the cloud: measurepoints[0].dataType: \"flaot\"", ErrMalformed))
	s.SyncOnce(ctx)
	if st := s.Status()[0]; st.Version != 1 || !strings.Contains(st.LastError, "flaot") || rejected(s) != 2 {
		t.Fatalf("status %+v, rejected %v", st, rejected(s))
	}
	// the cloud unreachable: the current version stays, the error shows
	c.set(nil, errors.New("cloud link is down"))
	s.SyncOnce(ctx)
	if st := s.Status()[0]; st.Version != 1 || st.LastError != "cloud link is down" {
		t.Fatalf("status %+v", st)
	}
	// the cloud deletes the model: the stored one stays in use
	c.set(nil, nil)
	c.mu.Lock()
	delete(c.models, "meterPK")
	c.mu.Unlock()
	s.SyncOnce(ctx)
	if live.Load().ModelVersion("meterPK") != 1 {
		t.Fatal("a model deleted in the cloud was dropped from under running devices")
	}

	// offline restart: the stored v1
	stored, errs := Stored(dir, cfg)
	if len(errs) != 0 || stored["meterPK"] == nil || stored["meterPK"].Version != 1 {
		t.Fatalf("stored %v, errors %v", stored, errs)
	}
}

func TestStoredReportsACorruptFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "meterPK.json"), []byte(`{"productKey":"meterPK","measurepoints":[{"identifier":"v","dataType":"flaot"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	models, errs := Stored(dir, testConfig())
	if len(models) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "meterPK.json") || !strings.Contains(errs[0].Error(), "flaot") {
		t.Fatalf("models %v, errors %v", models, errs)
	}
}

func rejected(s *Syncer) float64 {
	var m dto.Metric
	if err := s.m.rejected.WithLabelValues("meterPK").Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
