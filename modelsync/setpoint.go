package modelsync

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/edged/edged/telemetry"
)

// The inverse of Normalise, for commands from the cloud: a measure point id
// of a device and a model value become the profile point and the raw value
// to write.

// Errors of Setpoint and Device; each is wrapped with the device, measure
// point and value concerned.
var (
	// ErrUnknownDevice: no configured device has this product and device key.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrUnknownPoint: the device's model has no such measure point.
	ErrUnknownPoint = errors.New("unknown measure point")
	// ErrReadOnly: the measure point cannot be written (access read, or a
	// discrete input or input register).
	ErrReadOnly = errors.New("measure point is read-only")
	// ErrBadValue: the value does not convert to the point's type, or is
	// out of its range once scale and offset are undone.
	ErrBadValue = errors.New("bad value")
)

// Setpoint is a write to one raw point of a device.
type Setpoint struct {
	Device  int    // index into Config.Devices
	Point   int    // index of the point in the device's profile
	Name    string // the point's name in the profile
	Measure string // the measure point id
	Raw     telemetry.Value
}

// Device returns the index (into Config.Devices) of the device with
// productKey and deviceKey.
func (n *Normaliser) Device(productKey, deviceKey string) (int, error) {
	if i, ok := n.byKey[productKey+"/"+deviceKey]; ok {
		return i, nil
	}
	return -1, fmt.Errorf("%w %s/%s: no device of this gateway has this product and device key", ErrUnknownDevice, productKey, deviceKey)
}

// DeviceName returns the configured name of device i.
func (n *Normaliser) DeviceName(i int) string { return n.devices[i].name }

// Setpoint maps value v of measure point measure of device dev (index into
// Config.Devices) to the raw point and value to write. It is the inverse of
// Normalise:
//   - a scaled point (scale or offset set) gets raw = (v − offset) / scale;
//     for an integer type the result must be a whole number (within float
//     rounding): 21.55 on a point of resolution 0.1 is refused, not rounded;
//   - the raw value must fit the point's type: int16 −32768..32767, uint16
//     0..65535, bcd16 0..9999, a finite float32, and so on;
//   - bool points take true/false, 0/1 and the strings "true", "false",
//     "1", "0" (any case); numeric points take numbers and numbers given as
//     strings ("21.5"); string points take strings;
//   - with a model: a value outside the model's [min, max] is refused, and
//     a unit conversion (kW in the model, W in the profile) is undone
//     before scale and offset;
//   - points with access read, discrete inputs and input registers are
//     refused with ErrReadOnly; so are computed measures ("computed by an
//     expression"); points with publish: false are no measure points
//     (ErrUnknownPoint).
//
// It does no I/O and is safe for concurrent use.
func (n *Normaliser) Setpoint(dev int, measure string, v telemetry.Value) (Setpoint, error) {
	if dev < 0 || dev >= len(n.devices) {
		return Setpoint{}, fmt.Errorf("%w #%d", ErrUnknownDevice, dev)
	}
	dm := &n.devices[dev]
	i, ok := dm.byID[measure]
	if !ok {
		return Setpoint{}, fmt.Errorf("device %s: %w %q", dm.name, ErrUnknownPoint, measure)
	}
	mp := &dm.points[i]
	sp := Setpoint{Device: dev, Point: mp.point, Name: mp.name, Measure: mp.ID}
	if mp.readOnly != "" {
		return sp, fmt.Errorf("device %s measure point %q: %w (%s)", dm.name, measure, ErrReadOnly, mp.readOnly)
	}
	raw, err := mp.inverse(v)
	if err != nil {
		return sp, fmt.Errorf("device %s measure point %q: %w: %v", dm.name, measure, ErrBadValue, err)
	}
	sp.Raw = raw
	return sp, nil
}

// readOnlyReason says why a point cannot be written, "" if it can.
func readOnlyReason(access, table string) string {
	switch table {
	case "discrete_input", "discrete", "input_register", "input":
		return "a " + table + " cannot be written"
	}
	switch access {
	case "write", "readwrite":
		return ""
	case "", "read":
		return "access read"
	}
	return "access " + access
}

// inverse converts a model value to the point's raw type.
func (m *MeasurePoint) inverse(v telemetry.Value) (telemetry.Value, error) {
	if m.DataType != "" && m.Type != "bool" && m.Type != "string" {
		// the model's side: its range, then its unit back to the profile's
		num, err := looseNumber(v)
		if err != nil {
			return telemetry.Value{}, err
		}
		f, _ := num.Float64()
		if m.ranged && (f < m.lo || f > m.hi) {
			return telemetry.Value{}, fmt.Errorf("%s out of the model's range [%s, %s]", v, bound(m.lo), bound(m.hi))
		}
		if !m.conv.identity() {
			x := (f - m.conv.b) / m.conv.a
			// float rounding: 1.5 kW is 1500.0000000000002 W
			if r := math.Round(x); m.Type != "float32" && m.Type != "float64" && math.Abs(x-r) <= 1e-9*math.Max(1, math.Abs(r)) {
				x = r
			}
			num = telemetry.Float(x)
		}
		v = num
	}
	switch m.Type {
	case "bool":
		b, err := looseBool(v)
		return telemetry.Bool(b), err
	case "string":
		if v.Kind != telemetry.KindString {
			return telemetry.Value{}, fmt.Errorf("%s %s for a string point: give a string", v.Kind, v)
		}
		return v, nil
	}
	v, err := looseNumber(v)
	if err != nil {
		return telemetry.Value{}, err
	}
	if m.Scaled() {
		f, _ := v.Float64()
		raw := (f - m.offset) / m.scale
		if math.IsNaN(raw) || math.IsInf(raw, 0) {
			return telemetry.Value{}, fmt.Errorf("%s gives no finite raw value (scale %g, offset %g)", v, m.scale, m.offset)
		}
		if m.Type != "float32" && m.Type != "float64" {
			r := math.Round(raw)
			// float rounding: (30.5 - 0) / 0.1 is 304.99999999999994
			if math.Abs(raw-r) > 1e-9*math.Max(1, math.Abs(raw)) {
				return telemetry.Value{}, fmt.Errorf("%s is not a multiple of the point's resolution (scale %g, offset %g): raw value %g is not a whole number", v, m.scale, m.offset, raw)
			}
			raw = r
		}
		v = telemetry.Float(raw)
	}
	return toRaw(v, m.Type)
}

