// Package modelsync maps the raw points of devices to the measure points
// of their models. A device's profile (the local config) says how: a raw
// point becomes a measure point directly (with scale and offset), or a
// profile's computed measure is an expression over several raw points.
// When the cloud's thing model of the device's product is known (Build's
// models), every measure point is checked against it at Build and its
// values are converted to the model's unit and data type and range-checked
// against its min and max; without a model, the profile alone decides.
//
// A Normaliser is immutable; Live holds the one in use and is swapped when
// a new model version is applied; Reporter applies the reporting policy
// (every poll, on change, deadband, max silence) after Normalise.
package modelsync

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/modelsync/formula"
	"github.com/edged/edged/telemetry"
	"github.com/edged/edged/thingmodel"
)

// MeasurePoint is a measure point of a device's model.
type MeasurePoint struct {
	ID string
	// Unit is the unit of the published value: the model's when the
	// device's product has a model and it names one, else the profile's.
	Unit string
	// Type is the raw type of the profile point; "" for a computed measure.
	Type string
	// Expr is the expression of a computed measure; "" for a direct point.
	Expr string
	// DataType is the model's data type; "" without a model.
	DataType thingmodel.DataType
	// Report is the reporting policy (Mode "" or every_poll: every value).
	Report config.Report

	point      int // index of the raw point in the profile; -1 for a computed measure
	name       string
	scale      float64
	offset     float64
	staleAfter time.Duration
	readOnly   string // why the point cannot be written; "" if it can

	conv         conversion // profile unit → model unit
	lo, hi       float64    // the model's range (±Inf when open)
	ranged       bool
	enum         map[int64]string // the profile's enum: code → label
	modelEnum    map[string]int64 // the model's enum: label → code
	modelEnumSet map[int64]bool   // the model's enum codes
	prog         *formula.Program
	inputs       []int // raw point indexes of prog.Inputs
}

// Scaled reports whether the raw value is transformed (and so becomes a float).
func (m *MeasurePoint) Scaled() bool { return m.scale != 1 || m.offset != 0 }

// rawPoint is how a raw point's sample becomes a value (scale, offset,
// staleness), before any model conversion.
type rawPoint struct {
	scale, offset float64
	staleAfter    time.Duration
}

type deviceModel struct {
	name, productKey, deviceKey string
	points                      []MeasurePoint // published: direct points in profile order, then computed measures
	byID                        map[string]int // measure point id → index in points
	raw                         []rawPoint     // by raw point index
	byRaw                       []int          // raw point index → index in points, -1 when not published
	computed                    int            // index in points of the first computed measure
	hasPolicy                   bool           // some point reports other than every poll
}

// Normaliser maps raw samples to measure points. It is immutable after
// construction and safe for concurrent use.
type Normaliser struct {
	devices  []deviceModel
	byKey    map[string]int // "productKey/deviceKey" → index in devices
	byName   map[string]int // device name → index in devices
	versions map[string]uint64
	warnings []string
	scratch  sync.Pool // *scratch, for computed measures
}

// scratch is one Normalise call's working memory for computed measures.
type scratch struct {
	vals   []telemetry.Sample // by raw point index, after scale and offset
	seen   []bool
	in     []telemetry.Value
	runner *formula.Runner
}

// NewNormaliser builds the normaliser of cfg's devices from their profiles
// alone: Build(cfg, nil). cfg is expected to be valid (config.Parse
// validates it); a mistake Build would refuse drops the measure point
// concerned.
func NewNormaliser(cfg *config.Config) *Normaliser {
	n, _ := build(cfg, nil)
	return n
}

// Build builds the normaliser of cfg's devices; models holds the thing
// models by product key (a product without one keeps the profile-only
// mapping; nil: no models). It validates every mapping against the models
// and returns config.Errors listing every problem, each naming the profile
// point or measure, the devices and the model version, with the file and
// line the point comes from; the Normaliser is then nil.
func Build(cfg *config.Config, models map[string]*thingmodel.Model) (*Normaliser, error) {
	n, errs := build(cfg, models)
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool {
			if errs[i].File != errs[j].File {
				return errs[i].File < errs[j].File
			}
			return errs[i].Line < errs[j].Line
		})
		return nil, errs
	}
	return n, nil
}

