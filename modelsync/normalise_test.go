package modelsync

import (
	"math"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/telemetry"
)

func f64(f float64) *float64 { return &f }

func TestNormalise(t *testing.T) {
	cfg := &config.Config{
		Profiles: []config.Profile{{Name: "meter", Points: []config.Point{
			{Name: "v_raw", Measure: "voltage", Type: "uint16", Scale: f64(0.1), Unit: "V", StaleAfter: 3 * time.Second},
			{Name: "temp", Type: "int16", Scale: f64(0.1), Offset: -40},
			{Name: "count", Type: "uint32", StaleAfter: 3 * time.Second},
			{Name: "breaker", Type: "bool", Scale: f64(2)},
			{Name: "f", Type: "float32"},
		}}},
		Devices: []config.Device{{Name: "m1", Profile: "meter", ProductKey: "pk", DeviceKey: "dk1"}},
	}
	n := NewNormaliser(cfg)
	now := time.UnixMilli(1_700_000_010_000)
	read := now.Add(-time.Second)
	cases := []struct {
		name string
		in   telemetry.Sample
		want telemetry.Point
	}{
		{"scaled uint becomes float", telemetry.Sample{Point: 0, Value: telemetry.Uint(2301), Time: read},
			telemetry.Point{ID: "voltage", Value: telemetry.Float(230.10000000000002)}},
		{"scale and offset", telemetry.Sample{Point: 1, Value: telemetry.Int(-5), Time: read},
			telemetry.Point{ID: "temp", Value: telemetry.Float(-40.5)}},
		{"unscaled keeps its type", telemetry.Sample{Point: 2, Value: telemetry.Uint(42), Time: read},
			telemetry.Point{ID: "count", Value: telemetry.Uint(42)}},
		{"bool is never scaled", telemetry.Sample{Point: 3, Value: telemetry.Bool(true), Time: read},
			telemetry.Point{ID: "breaker", Value: telemetry.Bool(true)}},
		{"bad stays bad with its reason", telemetry.Sample{Point: 0, Quality: telemetry.Bad, Reason: "timeout", Time: read},
			telemetry.Point{ID: "voltage", Quality: telemetry.Bad, Reason: "timeout"}},
		{"old source time is stale", telemetry.Sample{Point: 2, Value: telemetry.Uint(7), Time: now.Add(-4 * time.Second)},
			telemetry.Point{ID: "count", Value: telemetry.Uint(7), Quality: telemetry.Stale}},
		{"NaN from the device is bad", telemetry.Sample{Point: 4, Value: telemetry.Float(math.NaN()), Time: read},
			telemetry.Point{ID: "f", Quality: telemetry.Bad, Reason: "not a number"}},
		{"Inf after scaling is bad", telemetry.Sample{Point: 1, Value: telemetry.Int(math.MaxInt64), Time: read},
			telemetry.Point{ID: "temp", Value: telemetry.Float(float64(math.MaxInt64)*0.1 - 40)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := n.Normalise(connectivity.Reading{Device: 0, Time: read, Samples: []telemetry.Sample{c.in}}, now)
			if rec.Device != "m1" || rec.ProductKey != "pk" || rec.DeviceKey != "dk1" || rec.Time != read.UnixMilli() {
				t.Fatalf("record header = %+v", rec)
			}
			if len(rec.Points) != 1 {
				t.Fatalf("points = %+v", rec.Points)
			}
			got := rec.Points[0]
			if got.ID != c.want.ID || got.Quality != c.want.Quality || got.Reason != c.want.Reason || !got.Value.Equal(c.want.Value) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
	if m := n.Model(0); m[0].Unit != "V" || m[0].ID != "voltage" || !m[0].Scaled() || m[2].Scaled() {
		t.Fatalf("model = %+v", m)
	}
}
