package modelsync

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/telemetry"
)

func setpointConfig() *config.Config {
	return &config.Config{
		Profiles: []config.Profile{{Name: "drive", Points: []config.Point{
			{Name: "speed_raw", Measure: "speed", Table: "holding_register", Type: "uint16", Scale: f64(0.1), Access: "readwrite"},
			{Name: "temp_sp", Table: "holding_register", Type: "int16", Scale: f64(0.5), Offset: -40, Access: "write"},
			{Name: "run", Table: "coil", Type: "bool", Access: "readwrite"},
			{Name: "limit", Table: "holding_register", Type: "float32", Access: "readwrite"},
			{Name: "count", Table: "holding_register", Type: "uint32", Access: "readwrite"},
			{Name: "status", Table: "holding_register", Type: "uint16"},                     // access read (default)
			{Name: "current", Table: "input_register", Type: "uint16", Access: "readwrite"}, // the table cannot be written
			{Name: "code", Table: "holding_register", Type: "bcd16", Access: "readwrite"},
			{Name: "offset", Table: "holding_register", Type: "int32", Access: "readwrite"},
		}}},
		Devices: []config.Device{{Name: "vfd-1", Profile: "drive", ProductKey: "drivePK", DeviceKey: "vfd1"}},
	}
}

func TestSetpoint(t *testing.T) {
	n := NewNormaliser(setpointConfig())
	dev, err := n.Device("drivePK", "vfd1")
	if err != nil || dev != 0 {
		t.Fatalf("Device = %d, %v", dev, err)
	}
	if _, err := n.Device("drivePK", "nope"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("unknown device: %v", err)
	}
	cases := []struct {
		name    string
		measure string
		in      telemetry.Value
		point   int
		want    telemetry.Value
		err     error
		msg     string // in the error
	}{
		{"scaled: raw = value / scale", "speed", telemetry.Float(30.5), 0, telemetry.Uint(305), nil, ""},
		{"scaled from an integer", "speed", telemetry.Int(12), 0, telemetry.Uint(120), nil, ""},
		{"scaled from a string, as the SDKs send", "speed", telemetry.String(" 4.2 "), 0, telemetry.Uint(42), nil, ""},
		{"not a multiple of the resolution", "speed", telemetry.Float(30.55), 0, telemetry.Value{}, ErrBadValue, "not a multiple"},
		{"scaled out of range", "speed", telemetry.Float(6553.6), 0, telemetry.Value{}, ErrBadValue, "out of range for uint16"},
		{"negative for unsigned", "speed", telemetry.Int(-1), 0, telemetry.Value{}, ErrBadValue, "out of range"},
		{"offset undone", "temp_sp", telemetry.Float(-50), 1, telemetry.Int(-20), nil, ""},
		{"bool true", "run", telemetry.Bool(true), 2, telemetry.Bool(true), nil, ""},
		{"bool from 0", "run", telemetry.Int(0), 2, telemetry.Bool(false), nil, ""},
		{"bool from an SDK string", "run", telemetry.String("TRUE"), 2, telemetry.Bool(true), nil, ""},
		{"bool from 2", "run", telemetry.Int(2), 2, telemetry.Value{}, ErrBadValue, "give true, false, 1 or 0"},
		{"bool from empty string", "run", telemetry.String(""), 2, telemetry.Value{}, ErrBadValue, ""},
		{"float32", "limit", telemetry.Float(12.75), 3, telemetry.Float(12.75), nil, ""},
		{"float32 overflow", "limit", telemetry.Float(1e39), 3, telemetry.Value{}, ErrBadValue, "float32"},
		{"NaN", "limit", telemetry.Float(math.NaN()), 3, telemetry.Value{}, ErrBadValue, "finite"},
		{"uint32 max", "count", telemetry.Uint(math.MaxUint32), 4, telemetry.Uint(math.MaxUint32), nil, ""},
		{"uint32 over", "count", telemetry.Uint(math.MaxUint32 + 1), 4, telemetry.Value{}, ErrBadValue, "out of range"},
		{"whole float for an integer", "count", telemetry.Float(7), 4, telemetry.Uint(7), nil, ""},
		{"fraction for an integer", "count", telemetry.Float(7.5), 4, telemetry.Value{}, ErrBadValue, "not a whole number"},
		{"string for a number", "count", telemetry.String("seven"), 4, telemetry.Value{}, ErrBadValue, "not a number"},
		{"access read", "status", telemetry.Int(1), 5, telemetry.Value{}, ErrReadOnly, "access read"},
		{"input register", "current", telemetry.Int(1), 6, telemetry.Value{}, ErrReadOnly, "input_register"},
		{"bcd16 in range", "code", telemetry.Int(9999), 7, telemetry.Uint(9999), nil, ""},
		{"bcd16 over", "code", telemetry.Int(10000), 7, telemetry.Value{}, ErrBadValue, "0 to 9999"},
		{"int32 min", "offset", telemetry.Int(math.MinInt32), 8, telemetry.Int(math.MinInt32), nil, ""},
		{"int32 under", "offset", telemetry.Int(math.MinInt32 - 1), 8, telemetry.Value{}, ErrBadValue, "out of range"},
		{"unknown measure point", "nope", telemetry.Int(1), 0, telemetry.Value{}, ErrUnknownPoint, `"nope"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sp, err := n.Setpoint(dev, c.measure, c.in)
			if c.err != nil {
				if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "vfd-1") {
					t.Fatalf("err = %v, want %v containing %q and the device", err, c.err, c.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sp.Point != c.point || sp.Device != dev || sp.Measure != c.measure || sp.Raw != c.want {
				t.Fatalf("setpoint = %+v, want point %d raw %v", sp, c.point, c.want)
			}
		})
	}
}

// TestSetpointInvertsNormalise: writing a value and reading the raw point
// back gives the value again.
func TestSetpointInvertsNormalise(t *testing.T) {
	n := NewNormaliser(setpointConfig())
	now := time.UnixMilli(1_700_000_000_000)
	for _, c := range []struct {
		measure string
		v       telemetry.Value
	}{
		{"speed", telemetry.Float(30.5)}, {"temp_sp", telemetry.Float(-12.5)}, {"run", telemetry.Bool(true)},
		{"limit", telemetry.Float(0.25)}, {"count", telemetry.Uint(4000000000)}, {"offset", telemetry.Int(-7)},
	} {
		sp, err := n.Setpoint(0, c.measure, c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.measure, err)
		}
		rec := n.Normalise(connectivity.Reading{Device: 0, Time: now, Samples: []telemetry.Sample{{Point: sp.Point, Value: sp.Raw, Time: now}}}, now)
		got := rec.Points[0]
		gf, _ := got.Value.Float64()
		wf, _ := c.v.Float64()
		if got.ID != c.measure || gf != wf && math.Abs(gf-wf) > 1e-9*math.Abs(wf) {
			t.Fatalf("%s: wrote %v, read back %+v", c.measure, c.v, got)
		}
	}
}