// ModelVersion returns the version of the model of productKey the
// normaliser was built with; 0: none.
func (n *Normaliser) ModelVersion(productKey string) uint64 { return n.versions[productKey] }

// Warnings lists what Build accepted but an engineer may want to know:
// measure points of a model that no profile point maps.
func (n *Normaliser) Warnings() []string { return n.warnings }

// Model returns the published measure points of device i (index into
// Config.Devices): its direct points, then its computed measures.
func (n *Normaliser) Model(i int) []MeasurePoint { return n.devices[i].points }

// Live holds the normaliser in use; a new one (a new model version) is
// swapped in atomically. Readers Load once per reading or command.
type Live struct{ p atomic.Pointer[Normaliser] }

// NewLive returns a Live holding n.
func NewLive(n *Normaliser) *Live {
	l := &Live{}
	l.p.Store(n)
	return l
}

// Load returns the normaliser in use.
func (l *Live) Load() *Normaliser { return l.p.Load() }

// Store makes n the normaliser in use.
func (l *Live) Store(n *Normaliser) { l.p.Store(n) }

// group is the devices sharing a profile and a product: they share their
// measure points.
type group struct {
	prof    *config.Profile
	product string
	devices []string
	points  []MeasurePoint
	byRaw   []int
	raw     []rawPoint
	policy  bool
}

func build(cfg *config.Config, models map[string]*thingmodel.Model) (*Normaliser, config.Errors) {
	n := &Normaliser{
		devices:  make([]deviceModel, len(cfg.Devices)),
		byKey:    make(map[string]int, len(cfg.Devices)),
		byName:   make(map[string]int, len(cfg.Devices)),
		versions: map[string]uint64{},
	}
	n.scratch.New = func() any { return &scratch{runner: formula.NewRunner()} }
	var errs config.Errors
	groups := map[string]*group{}
	var order []*group
	for _, d := range cfg.Devices {
		prof, ok := cfg.Profile(d.Profile)
		if !ok {
			errs = append(errs, &config.Error{File: cfg.File, Line: d.Line, Where: fmt.Sprintf("device %q", d.Name), Msg: fmt.Sprintf("profile %q is not defined under profiles", d.Profile)})
			continue
		}
		k := d.Profile + "\x00" + d.ProductKey
		g := groups[k]
		if g == nil {
			g = &group{prof: prof, product: d.ProductKey}
			groups[k] = g
			order = append(order, g)
		}
		g.devices = append(g.devices, d.Name)
	}
	checked := map[*thingmodel.Model]bool{}
	for _, g := range order {
		m := models[g.product]
		if m != nil {
			n.versions[g.product] = m.Version
			if !checked[m] {
				checked[m] = true
				if e := checkModel(cfg, m); e != nil {
					errs = append(errs, e...)
					continue
				}
			}
		}
		errs = append(errs, g.build(cfg, m, &n.warnings)...)
	}
	for i, d := range cfg.Devices {
		dm := deviceModel{name: d.Name, productKey: d.ProductKey, deviceKey: d.DeviceKey}
		if g := groups[d.Profile+"\x00"+d.ProductKey]; g != nil {
			dm.points, dm.byRaw, dm.raw, dm.hasPolicy = g.points, g.byRaw, g.raw, g.policy
		}
		dm.byID = make(map[string]int, len(dm.points))
		dm.computed = len(dm.points)
		for j := range dm.points {
			if _, dup := dm.byID[dm.points[j].ID]; !dup { // config validation refuses duplicates
				dm.byID[dm.points[j].ID] = j
			}
			if dm.points[j].point < 0 && j < dm.computed {
				dm.computed = j
			}
		}
		n.devices[i] = dm
		if _, dup := n.byKey[d.ProductKey+"/"+d.DeviceKey]; !dup {
			n.byKey[d.ProductKey+"/"+d.DeviceKey] = i
		}
		if _, dup := n.byName[d.Name]; !dup {
			n.byName[d.Name] = i
		}
	}
	return n, errs
}

