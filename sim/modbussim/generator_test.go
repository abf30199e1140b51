package modbussim

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestGenerators(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name string
		gen  generator
		at   time.Duration
		want float64
	}{
		{"const", &constGen{v: 42.5}, 99 * s, 42.5},
		{"counter at 0", &counterGen{start: 10, step: 3, per: s}, 0, 10},
		{"counter just before a step", &counterGen{start: 10, step: 3, per: s}, 999 * time.Millisecond, 10},
		{"counter after 5 steps", &counterGen{start: 10, step: 3, per: s}, 5 * s, 25},
		{"counter per 10s", &counterGen{start: 0, step: 1, per: 10 * s}, 25 * s, 2},
		{"counter down", &counterGen{start: 0, step: -2, per: s}, 3 * s, -6},
		{"sine at 0", &sineGen{amplitude: 10, offset: 230, period: 60 * s}, 0, 230},
		{"sine at quarter", &sineGen{amplitude: 10, offset: 230, period: 60 * s}, 15 * s, 240},
		{"sine at three quarters", &sineGen{amplitude: 10, offset: 230, period: 60 * s}, 45 * s, 220},
		{"sine next period", &sineGen{amplitude: 10, offset: 230, period: 60 * s}, 75 * s, 240},
		{"sine phase", &sineGen{amplitude: 10, offset: 230, period: 60 * s, phase: 15 * s}, 0, 240},
		{"square high", &squareGen{low: 0, high: 1, duty: 0.25, period: 4 * s}, 0, 1},
		{"square low", &squareGen{low: 0, high: 1, duty: 0.25, period: 4 * s}, s, 0},
		{"square next period", &squareGen{low: 5, high: 9, duty: 0.5, period: 4 * s}, 4*s + 1, 9},
		{"toggle first period", &toggleGen{period: 30 * s}, 29 * s, 0},
		{"toggle second period", &toggleGen{period: 30 * s}, 30 * s, 1},
		{"toggle third period", &toggleGen{period: 30 * s}, 61 * s, 0},
		{"toggle phase", &toggleGen{period: 30 * s, phase: 30 * s}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.gen.value(tt.at); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("value(%v) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestRandomWalk(t *testing.T) {
	mk := func(seed uint64) *walkGen {
		return &walkGen{cur: 20, step: 0.5, min: 15, max: 25, every: time.Second, seed: seed}
	}
	// The walk is a function of the seed and the step index, not of how
	// often it is read.
	a, b := mk(1), mk(1)
	var va float64
	for i := 0; i <= 1000; i++ {
		va = a.value(time.Duration(i) * time.Second)
	}
	if vb := b.value(1000 * time.Second); vb != va {
		t.Errorf("read every step: %v, read once: %v", va, vb)
	}
	// Bounds, step size, and that it moves at all.
	g := mk(2)
	prev, moved := g.value(0), false
	if prev != 20 {
		t.Fatalf("start %v, want 20", prev)
	}
	for i := 1; i <= 10000; i++ {
		v := g.value(time.Duration(i) * time.Second)
		if v < 15 || v > 25 {
			t.Fatalf("step %d: %v outside 15..25", i, v)
		}
		if math.Abs(v-prev) > 0.5+1e-12 {
			t.Fatalf("step %d moved %v, more than 0.5", i, v-prev)
		}
		moved = moved || v != prev
		prev = v
	}
	if !moved {
		t.Fatal("random walk never moved")
	}
	// Same elapsed step: no move.
	if v := g.value(10000*time.Second + 999*time.Millisecond); v != prev {
		t.Errorf("moved within one step: %v -> %v", prev, v)
	}
	// Different seeds differ.
	if mk(1).value(100*time.Second) == mk(3).value(100*time.Second) {
		t.Error("seeds 1 and 3 walked alike")
	}
	// A long idle gap costs at most maxCatchUp steps.
	h := mk(4)
	h.value(1e6 * time.Second)
	if h.n != 1e6 {
		t.Errorf("steps %d after a long gap, want 1e6", h.n)
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		typ, order string
		v          float64
		want       []uint16
	}{
		{"uint16", "", 0x1234, []uint16{0x1234}},
		{"uint16", "AB", 0x1234, []uint16{0x1234}},
		{"uint16", "BA", 0x1234, []uint16{0x3412}},
		{"int16", "", -2, []uint16{0xfffe}},
		{"int16", "", 2.6, []uint16{3}},
		{"int16", "", -2.5, []uint16{0xfffd}},  // round half away from zero
		{"uint16", "", 65536 + 5, []uint16{5}}, // wraps
		{"uint16", "", -1, []uint16{0xffff}},
		{"int32", "ABCD", 0x01020304, []uint16{0x0102, 0x0304}},
		{"int32", "DCBA", 0x01020304, []uint16{0x0403, 0x0201}},
		{"int32", "BADC", 0x01020304, []uint16{0x0201, 0x0403}},
		{"int32", "CDAB", 0x01020304, []uint16{0x0304, 0x0102}},
		{"int32", "", -1, []uint16{0xffff, 0xffff}},
		{"uint32", "", 1<<32 + 7, []uint16{0, 7}},
		{"float32", "ABCD", 230.5, []uint16{0x4366, 0x8000}},
		{"float32", "CDAB", 230.5, []uint16{0x8000, 0x4366}},
		{"float32", "DCBA", 1, []uint16{0x0000, 0x803f}},
		{"float32", "BADC", 1, []uint16{0x803f, 0x0000}},
		// values go through float64: exact below 2^53
		{"int64", "ABCDEFGH", 0x0011020304050607, []uint16{0x0011, 0x0203, 0x0405, 0x0607}},
		{"int64", "HGFEDCBA", 0x0011020304050607, []uint16{0x0706, 0x0504, 0x0302, 0x1100}},
		{"int64", "BADCFEHG", 0x0011020304050607, []uint16{0x1100, 0x0302, 0x0504, 0x0706}},
		{"int64", "GHEFCDAB", 0x0011020304050607, []uint16{0x0607, 0x0405, 0x0203, 0x0011}},
		{"int64", "", -2, []uint16{0xffff, 0xffff, 0xffff, 0xfffe}},
		{"uint64", "", 1 << 63, []uint16{0x8000, 0, 0, 0}},
		{"uint64", "", math.MaxUint64, []uint16{0, 0, 0, 0}}, // 2^64 as a float64: wraps to 0
		{"int64", "", -(1 << 63), []uint16{0x8000, 0, 0, 0}},
		{"float64", "", 1, []uint16{0x3ff0, 0, 0, 0}},
		{"float64", "GHEFCDAB", -2, []uint16{0, 0, 0, 0xc000}},
		{"int16", "", math.NaN(), []uint16{0}},
	}
	for _, tt := range tests {
		got, err := EncodeRegisters(tt.typ, tt.order, tt.v)
		if err != nil {
			t.Errorf("%s %s %v: %v", tt.typ, tt.order, tt.v, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s %s %v: got %04x, want %04x", tt.typ, tt.order, tt.v, got, tt.want)
		}
	}
	for _, bad := range [][2]string{{"bool", ""}, {"int24", ""}, {"int32", "AB"}, {"int16", "ABCD"}, {"float32", "ACBD"}} {
		if _, err := EncodeRegisters(bad[0], bad[1], 1); err == nil {
			t.Errorf("%s %s: no error", bad[0], bad[1])
		}
	}
}
