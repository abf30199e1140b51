package modbussim

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file is the simulator's own value encoder. It is deliberately
// independent of the gateway's codec (drivers/modbus) so that each can serve
// as the other's oracle in tests.

// valueType is a signal's data type.
type valueType uint8

const (
	typeBool valueType = iota
	typeInt16
	typeUint16
	typeInt32
	typeUint32
	typeInt64
	typeUint64
	typeFloat32
	typeFloat64
)

var typeNames = map[string]valueType{
	"bool": typeBool, "int16": typeInt16, "uint16": typeUint16,
	"int32": typeInt32, "uint32": typeUint32, "int64": typeInt64,
	"uint64": typeUint64, "float32": typeFloat32, "float64": typeFloat64,
}

func (t valueType) String() string {
	for n, v := range typeNames {
		if v == t {
			return n
		}
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// bytes is the type's size on the wire; 0 for a bit.
func (t valueType) bytes() int {
	switch t {
	case typeInt16, typeUint16:
		return 2
	case typeInt32, typeUint32, typeFloat32:
		return 4
	case typeInt64, typeUint64, typeFloat64:
		return 8
	}
	return 0
}

// words is the number of 16-bit registers the type occupies (1 for a bit,
// which occupies one coil or discrete input).
func (t valueType) words() int {
	if t == typeBool {
		return 1
	}
	return t.bytes() / 2
}

func (t valueType) isInt() bool {
	return t != typeBool && t != typeFloat32 && t != typeFloat64
}

// intRange is the range of an integer type as float64: lo <= v < end.
// (end is exclusive because math.MaxUint64 and math.MaxInt64 round up to
// 2^64 and 2^63 as float64.)
func (t valueType) intRange() (lo, end float64) {
	bits := float64(8 * t.bytes())
	switch t {
	case typeInt16, typeInt32, typeInt64:
		return -math.Exp2(bits - 1), math.Exp2(bits - 1)
	case typeUint16, typeUint32, typeUint64:
		return 0, math.Exp2(bits)
	}
	return math.Inf(-1), math.Inf(1)
}

// orders lists the accepted byte orders per width in bytes; the first is the
// default (big-endian). Each letter names one of the value's big-endian bytes
// (A = most significant); the order of letters is their order on the wire.
var orders = map[int][]string{
	2: {"AB", "BA"},
	4: {"ABCD", "DCBA", "BADC", "CDAB"},
	8: {"ABCDEFGH", "HGFEDCBA", "BADCFEHG", "GHEFCDAB"},
}

// perm is a byte order compiled: wire byte i is big-endian byte perm[i].
type perm [8]uint8

func parseOrder(t valueType, order string) (perm, error) {
	var p perm
	n := t.bytes()
	if n == 0 {
		if order != "" {
			return p, fmt.Errorf("order %q given for a bool", order)
		}
		return p, nil
	}
	if order == "" {
		order = orders[n][0]
	}
	ok := false
	for _, o := range orders[n] {
		ok = ok || o == order
	}
	if !ok {
		return p, fmt.Errorf("order %q is not one of %v for %s", order, orders[n], t)
	}
	for i := 0; i < n; i++ {
		p[i] = order[i] - 'A'
	}
	return p, nil
}

// toBits rounds raw to an integer and wraps it modulo 2^bits (two's
// complement for negative values), as a counter register rolls over. NaN and
// infinities give 0.
func toBits(raw float64, bits int) uint64 {
	r := math.Round(raw)
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return 0
	}
	if bits == 64 {
		r = math.Mod(r, 1<<64) // (-2^64, 2^64), still an integer
		switch {
		case r >= 1<<63:
			return uint64(r)
		case r >= -(1 << 63):
			return uint64(int64(r))
		default: // (-2^64, -2^63): exact after adding 2^64
			return uint64(r + (1 << 64))
		}
	}
	m := math.Ldexp(1, bits)
	r = math.Mod(r, m)
	if r < 0 {
		r += m
	}
	return uint64(r) & (1<<bits - 1)
}

// encode writes raw, encoded as t in byte order p, into w (t.words()
// registers). Integer types are rounded and wrap (see toBits).
func encode(t valueType, p *perm, raw float64, w []uint16) {
	var be [8]byte
	n := t.bytes()
	switch t {
	case typeFloat32:
		binary.BigEndian.PutUint32(be[:], math.Float32bits(float32(raw)))
	case typeFloat64:
		binary.BigEndian.PutUint64(be[:], math.Float64bits(raw))
	default:
		b := toBits(raw, n*8)
		for i := n - 1; i >= 0; i-- {
			be[i] = byte(b)
			b >>= 8
		}
	}
	for i := 0; i < n; i += 2 {
		w[i/2] = uint16(be[p[i]])<<8 | uint16(be[p[i+1]])
	}
}

// EncodeRegisters encodes v as the registers a device holding it would
// return: typ is int16, uint16, int32, uint32, int64, uint64, float32 or
// float64; order is one of AB/BA, ABCD/DCBA/BADC/CDAB or
// ABCDEFGH/HGFEDCBA/BADCFEHG/GHEFCDAB ("" = big-endian). Integer values are
// rounded and wrap modulo 2^bits. It exists so that tests of a Modbus client
// can check their decoder against an independent encoder.
func EncodeRegisters(typ, order string, v float64) ([]uint16, error) {
	t, ok := typeNames[typ]
	if !ok || t == typeBool {
		return nil, fmt.Errorf("modbussim: unknown register type %q", typ)
	}
	p, err := parseOrder(t, order)
	if err != nil {
		return nil, fmt.Errorf("modbussim: %w", err)
	}
	w := make([]uint16, t.words())
	encode(t, &p, v, w)
	return w, nil
}