// checkModel refuses a malformed model: unknown data types, a measure
// point twice, min above max, enum codes that are not integers.
func checkModel(cfg *config.Config, m *thingmodel.Model) config.Errors {
	var errs config.Errors
	where := fmt.Sprintf("model %s v%d", m.ProductKey, m.Version)
	bad := func(format string, args ...any) {
		errs = append(errs, &config.Error{File: cfg.File, Where: where, Msg: fmt.Sprintf(format, args...)})
	}
	seen := map[string]bool{}
	for _, mp := range m.MeasurePoints {
		if mp.Identifier == "" {
			bad("a measure point has no identifier")
			continue
		}
		if seen[mp.Identifier] {
			bad("measure point %q is defined twice", mp.Identifier)
		}
		seen[mp.Identifier] = true
		switch mp.DataType {
		case thingmodel.Int, thingmodel.Float, thingmodel.Double, thingmodel.Bool, thingmodel.String, thingmodel.Enum, thingmodel.Timestamp:
		default:
			bad("measure point %q: data type %q is not one of int, float, double, bool, string, enum, timestamp", mp.Identifier, mp.DataType)
		}
		if mp.Min != nil && mp.Max != nil && *mp.Min > *mp.Max {
			bad("measure point %q: min %g is above max %g", mp.Identifier, *mp.Min, *mp.Max)
		}
		for code := range mp.Enum {
			if _, err := strconv.ParseInt(code, 10, 64); err != nil {
				bad("measure point %q: enum value %q is not an integer", mp.Identifier, code)
			}
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Msg < errs[j].Msg })
	return errs
}

// build makes the measure points of a profile for a product, checked
// against its model m (nil: none).
func (g *group) build(cfg *config.Config, m *thingmodel.Model, warnings *[]string) config.Errors {
	var errs config.Errors
	prof := g.prof
	devs := quoteList(g.devices)
	ctx := ""
	if m != nil {
		ctx = fmt.Sprintf(" (%s; model %s v%d)", devs, m.ProductKey, m.Version)
	}
	file := func(pt *config.Point) string {
		if pt != nil && pt.File != "" {
			return pt.File
		}
		return cfg.File
	}
	g.raw = make([]rawPoint, len(prof.Points))
	g.byRaw = make([]int, len(prof.Points))
	inputs := make(map[string]telemetry.Kind, len(prof.Points))
	rawIndex := make(map[string]int, len(prof.Points))
	used := map[string]bool{}
	for j := range prof.Points {
		pt := &prof.Points[j]
		g.raw[j] = rawPoint{scale: pt.ScaleOrOne(), offset: pt.Offset, staleAfter: pt.StaleAfter}
		g.byRaw[j] = -1
		inputs[pt.Name] = pt.ValueKind()
		rawIndex[pt.Name] = j
		if !pt.Published() {
			continue
		}
		mp := MeasurePoint{
			ID: pt.MeasureID(), Unit: pt.Unit, Type: pt.Type,
			scale: pt.ScaleOrOne(), offset: pt.Offset, staleAfter: pt.StaleAfter,
			name: pt.Name, point: j, readOnly: readOnlyReason(pt.Access, pt.Table),
			conv: conversion{1, 0}, lo: math.Inf(-1), hi: math.Inf(1),
		}
		mp.Report = policy(pt.Report, prof.Report)
		where := fmt.Sprintf("profile %q point %q%s", prof.Name, pt.Name, ctx)
		if e := mp.bindModel(m, pt.ValueKind(), false); e != "" {
			errs = append(errs, &config.Error{File: file(pt), Line: pt.Line, Where: where, Msg: e})
			continue
		}
		used[mp.ID] = true
		g.byRaw[j] = len(g.points)
		g.points = append(g.points, mp)
	}
	for k := range prof.Measures {
		me := &prof.Measures[k]
		where := fmt.Sprintf("profile %q measure %q%s", prof.Name, me.ID, ctx)
		fail := func(format string, args ...any) {
			errs = append(errs, &config.Error{File: cfg.File, Line: me.Line, Where: where, Msg: fmt.Sprintf(format, args...)})
		}
		prog, err := formula.Compile(me.Expr, inputs)
		if err != nil {
			fail("expr %q: %v", me.Expr, err)
			continue
		}
		mp := MeasurePoint{
			ID: me.ID, Unit: me.Unit, Expr: me.Expr, point: -1, prog: prog,
			readOnly: "computed by an expression", conv: conversion{1, 0}, lo: math.Inf(-1), hi: math.Inf(1),
		}
		mp.Report = policy(me.Report, prof.Report)
		for _, in := range prog.Inputs {
			mp.inputs = append(mp.inputs, rawIndex[in])
		}
		out := prog.Out
		if len(me.Enum) > 0 {
			if out != telemetry.KindInt && out != telemetry.KindNone {
				fail("enum maps integers to labels, but expr %q gives a %s", me.Expr, out)
				continue
			}
			mp.enum = me.Enum
			out = telemetry.KindString
		}
		if e := mp.bindModel(m, out, len(me.Enum) > 0); e != "" {
			fail("%s", e)
			continue
		}
		used[mp.ID] = true
		g.points = append(g.points, mp)
	}
	for _, mp := range g.points {
		if mp.Report.Mode != "" && mp.Report.Mode != "every_poll" {
			g.policy = true
		}
	}
	if m != nil && len(errs) == 0 {
		var unmapped []string
		for _, mp := range m.MeasurePoints {
			if !used[mp.Identifier] {
				unmapped = append(unmapped, strconv.Quote(mp.Identifier))
			}
		}
		if len(unmapped) > 0 {
			*warnings = append(*warnings, fmt.Sprintf("model %s v%d: no point of profile %q (%s) maps measure points %s",
				m.ProductKey, m.Version, prof.Name, devs, strings.Join(unmapped, ", ")))
		}
	}
	return errs
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	if len(q) == 1 {
		return "device " + q[0]
	}
	return "devices " + strings.Join(q, ", ")
}

