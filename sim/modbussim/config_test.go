package modbussim

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLoadDemoConfig(t *testing.T) {
	cfg, err := LoadConfig("testdata/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Units) != 2 || cfg.Units[0].ID != 1 || cfg.Units[1].ID != 2 {
		t.Fatalf("units %+v", cfg.Units)
	}
	s := startServer(t, cfg)
	cl := dial(t, s)
	for _, unit := range []byte{1, 2} {
		if got := cl.readRegs(unit, 3, 0, 3); got[0] != 100 || got[1] != 0x41cc || got[2] != 0 {
			t.Errorf("unit %d holding 0-2 = %04x, want ct_ratio 100 and demand_limit 25.5 (41cc 0000)", unit, got)
		}
		cl.readRegs(unit, 4, 0, 9) // the whole input map is readable in one request
	}
}

// TestReadmeConfig keeps the README's example config loadable.
func TestReadmeConfig(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(m) == 0 {
		t.Fatal("no yaml block in README.md")
	}
	for i, block := range m {
		cfg, err := ParseConfig("README.md block "+string(rune('1'+i)), block[1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error, in this order of lines
	}{
		{"unknown key", `
units:
  - id: 1
    holding_registers:
      - address: 0
        const: {value: 1}
        colour: red
`, []string{"t.yaml:6: ", `unknown field "colour"`}},
		{"unknown generator key", `
units:
  - id: 1
    coils:
      - address: 0
        toggle: {period: 1s, duty: 0.5}
`, []string{"t.yaml:5: ", `unknown field "duty"`}},
		{"duration as a number", `
units:
  - id: 1
    coils:
      - address: 0
        toggle: {period: 10}
`, []string{"t.yaml:5: "}},
		{"bad const value", `
units:
  - id: 1
    holding_registers:
      - address: 0
        const: {value: 1}
      - address: 1
        const:
          value: lots
`, []string{"t.yaml:8: ", `"lots" is neither a number nor true/false`}},
		{"yaml syntax", "units: [\n", []string{"t.yaml:1: "}},
		{"validation, every mistake with its line", `
unknown_unit: loud
units:
  - id: 1
    name: meter
    input_registers:
      - name: voltage
        address: 0
        type: float33
        const: {value: 1}
      - name: current
        address: 2
        type: float32
        order: CDBA
        sine: {amplitude: 1, offset: 10, period: 0s}
      - name: temp
        address: 4
        type: int16
        scale: 0.1
        sine: {amplitude: 10, offset: 3270, period: 1m}
      - name: energy
        address: 5
        type: uint32
        const: {value: 1}
        counter: {step: 1}
      - name: power
        address: 10
        type: float32
        const: {value: 1}
      - name: overlapping
        address: 11
        type: uint16
        const: {value: 1}
    coils:
      - name: breaker
        address: 0
        sine: {amplitude: 1, period: 1s}
      - name: walk
        address: 1
        type: int16
        const: {value: 1}
  - id: 1
    profile: nope
    discrete_inputs:
      - count: 3
        random_walk: {start: 5, step: 1, min: 10, max: 0}
`, []string{
			"t.yaml:1: unknown_unit",
			`t.yaml:8: unit 1 "meter" input_registers[0] "voltage": unknown type "float33"`,
			`t.yaml:13: unit 1 "meter" input_registers[1] "current": order "CDBA"`,
			`t.yaml:14: unit 1 "meter" input_registers[1] "current": period must be > 0`,
			`t.yaml:19: unit 1 "meter" input_registers[2] "temp": raw values 32600..32800 do not fit int16`,
			`t.yaml:20: unit 1 "meter" input_registers[3] "energy": give exactly one generator`,
			`t.yaml:29: unit 1 "meter" input_registers[5] "overlapping": input_registers address 11 overlaps unit 1 "meter" input_registers[4] "power" (addresses 10-11)`,
			`t.yaml:36: unit 1 "meter" coils[0] "breaker": a bool takes const, square or toggle, not sine`,
			`t.yaml:39: unit 1 "meter" coils[1] "walk": type int16 in a bit table`,
			`t.yaml:41: unit 1: duplicate unit id`,
			`t.yaml:42: unit 1: unknown profile "nope"`,
			`t.yaml:44: unit 1 discrete_inputs[0]: address is required`,
			`t.yaml:45: unit 1 discrete_inputs[0]: a bool takes const, square or toggle, not random_walk`,
		}},
		{"missing id", `
units:
  - name: x
    coils: [{address: 0, const: {value: true}}]
`, []string{"t.yaml:2: units[0]: id is required"}},
		{"profile overlap reported once, at the unit", `
profiles:
  meter:
    holding_registers:
      - {name: a, address: 0, type: float32, const: {value: 1}}
      - {name: b, address: 1, const: {value: 1}}
units:
  - id: 1
    profile: meter
    holding_registers:
      - {name: c, address: 1, type: uint32, const: {value: 1}}
  - id: 2
    profile: meter
`, []string{
			`t.yaml:5: profile "meter" holding_registers[1] "b": holding_registers address 1 overlaps`,
			`t.yaml:10: unit 1 holding_registers[0] "c": holding_registers address 1 overlaps profile "meter" holding_registers[1] "b"`,
		}},
		{"bulk past the end", `
units:
  - id: 1
    holding_registers:
      - {address: 65530, count: 4, type: uint32, const: {value: 1}}
`, []string{"t.yaml:4: ", "signal ends at address 65537, past 65535"}},
		{"stride too small", `
units:
  - id: 1
    holding_registers:
      - {address: 0, count: 4, stride: 1, type: uint32, const: {value: 1}}
`, []string{"t.yaml:4: ", "stride 1 is less than the width of a uint32 (2)"}},
		{"no units", "unknown_unit: silent\n", []string{"t.yaml:", "no units"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("t.yaml", []byte(strings.TrimPrefix(tt.yaml, "\n")))
			if err == nil {
				t.Fatal("no error")
			}
			var errs ConfigErrors
			if !errors.As(err, &errs) {
				t.Fatalf("%T, want ConfigErrors: %v", err, err)
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error lacks %q (in order):\n%s", w, msg)
				}
				rest = rest[i+len(w):]
			}
			if testing.Verbose() {
				t.Logf("\n%s", msg)
			}
		})
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("units:\n  - id: 300\n    coils: [{address: 0, const: {value: 1}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(p)
	if err == nil || !strings.Contains(err.Error(), p+":2: unit 300: id must be 0-255") {
		t.Errorf("got %v", err)
	}
}

func TestValidateGo(t *testing.T) {
	cfg := Config{Units: []Unit{{ID: 1, Tables: Tables{HoldingRegisters: []Signal{
		{Address: 0, Type: "int16", Generator: Generator{RandomWalk: &RandomWalk{Start: 0, Step: 1, Min: -1e6, Max: 1e6}}},
	}}}}}
	_, err := New(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), `modbussim: unit 1 holding_registers[0]: raw values -1e+06..1e+06 do not fit int16`) {
		t.Fatalf("got %v", err)
	}
	cfg.Units[0].HoldingRegisters[0].Scale = 100
	if err := cfg.Validate(); err != nil {
		t.Fatalf("scaled: %v", err)
	}
	// counters wrap, so any range is fine
	cfg.Units[0].HoldingRegisters[0].Generator = Generator{Counter: &Counter{Start: 1e9, Per: time.Millisecond}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("counter: %v", err)
	}
}

func TestNumber(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		bad  bool
	}{
		{in: "true", want: 1}, {in: "false", want: 0},
		{in: "42", want: 42}, {in: "-42", want: -42}, {in: "010", want: 10},
		{in: "0x1F", want: 31}, {in: "-0x10", want: -16}, {in: "0o17", want: 15}, {in: "0b101", want: 5},
		{in: "1_000", want: 1000}, {in: "230.5", want: 230.5}, {in: "-1e3", want: -1000},
		{in: "18446744073709551615", want: 18446744073709551615},
		{in: "abc", bad: true}, {in: "", bad: true}, {in: "[1]", bad: true}, {in: "0x", bad: true},
	}
	for _, tt := range tests {
		var n Number
		err := n.UnmarshalYAML([]byte(tt.in))
		if tt.bad {
			if err == nil {
				t.Errorf("%q: %v, want an error", tt.in, n)
			}
			continue
		}
		if err != nil || float64(n) != tt.want {
			t.Errorf("%q: %v, %v; want %v", tt.in, n, err, tt.want)
		}
	}
}

func TestConstRange(t *testing.T) {
	tests := []struct {
		typ string
		v   float64
		ok  bool
	}{
		{"int16", 32767, true}, {"int16", 32767.6, false}, {"int16", -32768, true}, {"int16", -32769, false},
		{"uint16", 65535, true}, {"uint16", 65536, false}, {"uint16", -0.4, true}, {"uint16", -1, false},
		{"int32", math.MaxInt32, true}, {"int32", math.MaxInt32 + 1, false},
		{"uint32", math.MaxUint32, true}, {"uint32", math.MaxUint32 + 1, false},
		{"int64", -(1 << 63), true}, {"int64", math.MaxInt64, false}, // rounds to 2^63
		{"uint64", 1 << 63, true}, {"uint64", math.MaxUint64, false}, // rounds to 2^64
		{"float32", 1e30, true},
	}
	for _, tt := range tests {
		cfg := Config{Units: []Unit{{ID: 1, Tables: Tables{HoldingRegisters: []Signal{{Address: 0, Type: tt.typ, Generator: c(tt.v)}}}}}}
		if err := cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s %v: %v, want ok=%v", tt.typ, tt.v, err, tt.ok)
		}
	}
}
