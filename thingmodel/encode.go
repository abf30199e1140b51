package thingmodel

import (
	"bytes"
	"math"
	"slices"
	"strconv"

	"github.com/edged/edged/telemetry"
)

// Marshal returns the canonical JSON of a valid model (see AppendJSON); an
// invalid one is refused with Validate's error.
func Marshal(m *Model) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m.AppendJSON(make([]byte, 0, 256+128*len(m.MeasurePoints))), nil
}

// AppendJSON appends the canonical JSON of m: compact, keys in the order
// of the types' fields, optional fields left out when empty (measurepoints
// is always there), enum values in increasing order of their keys, numbers
// formatted as encoding/json formats them. Parse reads it back to an equal
// model, and two models with the same content have the same canonical
// JSON. m should be valid (Validate); AppendJSON does not check it.
func (m *Model) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"productKey":`...)
	dst = telemetry.AppendJSONString(dst, m.ProductKey)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendUint(dst, m.Version, 10)
	dst = append(dst, `,"measurepoints":[`...)
	for i := range m.MeasurePoints {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = m.MeasurePoints[i].appendJSON(dst)
	}
	dst = append(dst, ']')
	if len(m.Attributes) > 0 {
		dst = append(dst, `,"attributes":[`...)
		for i, a := range m.Attributes {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '{')
			dst = appendText(dst, "identifier", a.Identifier, false)
			dst = appendText(dst, "name", a.Name, true)
			dst = appendText(dst, "dataType", string(a.DataType), true)
			dst = appendText(dst, "unit", a.Unit, true)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if len(m.Events) > 0 {
		dst = append(dst, `,"events":[`...)
		for i, ev := range m.Events {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '{')
			dst = appendText(dst, "identifier", ev.Identifier, false)
			dst = appendText(dst, "name", ev.Name, true)
			dst = appendParams(dst, "outputs", ev.Outputs)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if len(m.Services) > 0 {
		dst = append(dst, `,"services":[`...)
		for i, sv := range m.Services {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '{')
			dst = appendText(dst, "identifier", sv.Identifier, false)
			dst = appendText(dst, "name", sv.Name, true)
			dst = appendParams(dst, "inputs", sv.Inputs)
			dst = appendParams(dst, "outputs", sv.Outputs)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// Equal reports whether a and b are the same model, version included: the
// same canonical JSON.
func (m *Model) Equal(o *Model) bool {
	return bytes.Equal(m.AppendJSON(nil), o.AppendJSON(nil))
}

func (mp *MeasurePoint) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	dst = appendText(dst, "identifier", mp.Identifier, false)
	dst = appendText(dst, "name", mp.Name, true)
	dst = appendText(dst, "dataType", string(mp.DataType), true)
	dst = appendText(dst, "unit", mp.Unit, true)
	dst = append(dst, `,"hasQuality":`...)
	dst = strconv.AppendBool(dst, mp.HasQuality)
	if mp.Min != nil {
		dst = append(dst, `,"min":`...)
		dst = formatFloat(dst, *mp.Min)
	}
	if mp.Max != nil {
		dst = append(dst, `,"max":`...)
		dst = formatFloat(dst, *mp.Max)
	}
	if len(mp.Enum) > 0 {
		dst = append(dst, `,"enum":{`...)
		for i, k := range sortedEnumKeys(mp.Enum) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = telemetry.AppendJSONString(dst, k)
			dst = append(dst, ':')
			dst = telemetry.AppendJSONString(dst, mp.Enum[k])
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendText appends ,"key":"s" (without the comma when first); an
// optional empty s is left out.
func appendText(dst []byte, key, s string, more bool) []byte {
	if more {
		if s == "" {
			return dst
		}
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	dst = append(dst, `":`...)
	return telemetry.AppendJSONString(dst, s)
}

func appendParams(dst []byte, key string, ps []Param) []byte {
	if len(ps) == 0 {
		return dst
	}
	dst = append(dst, `,"`...)
	dst = append(dst, key...)
	dst = append(dst, `":[`...)
	for i, p := range ps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		dst = appendText(dst, "identifier", p.Identifier, false)
		dst = appendText(dst, "dataType", string(p.DataType), true)
		dst = appendText(dst, "unit", p.Unit, true)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// formatFloat formats f as encoding/json does: the shortest form that
// reads back the same, with an exponent only for very small or large
// magnitudes.
func formatFloat(dst []byte, f float64) []byte {
	abs, fmt := math.Abs(f), byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		fmt = 'e'
	}
	dst = strconv.AppendFloat(dst, f, fmt, -1, 64)
	if fmt == 'e' { // 1e-07 → 1e-7, as encoding/json
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// sortedEnumKeys orders the keys of an enum map: integers by value, then
// any other key (Validate refuses them) as strings.
func sortedEnumKeys(e map[string]string) []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		na, ea := strconv.ParseInt(a, 10, 64)
		nb, eb := strconv.ParseInt(b, 10, 64)
		switch {
		case ea == nil && eb == nil && na != nb:
			if na < nb {
				return -1
			}
			return 1
		case ea == nil && eb != nil:
			return -1
		case ea != nil && eb == nil:
			return 1
		}
		return cmpString(a, b)
	})
	return keys
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
