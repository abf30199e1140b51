package telemetry

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// AppendJSON renders records as one JSON document, the format edged mirrors
// to local subscribers (the ActiveMQ live topic):
//
//	{"records":[{"gateway":"gw1","epoch":3,"seq":1021,"device":"meter-1",
//	  "product_key":"pk","device_key":"dk","time":1700000000000,
//	  "points":[{"id":"voltage","value":230.1,"quality":"good"},
//	            {"id":"current","quality":"bad","reason":"timeout"}]}]}
//
// Numbers are JSON numbers (integers exact, floats shortest decimal; NaN and
// ±Inf, which the normaliser marks bad, become null), a value that is none is
// left out.
func AppendJSON(dst []byte, recs []Record) []byte {
	dst = append(dst, `{"records":[`...)
	for i := range recs {
		r := &recs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"gateway":`...)
		dst = appendJSONString(dst, r.Gateway)
		dst = append(dst, `,"epoch":`...)
		dst = strconv.AppendUint(dst, r.Epoch, 10)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, r.Seq, 10)
		dst = append(dst, `,"device":`...)
		dst = appendJSONString(dst, r.Device)
		if r.ProductKey != "" || r.DeviceKey != "" {
			dst = append(dst, `,"product_key":`...)
			dst = appendJSONString(dst, r.ProductKey)
			dst = append(dst, `,"device_key":`...)
			dst = appendJSONString(dst, r.DeviceKey)
		}
		dst = append(dst, `,"time":`...)
		dst = strconv.AppendInt(dst, r.Time, 10)
		dst = append(dst, `,"points":[`...)
		for j, p := range r.Points {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"id":`...)
			dst = appendJSONString(dst, p.ID)
			if !p.Value.IsNone() {
				dst = append(dst, `,"value":`...)
				dst = AppendJSONValue(dst, p.Value)
			}
			dst = append(dst, `,"quality":"`...)
			dst = append(dst, p.Quality.String()...)
			dst = append(dst, '"')
			if p.Reason != "" {
				dst = append(dst, `,"reason":`...)
				dst = appendJSONString(dst, p.Reason)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, "]}"...)
}

// AppendJSONValue renders one value as JSON.
func AppendJSONValue(dst []byte, v Value) []byte {
	switch v.Kind {
	case KindBool:
		return strconv.AppendBool(dst, v.B)
	case KindInt:
		return strconv.AppendInt(dst, v.I, 10)
	case KindUint:
		return strconv.AppendUint(dst, v.U, 10)
	case KindFloat:
		if math.IsNaN(v.F) || math.IsInf(v.F, 0) {
			return append(dst, "null"...)
		}
		return strconv.AppendFloat(dst, v.F, 'g', -1, 64)
	case KindString:
		return appendJSONString(dst, v.S)
	}
	return append(dst, "null"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, "\ufffd"...)
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}