// policy is a point's reporting policy: its own, else its profile's.
func policy(own, prof *config.Report) config.Report {
	switch {
	case own != nil:
		return *own
	case prof != nil:
		return *prof
	}
	return config.Report{Mode: "every_poll"}
}

// bindModel checks the measure point against the model m (nil: none) and
// sets up the unit and type conversion and the range check; kind is the
// kind of the profile's value (KindNone: known only at run time), labels
// that the value is an enum label. It returns what is wrong, "" if
// nothing.
func (mp *MeasurePoint) bindModel(m *thingmodel.Model, kind telemetry.Kind, labels bool) string {
	if m == nil {
		return ""
	}
	md, ok := m.MeasurePoint(mp.ID)
	if !ok {
		return fmt.Sprintf("measure point %q is not in the model", mp.ID)
	}
	mp.DataType = md.DataType
	if md.Unit != "" {
		c, ok := convertUnit(mp.Unit, md.Unit)
		if !ok {
			return fmt.Sprintf("unit %q of the profile does not convert to unit %q of the model's measure point %q", mp.Unit, md.Unit, mp.ID)
		}
		if !c.identity() && kind != telemetry.KindFloat && kind != telemetry.KindInt && kind != telemetry.KindUint && kind != telemetry.KindNone {
			return fmt.Sprintf("a %s value cannot be converted from %s to %s", kind, mp.Unit, md.Unit)
		}
		mp.conv, mp.Unit = c, md.Unit
	}
	if md.Min != nil {
		mp.lo, mp.ranged = *md.Min, true
	}
	if md.Max != nil {
		mp.hi, mp.ranged = *md.Max, true
	}
	if len(md.Enum) > 0 {
		mp.modelEnum = map[string]int64{}
		mp.modelEnumSet = map[int64]bool{}
		for code, label := range md.Enum {
			c, _ := strconv.ParseInt(code, 10, 64) // checkModel refused the others
			mp.modelEnum[label] = c
			mp.modelEnumSet[c] = true
		}
	}
	refuse := func() string {
		from := kind.String()
		if labels {
			from = "enum label"
		}
		a := "a"
		if strings.HasPrefix(from, "e") || strings.HasPrefix(from, "i") {
			a = "an"
		}
		return fmt.Sprintf("%s %s value does not convert to the model's data type %s", a, from, md.DataType)
	}
	numeric := kind == telemetry.KindInt || kind == telemetry.KindUint || kind == telemetry.KindFloat || kind == telemetry.KindBool || kind == telemetry.KindNone
	switch md.DataType {
	case thingmodel.Int, thingmodel.Float, thingmodel.Double, thingmodel.Timestamp, thingmodel.Bool:
		if labels || !numeric {
			return refuse()
		}
	case thingmodel.Enum:
		if labels {
			var missing []string
			for _, label := range sortedLabels(mp.enum) {
				if _, ok := mp.modelEnum[label]; !ok {
					missing = append(missing, strconv.Quote(label))
				}
			}
			if len(missing) > 0 {
				return fmt.Sprintf("enum labels %s are not labels of the model's measure point %q", strings.Join(missing, ", "), mp.ID)
			}
		} else if kind == telemetry.KindString {
			return refuse()
		}
	case thingmodel.String:
		if !labels && kind != telemetry.KindString && kind != telemetry.KindNone {
			return refuse()
		}
	}
	return ""
}

