package modbus

import (
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edged/edged/telemetry"
)

// testdata/modbus_codec_vectors.json is a copy of the project's shared
// reference data, /work/shared/testdata/modbus_codec_vectors.json: every
// numeric type × byte/word order, encoded by Python's struct module (not by
// this code).
type vector struct {
	Type      string      `json:"type"`
	Order     string      `json:"order"`
	Value     json.Number `json:"value"`
	Registers []uint16    `json:"registers"`
	Hex       string      `json:"hex"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	f, err := os.Open("testdata/modbus_codec_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.UseNumber() // uint64 and int64 extremes do not survive float64
	var doc struct {
		Vectors []vector `json:"vectors"`
	}
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) < 100 {
		t.Fatalf("only %d vectors", len(doc.Vectors))
	}
	return doc.Vectors
}

// value converts a vector's JSON number to the value Decode should produce.
func (v vector) value(t *testing.T) telemetry.Value {
	t.Helper()
	s := v.Value.String()
	switch {
	case strings.HasPrefix(v.Type, "int"):
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return telemetry.Int(i)
	case strings.HasPrefix(v.Type, "uint"):
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return telemetry.Uint(u)
	default:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return telemetry.Float(f)
	}
}

func TestCodecVectors(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range loadVectors(t) {
		name := v.Type + "/" + v.Order + "/" + v.Value.String()
		seen[v.Type+"/"+v.Order] = true
		t.Run(name, func(t *testing.T) {
			// the vector's registers are its wire bytes, two by two
			wire, err := hex.DecodeString(v.Hex)
			if err != nil || len(wire) != 2*len(v.Registers) {
				t.Fatalf("bad vector hex %q", v.Hex)
			}
			for i, r := range v.Registers {
				if uint16(wire[2*i])<<8|uint16(wire[2*i+1]) != r {
					t.Fatalf("vector registers %v do not match hex %s", v.Registers, v.Hex)
				}
			}
			c, err := NewCodec(v.Type, v.Order)
			if err != nil {
				t.Fatal(err)
			}
			if c.Registers() != len(v.Registers) {
				t.Fatalf("Registers() = %d, want %d", c.Registers(), len(v.Registers))
			}
			want := v.value(t)
			got, err := c.Decode(v.Registers)
			if err != nil {
				t.Fatal(err)
			}
			same := got.Equal(want)
			if v.Type == "float32" {
				// a float32 decodes to its shortest decimal form: the same
				// float32, not necessarily the same float64 as the vector's
				// exact widening
				same = got.Kind == telemetry.KindFloat && float32(got.F) == float32(want.F) ||
					math.IsNaN(got.F) && math.IsNaN(want.F)
			}
			if !same {
				t.Errorf("Decode(%v) = %v (%s), want %v (%s)", v.Registers, got, got.Kind, want, want.Kind)
			}
			regs, err := c.Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(regs, v.Registers) {
				t.Errorf("Encode(%v) = %v, want %v", want, regs, v.Registers)
			}
			// an integral value may also arrive as a float (JSON commands do)
			if f, _ := want.Float64(); want.Kind != telemetry.KindFloat && math.Abs(f) < 1<<53 {
				regs, err := c.Encode(telemetry.Float(f))
				if err != nil || !slices.Equal(regs, v.Registers) {
					t.Errorf("Encode(Float(%v)) = %v, %v; want %v", f, regs, err, v.Registers)
				}
			}
		})
	}
	for _, typ := range []string{"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"} {
		for _, o := range ordersFor(typ) {
			if !seen[typ+"/"+o] {
				t.Errorf("no vector for %s %s", typ, o)
			}
		}
	}
}

// ordersFor lists config's orders for a type.
func ordersFor(typ string) []string {
	switch typ {
	case "bool":
		return []string{""}
	case "int16", "uint16", "bcd16":
		return []string{"AB", "BA"}
	case "int32", "uint32", "float32", "bcd32":
		return []string{"ABCD", "DCBA", "BADC", "CDAB"}
	}
	return []string{"ABCDEFGH", "HGFEDCBA", "BADCFEHG", "GHEFCDAB"}
}

func TestCodecDefaultOrderIsBigEndian(t *testing.T) {
	for _, typ := range []string{"int16", "uint32", "float32", "int64", "float64"} {
		a, err := NewCodec(typ, "")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := NewCodec(typ, ordersFor(typ)[0])
		if a != b {
			t.Errorf("%s: default order differs from %s", typ, ordersFor(typ)[0])
		}
	}
}

func TestCodecAnyPermutation(t *testing.T) {
	// the order is a permutation, not a fixed list: ACBD swaps the middle bytes
	c, err := NewCodec("uint32", "ACBD")
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Decode([]uint16{0x1133, 0x2244})
	if err != nil || !v.Equal(telemetry.Uint(0x11223344)) {
		t.Fatalf("Decode = %v, %v; want 0x11223344", v, err)
	}
	regs, _ := c.Encode(telemetry.Uint(0x11223344))
	if !slices.Equal(regs, []uint16{0x1133, 0x2244}) {
		t.Fatalf("Encode = %x", regs)
	}
}

func TestCodecBool(t *testing.T) {
	c, err := NewCodec("bool", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Registers() != 1 {
		t.Fatalf("Registers() = %d", c.Registers())
	}
	for _, tc := range []struct {
		reg  uint16
		want bool
	}{{0, false}, {1, true}, {0xff00, true}} {
		v, err := c.Decode([]uint16{tc.reg})
		if err != nil || !v.Equal(telemetry.Bool(tc.want)) {
			t.Errorf("Decode(%#x) = %v, %v", tc.reg, v, err)
		}
	}
	for _, tc := range []struct {
		v    telemetry.Value
		want uint16
	}{
		{telemetry.Bool(true), 1}, {telemetry.Bool(false), 0},
		{telemetry.Int(1), 1}, {telemetry.Uint(0), 0}, {telemetry.Float(1), 1},
	} {
		regs, err := c.Encode(tc.v)
		if err != nil || !slices.Equal(regs, []uint16{tc.want}) {
			t.Errorf("Encode(%v) = %v, %v", tc.v, regs, err)
		}
	}
}

func TestNewCodecErrors(t *testing.T) {
	for _, tc := range []struct{ typ, order, want string }{
		{"int8", "", "type \"int8\""},
		{"", "", "type \"\""},
		{"bool", "AB", "makes no sense for a bool"},
		{"int16", "ABCD", "needs 2 letters"},
		{"int32", "AB", "needs 4 letters"},
		{"int32", "ABCE", "letter 'E'"},
		{"int32", "abcd", "letter 'a'"},
		{"int32", "AABC", "appears twice"},
		{"float64", "ABCDEFGG", "appears twice"},
		{"uint64", "ABCD", "needs 8 letters"},
	} {
		_, err := NewCodec(tc.typ, tc.order)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewCodec(%q, %q) = %v, want an error containing %q", tc.typ, tc.order, err, tc.want)
		}
	}
}

func TestEncodeRange(t *testing.T) {
	for _, tc := range []struct {
		typ string
		v   telemetry.Value
		ok  bool
	}{
		{"int16", telemetry.Int(70000), false},
		{"int16", telemetry.Int(32767), true},
		{"int16", telemetry.Int(32768), false},
		{"int16", telemetry.Int(-32768), true},
		{"int16", telemetry.Int(-32769), false},
		{"int16", telemetry.Uint(32768), false},
		{"int16", telemetry.Float(-32768), true},
		{"int16", telemetry.Float(32768), false},
		{"int16", telemetry.Float(1.5), false},
		{"int16", telemetry.Float(math.NaN()), false},
		{"int16", telemetry.Float(math.Inf(1)), false},
		{"int16", telemetry.Bool(true), false},
		{"int16", telemetry.String("1"), false},
		{"int16", telemetry.Value{}, false},
		{"uint16", telemetry.Int(-1), false},
		{"uint16", telemetry.Int(65535), true},
		{"uint16", telemetry.Int(65536), false},
		{"uint16", telemetry.Float(65535), true},
		{"uint16", telemetry.Float(-0.5), false},
		{"int32", telemetry.Float(1.5), false},
		{"int32", telemetry.Float(-2147483648), true},
		{"int32", telemetry.Float(2147483648), false},
		{"uint32", telemetry.Int(-1), false},
		{"uint32", telemetry.Uint(4294967296), false},
		{"int64", telemetry.Uint(math.MaxInt64), true},
		{"int64", telemetry.Uint(math.MaxInt64 + 1), false},
		{"int64", telemetry.Float(-9223372036854775808), true},
		{"int64", telemetry.Float(9223372036854775808), false},
		{"uint64", telemetry.Int(-1), false},
		{"uint64", telemetry.Uint(math.MaxUint64), true},
		{"uint64", telemetry.Float(18446744073709551616), false},
		{"uint64", telemetry.Float(18446744073709549568), true},
		{"float32", telemetry.Float(1e39), false},
		{"float32", telemetry.Float(-1e39), false},
		{"float32", telemetry.Float(math.Inf(-1)), true},
		{"float32", telemetry.Float(math.NaN()), true},
		{"float32", telemetry.Float(0.1), true},
		{"float32", telemetry.Int(-3), true},
		{"float32", telemetry.Bool(true), false},
		{"float64", telemetry.Float(1e300), true},
		{"float64", telemetry.Uint(math.MaxUint64), true},
		{"float64", telemetry.String("x"), false},
		{"bool", telemetry.Int(2), false},
		{"bool", telemetry.Float(0.5), false},
		{"bool", telemetry.String("true"), false},
	} {
		c, err := NewCodec(tc.typ, "")
		if err != nil {
			t.Fatal(err)
		}
		regs, err := c.Encode(tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("%s Encode(%v %s) = %v, %v; want ok=%v", tc.typ, tc.v.Kind, tc.v, regs, err, tc.ok)
			continue
		}
		if err != nil {
			continue
		}
		// what was accepted reads back as the same number
		got, err := c.Decode(regs)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := tc.v.Float64()
		g, _ := got.Float64()
		if tc.typ == "float32" {
			// the same float32, read back in its shortest decimal form
			want, g = float64(float32(want)), float64(float32(g))
		}
		if g != want && !(math.IsNaN(g) && math.IsNaN(want)) {
			t.Errorf("%s: Decode(Encode(%v)) = %v", tc.typ, tc.v, got)
		}
	}
}

func TestFloat32DecodesToShortestDecimal(t *testing.T) {
	c, _ := NewCodec("float32", "ABCD")
	for _, want := range []float64{230.1, 0.1, -12.25, 49.98, 1e-45, 3.4028235e+38} {
		regs, err := c.Encode(telemetry.Float(want))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := c.Decode(regs)
		if got.F != want {
			t.Errorf("float32 %v decodes to %v", want, got.F)
		}
	}
}

func TestDecodeWrongLength(t *testing.T) {
	c, _ := NewCodec("float32", "CDAB")
	for _, regs := range [][]uint16{nil, {1}, {1, 2, 3}} {
		if _, err := c.Decode(regs); err == nil {
			t.Errorf("Decode(%v) accepted %d registers", regs, len(regs))
		}
	}
	var zero Codec
	if _, err := zero.Decode([]uint16{1}); err == nil {
		t.Error("zero Codec decoded")
	}
	if _, err := zero.Encode(telemetry.Int(1)); err == nil {
		t.Error("zero Codec encoded")
	}
}

func TestDecodeAllocs(t *testing.T) {
	for _, typ := range []string{"bool", "int16", "uint32", "float32", "int64", "float64", "bcd16", "bcd32"} {
		o := ordersFor(typ)
		c, _ := NewCodec(typ, o[len(o)-1])
		regs := make([]uint16, c.Registers())
		if n := testing.AllocsPerRun(100, func() { _, _ = c.Decode(regs) }); n != 0 {
			t.Errorf("%s: Decode allocates %v times", typ, n)
		}
	}
	bit, _ := NewBitCodec(7)
	if n := testing.AllocsPerRun(100, func() { _, _ = bit.Decode([]uint16{0x80}) }); n != 0 {
		t.Errorf("bit: Decode allocates %v times", n)
	}
	// a string allocates its value, unless it is the one the point had
	str, _ := NewStringCodec(4, "AB")
	regs := []uint16{0x4142, 0x4344, 0x2000, 0}
	if n := testing.AllocsPerRun(100, func() { _, _ = str.decode(regs, "ABCD") }); n != 0 {
		t.Errorf("string: decode of an unchanged value allocates %v times", n)
	}
	bits := []uint16{0x80}
	if n := testing.AllocsPerRun(100, func() { _ = bit.EncodeInto(bits, telemetry.Bool(false)) }); n != 0 {
		t.Errorf("bit: EncodeInto allocates %v times", n)
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, tc := range []struct{ typ, order string }{
		{"uint16", "AB"}, {"int32", "CDAB"}, {"float32", "BADC"}, {"float64", "GHEFCDAB"},
		{"bcd16", "BA"}, {"bcd32", "CDAB"}, {"bit", "7"}, {"string", "AB"},
	} {
		var c Codec
		switch tc.typ {
		case "bit":
			c, _ = NewBitCodec(7)
		case "string":
			c, _ = NewStringCodec(8, tc.order) // 16 characters, a serial number
		default:
			c, _ = NewCodec(tc.typ, tc.order)
		}
		regs := []uint16{0x4142, 0x4344, 0x4546, 0x4748, 0x3132, 0x3334, 0x3536, 0x3738}[:c.Registers()]
		if c.form == formBCD {
			regs = []uint16{0x1234, 0x5678}[:c.Registers()]
		}
		b.Run(tc.typ+"_"+tc.order, func(b *testing.B) {
			b.ReportAllocs()
			var sink telemetry.Value
			for b.Loop() {
				sink, _ = c.Decode(regs)
			}
			_ = sink
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	c, _ := NewCodec("float32", "CDAB")
	v := telemetry.Float(123.456)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = c.Encode(v)
	}
}

var fuzzTypes = []string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bcd16", "bcd32", "bit", "string"}

// FuzzDecode feeds any type, order and registers to the codec: it never
// panics, rejects what it cannot decode, and for every integer and BCD type
// (and every float that is not a NaN) Encode(Decode(x)) == x; a bit written
// back into its register leaves the register as it was; a string reads back
// as itself once written.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(1), "AB", []byte{0x80, 0x00})
	f.Add(uint8(7), "CDAB", []byte{0x42, 0xf6, 0xe9, 0x79})
	f.Add(uint8(8), "HGFEDCBA", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(6), "", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(0), "", []byte{0, 1})
	f.Add(uint8(3), "ABCE", []byte{1, 2, 3})
	f.Add(uint8(9), "BA", []byte{0x12, 0x34})
	f.Add(uint8(10), "CDAB", []byte{0x56, 0x78, 0x12, 0x3a})
	f.Add(uint8(11), "abcdefg", []byte{0x80, 0x01})
	f.Add(uint8(12), "BA", []byte{'e', 'M', 't', 'e', 'r', ' ', 0, 0})
	f.Fuzz(func(t *testing.T, typ uint8, order string, raw []byte) {
		name := fuzzTypes[int(typ)%len(fuzzTypes)]
		var c Codec
		var err error
		switch name {
		case "bit":
			c, err = NewBitCodec(len(order) % 16)
		case "string":
			o := "AB"
			if len(order)%2 == 1 {
				o = "BA"
			}
			// the length comes from the order, so that it may or may not fit raw
			c, err = NewStringCodec(1+len(order)%8, o)
		default:
			c, err = NewCodec(name, order)
			if err != nil {
				// still exercise this type with a valid order the input picks
				o := ordersFor(name)
				c, err = NewCodec(name, o[len(order)%len(o)])
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		regs := make([]uint16, len(raw)/2)
		for i := range regs {
			regs[i] = uint16(raw[2*i])<<8 | uint16(raw[2*i+1])
		}
		v, err := c.Decode(regs)
		if len(regs) != c.Registers() {
			if err == nil {
				t.Fatalf("Decode accepted %d registers for %s", len(regs), name)
			}
			return
		}
		if c.form == formBCD && err != nil {
			if !strings.HasPrefix(err.Error(), "invalid BCD 0x") {
				t.Fatalf("bcd error %q", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if v.Kind != c.Kind() {
			t.Fatalf("Decode gave %s, codec says %s", v.Kind, c.Kind())
		}
		switch {
		case name == "bit":
			back := slices.Clone(regs)
			if err := c.EncodeInto(back, v); err != nil || !slices.Equal(back, regs) {
				t.Fatalf("bit %d: EncodeInto(%x, %v) = %x, %v", c.bit, regs, v, back, err)
			}
			return
		case name == "string":
			if len(v.S) > 2*c.Registers() || strings.HasSuffix(v.S, " ") || strings.HasSuffix(v.S, "\x00") {
				t.Fatalf("Decode(%x) = %q: not trimmed or too long", regs, v.S)
			}
			back, err := c.Encode(v)
			if err != nil {
				t.Fatalf("Encode(Decode(%x)) = %v", regs, err)
			}
			if again, _ := c.Decode(back); !again.Equal(v) {
				t.Fatalf("string %x reads %q, written back reads %q", regs, v.S, again.S)
			}
			return
		case name == "bool" || (v.Kind == telemetry.KindFloat && math.IsNaN(v.F)):
			// any non-zero register is true; NaN payloads need not survive
			_, err := c.Encode(v)
			if err != nil {
				t.Fatalf("Encode(%v): %v", v, err)
			}
			return
		}
		back, err := c.Encode(v)
		if err != nil {
			t.Fatalf("Encode(Decode(%x)) = %v", regs, err)
		}
		if !slices.Equal(back, regs) {
			t.Fatalf("%s %s: Encode(Decode(%x)) = %x (value %v)", name, order, regs, back, v)
		}
	})
}
