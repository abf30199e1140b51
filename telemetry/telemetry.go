// Package telemetry holds the values that flow one way through edged:
// a driver produces Samples (raw protocol points), the normaliser turns them
// into Records (model measure points), the bus carries Records durably, the
// cache keeps the latest of each, and the cloud link posts them.
//
// It is a leaf package: it imports nothing of ours, so every stage can use it.
package telemetry

import (
	"math"
	"strconv"
	"time"
)

// Kind is the type of a Value.
type Kind uint8

const (
	KindNone   Kind = iota // no value (a bad sample carries none)
	KindBool               // B
	KindInt                // I
	KindUint               // U
	KindFloat              // F
	KindString             // S
)

var kindNames = [...]string{"none", "bool", "int", "uint", "float", "string"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is a typed scalar. Only the field named by Kind is meaningful. It is a
// plain struct, not an interface, so a sample costs no allocation.
type Value struct {
	Kind Kind
	B    bool
	I    int64
	U    uint64
	F    float64
	S    string
}

func Bool(b bool) Value      { return Value{Kind: KindBool, B: b} }
func Int(i int64) Value      { return Value{Kind: KindInt, I: i} }
func Uint(u uint64) Value    { return Value{Kind: KindUint, U: u} }
func Float(f float64) Value  { return Value{Kind: KindFloat, F: f} }
func String(s string) Value  { return Value{Kind: KindString, S: s} }
func (v Value) IsNone() bool { return v.Kind == KindNone }
func (v Value) Equal(o Value) bool {
	if v.Kind != o.Kind {
		return false
	}
	switch v.Kind {
	case KindBool:
		return v.B == o.B
	case KindInt:
		return v.I == o.I
	case KindUint:
		return v.U == o.U
	case KindFloat:
		return v.F == o.F || (math.IsNaN(v.F) && math.IsNaN(o.F))
	case KindString:
		return v.S == o.S
	}
	return true
}

// Float64 converts a numeric or boolean value to float64; ok is false for
// strings and none.
func (v Value) Float64() (f float64, ok bool) {
	switch v.Kind {
	case KindBool:
		if v.B {
			return 1, true
		}
		return 0, true
	case KindInt:
		return float64(v.I), true
	case KindUint:
		return float64(v.U), true
	case KindFloat:
		return v.F, true
	}
	return 0, false
}

// String formats the value for logs and tables.
func (v Value) String() string {
	switch v.Kind {
	case KindBool:
		return strconv.FormatBool(v.B)
	case KindInt:
		return strconv.FormatInt(v.I, 10)
	case KindUint:
		return strconv.FormatUint(v.U, 10)
	case KindFloat:
		return strconv.FormatFloat(v.F, 'g', -1, 64)
	case KindString:
		return strconv.Quote(v.S)
	}
	return "null"
}

// Quality says whether a value can be trusted.
type Quality uint8

const (
	Good  Quality = iota // read now, from the device
	Bad                  // could not be read; Reason says why; the value is none
	Stale                // the last good value, older than the point's stale limit
)

var qualityNames = [...]string{"good", "bad", "stale"}

func (q Quality) String() string {
	if int(q) < len(qualityNames) {
		return qualityNames[q]
	}
	return "quality(" + strconv.Itoa(int(q)) + ")"
}

// ParseQuality is the inverse of Quality.String.
func ParseQuality(s string) (Quality, bool) {
	for i, n := range qualityNames {
		if n == s {
			return Quality(i), true
		}
	}
	return 0, false
}

// Sample is one raw point as a driver read it. Point is the index of the point
// in its device's profile, so the hot path carries no strings.
type Sample struct {
	Point   int
	Value   Value
	Quality Quality
	Reason  string    // why the sample is bad, in the field's words ("timeout", "exception 2 (illegal data address)")
	Time    time.Time // source time if the protocol has one, else the time the reply arrived
}

// Point is one measure point in a Record.
type Point struct {
	ID      string // the model's measure point identifier
	Value   Value
	Quality Quality
	Reason  string
}

// Record is the unit the bus carries and the cloud stores: the measure points
// of one device at one time. Gateway, Epoch and Seq identify it exactly once:
// the epoch is the fencing token of the node that produced it, Seq is
// assigned by the bus when the record became durable and grows monotonically
// per gateway across restarts.
type Record struct {
	Gateway    string
	Epoch      uint64
	Seq        uint64
	Device     string // device name in the gateway's config
	ProductKey string // cloud identity of the device
	DeviceKey  string
	Time       int64 // unix milliseconds
	Points     []Point
}