func sortedLabels(e map[int64]string) []string {
	codes := make([]int64, 0, len(e))
	for c := range e {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool { return codes[i] < codes[j] })
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = e[c]
	}
	return out
}

// Normalise turns one reading into one record:
//   - value = raw × scale + offset; a scaled value is a float, an unscaled
//     one keeps its integer or boolean type;
//   - a good sample whose source time is older than the point's stale limit
//     (relative to now) becomes stale;
//   - bad samples stay bad with their reason and carry no value;
//   - a scaled result that is not a finite number is bad ("not a number");
//   - points with publish: false only feed computed measures;
//   - a computed measure is its expression over the reading's values: bad
//     when an input is ("input p_a bad: timeout") or the expression fails
//     ("division by zero"), stale when an input is;
//   - with a model, the value is converted to the model's unit and data
//     type; a value out of the model's [min, max], an int model fed a
//     fraction or a bool model fed 2 is bad, never clamped or rounded.
func (n *Normaliser) Normalise(r connectivity.Reading, now time.Time) telemetry.Record {
	dm := &n.devices[r.Device]
	rec := telemetry.Record{
		Device:     dm.name,
		ProductKey: dm.productKey,
		DeviceKey:  dm.deviceKey,
		Time:       r.Time.UnixMilli(),
		Points:     make([]telemetry.Point, 0, len(dm.points)),
	}
	var sc *scratch
	if dm.computed < len(dm.points) {
		sc = n.scratch.Get().(*scratch)
		if cap(sc.vals) < len(dm.raw) {
			sc.vals = make([]telemetry.Sample, len(dm.raw))
			sc.seen = make([]bool, len(dm.raw))
		}
		sc.vals, sc.seen = sc.vals[:len(dm.raw)], sc.seen[:len(dm.raw)]
		clear(sc.seen)
	}
	for _, s := range r.Samples {
		if s.Point < 0 || s.Point >= len(dm.raw) {
			continue // a driver bug; the driver's own tests guard this
		}
		s = dm.raw[s.Point].apply(s, now)
		if sc != nil {
			sc.vals[s.Point], sc.seen[s.Point] = s, true
		}
		if k := dm.byRaw[s.Point]; k >= 0 {
			rec.Points = append(rec.Points, dm.points[k].publish(s.Quality, s.Value, s.Reason))
		}
	}
	if sc != nil {
		for k := dm.computed; k < len(dm.points); k++ {
			rec.Points = append(rec.Points, dm.points[k].compute(sc))
		}
		clear(sc.vals) // drop strings
		n.scratch.Put(sc)
	}
	return rec
}

// apply does scale, offset and staleness.
func (rp *rawPoint) apply(s telemetry.Sample, now time.Time) telemetry.Sample {
	if s.Quality == telemetry.Bad {
		s.Value = telemetry.Value{}
		return s
	}
	if rp.scale != 1 || rp.offset != 0 {
		if f, ok := s.Value.Float64(); ok && s.Value.Kind != telemetry.KindBool {
			s.Value = telemetry.Float(f*rp.scale + rp.offset)
		}
	}
	if s.Value.Kind == telemetry.KindFloat && (math.IsNaN(s.Value.F) || math.IsInf(s.Value.F, 0)) {
		return telemetry.Sample{Point: s.Point, Quality: telemetry.Bad, Reason: "not a number", Time: s.Time}
	}
	if s.Quality == telemetry.Good && rp.staleAfter > 0 && !s.Time.IsZero() && now.Sub(s.Time) > rp.staleAfter {
		s.Quality = telemetry.Stale
	}
	return s
}

