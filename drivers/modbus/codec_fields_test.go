package modbus

import (
	"slices"
	"strings"
	"testing"

	"github.com/edged/edged/config"
	"github.com/edged/edged/telemetry"
)

// Golden tables for the codecs that are not plain numbers: a bit of a
// register, fixed-length strings and BCD. Each row is checked both ways:
// the registers decode to the value, and the value encodes to the registers.
// The registers were worked out by hand from the definitions (and the
// integration test has Python put the same kinds of values in a real peer).

func TestCodecBitGolden(t *testing.T) {
	for _, tc := range []struct {
		bit  int
		reg  uint16 // the register as read
		want bool
		set  uint16 // the register after writing true
		clr  uint16 // ... after writing false
	}{
		{0, 0x0000, false, 0x0001, 0x0000},
		{0, 0x0001, true, 0x0001, 0x0000},
		{0, 0xfffe, false, 0xffff, 0xfffe},
		{1, 0x0002, true, 0x0002, 0x0000},
		{3, 0x00f7, false, 0x00ff, 0x00f7},
		{7, 0x0080, true, 0x0080, 0x0000},
		{8, 0x0100, true, 0x0100, 0x0000},
		{8, 0x00ff, false, 0x01ff, 0x00ff},
		{15, 0x8000, true, 0x8000, 0x0000},
		{15, 0x7fff, false, 0xffff, 0x7fff},
		{15, 0xa5a5, true, 0xa5a5, 0x25a5},
	} {
		c, err := NewBitCodec(tc.bit)
		if err != nil {
			t.Fatal(err)
		}
		if c.Registers() != 1 || c.Kind() != telemetry.KindBool || c.Type() != "bool" {
			t.Fatalf("bit codec: %d registers, kind %s, type %s", c.Registers(), c.Kind(), c.Type())
		}
		if b, ok := c.Bit(); !ok || b != tc.bit {
			t.Fatalf("Bit() = %d, %v", b, ok)
		}
		v, err := c.Decode([]uint16{tc.reg})
		if err != nil || !v.Equal(telemetry.Bool(tc.want)) {
			t.Errorf("bit %d: Decode(%#04x) = %v, %v; want %v", tc.bit, tc.reg, v, err, tc.want)
		}
		for _, w := range []struct {
			v    telemetry.Value
			want uint16
		}{{telemetry.Bool(true), tc.set}, {telemetry.Bool(false), tc.clr}, {telemetry.Int(1), tc.set}, {telemetry.Float(0), tc.clr}} {
			regs := []uint16{tc.reg}
			if err := c.EncodeInto(regs, w.v); err != nil || regs[0] != w.want {
				t.Errorf("bit %d: EncodeInto(%#04x, %v) = %#04x, %v; want %#04x", tc.bit, tc.reg, w.v, regs[0], err, w.want)
			}
		}
		// Encode alone would clobber the other bits: it refuses
		if regs, err := c.Encode(telemetry.Bool(true)); err == nil || !strings.Contains(err.Error(), "read-modify-write") {
			t.Errorf("Encode of a bit = %v, %v; want a read-modify-write error", regs, err)
		}
		regs := []uint16{tc.reg}
		if err := c.EncodeInto(regs, telemetry.Int(2)); err == nil || regs[0] != tc.reg {
			t.Errorf("EncodeInto(2) = %#04x, %v; want an error and the register unchanged", regs[0], err)
		}
	}
	for _, bit := range []int{-1, 16} {
		if _, err := NewBitCodec(bit); err == nil {
			t.Errorf("NewBitCodec(%d) accepted", bit)
		}
	}
}

func TestCodecStringGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int
		order  string
		regs   []uint16
		value  string
		encode []uint16 // what value encodes to, if not regs (trimmed spaces become NULs)
	}{
		{"AB: the first character in the high byte", 2, "AB", []uint16{0x4142, 0x4344}, "ABCD", nil},
		{"BA: swapped in each register", 2, "BA", []uint16{0x4241, 0x4443}, "ABCD", nil},
		{"default order is AB", 2, "", []uint16{0x4142, 0x4344}, "ABCD", nil},
		{"odd length, NUL padded", 3, "AB", []uint16{0x4142, 0x4300, 0x0000}, "ABC", nil},
		{"odd length, BA", 3, "BA", []uint16{0x4241, 0x0043, 0x0000}, "ABC", nil},
		{"trailing spaces trimmed", 3, "AB", []uint16{0x4142, 0x2020, 0x2020}, "AB", []uint16{0x4142, 0, 0}},
		{"trailing NULs and spaces mixed", 3, "AB", []uint16{0x4100, 0x2000, 0x0020}, "A", []uint16{0x4100, 0, 0}},
		{"leading spaces kept", 2, "AB", []uint16{0x2041, 0x0000}, " A", nil},
		{"inner NUL kept", 2, "AB", []uint16{0x4100, 0x4200}, "A\x00B", nil},
		{"empty", 2, "AB", []uint16{0, 0}, "", nil},
		{"all spaces", 1, "BA", []uint16{0x2020}, "", []uint16{0}},
		{"UTF-8 bytes as they are", 2, "AB", []uint16{0x32c2, 0xb043}, "2°C", nil},
		{"UTF-8, BA", 2, "BA", []uint16{0xc232, 0x43b0}, "2°C", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewStringCodec(tc.length, tc.order)
			if err != nil {
				t.Fatal(err)
			}
			if c.Registers() != tc.length || c.Kind() != telemetry.KindString || c.Type() != "string" {
				t.Fatalf("%d registers, kind %s, type %s", c.Registers(), c.Kind(), c.Type())
			}
			v, err := c.Decode(tc.regs)
			if err != nil || !v.Equal(telemetry.String(tc.value)) {
				t.Errorf("Decode(%04x) = %v, %v; want %q", tc.regs, v, err, tc.value)
			}
			want := tc.encode
			if want == nil {
				want = tc.regs
			}
			regs, err := c.Encode(telemetry.String(tc.value))
			if err != nil || !slices.Equal(regs, want) {
				t.Errorf("Encode(%q) = %04x, %v; want %04x", tc.value, regs, err, want)
			}
		})
	}
	c, _ := NewStringCodec(2, "AB")
	for _, tc := range []struct {
		v    telemetry.Value
		want string
	}{
		{telemetry.String("ABCDE"), "longer than its field (2 registers, 4 bytes)"},
		{telemetry.String("°°°"), "is 6 bytes"},
		{telemetry.Int(1), "cannot write int value 1 to string"},
		{telemetry.Value{}, "cannot write none"},
	} {
		if regs, err := c.Encode(tc.v); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Encode(%v) = %04x, %v; want an error containing %q", tc.v, regs, err, tc.want)
		}
	}
	for _, tc := range []struct {
		length int
		order  string
	}{{0, "AB"}, {124, "AB"}, {2, "ABCD"}, {2, "CD"}} {
		if _, err := NewStringCodec(tc.length, tc.order); err == nil {
			t.Errorf("NewStringCodec(%d, %q) accepted", tc.length, tc.order)
		}
	}
	if _, err := NewStringCodec(123, "BA"); err != nil {
		t.Errorf("123 registers: %v", err)
	}
	if _, err := NewCodec("string", "AB"); err == nil || !strings.Contains(err.Error(), "NewStringCodec") {
		t.Errorf("NewCodec(string) = %v", err)
	}
}

