// Package formula compiles and runs the expressions of computed measure
// points (a profile's `measures: [{id, expr}]`), with
// github.com/expr-lang/expr: the names in an expression are the raw points
// of the profile, typed (bool, int, float, string); the functions are
// expr's builtins plus bit, bits and xor; division by zero is an error,
// never Inf.
//
// It imports nothing of ours but telemetry, so that config can check the
// expressions at load and modelsync can run them.
package formula

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/edged/edged/telemetry"
)

// ErrDivisionByZero is the error of a division or modulo by zero.
var ErrDivisionByZero = errors.New("division by zero")

// Program is a compiled expression. It is immutable and safe for
// concurrent use; each goroutine runs it with its own Runner.
type Program struct {
	Source string
	// Inputs are the names of the raw points the expression reads, in the
	// order Run takes their values.
	Inputs []string
	// Out is the kind of the result when the type checker knows it
	// (KindBool, KindInt, KindFloat, KindString), KindNone when it depends
	// on the values (e.g. a ? 1 : "x").
	Out  telemetry.Kind
	prog *vm.Program
}

// collector records the identifiers that name inputs.
type collector struct {
	inputs map[string]telemetry.Kind
	seen   map[string]bool
	order  []string
}

func (c *collector) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok {
		if _, in := c.inputs[id.Value]; in && !c.seen[id.Value] {
			c.seen[id.Value] = true
			c.order = append(c.order, id.Value)
		}
	}
}

// the function signatures bit, bits and xor take
var (
	bitFn = expr.Function("bit", func(p ...any) (any, error) {
		x, n := p[0].(int), p[1].(int)
		if n < 0 || n > 63 {
			return nil, fmt.Errorf("bit %d: 0 (least significant) to 63", n)
		}
		return x>>uint(n)&1 == 1, nil
	}, new(func(int, int) bool))
	bitsFn = expr.Function("bits", func(p ...any) (any, error) {
		x, from, n := p[0].(int), p[1].(int), p[2].(int)
		if from < 0 || n < 1 || from+n > 64 {
			return nil, fmt.Errorf("bits %d, %d: from 0-63, count 1-64, within 64 bits", from, n)
		}
		if n == 64 {
			return x, nil
		}
		return int(uint64(x) >> uint(from) & (1<<uint(n) - 1)), nil
	}, new(func(int, int, int) int))
	xorFn = expr.Function("xor", func(p ...any) (any, error) {
		return p[0].(bool) != p[1].(bool), nil
	}, new(func(bool, bool) bool))
	// div replaces / (expr.Operator): a zero divisor is an error
	divFn = expr.Function("div", func(p ...any) (any, error) {
		a, b := toFloat(p[0]), toFloat(p[1])
		if b == 0 {
			return nil, ErrDivisionByZero
		}
		return a / b, nil
	}, new(func(float64, float64) float64), new(func(int, int) float64), new(func(int, float64) float64), new(func(float64, int) float64))
	modFn = expr.Function("mod", func(p ...any) (any, error) {
		a, b := p[0].(int), p[1].(int)
		if b == 0 {
			return nil, ErrDivisionByZero
		}
		return a % b, nil
	}, new(func(int, int) int))
)

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case float64:
		return x
	}
	return math.NaN()
}

// zero returns the typed zero value an input of kind k has in the
// expression's environment.
func zero(k telemetry.Kind) any {
	switch k {
	case telemetry.KindBool:
		return false
	case telemetry.KindInt, telemetry.KindUint:
		return 0
	case telemetry.KindString:
		return ""
	}
	return 0.0
}

