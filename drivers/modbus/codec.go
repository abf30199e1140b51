package modbus

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"github.com/edged/edged/telemetry"
)

// Codec converts one point's registers to a telemetry.Value and back. The
// same Codec serves reads and writes, so a point can never be read in one
// byte order and written in another. A Codec is a small value: copy it
// freely; it is safe for concurrent use.
//
// Types are the names of config.Point.Type: bool, int16, uint16, int32,
// uint32, int64, uint64, float32, float64. Orders are the canonical notation
// of config.Point.Order: the letters name where the value's big-endian bytes
// (A = most significant) stand on the wire, register by register, e.g. ABCD
// (big-endian, the Modbus default), DCBA, BADC, CDAB. Any permutation of the
// first 2, 4 or 8 letters is accepted; "" means big-endian.
type Codec struct {
	typ   string
	kind  telemetry.Kind
	size  uint8    // bytes on the wire; 0 for bool
	order [8]uint8 // order[i]: which big-endian byte stands at wire byte i
}

var codecTypes = map[string]struct {
	kind telemetry.Kind
	size uint8
}{
	"bool":    {telemetry.KindBool, 0},
	"int16":   {telemetry.KindInt, 2},
	"uint16":  {telemetry.KindUint, 2},
	"int32":   {telemetry.KindInt, 4},
	"uint32":  {telemetry.KindUint, 4},
	"int64":   {telemetry.KindInt, 8},
	"uint64":  {telemetry.KindUint, 8},
	"float32": {telemetry.KindFloat, 4},
	"float64": {telemetry.KindFloat, 8},
}

// NewCodec returns the codec for a point type and byte order. It rejects an
// unknown type, an order whose length does not fit the type, an order that
// is not a permutation of its letters, and any order for bool.
func NewCodec(typ, order string) (Codec, error) {
	t, ok := codecTypes[typ]
	if !ok {
		return Codec{}, fmt.Errorf("type %q: use one of bool, int16, uint16, int32, uint32, int64, uint64, float32, float64", typ)
	}
	c := Codec{typ: typ, kind: t.kind, size: t.size}
	if t.size == 0 {
		if order != "" {
			return Codec{}, fmt.Errorf("order %q makes no sense for a bool", order)
		}
		return c, nil
	}
	n := int(t.size)
	if order == "" {
		for i := range n {
			c.order[i] = uint8(i)
		}
		return c, nil
	}
	if len(order) != n {
		return Codec{}, fmt.Errorf("order %q does not fit %s: it needs %d letters, %s to %s", order, typ, n, "A", string(rune('A'+n-1)))
	}
	var seen [8]bool
	for i := range n {
		b := int(order[i]) - 'A'
		if b < 0 || b >= n {
			return Codec{}, fmt.Errorf("order %q does not fit %s: letter %q is not one of A-%c", order, typ, order[i], 'A'+n-1)
		}
		if seen[b] {
			return Codec{}, fmt.Errorf("order %q: letter %c appears twice", order, order[i])
		}
		seen[b] = true
		c.order[i] = uint8(b)
	}
	return c, nil
}

// Type returns the point type the codec was built for.
func (c Codec) Type() string { return c.typ }

// Kind returns the kind of value Decode produces.
func (c Codec) Kind() telemetry.Kind { return c.kind }

// Registers returns how many 16-bit registers the value spans; for bool it is
// 1 (one coil or discrete input, carried as a register holding 0 or 1).
func (c Codec) Registers() int {
	if c.size == 0 {
		return 1
	}
	return int(c.size) / 2
}

var errNoCodec = errors.New("modbus: zero Codec: use NewCodec")

// Decode converts exactly Registers() registers, in address order, to a
// value: Int for signed types, Uint for unsigned, Float for floats (a
// float32 becomes the float64 nearest its shortest decimal form: 230.1, not
// 230.10000610351562), Bool for bool (any non-zero register is true). It does
// not allocate.
func (c Codec) Decode(regs []uint16) (telemetry.Value, error) {
	if c.kind == telemetry.KindNone {
		return telemetry.Value{}, errNoCodec
	}
	if len(regs) != c.Registers() {
		return telemetry.Value{}, fmt.Errorf("%s needs %d registers, got %d", c.typ, c.Registers(), len(regs))
	}
	if c.size == 0 {
		return telemetry.Bool(regs[0] != 0), nil
	}
	n := int(c.size)
	var be [8]byte
	for i := range n {
		be[c.order[i]] = byte(regs[i/2] >> (8 * (1 - i%2)))
	}
	var u uint64
	for _, b := range be[:n] {
		u = u<<8 | uint64(b)
	}
	bits := 8 * uint(n)
	switch c.kind {
	case telemetry.KindInt:
		return telemetry.Int(int64(u<<(64-bits)) >> (64 - bits)), nil
	case telemetry.KindUint:
		return telemetry.Uint(u), nil
	default: // float
		if n == 4 {
			return telemetry.Float(widen32(math.Float32frombits(uint32(u)))), nil
		}
		return telemetry.Float(math.Float64frombits(u)), nil
	}
}

// Encode converts v to Registers() registers in address order, the inverse
// of Decode. It checks ranges rather than wrapping: 70000 into an int16, -1
// into a uint32 or 1.5 into an int32 are errors, as is a finite float beyond
// float32's range. Integer types take Int, Uint or an integral Float; float
// types take any number (integers are rounded to the nearest float); bool
// takes Bool or the numbers 0 and 1.
func (c Codec) Encode(v telemetry.Value) ([]uint16, error) {
	regs := make([]uint16, c.Registers())
	if err := c.encodeTo(regs, v); err != nil {
		return nil, err
	}
	return regs, nil
}

