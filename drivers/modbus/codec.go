package modbus

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"github.com/edged/edged/config"
	"github.com/edged/edged/telemetry"
)

// Codec converts one point's registers to a telemetry.Value and back. The
// same Codec serves reads and writes, so a point can never be read in one
// byte order and written in another. A Codec is a small value: copy it
// freely; it is safe for concurrent use.
//
// Types are the names of config.Point.Type:
//
//   - bool: a coil or discrete input (NewCodec), or one bit of a register
//     (NewBitCodec; 0 = least significant).
//   - int16, uint16, int32, uint32, int64, uint64, float32, float64.
//   - bcd16: 4 decimal digits in one register (0-9999); bcd32: 8 digits in
//     two (0-99999999). They decode to Uint; a nibble above 9 is an error,
//     "invalid BCD 0x12A4".
//   - string: a fixed field of Length registers, two bytes (ASCII or UTF-8)
//     each (NewStringCodec).
//
// Orders are the canonical notation of config.Point.Order: the letters name
// where the value's big-endian bytes (A = most significant) stand on the
// wire, register by register, e.g. ABCD (big-endian, the Modbus default),
// DCBA, BADC, CDAB. Any permutation of the first 2, 4 or 8 letters is
// accepted; "" means big-endian. A BCD value's digits are its big-endian
// bytes (0x1234 is 1234), so bcd32 takes the 32-bit orders. A string's order
// is AB (its first character in the high byte of the first register) or BA
// (the two characters of each register swapped).
type Codec struct {
	typ   string
	kind  telemetry.Kind
	form  form
	size  uint8    // bytes on the wire: 2 per register; 0 for bool and bit
	bit   uint8    // form bit: which bit of the register
	order [8]uint8 // number and bcd: order[i] is the big-endian byte at wire byte i; string: order[0] = 1 swaps (BA)
}

// form is how a Codec lays a value out in registers.
type form uint8

const (
	formNone   form = iota
	formNumber      // an integer or float, in its byte order
	formBCD         // decimal digits, one per nibble, in its byte order
	formBool        // a coil or discrete input, carried as a register holding 0 or 1
	formBit         // one bit of a register
	formString      // bytes, two per register
)

// maxStringRegisters is the longest string: one FC16 write carries at most
// 123 registers (config's limit for length, too).
const maxStringRegisters = 123

var codecTypes = map[string]struct {
	kind telemetry.Kind
	form form
	size uint8
}{
	"bool":    {telemetry.KindBool, formBool, 0},
	"int16":   {telemetry.KindInt, formNumber, 2},
	"uint16":  {telemetry.KindUint, formNumber, 2},
	"int32":   {telemetry.KindInt, formNumber, 4},
	"uint32":  {telemetry.KindUint, formNumber, 4},
	"int64":   {telemetry.KindInt, formNumber, 8},
	"uint64":  {telemetry.KindUint, formNumber, 8},
	"float32": {telemetry.KindFloat, formNumber, 4},
	"float64": {telemetry.KindFloat, formNumber, 8},
	"bcd16":   {telemetry.KindUint, formBCD, 2},
	"bcd32":   {telemetry.KindUint, formBCD, 4},
}