// compute evaluates a computed measure over the reading's values.
func (mp *MeasurePoint) compute(sc *scratch) telemetry.Point {
	q := telemetry.Good
	sc.in = sc.in[:0]
	for i, ri := range mp.inputs {
		s := &sc.vals[ri]
		switch {
		case !sc.seen[ri]:
			return telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: "input " + mp.prog.Inputs[i] + " not read"}
		case s.Quality == telemetry.Bad:
			return telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: "input " + mp.prog.Inputs[i] + " bad: " + s.Reason}
		case s.Quality == telemetry.Stale:
			q = telemetry.Stale
		}
		sc.in = append(sc.in, s.Value)
	}
	v, err := mp.prog.Run(sc.runner, sc.in)
	if err != nil {
		return telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: err.Error()}
	}
	if mp.enum != nil {
		code, ok := whole(v)
		if !ok {
			return telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: fmt.Sprintf("%s is not an enum code", v)}
		}
		label, ok := mp.enum[code]
		if !ok {
			return telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: fmt.Sprintf("no enum label for %d", code)}
		}
		v = telemetry.String(label)
	}
	return mp.publish(q, v, "")
}

// whole returns v as an integer when it is one.
func whole(v telemetry.Value) (int64, bool) {
	switch v.Kind {
	case telemetry.KindInt:
		return v.I, true
	case telemetry.KindUint:
		return int64(v.U), v.U <= math.MaxInt64
	case telemetry.KindFloat:
		if v.F == math.Trunc(v.F) && math.Abs(v.F) < 1<<63 {
			return int64(v.F), true
		}
		// float rounding: 2301 × 0.1 × 10
		if r := math.Round(v.F); math.Abs(v.F-r) <= 1e-9*math.Max(1, math.Abs(r)) && math.Abs(r) < 1<<63 {
			return int64(r), true
		}
	case telemetry.KindBool:
		if v.B {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// publish converts a value to the model's unit and data type and checks
// its range.
func (mp *MeasurePoint) publish(q telemetry.Quality, v telemetry.Value, reason string) telemetry.Point {
	if q == telemetry.Bad {
		return telemetry.Point{ID: mp.ID, Quality: q, Reason: reason}
	}
	if mp.DataType == "" {
		return telemetry.Point{ID: mp.ID, Value: v, Quality: q}
	}
	bad := func(format string, args ...any) telemetry.Point {
		return telemetry.Point{ID: mp.ID, Quality: telemetry.Bad, Reason: fmt.Sprintf(format, args...)}
	}
	if !mp.conv.identity() {
		f, ok := v.Float64()
		if !ok || v.Kind == telemetry.KindBool {
			return bad("%s %s cannot be converted to %s", v.Kind, v, mp.Unit)
		}
		v = telemetry.Float(f*mp.conv.a + mp.conv.b)
	}
	switch mp.DataType {
	case thingmodel.Int, thingmodel.Timestamp:
		i, ok := whole(v)
		if !ok {
			return bad("%s is not a whole number (the model's %s)", v, mp.DataType)
		}
		v = telemetry.Int(i)
	case thingmodel.Float, thingmodel.Double:
		f, ok := v.Float64()
		if !ok {
			return bad("%s is not a number", v)
		}
		v = telemetry.Float(f)
	case thingmodel.Bool:
		if v.Kind != telemetry.KindBool {
			i, ok := whole(v)
			if !ok || i != 0 && i != 1 {
				return bad("%s is not 0 or 1 (the model's bool)", v)
			}
			v = telemetry.Bool(i == 1)
		}
	case thingmodel.Enum:
		if v.Kind == telemetry.KindString {
			c, ok := mp.modelEnum[v.S]
			if !ok {
				return bad("%s is not a label of the model's enum", v)
			}
			v = telemetry.Int(c)
		} else {
			i, ok := whole(v)
			if !ok {
				return bad("%s is not an enum code", v)
			}
			if mp.modelEnumSet != nil && !mp.modelEnumSet[i] {
				return bad("%d is not a value of the model's enum", i)
			}
			v = telemetry.Int(i)
		}
	case thingmodel.String:
		if v.Kind != telemetry.KindString {
			return bad("%s %s is not a string", v.Kind, v)
		}
	}
	if mp.ranged && v.Kind != telemetry.KindString && v.Kind != telemetry.KindBool {
		f, _ := v.Float64()
		if f < mp.lo || f > mp.hi {
			return bad("out of range [%s, %s]: %s", bound(mp.lo), bound(mp.hi), v)
		}
	}
	return telemetry.Point{ID: mp.ID, Value: v, Quality: q}
}

func bound(f float64) string {
	switch {
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsInf(f, 1):
		return "+inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