// looseBool reads a bool as the SDKs send one.
func looseBool(v telemetry.Value) (bool, error) {
	switch v.Kind {
	case telemetry.KindBool:
		return v.B, nil
	case telemetry.KindInt, telemetry.KindUint, telemetry.KindFloat:
		f, _ := v.Float64()
		switch f {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
	case telemetry.KindString:
		switch strings.ToLower(strings.TrimSpace(v.S)) {
		case "true", "1":
			return true, nil
		case "false", "0":
			return false, nil
		}
	}
	return false, fmt.Errorf("%s for a bool point: give true, false, 1 or 0", v)
}

// looseNumber accepts numbers and numbers given as strings.
func looseNumber(v telemetry.Value) (telemetry.Value, error) {
	switch v.Kind {
	case telemetry.KindInt, telemetry.KindUint:
		return v, nil
	case telemetry.KindFloat:
		if math.IsNaN(v.F) || math.IsInf(v.F, 0) {
			return telemetry.Value{}, fmt.Errorf("%s is not a finite number", v)
		}
		return v, nil
	case telemetry.KindString:
		s := strings.TrimSpace(v.S)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return telemetry.Int(i), nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return telemetry.Uint(u), nil
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return telemetry.Float(f), nil
		}
		return telemetry.Value{}, fmt.Errorf("%s is not a number", v)
	}
	return telemetry.Value{}, fmt.Errorf("%s %s for a numeric point: give a number", v.Kind, v)
}

// intRange is the range of each integer type, as written to the device.
var intRange = map[string]struct {
	signed bool
	lo     int64
	hi     uint64
}{
	"int16":  {true, math.MinInt16, math.MaxInt16},
	"int32":  {true, math.MinInt32, math.MaxInt32},
	"int64":  {true, math.MinInt64, math.MaxInt64},
	"uint16": {false, 0, math.MaxUint16},
	"uint32": {false, 0, math.MaxUint32},
	"uint64": {false, 0, math.MaxUint64},
	"bcd16":  {false, 0, 9999},
	"bcd32":  {false, 0, 99999999},
}

// toRaw range-checks a number (Int, Uint or finite Float) against typ and
// returns it as the kind the driver reads for typ: Int for signed types,
// Uint for unsigned and BCD ones, Float for float types.
func toRaw(v telemetry.Value, typ string) (telemetry.Value, error) {
	switch typ {
	case "float32":
		f, _ := v.Float64()
		if math.Abs(f) > math.MaxFloat32 {
			return telemetry.Value{}, fmt.Errorf("raw value %g out of range for float32", f)
		}
		return telemetry.Float(f), nil
	case "float64":
		f, _ := v.Float64()
		return telemetry.Float(f), nil
	}
	r, ok := intRange[typ]
	if !ok {
		return telemetry.Value{}, fmt.Errorf("type %q cannot be written", typ)
	}
	outOfRange := func() error {
		lo := strconv.FormatInt(r.lo, 10)
		return fmt.Errorf("raw value %s out of range for %s (%s to %s)", v, typ, lo, strconv.FormatUint(r.hi, 10))
	}
	switch v.Kind {
	case telemetry.KindFloat:
		f := v.F
		if f != math.Trunc(f) {
			return telemetry.Value{}, fmt.Errorf("raw value %g is not a whole number, so it cannot be written to %s", f, typ)
		}
		// 2^63 and 2^64 are exact in float64 and the first values out
		if f < float64(r.lo) || f >= math.Ldexp(1, 64) || (r.signed && f >= math.Ldexp(1, 63)) || (f > 0 && uint64(f) > r.hi) {
			return telemetry.Value{}, outOfRange()
		}
		if f < 0 {
			v = telemetry.Int(int64(f))
		} else {
			v = telemetry.Uint(uint64(f))
		}
	}
	switch v.Kind {
	case telemetry.KindInt:
		if v.I < r.lo || (v.I > 0 && uint64(v.I) > r.hi) {
			return telemetry.Value{}, outOfRange()
		}
		if !r.signed {
			return telemetry.Uint(uint64(v.I)), nil
		}
		return v, nil
	case telemetry.KindUint:
		if v.U > r.hi {
			return telemetry.Value{}, outOfRange()
		}
		if r.signed {
			return telemetry.Int(int64(v.U)), nil
		}
		return v, nil
	}
	return telemetry.Value{}, fmt.Errorf("%s %s for %s", v.Kind, v, typ)
}
