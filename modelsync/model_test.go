package modelsync

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/telemetry"
	"github.com/edged/edged/thingmodel"
)

func pub(b bool) *bool { return &b }

// meterConfig: a three-phase meter with raw points, computed measures, a
// product with a model (meterPK) and one without (plainPK).
func meterConfig() *config.Config {
	pts := []config.Point{
		{Name: "p_a", Type: "int32", Scale: f64(0.001), Unit: "kW", Publish: pub(false)},           // 0
		{Name: "p_b", Type: "int32", Scale: f64(0.001), Unit: "kW", Publish: pub(false)},           // 1
		{Name: "p_c", Type: "int32", Scale: f64(0.001), Unit: "kW", Publish: pub(false)},           // 2
		{Name: "status", Type: "uint16", Publish: pub(false)},                                      // 3
		{Name: "mode_code", Type: "uint16", Publish: pub(false)},                                   // 4
		{Name: "s", Type: "float32", Unit: "kVA", Publish: pub(false)},                             // 5
		{Name: "voltage", Type: "uint16", Scale: f64(0.1), Unit: "V", StaleAfter: 3 * time.Second}, // 6
		{Name: "current", Type: "float32", Unit: "A"},                                              // 7
		{Name: "temp", Type: "int16", Scale: f64(0.1), Unit: "°C"},                                 // 8
		{Name: "count", Type: "float32", Access: "readwrite", Table: "holding_register"},           // 9
		{Name: "breaker", Type: "uint16"},                                                          // 10
		{Name: "setp", Type: "uint16", Unit: "W", Access: "readwrite", Table: "holding_register"},  // 11
		{Name: "serial", Type: "string"},                                                           // 12
	}
	return &config.Config{
		File: "c.yaml",
		Profiles: []config.Profile{{Name: "meter", Points: pts, Measures: []config.Measure{
			{ID: "p_total", Expr: "p_a + p_b + p_c", Unit: "kW", Line: 40},
			{ID: "breaker_open", Expr: "bit(status, 3)", Line: 41},
			{ID: "mode", Expr: "mode_code", Enum: map[int64]string{0: "off", 1: "on", 2: "fault"}, Line: 42},
			{ID: "pf", Expr: "p_total_raw / s", Line: 43},
			{ID: "alarm", Expr: "xor(bit(status, 0), bit(status, 1))", Line: 44},
		}}},
		Devices: []config.Device{
			{Name: "m1", Profile: "meter", ProductKey: "meterPK", DeviceKey: "m1", Line: 50},
			{Name: "plain", Profile: "meter", ProductKey: "plainPK", DeviceKey: "p1", Line: 55},
		},
	}
}

func fixConfig(c *config.Config) *config.Config {
	// pf divides the total by s: p_total_raw is spelled out here
	c.Profiles[0].Measures[3].Expr = "(p_a + p_b + p_c) / s"
	return c
}

func meterModel() *thingmodel.Model {
	return &thingmodel.Model{ProductKey: "meterPK", Version: 3, MeasurePoints: []thingmodel.MeasurePoint{
		{Identifier: "p_total", DataType: thingmodel.Double, Unit: "W"},
		{Identifier: "breaker_open", DataType: thingmodel.Bool},
		{Identifier: "mode", DataType: thingmodel.Enum, Enum: map[string]string{"0": "off", "1": "on", "3": "fault"}},
		{Identifier: "pf", DataType: thingmodel.Float, Min: f64(-1), Max: f64(1)},
		{Identifier: "alarm", DataType: thingmodel.Int},
		{Identifier: "voltage", DataType: thingmodel.Float, Unit: "kV", Min: f64(0), Max: f64(0.3)},
		{Identifier: "current", DataType: thingmodel.Float, Unit: "mA"},
		{Identifier: "temp", DataType: thingmodel.Float, Unit: "°F"},
		{Identifier: "count", DataType: thingmodel.Int},
		{Identifier: "breaker", DataType: thingmodel.Bool},
		{Identifier: "setp", DataType: thingmodel.Float, Unit: "kW", Min: f64(0), Max: f64(50)},
		{Identifier: "serial", DataType: thingmodel.String},
		{Identifier: "energy", DataType: thingmodel.Double, Unit: "kWh"}, // mapped by no point
	}}
}

