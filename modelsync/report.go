package modelsync

import (
	"math"
	"sync"
	"time"

	"github.com/edged/edged/telemetry"
)

// Reporter applies the reporting policy of each measure point (config
// Report: every_poll, on_change, deadband, deadband_percent, max_silence)
// to records after Normalise. It remembers the last value sent of each
// measure point, keyed by device name and measure point id, so its state
// survives a Live swap to a new model version (a measure point whose
// policy changes keeps its last sent value). It is safe for concurrent
// use.
type Reporter struct {
	mu      sync.Mutex
	devices map[string]map[string]*lastSent
}

type lastSent struct {
	v      telemetry.Value
	q      telemetry.Quality
	reason string
	at     time.Time
}

// NewReporter returns a Reporter that has sent nothing yet.
func NewReporter() *Reporter { return &Reporter{devices: map[string]map[string]*lastSent{}} }

// Filter removes from rec the points that need not be sent now:
//   - every_poll points are always sent (and cost nothing here);
//   - the first value of a point, a change of quality (good, bad, stale)
//     and a change of a bad value's reason are always sent;
//   - on_change: sent when the value differs from the last sent one;
//   - deadband: when it differs by more than the deadband from the last
//     sent value; deadband_percent: by more than that percentage of the
//     last sent value's magnitude (any change of a value last sent as 0);
//     a bool or string under a deadband policy is sent on change;
//   - max_silence > 0: sent anyway when the last send is that old.
//
// Filter never writes to rec.Points' array: when it removes points,
// rec.Points becomes a new slice, so the caller may keep the complete
// record (e.g. for the snapshot cache).
func (r *Reporter) Filter(n *Normaliser, rec *telemetry.Record, now time.Time) {
	di, ok := n.byName[rec.Device]
	if !ok {
		return
	}
	dm := &n.devices[di]
	if !dm.hasPolicy {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	state := r.devices[rec.Device]
	if state == nil {
		state = map[string]*lastSent{}
		r.devices[rec.Device] = state
	}
	var kept []telemetry.Point // nil until a point is removed
	for i := range rec.Points {
		p := &rec.Points[i]
		send := true
		if k, ok := dm.byID[p.ID]; ok {
			if pol := &dm.points[k].Report; pol.Mode != "" && pol.Mode != "every_poll" {
				last := state[p.ID]
				if last == nil {
					last = &lastSent{}
					state[p.ID] = last
					send = true
				} else {
					send = last.due(pol.Mode, pol.Deadband, pol.MaxSilence, p, now)
				}
				if send {
					last.v, last.q, last.reason, last.at = p.Value, p.Quality, p.Reason, now
				}
			}
		}
		switch {
		case !send && kept == nil:
			kept = make([]telemetry.Point, i, len(rec.Points))
			copy(kept, rec.Points[:i])
		case send && kept != nil:
			kept = append(kept, *p)
		}
	}
	if kept != nil {
		rec.Points = kept
	}
}

// due says whether p must be sent given the last sent value.
func (l *lastSent) due(mode string, deadband float64, maxSilence time.Duration, p *telemetry.Point, now time.Time) bool {
	if p.Quality != l.q || (p.Quality == telemetry.Bad && p.Reason != l.reason) {
		return true
	}
	if maxSilence > 0 && now.Sub(l.at) >= maxSilence {
		return true
	}
	if p.Quality == telemetry.Bad {
		return false
	}
	if mode == "on_change" || p.Value.Kind == telemetry.KindBool || p.Value.Kind == telemetry.KindString || l.v.Kind != p.Value.Kind && (l.v.Kind == telemetry.KindString || l.v.Kind == telemetry.KindBool) {
		return !p.Value.Equal(l.v)
	}
	f, ok1 := p.Value.Float64()
	last, ok2 := l.v.Float64()
	if !ok1 || !ok2 {
		return !p.Value.Equal(l.v)
	}
	d := math.Abs(f - last)
	switch mode {
	case "deadband":
		return d > deadband
	case "deadband_percent":
		if last == 0 {
			return f != 0
		}
		return d > deadband/100*math.Abs(last)
	}
	return true
}
