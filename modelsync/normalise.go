// Package modelsync will hold the device models synced from the cloud. For
// now the model of a device is its profile in the local config; the
// normaliser turns raw points into model measure points.
package modelsync

import (
	"math"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/telemetry"
)

// MeasurePoint is a measure point of a device's model.
type MeasurePoint struct {
	ID         string
	Unit       string
	Type       string // raw type in the profile
	scale      float64
	offset     float64
	staleAfter time.Duration
	name       string // the raw point's name in the profile
	readOnly   string // why the point cannot be written; "" if it can
}

// Scaled reports whether the raw value is transformed (and so becomes a float).
func (m *MeasurePoint) Scaled() bool { return m.scale != 1 || m.offset != 0 }

type deviceModel struct {
	name, productKey, deviceKey string
	points                      []MeasurePoint
	byID                        map[string]int // measure point id → index in points
}

// Normaliser maps raw samples to measure points. It is immutable after
// construction and safe for concurrent use.
type Normaliser struct {
	devices []deviceModel
	byKey   map[string]int // "productKey/deviceKey" → index in devices
}

// NewNormaliser builds the model of every configured device from its profile.
func NewNormaliser(cfg *config.Config) *Normaliser {
	n := &Normaliser{devices: make([]deviceModel, len(cfg.Devices)), byKey: make(map[string]int, len(cfg.Devices))}
	for i, d := range cfg.Devices {
		prof, _ := cfg.Profile(d.Profile)
		dm := deviceModel{name: d.Name, productKey: d.ProductKey, deviceKey: d.DeviceKey, byID: make(map[string]int, len(prof.Points))}
		for j, p := range prof.Points {
			dm.points = append(dm.points, MeasurePoint{
				ID: p.MeasureID(), Unit: p.Unit, Type: p.Type,
				scale: p.ScaleOrOne(), offset: p.Offset, staleAfter: p.StaleAfter,
				name: p.Name, readOnly: readOnlyReason(p.Access, p.Table),
			})
			if _, dup := dm.byID[p.MeasureID()]; !dup { // config validation refuses duplicates
				dm.byID[p.MeasureID()] = j
			}
		}
		n.devices[i] = dm
		if _, dup := n.byKey[d.ProductKey+"/"+d.DeviceKey]; !dup {
			n.byKey[d.ProductKey+"/"+d.DeviceKey] = i
		}
	}
	return n
}

// Model returns the measure points of device i (index into Config.Devices).
func (n *Normaliser) Model(i int) []MeasurePoint { return n.devices[i].points }

// Normalise turns one reading into one record:
//   - value = raw × scale + offset; a scaled value is a float, an unscaled
//     one keeps its integer or boolean type;
//   - a good sample whose source time is older than the point's stale limit
//     (relative to now) becomes stale;
//   - bad samples stay bad with their reason and carry no value;
//   - a scaled result that is not a finite number is bad ("not a number").
func (n *Normaliser) Normalise(r connectivity.Reading, now time.Time) telemetry.Record {
	dm := &n.devices[r.Device]
	rec := telemetry.Record{
		Device:     dm.name,
		ProductKey: dm.productKey,
		DeviceKey:  dm.deviceKey,
		Time:       r.Time.UnixMilli(),
		Points:     make([]telemetry.Point, 0, len(r.Samples)),
	}
	for _, s := range r.Samples {
		if s.Point < 0 || s.Point >= len(dm.points) {
			continue // a driver bug; the driver's own tests guard this
		}
		mp := &dm.points[s.Point]
		p := telemetry.Point{ID: mp.ID, Quality: s.Quality, Reason: s.Reason}
		if s.Quality == telemetry.Bad {
			rec.Points = append(rec.Points, p)
			continue
		}
		p.Value = s.Value
		if mp.Scaled() {
			if f, ok := s.Value.Float64(); ok && s.Value.Kind != telemetry.KindBool {
				v := f*mp.scale + mp.offset
				if math.IsNaN(v) || math.IsInf(v, 0) {
					p = telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: "not a number"}
				} else {
					p.Value = telemetry.Float(v)
				}
			}
		} else if s.Value.Kind == telemetry.KindFloat && (math.IsNaN(s.Value.F) || math.IsInf(s.Value.F, 0)) {
			p = telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: "not a number"}
		}
		if p.Quality == telemetry.Good && mp.staleAfter > 0 && !s.Time.IsZero() && now.Sub(s.Time) > mp.staleAfter {
			p.Quality = telemetry.Stale
		}
		rec.Points = append(rec.Points, p)
	}
	return rec
}