// NewCodec returns the codec for a point type of fixed width and a byte
// order. It rejects an unknown type, an order whose length does not fit the
// type, an order that is not a permutation of its letters, and any order for
// bool. A bit of a register and a string have their own constructors
// (NewBitCodec, NewStringCodec), or use PointCodec.
func NewCodec(typ, order string) (Codec, error) {
	t, ok := codecTypes[typ]
	if !ok {
		if typ == "string" {
			return Codec{}, errors.New("type string needs its length in registers: use NewStringCodec")
		}
		return Codec{}, fmt.Errorf("type %q: use one of bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, bcd16, bcd32, string", typ)
	}
	c := Codec{typ: typ, kind: t.kind, form: t.form, size: t.size}
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

// NewBitCodec returns the codec of a bool held in bit (0 = least significant,
// 15 = most) of one register. Decode reads that bit; writing it changes that
// bit alone, so it needs the register's current value: EncodeInto, not
// Encode (the driver reads the register first: see Driver.Write).
func NewBitCodec(bit int) (Codec, error) {
	if bit < 0 || bit > 15 {
		return Codec{}, fmt.Errorf("bit %d: 0 (least significant) to 15", bit)
	}
	return Codec{typ: "bool", kind: telemetry.KindBool, form: formBit, bit: uint8(bit)}, nil
}

// NewStringCodec returns the codec of a string field of length registers
// (1-123), two bytes each, in order AB (default: the first character in the
// high byte) or BA. Decode trims trailing NULs and spaces; Encode pads with
// NULs and refuses a string longer than the field.
func NewStringCodec(length int, order string) (Codec, error) {
	if length < 1 || length > maxStringRegisters {
		return Codec{}, fmt.Errorf("string length %d: 1-%d registers (two characters each)", length, maxStringRegisters)
	}
	c := Codec{typ: "string", kind: telemetry.KindString, form: formString, size: uint8(2 * length)}
	switch order {
	case "", "AB":
	case "BA":
		c.order[0] = 1
	default:
		return Codec{}, fmt.Errorf("order %q: a string's characters stand AB (first character in the high byte) or BA in each register", order)
	}
	return c, nil
}

// PointCodec returns the codec of a configured point: its type, order, bit
// and length. It does not check the point's table (a bool without a bit is a
// coil or discrete input, one with a bit is in a register table): the
// driver does.
func PointCodec(p config.Point) (Codec, error) {
	switch {
	case p.Type == "string":
		if p.Bit != nil {
			return Codec{}, errors.New("bit reads one bit as a bool: give type bool")
		}
		return NewStringCodec(p.Length, p.Order)
	case p.Length != 0:
		return Codec{}, errors.New("length is for type string")
	case p.Bit != nil:
		if p.Type != "bool" {
			return Codec{}, errors.New("bit reads one bit as a bool: give type bool")
		}
		if p.Order != "" {
			return Codec{}, fmt.Errorf("order %q makes no sense for a bool", p.Order)
		}
		return NewBitCodec(*p.Bit)
	}
	return NewCodec(p.Type, p.Order)
}

// Type returns the point type the codec was built for.
func (c Codec) Type() string { return c.typ }

// Kind returns the kind of value Decode produces.
func (c Codec) Kind() telemetry.Kind { return c.kind }

// Registers returns how many 16-bit registers the value spans; for bool it is
// 1 (one coil or discrete input, carried as a register holding 0 or 1, or
// the register that holds the bit).
func (c Codec) Registers() int {
	if c.size == 0 {
		return 1
	}
	return int(c.size) / 2
}

// Bit returns the bit of the register a bit codec reads, and false for every
// other codec.
func (c Codec) Bit() (int, bool) { return int(c.bit), c.form == formBit }

var errNoCodec = errors.New("modbus: zero Codec: use NewCodec")

// Decode converts exactly Registers() registers, in address order, to a
// value: Int for signed types, Uint for unsigned and BCD, Float for floats (a
// float32 becomes the float64 nearest its shortest decimal form: 230.1, not
// 230.10000610351562), Bool for bool (for a coil or discrete input any
// non-zero register is true; for a bit, that bit), String for string. It
// does not allocate, except for a string's value and for errors.
func (c Codec) Decode(regs []uint16) (telemetry.Value, error) {
	return c.decode(regs, "")
}

// decode is Decode; a string equal to prev is returned as prev, so that
// polling an unchanged string allocates nothing.
func (c Codec) decode(regs []uint16, prev string) (telemetry.Value, error) {
	if c.form == formNone {
		return telemetry.Value{}, errNoCodec
	}
	if len(regs) != c.Registers() {
		return telemetry.Value{}, fmt.Errorf("%s needs %d registers, got %d", c.typ, c.Registers(), len(regs))
	}
	switch c.form {
	case formBool:
		return telemetry.Bool(regs[0] != 0), nil
	case formBit:
		return telemetry.Bool(regs[0]>>c.bit&1 != 0), nil
	case formString:
		var buf [2 * maxStringRegisters]byte
		b := c.stringBytes(buf[:c.size], regs)
		n := len(b)
		for n > 0 && (b[n-1] == 0 || b[n-1] == ' ') {
			n--
		}
		if string(b[:n]) == prev {
			return telemetry.String(prev), nil
		}
		return telemetry.String(string(b[:n])), nil
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
		if c.form == formBCD {
			v, ok := fromBCD(u, 2*n)
			if !ok {
				return telemetry.Value{}, bcdErr(u, 2*n)
			}
			return telemetry.Uint(v), nil
		}
		return telemetry.Uint(u), nil
	default: // float
		if n == 4 {
			return telemetry.Float(widen32(math.Float32frombits(uint32(u)))), nil
		}
		return telemetry.Float(math.Float64frombits(u)), nil
	}
}

// stringBytes puts a string field's bytes, in character order, into b.
func (c Codec) stringBytes(b []byte, regs []uint16) []byte {
	hi, lo := 0, 1
	if c.order[0] == 1 {
		hi, lo = 1, 0
	}
	for i, r := range regs {
		b[2*i+hi], b[2*i+lo] = byte(r>>8), byte(r)
	}
	return b
}

// fromBCD reads digits decimal digits, one per nibble, most significant
// first; ok is false if a nibble is above 9.
func fromBCD(u uint64, digits int) (v uint64, ok bool) {
	for i := digits - 1; i >= 0; i-- {
		d := u >> (4 * uint(i)) & 0xf
		if d > 9 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// bcdErr is the reason a sample with a nibble above 9 is bad: the raw
// value, its digits in order, as "invalid BCD 0x12A4".
func bcdErr(u uint64, digits int) error {
	return fmt.Errorf("invalid BCD 0x%0*X", digits, u)
}

// Encode converts v to Registers() registers in address order, the inverse
// of Decode. It checks ranges rather than wrapping: 70000 into an int16, -1
// into a uint32, 1.5 into an int32 or 10000 into a bcd16 are errors, as is a
// finite float beyond float32's range and a string longer than its field.
// Integer and BCD types take Int, Uint or an integral Float; float types take
// any number (integers are rounded to the nearest float); bool takes Bool or
// the numbers 0 and 1; string takes String (padded with NULs).
//
// A bit of a register cannot be encoded alone: use EncodeInto with the
// register's current value.
func (c Codec) Encode(v telemetry.Value) ([]uint16, error) {
	if c.form == formBit {
		return nil, fmt.Errorf("a bool at bit %d of a register is written by read-modify-write: use EncodeInto with the register's current value", c.bit)
	}
	regs := make([]uint16, c.Registers())
	if err := c.EncodeInto(regs, v); err != nil {
		return nil, err
	}
	return regs, nil
}

// EncodeInto is Encode into regs, which must have Registers() elements. For
// a bit of a register, regs holds the register's current value and only the
// bit changes; every other type overwrites regs. On error regs is unchanged.
// It does not allocate, except for errors.
func (c Codec) EncodeInto(regs []uint16, v telemetry.Value) error {
	if c.form == formNone {
		return errNoCodec
	}
	if len(regs) != c.Registers() {
		return fmt.Errorf("%s needs %d registers, got %d", c.typ, c.Registers(), len(regs))
	}
	switch c.form {
	case formBool, formBit:
		b, err := toBool(v)
		if err != nil {
			return err
		}
		if c.form == formBit {
			mask := uint16(1) << c.bit
			if b {
				regs[0] |= mask
			} else {
				regs[0] &^= mask
			}
			return nil
		}
		regs[0] = 0
		if b {
			regs[0] = 1
		}
		return nil
	case formString:
		if v.Kind != telemetry.KindString {
			return fmt.Errorf("cannot write %s value %s to string", v.Kind, v)
		}
		if len(v.S) > int(c.size) {
			return fmt.Errorf("string %s is %d bytes, longer than its field (%d registers, %d bytes)", v, len(v.S), c.Registers(), c.size)
		}
		var buf [2 * maxStringRegisters]byte
		copy(buf[:], v.S) // the rest stays NUL
		hi, lo := 0, 1
		if c.order[0] == 1 {
			hi, lo = 1, 0
		}
		for i := range regs {
			regs[i] = uint16(buf[2*i+hi])<<8 | uint16(buf[2*i+lo])
		}
		return nil
	}
	n := int(c.size)
	bits := 8 * uint(n)
	var u uint64
	switch {
	case c.form == formBCD:
		digits := 2 * n
		x, err := toUint(v, c.typ, bits)
		if err == nil && x >= pow10(digits) {
			err = rangeErr(v, c.typ, "0", strconv.FormatUint(pow10(digits)-1, 10))
		}
		if err != nil {
			return err
		}
		for i := range digits {
			u |= (x % 10) << (4 * uint(i))
			x /= 10
		}
	case c.kind == telemetry.KindInt:
		i, err := toInt(v, c.typ, bits)
		if err != nil {
			return err
		}
		u = uint64(i) & (math.MaxUint64 >> (64 - bits))
	case c.kind == telemetry.KindUint:
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

func pow10(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 10
	}
	return p
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
