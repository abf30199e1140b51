package modelsync

import (
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/telemetry"
)

// TestReporter: which values of a sequence each policy sends.
func TestReporter(t *testing.T) {
	G, B, S := telemetry.Good, telemetry.Bad, telemetry.Stale
	type step struct {
		after time.Duration // since the previous step
		v     telemetry.Value
		q     telemetry.Quality
		why   string
	}
	f := func(x float64) step { return step{time.Second, telemetry.Float(x), G, ""} }
	cases := []struct {
		name   string
		report *config.Report
		steps  []step
		want   string // 1 sent, 0 withheld
	}{
		{"every poll", nil, []step{f(1), f(1), f(1)}, "111"},
		{"on change", &config.Report{Mode: "on_change"}, []step{f(1), f(1), f(2), f(2), f(1)}, "10101"},
		{"on change, bool", &config.Report{Mode: "on_change"},
			[]step{{time.Second, telemetry.Bool(true), G, ""}, {time.Second, telemetry.Bool(true), G, ""}, {time.Second, telemetry.Bool(false), G, ""}}, "101"},
		{"deadband: more than 0.5 from the last sent", &config.Report{Mode: "deadband", Deadband: 0.5},
			[]step{f(10), f(10.3), f(10.5), f(10.6), f(10.2), f(10.0), f(9.9)}, "1001010"},
		{"deadband_percent: 1% of the last sent", &config.Report{Mode: "deadband_percent", Deadband: 1},
			[]step{f(200), f(201), f(202.5), f(200.5), f(0), f(0), f(0.001)}, "1010101"},
		{"quality change always sent", &config.Report{Mode: "deadband", Deadband: 100},
			[]step{f(1), {time.Second, telemetry.Float(1), S, ""}, {time.Second, telemetry.Value{}, B, "timeout"},
				{time.Second, telemetry.Value{}, B, "timeout"}, {time.Second, telemetry.Value{}, B, "exception 2"}, f(1), f(2)}, "1110110"},
		{"max silence", &config.Report{Mode: "on_change", MaxSilence: 3 * time.Second},
			[]step{f(1), f(1), f(1), f(1), f(1), f(1), f(1)}, "1001001"},
		{"deadband with max silence", &config.Report{Mode: "deadband", Deadband: 1, MaxSilence: 2500 * time.Millisecond},
			[]step{f(1), f(1.1), f(1.2), f(1.3), f(5), {10 * time.Second, telemetry.Float(5), G, ""}}, "100111"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := &config.Config{
				Profiles: []config.Profile{{Name: "p", Points: []config.Point{{Name: "x", Type: "float32", Report: c.report}, {Name: "y", Type: "float32"}}}},
				Devices:  []config.Device{{Name: "d", Profile: "p"}},
			}
			n := NewNormaliser(cfg)
			r := NewReporter()
			now := time.Unix(1_700_000_000, 0)
			var got strings.Builder
			for _, s := range c.steps {
				now = now.Add(s.after)
				rec := n.Normalise(connectivity.Reading{Time: now, Samples: []telemetry.Sample{
					{Point: 0, Value: s.v, Quality: s.q, Reason: s.why}, {Point: 1, Value: telemetry.Float(0)}}}, now)
				full := rec.Points
				r.Filter(n, &rec, now)
				sent := "0"
				for _, p := range rec.Points {
					if p.ID == "x" {
						sent = "1"
					}
				}
				if rec.Points[len(rec.Points)-1].ID != "y" {
					t.Fatalf("every_poll point y withheld: %+v", rec.Points)
				}
				if full[0].ID != "x" || len(full) != 2 {
					t.Fatalf("Filter wrote to the record's points: %+v", full)
				}
				got.WriteString(sent)
			}
			if got.String() != c.want {
				t.Fatalf("sent %s, want %s", got.String(), c.want)
			}
		})
	}
}

// TestReporterSurvivesSwap: the state is keyed by device and measure id,
// so a new normaliser (a new model version) keeps the last sent values.
func TestReporterSurvivesSwap(t *testing.T) {
	cfg := &config.Config{
		Profiles: []config.Profile{{Name: "p", Report: &config.Report{Mode: "on_change"}, Points: []config.Point{{Name: "x", Type: "uint16"}}}},
		Devices:  []config.Device{{Name: "d", Profile: "p"}},
	}
	r := NewReporter()
	now := time.Now()
	sent := 0
	for i := range 4 {
		n := NewNormaliser(cfg) // a new one each time
		rec := n.Normalise(connectivity.Reading{Samples: []telemetry.Sample{{Point: 0, Value: telemetry.Uint(7)}}}, now)
		r.Filter(n, &rec, now.Add(time.Duration(i)*time.Second))
		sent += len(rec.Points)
	}
	if sent != 1 {
		t.Fatalf("sent %d values of an unchanged point across swaps, want 1", sent)
	}
}