// TestGolden: raw samples in, measure points out, with and without a model.
func TestGolden(t *testing.T) {
	n, err := Build(fixConfig(meterConfig()), map[string]*thingmodel.Model{"meterPK": meterModel()})
	if err != nil {
		t.Fatal(err)
	}
	if n.ModelVersion("meterPK") != 3 || n.ModelVersion("plainPK") != 0 {
		t.Fatalf("versions %d %d", n.ModelVersion("meterPK"), n.ModelVersion("plainPK"))
	}
	if w := n.Warnings(); len(w) != 1 || w[0] != `model meterPK v3: no point of profile "meter" (device "m1") maps measure points "energy"` {
		t.Fatalf("warnings = %q", w)
	}
	now := time.UnixMilli(1_700_000_010_000)
	read := now.Add(-time.Second)
	good := func(pt int, v telemetry.Value) telemetry.Sample {
		return telemetry.Sample{Point: pt, Value: v, Time: read}
	}
	bad := func(pt int, why string) telemetry.Sample {
		return telemetry.Sample{Point: pt, Quality: telemetry.Bad, Reason: why, Time: read}
	}
	base := func() []telemetry.Sample {
		return []telemetry.Sample{
			good(0, telemetry.Int(1000)), good(1, telemetry.Int(2000)), good(2, telemetry.Int(-500)),
			good(3, telemetry.Uint(0b1001)), good(4, telemetry.Uint(2)), good(5, telemetry.Float(5)),
			good(6, telemetry.Uint(2301)), good(7, telemetry.Float(1.5)), good(8, telemetry.Int(1000)),
			good(9, telemetry.Float(42)), good(10, telemetry.Uint(1)), good(11, telemetry.Uint(1500)),
			good(12, telemetry.String("SN1")),
		}
	}
	with := func(changes ...telemetry.Sample) []telemetry.Sample {
		s := base()
		for _, c := range changes {
			s[c.Point] = c
		}
		return s
	}
	G := telemetry.Good
	pt := func(id string, v telemetry.Value) string { return fmt.Sprintf("%s=%v %s", id, v, G) }
	B := func(id, why string) string { return fmt.Sprintf("%s bad %q", id, why) }
	cases := []struct {
		name    string
		device  int
		samples []telemetry.Sample
		want    map[string]string // by measure id; only these are checked
		absent  []string
	}{
		{"model: units, types, expressions, enum", 0, base(), map[string]string{
			"voltage":      pt("voltage", telemetry.Float(0.23010000000000003)), // 2301 × 0.1 V → kV
			"current":      pt("current", telemetry.Float(1500)),                // A → mA
			"temp":         pt("temp", telemetry.Float(211.99999999999997)),     // 100 °C → °F (float rounding)
			"count":        pt("count", telemetry.Int(42)),                      // whole float → int
			"breaker":      pt("breaker", telemetry.Bool(true)),                 // 1 → bool
			"setp":         pt("setp", telemetry.Float(1.5)),                    // 1500 W → 1.5 kW
			"serial":       pt("serial", telemetry.String("SN1")),
			"p_total":      pt("p_total", telemetry.Float(2500)), // 2.5 kW → W
			"breaker_open": pt("breaker_open", telemetry.Bool(true)),
			"mode":         pt("mode", telemetry.Int(3)), // device 2 = "fault" = model 3
			"pf":           pt("pf", telemetry.Float(0.5)),
			"alarm":        pt("alarm", telemetry.Int(1)), // xor(true, false) → 1
		}, []string{"p_a", "p_b", "p_c", "status", "mode_code", "s"}},
		{"division by zero", 0, with(good(5, telemetry.Float(0))), map[string]string{"pf": B("pf", "division by zero")}, nil},
		{"out of range is bad, not clamped", 0, with(good(5, telemetry.Float(1))), map[string]string{"pf": B("pf", "out of range [-1, 1]: 2.5")}, nil},
		{"voltage above the model's max", 0, with(good(6, telemetry.Uint(3100))), map[string]string{"voltage": B("voltage", "out of range [0, 0.3]: 0.31")}, nil},
		{"bad input makes a bad measure", 0, with(bad(1, "timeout")), map[string]string{
			"p_total": B("p_total", "input p_b bad: timeout"), "pf": B("pf", "input p_b bad: timeout"),
			"breaker_open": pt("breaker_open", telemetry.Bool(true))}, nil},
		{"stale input makes a stale measure", 0, with(telemetry.Sample{Point: 6, Value: telemetry.Uint(2300), Time: now.Add(-time.Hour)}),
			map[string]string{"voltage": "voltage=0.23 stale"}, nil},
		{"enum code without a label", 0, with(good(4, telemetry.Uint(7))), map[string]string{"mode": B("mode", "no enum label for 7")}, nil},
		{"bool model fed 2", 0, with(good(10, telemetry.Uint(2))), map[string]string{"breaker": B("breaker", "2 is not 0 or 1 (the model's bool)")}, nil},
		{"int model fed a fraction", 0, with(good(9, telemetry.Float(4.5))), map[string]string{"count": B("count", "4.5 is not a whole number (the model's int)")}, nil},
		{"NaN from the device", 0, with(good(7, telemetry.Float(nan()))), map[string]string{"current": B("current", "not a number")}, nil},
		{"bad raw point stays bad", 0, with(bad(7, "exception 2 (illegal data address)")), map[string]string{"current": B("current", "exception 2 (illegal data address)")}, nil},
		{"input not in the reading", 0, base()[1:], map[string]string{"p_total": B("p_total", "input p_a not read")}, nil},
		{"no model: the profile's units and types", 1, base(), map[string]string{
			"voltage": pt("voltage", telemetry.Float(230.10000000000002)),
			"current": pt("current", telemetry.Float(1.5)),
			"count":   pt("count", telemetry.Float(42)),
			"breaker": pt("breaker", telemetry.Uint(1)),
			"p_total": pt("p_total", telemetry.Float(2.5)),
			"mode":    pt("mode", telemetry.String("fault")),
			"alarm":   pt("alarm", telemetry.Bool(true)),
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := n.Normalise(connectivity.Reading{Device: c.device, Time: read, Samples: c.samples}, now)
			got := map[string]string{}
			for _, p := range rec.Points {
				if p.Quality == telemetry.Bad {
					got[p.ID] = B(p.ID, p.Reason)
				} else {
					got[p.ID] = fmt.Sprintf("%s=%v %s", p.ID, p.Value, p.Quality)
				}
			}
			for id, w := range c.want {
				if got[id] != w {
					t.Errorf("%s:\n got  %s\n want %s", id, got[id], w)
				}
			}
			for _, id := range c.absent {
				if _, ok := got[id]; ok {
					t.Errorf("%s is published", id)
				}
			}
		})
	}
}