func TestCodecBCDGolden(t *testing.T) {
	for _, tc := range []struct {
		typ, order string
		regs       []uint16
		value      uint64
	}{
		{"bcd16", "AB", []uint16{0x1234}, 1234},
		{"bcd16", "", []uint16{0x1234}, 1234},
		{"bcd16", "BA", []uint16{0x3412}, 1234},
		{"bcd16", "AB", []uint16{0x0000}, 0},
		{"bcd16", "AB", []uint16{0x9999}, 9999},
		{"bcd16", "AB", []uint16{0x0007}, 7},
		{"bcd16", "BA", []uint16{0x0700}, 7},
		{"bcd32", "ABCD", []uint16{0x1234, 0x5678}, 12345678},
		{"bcd32", "", []uint16{0x1234, 0x5678}, 12345678},
		{"bcd32", "CDAB", []uint16{0x5678, 0x1234}, 12345678},
		{"bcd32", "DCBA", []uint16{0x7856, 0x3412}, 12345678},
		{"bcd32", "BADC", []uint16{0x3412, 0x7856}, 12345678},
		{"bcd32", "ABCD", []uint16{0x9999, 0x9999}, 99999999},
		{"bcd32", "ABCD", []uint16{0x0000, 0x0042}, 42},
		{"bcd32", "CDAB", []uint16{0x0042, 0x0000}, 42},
	} {
		c, err := NewCodec(tc.typ, tc.order)
		if err != nil {
			t.Fatal(err)
		}
		if c.Kind() != telemetry.KindUint {
			t.Fatalf("%s decodes to %s", tc.typ, c.Kind())
		}
		v, err := c.Decode(tc.regs)
		if err != nil || !v.Equal(telemetry.Uint(tc.value)) {
			t.Errorf("%s %s: Decode(%04x) = %v, %v; want %d", tc.typ, tc.order, tc.regs, v, err, tc.value)
		}
		for _, in := range []telemetry.Value{telemetry.Uint(tc.value), telemetry.Int(int64(tc.value)), telemetry.Float(float64(tc.value))} {
			regs, err := c.Encode(in)
			if err != nil || !slices.Equal(regs, tc.regs) {
				t.Errorf("%s %s: Encode(%v %s) = %04x, %v; want %04x", tc.typ, tc.order, in, in.Kind, regs, err, tc.regs)
			}
		}
	}
	// a nibble above 9 is no digit: the sample is bad, the reason shows the
	// raw digits in their order
	for _, tc := range []struct {
		typ, order string
		regs       []uint16
		reason     string
	}{
		{"bcd16", "AB", []uint16{0x12a4}, "invalid BCD 0x12A4"},
		{"bcd16", "BA", []uint16{0xa412}, "invalid BCD 0x12A4"},
		{"bcd16", "AB", []uint16{0xf000}, "invalid BCD 0xF000"},
		{"bcd16", "AB", []uint16{0x000a}, "invalid BCD 0x000A"},
		{"bcd32", "ABCD", []uint16{0x0000, 0x00b0}, "invalid BCD 0x000000B0"},
		{"bcd32", "CDAB", []uint16{0x00b0, 0x0000}, "invalid BCD 0x000000B0"},
		{"bcd32", "ABCD", []uint16{0xffff, 0xffff}, "invalid BCD 0xFFFFFFFF"},
	} {
		c, _ := NewCodec(tc.typ, tc.order)
		v, err := c.Decode(tc.regs)
		if err == nil || err.Error() != tc.reason || !v.IsNone() {
			t.Errorf("%s %s: Decode(%04x) = %v, %v; want error %q", tc.typ, tc.order, tc.regs, v, err, tc.reason)
		}
	}
	for _, tc := range []struct {
		typ  string
		v    telemetry.Value
		want string
	}{
		{"bcd16", telemetry.Uint(10000), "out of range for bcd16 (0 to 9999)"},
		{"bcd16", telemetry.Int(-1), "out of range for bcd16"},
		{"bcd16", telemetry.Float(12.5), "not an integer"},
		{"bcd16", telemetry.Bool(true), "cannot write bool"},
		{"bcd32", telemetry.Uint(100000000), "out of range for bcd32 (0 to 99999999)"},
		{"bcd32", telemetry.String("1"), "cannot write string"},
	} {
		c, _ := NewCodec(tc.typ, "")
		if regs, err := c.Encode(tc.v); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s Encode(%v) = %04x, %v; want an error containing %q", tc.typ, tc.v, regs, err, tc.want)
		}
	}
	for _, tc := range []struct{ typ, order string }{{"bcd16", "ABCD"}, {"bcd32", "AB"}, {"bcd32", "ABCE"}} {
		if _, err := NewCodec(tc.typ, tc.order); err == nil {
			t.Errorf("NewCodec(%s, %s) accepted", tc.typ, tc.order)
		}
	}
}

