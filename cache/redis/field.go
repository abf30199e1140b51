package redis

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/edged/edged/cache"
	"github.com/edged/edged/telemetry"
)

// appendField appends the JSON of one hash field (see the package doc) to dst.
func appendField(dst []byte, e cache.Entry) []byte {
	dst = append(dst, '{')
	v := e.Value
	switch v.Kind {
	case telemetry.KindBool:
		dst = append(dst, `"v":`...)
		dst = strconv.AppendBool(dst, v.B)
		dst = append(dst, ',')
	case telemetry.KindInt:
		dst = append(dst, `"v":`...)
		dst = strconv.AppendInt(dst, v.I, 10)
		dst = append(dst, ',')
	case telemetry.KindUint:
		dst = append(dst, `"v":`...)
		dst = strconv.AppendUint(dst, v.U, 10)
		dst = append(dst, `,"k":"uint",`...)
	case telemetry.KindFloat:
		switch {
		case math.IsNaN(v.F):
			dst = append(dst, `"v":"NaN","k":"float",`...)
		case math.IsInf(v.F, 1):
			dst = append(dst, `"v":"+Inf","k":"float",`...)
		case math.IsInf(v.F, -1):
			dst = append(dst, `"v":"-Inf","k":"float",`...)
		default:
			dst = append(dst, `"v":`...)
			dst = appendFloat(dst, v.F)
			dst = append(dst, ',')
		}
	case telemetry.KindString:
		dst = append(dst, `"v":`...)
		dst = telemetry.AppendJSONString(dst, v.S)
		dst = append(dst, ',')
	}
	// KindNone (and a kind this build does not know) has no "v".
	dst = append(dst, `"q":`...)
	dst = telemetry.AppendJSONString(dst, e.Quality.String())
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, e.Time, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, e.Seq, 10)
	if e.Reason != "" {
		dst = append(dst, `,"r":`...)
		dst = telemetry.AppendJSONString(dst, e.Reason)
	}
	return append(dst, '}')
}

// appendFloat writes a finite float as encoding/json does (shortest decimal
// that reads back exactly; exponent form below 1e-6 and from 1e21), and
// adds ".0" to an integral value so that it reads back as a float.
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7, as encoding/json
		if n := len(dst); n-start >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
		return dst
	}
	if bytes.IndexByte(dst[start:], '.') < 0 {
		dst = append(dst, ".0"...)
	}
	return dst
}

// wireField is a field as found in Redis, possibly written by another tool.
type wireField struct {
	V   json.RawMessage `json:"v"`
	K   string          `json:"k"`
	Q   *string         `json:"q"`
	T   *int64          `json:"t"`
	Seq uint64          `json:"seq"`
	R   string          `json:"r"`
}

// decodeField parses one hash field. It accepts what appendField writes and
// what another tool may reasonably write (members in any order, unknown
// members ignored, "seq" and "r" optional, "v" absent or null for no value);
// "q" and "t" are required.
func decodeField(data []byte) (cache.Entry, error) {
	var w wireField
	if err := json.Unmarshal(data, &w); err != nil {
		return cache.Entry{}, err
	}
	if w.Q == nil {
		return cache.Entry{}, errors.New(`missing "q"`)
	}
	q, ok := telemetry.ParseQuality(*w.Q)
	if !ok {
		return cache.Entry{}, fmt.Errorf(`"q": unknown quality %q`, *w.Q)
	}
	if w.T == nil {
		return cache.Entry{}, errors.New(`missing "t"`)
	}
	v, err := decodeValue(bytes.TrimSpace(w.V), w.K)
	if err != nil {
		return cache.Entry{}, fmt.Errorf(`"v": %w`, err)
	}
	return cache.Entry{Value: v, Quality: q, Reason: w.R, Time: *w.T, Seq: w.Seq}, nil
}

// decodeValue reads "v" given "k" (empty when absent): without a kind, a
// JSON bool is a bool, a string a string, a number with a fraction or an
// exponent a float, any other number an int (a uint beyond int64, a float
// beyond uint64).
func decodeValue(raw []byte, kind string) (telemetry.Value, error) {
	if len(raw) == 0 || string(raw) == "null" {
		if kind != "" && kind != telemetry.KindNone.String() {
			return telemetry.Value{}, fmt.Errorf("kind %q without a value", kind)
		}
		return telemetry.Value{}, nil
	}
	switch kind {
	case "":
		switch c := raw[0]; {
		case c == 't' || c == 'f':
			return decodeValue(raw, "bool")
		case c == '"':
			return decodeValue(raw, "string")
		case c == '-' || (c >= '0' && c <= '9'):
			s := string(raw)
			if bytes.ContainsAny(raw, ".eE") {
				return parseFloat(s)
			}
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return telemetry.Int(i), nil
			}
			if u, err := strconv.ParseUint(s, 10, 64); err == nil {
				return telemetry.Uint(u), nil
			}
			return parseFloat(s)
		}
		return telemetry.Value{}, fmt.Errorf("not a bool, number or string: %.40s", raw)
	case "bool":
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return telemetry.Value{}, err
		}
		return telemetry.Bool(b), nil
	case "string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return telemetry.Value{}, err
		}
		return telemetry.String(s), nil
	case "int":
		i, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return telemetry.Value{}, err
		}
		return telemetry.Int(i), nil
	case "uint":
		u, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			return telemetry.Value{}, err
		}
		return telemetry.Uint(u), nil
	case "float":
		if raw[0] == '"' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return telemetry.Value{}, err
			}
			switch s {
			case "NaN":
				return telemetry.Float(math.NaN()), nil
			case "+Inf", "Inf":
				return telemetry.Float(math.Inf(1)), nil
			case "-Inf":
				return telemetry.Float(math.Inf(-1)), nil
			}
			return telemetry.Value{}, fmt.Errorf("float %q: want a number, \"NaN\", \"+Inf\" or \"-Inf\"", s)
		}
		return parseFloat(string(raw))
	case "none":
		return telemetry.Value{}, errors.New(`kind "none" with a value`)
	}
	return telemetry.Value{}, fmt.Errorf("unknown kind %q", kind)
}

// parseFloat reads a JSON number (the JSON decoder has checked the syntax).
func parseFloat(s string) (telemetry.Value, error) {
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return telemetry.Value{}, fmt.Errorf("not a number: %.40s", s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return telemetry.Value{}, err // out of range: not a float64
	}
	return telemetry.Float(f), nil
}