func nan() float64 { var z float64; return z / z }

// TestBuildErrors: every mistake is refused with exactly this message,
// naming the file and line, the profile point or measure, the devices and
// the model version.
func TestBuildErrors(t *testing.T) {
	mp := func(id string, dt thingmodel.DataType, unit string) thingmodel.MeasurePoint {
		return thingmodel.MeasurePoint{Identifier: id, DataType: dt, Unit: unit}
	}
	cases := []struct {
		name   string
		points []config.Point
		meas   []config.Measure
		model  []thingmodel.MeasurePoint
		want   []string
	}{
		{"measure point the model lacks", []config.Point{{Name: "v", Type: "float32", Line: 10}}, nil, nil,
			[]string{`c.yaml:10: profile "p" point "v" (devices "d1", "d2"; model pk v7): measure point "v" is not in the model`}},
		{"units that do not convert", []config.Point{{Name: "v", Type: "float32", Unit: "kV", Line: 10}}, nil,
			[]thingmodel.MeasurePoint{mp("v", thingmodel.Float, "A")},
			[]string{`c.yaml:10: profile "p" point "v" (devices "d1", "d2"; model pk v7): unit "kV" of the profile does not convert to unit "A" of the model's measure point "v"`}},
		{"unknown unit", []config.Point{{Name: "v", Type: "float32", Unit: "furlong", Line: 10}}, nil,
			[]thingmodel.MeasurePoint{mp("v", thingmodel.Float, "m")},
			[]string{`c.yaml:10: profile "p" point "v" (devices "d1", "d2"; model pk v7): unit "furlong" of the profile does not convert to unit "m" of the model's measure point "v"`}},
		{"string to float", []config.Point{{Name: "sn", Type: "string", Length: 4, Line: 11}}, nil,
			[]thingmodel.MeasurePoint{mp("sn", thingmodel.Float, "")},
			[]string{`c.yaml:11: profile "p" point "sn" (devices "d1", "d2"; model pk v7): a string value does not convert to the model's data type float`}},
		{"number to string", []config.Point{{Name: "n", Type: "uint16", Line: 11}}, nil,
			[]thingmodel.MeasurePoint{mp("n", thingmodel.String, "")},
			[]string{`c.yaml:11: profile "p" point "n" (devices "d1", "d2"; model pk v7): a uint value does not convert to the model's data type string`}},
		{"expression that does not compile", []config.Point{{Name: "a", Type: "uint16", Line: 10}}, []config.Measure{{ID: "x", Expr: "a +", Line: 20}},
			[]thingmodel.MeasurePoint{mp("a", thingmodel.Int, ""), mp("x", thingmodel.Int, "")},
			[]string{`c.yaml:20: profile "p" measure "x" (devices "d1", "d2"; model pk v7): expr "a +": unexpected token EOF (column 3)`}},
		{"expression naming an unknown point", []config.Point{{Name: "a", Type: "uint16", Line: 10}}, []config.Measure{{ID: "x", Expr: "a + b", Line: 20}},
			[]thingmodel.MeasurePoint{mp("a", thingmodel.Int, ""), mp("x", thingmodel.Int, "")},
			[]string{`c.yaml:20: profile "p" measure "x" (devices "d1", "d2"; model pk v7): expr "a + b": unknown name b: not a point of the profile nor a function (column 5)`}},
		{"enum labels the model lacks", []config.Point{{Name: "a", Type: "uint16", Publish: pub(false), Line: 10}},
			[]config.Measure{{ID: "m", Expr: "a", Enum: map[int64]string{0: "off", 1: "on", 2: "trip"}, Line: 21}},
			[]thingmodel.MeasurePoint{{Identifier: "m", DataType: thingmodel.Enum, Enum: map[string]string{"0": "off", "1": "on"}}},
			[]string{`c.yaml:21: profile "p" measure "m" (devices "d1", "d2"; model pk v7): enum labels "trip" are not labels of the model's measure point "m"`}},
		{"enum labels to an int", []config.Point{{Name: "a", Type: "uint16", Publish: pub(false), Line: 10}},
			[]config.Measure{{ID: "m", Expr: "a", Enum: map[int64]string{0: "off"}, Line: 21}},
			[]thingmodel.MeasurePoint{mp("m", thingmodel.Int, "")},
			[]string{`c.yaml:21: profile "p" measure "m" (devices "d1", "d2"; model pk v7): an enum label value does not convert to the model's data type int`}},
		{"malformed model", []config.Point{{Name: "a", Type: "uint16", Line: 10}}, nil,
			[]thingmodel.MeasurePoint{mp("a", "decimal", ""), {Identifier: "b", DataType: thingmodel.Float, Min: f64(2), Max: f64(1)}},
			[]string{
				`c.yaml: model pk v7: measure point "a": data type "decimal" is not one of int, float, double, bool, string, enum, timestamp`,
				`c.yaml: model pk v7: measure point "b": min 2 is above max 1`,
			}},
		{"several at once, in line order", []config.Point{{Name: "a", Type: "uint16", Line: 10}, {Name: "b", Type: "bool", Unit: "V", Line: 12}},
			[]config.Measure{{ID: "c", Expr: "a * 2", Line: 20}},
			[]thingmodel.MeasurePoint{mp("b", thingmodel.Bool, "kV")},
			[]string{
				`c.yaml:10: profile "p" point "a" (devices "d1", "d2"; model pk v7): measure point "a" is not in the model`,
				`c.yaml:12: profile "p" point "b" (devices "d1", "d2"; model pk v7): a bool value cannot be converted from V to kV`,
				`c.yaml:20: profile "p" measure "c" (devices "d1", "d2"; model pk v7): measure point "c" is not in the model`,
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := &config.Config{File: "c.yaml",
				Profiles: []config.Profile{{Name: "p", Points: c.points, Measures: c.meas}},
				Devices:  []config.Device{{Name: "d1", Profile: "p", ProductKey: "pk"}, {Name: "d2", Profile: "p", ProductKey: "pk"}}}
			n, err := Build(cfg, map[string]*thingmodel.Model{"pk": {ProductKey: "pk", Version: 7, MeasurePoints: c.model}})
			if err == nil || n != nil {
				t.Fatal("accepted")
			}
			var es config.Errors
			if !errors.As(err, &es) {
				t.Fatalf("%T is not config.Errors", err)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Fatalf("got\n%s\nwant\n%s", err, strings.Join(c.want, "\n"))
			}
		})
	}
	// without a model the same profile builds
	if _, err := Build(&config.Config{Profiles: []config.Profile{{Name: "p", Points: []config.Point{{Name: "v", Type: "float32"}}}},
		Devices: []config.Device{{Name: "d", Profile: "p", ProductKey: "pk"}}}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestSetpointWithModel: unit conversion undone, the model's range
// checked, computed measures and unpublished points refused.
func TestSetpointWithModel(t *testing.T) {
	n, err := Build(fixConfig(meterConfig()), map[string]*thingmodel.Model{"meterPK": meterModel()})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := n.Setpoint(0, "setp", telemetry.Float(1.5)) // kW in the model, W on the device
	if err != nil || sp.Raw != telemetry.Uint(1500) || sp.Point != 11 || sp.Name != "setp" {
		t.Fatalf("setp = %+v, %v", sp, err)
	}
	if _, err := n.Setpoint(0, "setp", telemetry.Float(51)); !errors.Is(err, ErrBadValue) || !strings.Contains(err.Error(), "out of the model's range [0, 50]") {
		t.Fatalf("out of range: %v", err)
	}
	if _, err := n.Setpoint(0, "p_total", telemetry.Float(1)); !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), "computed by an expression") {
		t.Fatalf("computed: %v", err)
	}
	if _, err := n.Setpoint(0, "p_a", telemetry.Float(1)); !errors.Is(err, ErrUnknownPoint) {
		t.Fatalf("unpublished: %v", err)
	}
	if sp, err := n.Setpoint(0, "count", telemetry.Int(7)); err != nil || sp.Raw != telemetry.Float(7) || sp.Point != 9 {
		t.Fatalf("count = %+v, %v", sp, err)
	}
	// read back through Normalise: the same value
	rec := n.Normalise(connectivity.Reading{Device: 0, Samples: []telemetry.Sample{{Point: 11, Value: telemetry.Uint(2000)}}}, time.Now())
	if len(rec.Points) != 1+5 || rec.Points[0].Value != telemetry.Float(2) {
		t.Fatalf("read back %+v", rec.Points)
	}
}

func TestLive(t *testing.T) {
	a, b := NewNormaliser(meterConfig()), NewNormaliser(meterConfig())
	l := NewLive(a)
	if l.Load() != a {
		t.Fatal("load")
	}
	l.Store(b)
	if l.Load() != b {
		t.Fatal("store")
	}
}