// TestBCDExhaustive16 checks every register: the 10,000 valid ones decode
// to their digits and encode back; the others are errors.
func TestBCDExhaustive16(t *testing.T) {
	c, _ := NewCodec("bcd16", "AB")
	valid := 0
	for r := range 0x10000 {
		reg := uint16(r)
		v, err := c.Decode([]uint16{reg})
		digitsOK := reg&0xf <= 9 && reg>>4&0xf <= 9 && reg>>8&0xf <= 9 && reg>>12 <= 9
		if (err == nil) != digitsOK {
			t.Fatalf("Decode(%#04x) = %v, %v", reg, v, err)
		}
		if err != nil {
			continue
		}
		valid++
		want := uint64(reg>>12)*1000 + uint64(reg>>8&0xf)*100 + uint64(reg>>4&0xf)*10 + uint64(reg&0xf)
		if v.U != want {
			t.Fatalf("Decode(%#04x) = %d, want %d", reg, v.U, want)
		}
		back, err := c.Encode(v)
		if err != nil || back[0] != reg {
			t.Fatalf("Encode(%d) = %04x, %v", want, back, err)
		}
	}
	if valid != 10000 {
		t.Fatalf("%d valid registers, want 10000", valid)
	}
}

func TestPointCodec(t *testing.T) {
	for _, tc := range []struct {
		p    config.Point
		typ  string
		regs int
		bit  int // -1: none
		err  string
	}{
		{config.Point{Type: "float32", Order: "CDAB"}, "float32", 2, -1, ""},
		{config.Point{Type: "bool"}, "bool", 1, -1, ""},
		{config.Point{Type: "bool", Bit: intp(9)}, "bool", 1, 9, ""},
		{config.Point{Type: "string", Length: 10, Order: "BA"}, "string", 10, -1, ""},
		{config.Point{Type: "bcd32", Order: "CDAB"}, "bcd32", 2, -1, ""},
		{config.Point{Type: "bcd16"}, "bcd16", 1, -1, ""},
		{config.Point{Type: "uint16", Bit: intp(1)}, "", 0, 0, "give type bool"},
		{config.Point{Type: "string", Length: 2, Bit: intp(1)}, "", 0, 0, "give type bool"},
		{config.Point{Type: "bool", Bit: intp(16)}, "", 0, 0, "bit 16"},
		{config.Point{Type: "bool", Bit: intp(1), Order: "AB"}, "", 0, 0, "makes no sense for a bool"},
		{config.Point{Type: "string"}, "", 0, 0, "string length 0"},
		{config.Point{Type: "int16", Length: 2}, "", 0, 0, "length is for type string"},
		{config.Point{Type: "char"}, "", 0, 0, `type "char"`},
	} {
		c, err := PointCodec(tc.p)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("PointCodec(%+v) = %v, want an error containing %q", tc.p, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("PointCodec(%+v): %v", tc.p, err)
			continue
		}
		b, isBit := c.Bit()
		if c.Type() != tc.typ || c.Registers() != tc.regs || (isBit != (tc.bit >= 0)) || (isBit && b != tc.bit) {
			t.Errorf("PointCodec(%+v) = %s, %d registers, bit %d %v", tc.p, c.Type(), c.Registers(), b, isBit)
		}
	}
}
