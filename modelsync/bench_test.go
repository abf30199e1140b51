package modelsync

import (
	"fmt"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/telemetry"
	"github.com/edged/edged/thingmodel"
)

// benchDevice: 20 raw points per reading (a typical meter); direct: every
// point published with scale and a model (unit conversion, range check);
// expr: the same plus 10 computed measures.
func benchDevice(computed bool) (*Normaliser, connectivity.Reading, int) {
	var pts []config.Point
	var samples []telemetry.Sample
	model := &thingmodel.Model{ProductKey: "pk", Version: 1}
	now := time.Now()
	for i := range 20 {
		name := fmt.Sprintf("p%d", i)
		pts = append(pts, config.Point{Name: name, Type: "int32", Scale: f64(0.1), Unit: "W"})
		model.MeasurePoints = append(model.MeasurePoints, thingmodel.MeasurePoint{Identifier: name, DataType: thingmodel.Double, Unit: "kW", Min: f64(-1e6), Max: f64(1e6)})
		samples = append(samples, telemetry.Sample{Point: i, Value: telemetry.Int(int64(1000 + i)), Time: now})
	}
	var ms []config.Measure
	if computed {
		exprs := []string{"p0 + p1 + p2", "p3 - p4", "p5 * p6", "p7 / p8", "p9 > p10 and p11 > 0", "p12 + p13 + p14 + p15", "p16 / (p17 + p18)", "p19 * 2 + 1", "p0 - p19", "p1 + p2 - p3"}
		for i, e := range exprs {
			id := fmt.Sprintf("c%d", i)
			ms = append(ms, config.Measure{ID: id, Expr: e})
			dt := thingmodel.Double
			if i == 4 {
				dt = thingmodel.Bool
			}
			model.MeasurePoints = append(model.MeasurePoints, thingmodel.MeasurePoint{Identifier: id, DataType: dt})
		}
	}
	cfg := &config.Config{Profiles: []config.Profile{{Name: "p", Points: pts, Measures: ms}}, Devices: []config.Device{{Name: "d", Profile: "p", ProductKey: "pk"}}}
	n, err := Build(cfg, map[string]*thingmodel.Model{"pk": model})
	if err != nil {
		panic(err)
	}
	return n, connectivity.Reading{Samples: samples, Time: now}, 20 + len(ms)
}

func benchNormalise(b *testing.B, computed bool) {
	n, r, points := benchDevice(computed)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		n.Normalise(r, now)
	}
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/s, "records/s")
	b.ReportMetric(float64(b.N*points)/s, "points/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*points), "ns/point")
}

// BenchmarkNormaliseDirect: 20 direct points with scale, unit conversion
// (W → kW) and a range check.
func BenchmarkNormaliseDirect(b *testing.B) { benchNormalise(b, false) }

// BenchmarkNormaliseExpr: the same 20 and 10 computed measures.
func BenchmarkNormaliseExpr(b *testing.B) { benchNormalise(b, true) }

// FuzzBuild: an expression, an enum and the model's unit and data type
// never make Build or Normalise panic; what Build accepts normalises.
func FuzzBuild(f *testing.F) {
	f.Add("a + b", "kW", "W", "double", int64(1), "on")
	f.Add("bit(a, 3)", "", "", "bool", int64(0), "")
	f.Add("a / (b - b)", "°C", "K", "float", int64(2), "fault")
	f.Add("a % 0", "", "", "int", int64(0), "")
	f.Add("xor(a > 1, b < 2) ? 1 : 'x'", "", "", "enum", int64(1), "on")
	f.Fuzz(func(t *testing.T, expr, unit, modelUnit, dataType string, code int64, label string) {
		pts := []config.Point{{Name: "a", Type: "int16", Unit: unit}, {Name: "b", Type: "float32", Scale: f64(0.5), Publish: pub(false)}}
		m := config.Measure{ID: "m", Expr: expr}
		if label != "" {
			m.Enum = map[int64]string{code: label}
		}
		cfg := &config.Config{Profiles: []config.Profile{{Name: "p", Points: pts, Measures: []config.Measure{m}}},
			Devices: []config.Device{{Name: "d", Profile: "p", ProductKey: "pk"}}}
		model := &thingmodel.Model{ProductKey: "pk", Version: 1, MeasurePoints: []thingmodel.MeasurePoint{
			{Identifier: "a", DataType: thingmodel.DataType(dataType), Unit: modelUnit},
			{Identifier: "m", DataType: thingmodel.DataType(dataType), Enum: map[string]string{fmt.Sprint(code): label}},
		}}
		for _, models := range []map[string]*thingmodel.Model{nil, {"pk": model}} {
			n, err := Build(cfg, models)
			if err != nil {
				continue
			}
			for _, v := range []int64{0, 1, -1, code, 1 << 15} {
				n.Normalise(connectivity.Reading{Samples: []telemetry.Sample{{Point: 0, Value: telemetry.Int(v)}, {Point: 1, Value: telemetry.Float(float64(v))}}}, time.Now())
			}
		}
	})
}
