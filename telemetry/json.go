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
		dst = AppendJSONString(dst, r.Gateway)
		dst = append(dst, `,"epoch":`...)
		dst = strconv.AppendUint(dst, r.Epoch, 10)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, r.Seq, 10)
		dst = append(dst, `,"device":`...)
		dst = AppendJSONString(dst, r.Device)
		if r.ProductKey != "" || r.DeviceKey != "" {
			dst = append(dst, `,"product_key":`...)
			dst = AppendJSONString(dst, r.ProductKey)
			dst = append(dst, `,"device_key":`...)
			dst = AppendJSONString(dst, r.DeviceKey)
		}
		dst = append(dst, `,"time":`...)
		dst = strconv.AppendInt(dst, r.Time, 10)
		dst = append(dst, `,"points":[`...)
		for j, p := range r.Points {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"id":`...)
			dst = AppendJSONString(dst, p.ID)
			if !p.Value.IsNone() {
				dst = append(dst, `,"value":`...)
				dst = AppendJSONValue(dst, p.Value)
			}
			dst = append(dst, `,"quality":"`...)
			dst = append(dst, p.Quality.String()...)
			dst = append(dst, '"')
			if p.Reason != "" {
				dst = append(dst, `,"reason":`...)
				dst = AppendJSONString(dst, p.Reason)
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
		return AppendJSONString(dst, v.S)
	}
	return append(dst, "null"...)
}

// AppendJSONString appends s as a JSON string (the one quoting function of
// every JSON edged writes by hand: the EnOS posts, the live topic, the Redis
// snapshot, the ingest store). Invalid UTF-8 becomes U+FFFD;
// control characters, '"' and '\' are escaped, and so are U+2028 and U+2029.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += n
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += n
			start = i
			continue
		}
		i += n
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"