// Compile compiles src against the raw points inputs (name → kind of the
// value the expression sees). Errors name the column of the mistake:
// `unknown name p_x (column 7)`.
func Compile(src string, inputs map[string]telemetry.Kind) (*Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("the expression is empty")
	}
	env := make(map[string]any, len(inputs))
	for name, k := range inputs {
		env[name] = zero(k)
	}
	c := &collector{inputs: inputs, seen: map[string]bool{}}
	prog, err := expr.Compile(src, expr.Env(env), bitFn, bitsFn, xorFn, divFn, modFn,
		expr.Operator("/", "div"), expr.Operator("%", "mod"), expr.Patch(c), expr.MaxNodes(1000))
	if err != nil {
		return nil, compileError(err)
	}
	p := &Program{Source: src, Inputs: c.order, prog: prog}
	if t := prog.Node().Type(); t != nil {
		switch t.Kind() {
		case reflect.Bool:
			p.Out = telemetry.KindBool
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			p.Out = telemetry.KindInt
		case reflect.Float32, reflect.Float64:
			p.Out = telemetry.KindFloat
		case reflect.String:
			p.Out = telemetry.KindString
		case reflect.Interface:
		default:
			return nil, fmt.Errorf("the expression gives a %s; a measure point is a number, a bool or a string", t)
		}
	}
	return p, nil
}

// compileError shortens expr's message (which quotes the source with a
// caret on further lines) to one line with the column.
func compileError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		if name, ok := strings.CutPrefix(msg, "unknown name "); ok {
			msg = "unknown name " + name + ": not a point of the profile nor a function"
		}
		if fe.Column >= 0 && fe.Line > 0 {
			return fmt.Errorf("%s (column %d)", msg, fe.Column+1)
		}
		return errors.New(msg)
	}
	return err
}

// Runner holds what running programs needs (an expr VM, an environment);
// one per goroutine.
type Runner struct {
	vm  vm.VM
	env map[string]any
}

// NewRunner returns a Runner.
func NewRunner() *Runner { return &Runner{env: map[string]any{}} }

// Run evaluates p with the values of its Inputs (vals[i] for Inputs[i];
// each of the kind it was compiled with, an unsigned value as a Go int).
// A result that is not a finite number, or a value of no measure point
// kind, is an error; so is a division by zero (errors.Is
// ErrDivisionByZero).
func (p *Program) Run(r *Runner, vals []telemetry.Value) (telemetry.Value, error) {
	for i, name := range p.Inputs {
		// a value equal to the one held keeps its boxed form: no allocation
		old := r.env[name]
		switch v := vals[i]; v.Kind {
		case telemetry.KindBool:
			r.env[name] = v.B // bools do not allocate
		case telemetry.KindInt:
			if o, ok := old.(int); !ok || o != int(v.I) {
				r.env[name] = int(v.I)
			}
		case telemetry.KindUint:
			if v.U > math.MaxInt64 {
				return telemetry.Value{}, fmt.Errorf("input %s: %d is too large for an expression", name, v.U)
			}
			if o, ok := old.(int); !ok || o != int(v.U) {
				r.env[name] = int(v.U)
			}
		case telemetry.KindFloat:
			if o, ok := old.(float64); !ok || o != v.F {
				r.env[name] = v.F
			}
		case telemetry.KindString:
			if o, ok := old.(string); !ok || o != v.S {
				r.env[name] = v.S
			}
		default:
			return telemetry.Value{}, fmt.Errorf("input %s has no value", name)
		}
	}
	out, err := r.vm.Run(p.prog, r.env)
	if err != nil {
		if errors.Is(err, ErrDivisionByZero) || strings.Contains(err.Error(), "divide by zero") {
			return telemetry.Value{}, ErrDivisionByZero
		}
		var fe *file.Error
		if errors.As(err, &fe) {
			return telemetry.Value{}, errors.New(fe.Message)
		}
		return telemetry.Value{}, err
	}
	switch x := out.(type) {
	case bool:
		return telemetry.Bool(x), nil
	case int:
		return telemetry.Int(int64(x)), nil
	case int64:
		return telemetry.Int(x), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return telemetry.Value{}, errors.New("not a number")
		}
		return telemetry.Float(x), nil
	case string:
		return telemetry.String(x), nil
	case nil:
		return telemetry.Value{}, errors.New("the expression gave no value (nil)")
	}
	return telemetry.Value{}, fmt.Errorf("the expression gave a %T; a measure point is a number, a bool or a string", out)
}