func (c Codec) encodeTo(regs []uint16, v telemetry.Value) error {
	if c.kind == telemetry.KindNone {
		return errNoCodec
	}
	if c.size == 0 {
		b, err := toBool(v)
		if err != nil {
			return err
		}
		regs[0] = 0
		if b {
			regs[0] = 1
		}
		return nil
	}
	n := int(c.size)
	bits := 8 * uint(n)
	var u uint64
	switch c.kind {
	case telemetry.KindInt:
		i, err := toInt(v, c.typ, bits)
		if err != nil {
			return err
		}
		u = uint64(i) & (math.MaxUint64 >> (64 - bits))
	case telemetry.KindUint:
		x, err := toUint(v, c.typ, bits)
		if err != nil {
			return err
		}
		u = x
	default:
		f, ok := v.Float64()
		if !ok || v.Kind == telemetry.KindBool {
			return fmt.Errorf("cannot write %s value %s to %s", v.Kind, v, c.typ)
		}
		if n == 4 {
			f32 := float32(f)
			if math.IsInf(float64(f32), 0) && !math.IsInf(f, 0) {
				return fmt.Errorf("%s out of range for float32", v)
			}
			u = uint64(math.Float32bits(f32))
		} else {
			u = math.Float64bits(f)
		}
	}
	var be [8]byte
	for i := n - 1; i >= 0; i-- {
		be[i] = byte(u)
		u >>= 8
	}
	for i := range regs {
		regs[i] = uint16(be[c.order[2*i]])<<8 | uint16(be[c.order[2*i+1]])
	}
	return nil
}

func toBool(v telemetry.Value) (bool, error) {
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
		return false, fmt.Errorf("%s is not a bool (use true, false, 0 or 1)", v)
	}
	return false, fmt.Errorf("cannot write %s value %s to bool", v.Kind, v)
}

// toInt returns v as a signed integer of the given width, range-checked.
func toInt(v telemetry.Value, typ string, bits uint) (int64, error) {
	lo := int64(-1) << (bits - 1)
	hi := -(lo + 1)
	switch v.Kind {
	case telemetry.KindInt:
		if v.I < lo || v.I > hi {
			return 0, rangeErr(v, typ, strconv.FormatInt(lo, 10), strconv.FormatInt(hi, 10))
		}
		return v.I, nil
	case telemetry.KindUint:
		if v.U > uint64(hi) {
			return 0, rangeErr(v, typ, strconv.FormatInt(lo, 10), strconv.FormatInt(hi, 10))
		}
		return int64(v.U), nil
	case telemetry.KindFloat:
		f := v.F
		if f != math.Trunc(f) { // also NaN
			return 0, fmt.Errorf("%s is not an integer, so it cannot be written to %s", v, typ)
		}
		// -2^(bits-1) is exact in float64; 2^(bits-1) is the first value out.
		if f < float64(lo) || f >= -float64(lo) {
			return 0, rangeErr(v, typ, strconv.FormatInt(lo, 10), strconv.FormatInt(hi, 10))
		}
		return int64(f), nil
	}
	return 0, fmt.Errorf("cannot write %s value %s to %s", v.Kind, v, typ)
}

// toUint returns v as an unsigned integer of the given width, range-checked.
func toUint(v telemetry.Value, typ string, bits uint) (uint64, error) {
	hi := uint64(math.MaxUint64) >> (64 - bits)
	switch v.Kind {
	case telemetry.KindInt:
		if v.I < 0 || uint64(v.I) > hi {
			return 0, rangeErr(v, typ, "0", strconv.FormatUint(hi, 10))
		}
		return uint64(v.I), nil
	case telemetry.KindUint:
		if v.U > hi {
			return 0, rangeErr(v, typ, "0", strconv.FormatUint(hi, 10))
		}
		return v.U, nil
	case telemetry.KindFloat:
		f := v.F
		if f != math.Trunc(f) {
			return 0, fmt.Errorf("%s is not an integer, so it cannot be written to %s", v, typ)
		}
		// 2^bits is exact in float64 and is the first value out of range.
		if f < 0 || f >= math.Ldexp(1, int(bits)) {
			return 0, rangeErr(v, typ, "0", strconv.FormatUint(hi, 10))
		}
		return uint64(f), nil
	}
	return 0, fmt.Errorf("cannot write %s value %s to %s", v.Kind, v, typ)
}

func rangeErr(v telemetry.Value, typ, lo, hi string) error {
	return fmt.Errorf("%s out of range for %s (%s to %s)", v, typ, lo, hi)
}

// widen32 converts a float32 to the float64 nearest the shortest decimal that
// identifies the float32: what the device meant by 230.1 stays 230.1
// downstream, where widening the bits would give 230.10000610351562.
// Infinities and NaN are widened as they are. It does not allocate.
func widen32(f float32) float64 {
	if math.IsInf(float64(f), 0) || f != f {
		return float64(f)
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], float64(f), 'g', -1, 32)
	// strconv copies the string into any error it returns, so viewing the
	// stack buffer is safe; a shortest float32 form always parses.
	v, err := strconv.ParseFloat(unsafe.String(&b[0], len(b)), 64)
	if err != nil {
		return float64(f)
	}
	return v
}
