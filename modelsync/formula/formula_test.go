package formula

import (
	"errors"
	"testing"

	"github.com/edged/edged/telemetry"
)

var inputs = map[string]telemetry.Kind{
	"p_a": telemetry.KindFloat, "p_b": telemetry.KindFloat, "status": telemetry.KindUint,
	"n": telemetry.KindInt, "on": telemetry.KindBool, "off": telemetry.KindBool, "name": telemetry.KindString,
}

func TestCompileAndRun(t *testing.T) {
	vals := map[string]telemetry.Value{
		"p_a": telemetry.Float(1.5), "p_b": telemetry.Float(0), "status": telemetry.Uint(0b1010),
		"n": telemetry.Int(-3), "on": telemetry.Bool(true), "off": telemetry.Bool(false), "name": telemetry.String("x"),
	}
	r := NewRunner()
	for _, c := range []struct {
		src  string
		out  telemetry.Kind
		want telemetry.Value
		err  string
	}{
		{"p_a + p_b * 2", telemetry.KindFloat, telemetry.Float(1.5), ""},
		{"bit(status, 1)", telemetry.KindBool, telemetry.Bool(true), ""},
		{"bit(status, 2)", telemetry.KindBool, telemetry.Bool(false), ""},
		{"bits(status, 1, 3)", telemetry.KindInt, telemetry.Int(5), ""},
		{"xor(on, off)", telemetry.KindBool, telemetry.Bool(true), ""},
		{"on and not off", telemetry.KindBool, telemetry.Bool(true), ""},
		{"p_a / p_b", telemetry.KindFloat, telemetry.Value{}, "division by zero"},
		{"n / 0", telemetry.KindFloat, telemetry.Value{}, "division by zero"},
		{"n % 0", telemetry.KindInt, telemetry.Value{}, "division by zero"},
		{"n / 2", telemetry.KindFloat, telemetry.Float(-1.5), ""},
		{"n * 2", telemetry.KindInt, telemetry.Int(-6), ""},
		{"status", telemetry.KindInt, telemetry.Int(10), ""},
		{"name + 'y'", telemetry.KindString, telemetry.String("xy"), ""},
		{"on ? 1 : 'x'", telemetry.KindNone, telemetry.Int(1), ""},
	} {
		p, err := Compile(c.src, inputs)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		if p.Out != c.out {
			t.Errorf("%s: out %v, want %v", c.src, p.Out, c.out)
		}
		in := make([]telemetry.Value, len(p.Inputs))
		for i, n := range p.Inputs {
			in[i] = vals[n]
		}
		got, err := p.Run(r, in)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("%s: err %v, want %s", c.src, err, c.err)
			}
			if c.err == "division by zero" && !errors.Is(err, ErrDivisionByZero) {
				t.Errorf("%s: not ErrDivisionByZero", c.src)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("%s = %v, %v; want %v", c.src, got, err, c.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"p_a + p_x", "unknown name p_x: not a point of the profile nor a function (column 7)"},
		{"p_a +", "unexpected token EOF (column 5)"},
		{"bit(p_a, 1)", "cannot use float64 as argument (type int) to call bit  (column 5)"},
		{"", "the expression is empty"},
		{"[p_a]", "the expression gives a []interface {}; a measure point is a number, a bool or a string"},
	} {
		_, err := Compile(c.src, inputs)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %s", c.src, err, c.want)
		}
	}
}
