package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/modelsync"
	"github.com/edged/edged/telemetry"
)

// recorder stands in for the connectivity engine, whose own tests (and the
// e2e test against pymodbus) cover the writes: here only the mapping of a
// request to writes and of errors to reply codes is under test.
type recorder struct {
	writes []string
	fail   map[int]error // by point
}

func (r *recorder) Write(_ context.Context, dev, pt int, v telemetry.Value) error {
	if err := r.fail[pt]; err != nil {
		return err
	}
	r.writes = append(r.writes, fmt.Sprintf("%d/%d=%v", dev, pt, v))
	return nil
}

func executor(w *recorder) *Executor {
	f := func(v float64) *float64 { return &v }
	cfg := &config.Config{
		Profiles: []config.Profile{{Name: "p", Points: []config.Point{
			{Name: "a", Table: "holding_register", Type: "uint16", Scale: f(0.1), Access: "readwrite"},
			{Name: "b", Table: "coil", Type: "bool", Access: "readwrite"},
			{Name: "c", Table: "holding_register", Type: "uint16", Access: "readwrite"},
			{Name: "ro", Table: "holding_register", Type: "uint16"},
		}}},
		Devices: []config.Device{
			{Name: "d0", Profile: "p", ProductKey: "pk", DeviceKey: "dk0"},
			{Name: "d1", Profile: "p", ProductKey: "pk", DeviceKey: "dk1"},
		},
	}
	return &Executor{Norm: modelsync.NewLive(modelsync.NewNormaliser(cfg)), Writer: w}
}

func sp(id string, v telemetry.Value) enos.SetPoint { return enos.SetPoint{ID: id, Value: v} }

func TestSetMeasurepoints(t *testing.T) {
	linkDown := fmt.Errorf("link l: %w", drivers.ErrNotConnected)
	cases := []struct {
		name   string
		dk     string
		points []enos.SetPoint
		fail   map[int]error
		code   int
		writes []string
		msg    string
	}{
		{"in order", "dk1", []enos.SetPoint{sp("c", telemetry.Int(7)), sp("a", telemetry.Float(1.5)), sp("b", telemetry.String("1"))}, nil,
			200, []string{"1/2=7", "1/0=15", "1/1=true"}, ""},
		{"unknown device", "dk9", []enos.SetPoint{sp("a", telemetry.Int(1))}, nil, 404, nil, "unknown device"},
		{"unknown point: nothing written", "dk0", []enos.SetPoint{sp("a", telemetry.Int(1)), sp("zz", telemetry.Int(1))}, nil, 404, nil, "nothing written"},
		{"read-only: nothing written", "dk0", []enos.SetPoint{sp("a", telemetry.Int(1)), sp("ro", telemetry.Int(1))}, nil, 403, nil, "read-only"},
		{"bad value: nothing written", "dk0", []enos.SetPoint{sp("a", telemetry.Int(1)), sp("c", telemetry.Int(70000))}, nil, 400, nil, "out of range"},
		{"link down", "dk0", []enos.SetPoint{sp("a", telemetry.Int(1))}, map[int]error{0: linkDown}, 503, nil, "nothing written"},
		{"timeout after one written", "dk0", []enos.SetPoint{sp("c", telemetry.Int(1)), sp("a", telemetry.Int(1)), sp("b", telemetry.Bool(true))},
			map[int]error{0: fmt.Errorf("x: %w", drivers.ErrTimeout)}, 504, []string{"0/2=1"}, "written before it: c; not attempted: b"},
		{"exception", "dk0", []enos.SetPoint{sp("a", telemetry.Int(1))},
			map[int]error{0: &drivers.ReasonError{Reason: "exception 2", Err: drivers.ErrDevice}}, 502, nil, ""},
		{"deadline", "dk0", []enos.SetPoint{sp("a", telemetry.Int(1))}, map[int]error{0: context.DeadlineExceeded}, 504, nil, ""},
		{"other", "dk0", []enos.SetPoint{sp("a", telemetry.Int(1))}, map[int]error{0: errors.New("boom")}, 500, nil, "boom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := &recorder{fail: c.fail}
			err := executor(w).SetMeasurepoints(context.Background(), "pk", c.dk, c.points)
			if code := enos.CodeOf(err); code != c.code || (err != nil && !strings.Contains(err.Error(), c.msg)) {
				t.Fatalf("code %d, err %v; want %d containing %q", code, err, c.code, c.msg)
			}
			if fmt.Sprint(w.writes) != fmt.Sprint(c.writes) {
				t.Fatalf("writes = %v, want %v", w.writes, c.writes)
			}
		})
	}
}
