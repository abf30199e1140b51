package enos

import (
	"math"
	"strconv"

	"github.com/edged/edged/telemetry"
)

// Quality codes on the wire: a good point is sent as a plain value; bad and
// stale points use EnOS's {"value":...,"quality":q} form with these codes.
const (
	QualityGood  = 0
	QualityBad   = 1 // value null, "reason" says why
	QualityStale = 2 // value is the last good value
)

// ReasonNaN is the reason of a float that JSON cannot carry (NaN, ±Inf):
// such a point is sent as bad.
const ReasonNaN = "not a number"

// AppendPostBatch appends recs as one thing.measurepoint.post.batch request
// with request id id, sent by gateway at epoch (the fencing token). Each
// record becomes an item carrying its own origin epoch and sequence.
//
// It does no reflection and allocates nothing when dst has room; records
// with empty keys mean the gateway itself. gateway must not be empty and
// times must not be negative: the parser refuses both.
func AppendPostBatch(dst []byte, id uint64, gateway string, epoch uint64, recs []telemetry.Record) []byte {
	return appendBatch(dst, MethodPostBatch, id, gateway, epoch, recs)
}

// AppendResumeBatch is AppendPostBatch for backfilled (offline) records,
// posted on the resume/batch topic.
func AppendResumeBatch(dst []byte, id uint64, gateway string, epoch uint64, recs []telemetry.Record) []byte {
	return appendBatch(dst, MethodResumeBatch, id, gateway, epoch, recs)
}

func appendBatch(dst []byte, method string, id uint64, gateway string, epoch uint64, recs []telemetry.Record) []byte {
	dst = append(dst, `{"id":"`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `","version":"1.0","method":"`...)
	dst = append(dst, method...)
	dst = append(dst, `","params":[`...)
	for i := range recs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendRecord(dst, &recs[i])
	}
	// edged posts for the devices of its YAML without logging each in
	// (combine.login needs a secret per device): the registry declares
	// them as the gateway's sub-devices, and the batch says so.
	dst = append(dst, `],"allowOfflineSubDevice":true,"edged":{"gateway":`...)
	dst = telemetry.AppendJSONString(dst, gateway)
	dst = append(dst, `,"epoch":`...)
	dst = strconv.AppendUint(dst, epoch, 10)
	return append(dst, "}}"...)
}

func appendRecord(dst []byte, r *telemetry.Record) []byte {
	dst = append(dst, `{"productKey":`...)
	dst = telemetry.AppendJSONString(dst, r.ProductKey)
	dst = append(dst, `,"deviceKey":`...)
	dst = telemetry.AppendJSONString(dst, r.DeviceKey)
	dst = append(dst, `,"measurepoints":{`...)
	for i := range r.Points {
		p := &r.Points[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = telemetry.AppendJSONString(dst, p.ID)
		dst = append(dst, ':')
		switch {
		case p.Value.Kind == telemetry.KindFloat && !finite(p.Value.F):
			dst = appendBad(dst, ReasonNaN)
		case p.Quality == telemetry.Good:
			dst = AppendValue(dst, p.Value)
		case p.Quality == telemetry.Bad:
			dst = appendBad(dst, p.Reason)
		default:
			dst = appendQualified(dst, p.Value, nil, int(p.Quality), p.Reason)
		}
	}
	dst = append(dst, `},"time":`...)
	dst = strconv.AppendInt(dst, r.Time, 10)
	dst = append(dst, `,"edged":{"epoch":`...)
	dst = strconv.AppendUint(dst, r.Epoch, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	return append(dst, "}}"...)
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func appendBad(dst []byte, reason string) []byte {
	dst = append(dst, `{"value":null,"quality":1`...)
	if reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = telemetry.AppendJSONString(dst, reason)
	}
	return append(dst, '}')
}

func appendQualified(dst []byte, v telemetry.Value, arr []telemetry.Value, quality int, reason string) []byte {
	dst = append(dst, `{"value":`...)
	if arr != nil {
		dst = appendArray(dst, arr)
	} else {
		dst = AppendValue(dst, v)
	}
	dst = append(dst, `,"quality":`...)
	dst = strconv.AppendInt(dst, int64(quality), 10)
	if reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = telemetry.AppendJSONString(dst, reason)
	}
	return append(dst, '}')
}

func appendArray(dst []byte, arr []telemetry.Value) []byte {
	dst = append(dst, '[')
	for i, v := range arr {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendValue(dst, v)
	}
	return append(dst, ']')
}

// AppendValue appends v as a JSON value: null for none, true/false, an
// integer, a float in shortest round-trip form that always keeps a '.' or
// an exponent (230.0, so it parses back as a float), or a string. NaN and
// ±Inf, which JSON cannot carry, become null.
func AppendValue(dst []byte, v telemetry.Value) []byte {
	switch v.Kind {
	case telemetry.KindBool:
		return strconv.AppendBool(dst, v.B)
	case telemetry.KindInt:
		return strconv.AppendInt(dst, v.I, 10)
	case telemetry.KindUint:
		return strconv.AppendUint(dst, v.U, 10)
	case telemetry.KindFloat:
		if !finite(v.F) {
			return append(dst, "null"...)
		}
		n := len(dst)
		dst = strconv.AppendFloat(dst, v.F, 'g', -1, 64)
		for _, c := range dst[n:] {
			if c == '.' || c == 'e' {
				return dst
			}
		}
		return append(dst, ".0"...)
	case telemetry.KindString:
		return telemetry.AppendJSONString(dst, v.S)
	}
	return append(dst, "null"...)
}

// AppendJSON appends the batch as a request, as parsed: arrays and foreign
// quality codes included. It is how tools and tests re-encode a parsed post.
func (pb *PostBatch) AppendJSON(dst []byte) []byte {
	dst = appendHead(dst, pb.ID, pb.Version, pb.Method, MethodPostBatch)
	dst = append(dst, '[')
	for i := range pb.Items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendItem(dst, &pb.Items[i])
	}
	dst = append(dst, ']')
	if pb.AllowOfflineSubDevice {
		dst = append(dst, `,"allowOfflineSubDevice":true`...)
	}
	if pb.SkipInvalidMeasurepoints {
		dst = append(dst, `,"skipInvalidMeasurepoints":true`...)
	}
	return appendSender(dst, pb.Sender)
}

// AppendJSON appends the post as a request, as parsed.
func (p *Post) AppendJSON(dst []byte) []byte {
	dst = appendHead(dst, p.ID, p.Version, p.Method, MethodPost)
	dst = appendItem(dst, &p.Item)
	return appendSender(dst, p.Sender)
}

func appendHead(dst []byte, id, version, method, defMethod string) []byte {
	if version == "" {
		version = "1.0"
	}
	if method == "" {
		method = defMethod
	}
	dst = append(dst, `{"id":`...)
	dst = telemetry.AppendJSONString(dst, id)
	dst = append(dst, `,"version":`...)
	dst = telemetry.AppendJSONString(dst, version)
	dst = append(dst, `,"method":`...)
	dst = telemetry.AppendJSONString(dst, method)
	return append(dst, `,"params":`...)
}

func appendSender(dst []byte, s *Sender) []byte {
	if s != nil {
		dst = append(dst, `,"edged":{"gateway":`...)
		dst = telemetry.AppendJSONString(dst, s.Gateway)
		dst = append(dst, `,"epoch":`...)
		dst = strconv.AppendUint(dst, s.Epoch, 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

func appendItem(dst []byte, it *Item) []byte {
	dst = append(dst, '{')
	if it.ProductKey != "" || it.DeviceKey != "" {
		dst = append(dst, `"productKey":`...)
		dst = telemetry.AppendJSONString(dst, it.ProductKey)
		dst = append(dst, `,"deviceKey":`...)
		dst = telemetry.AppendJSONString(dst, it.DeviceKey)
		dst = append(dst, ',')
	}
	dst = append(dst, `"measurepoints":{`...)
	for i := range it.Points {
		p := &it.Points[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = telemetry.AppendJSONString(dst, p.ID)
		dst = append(dst, ':')
		switch {
		case p.Quality != QualityGood || p.Reason != "":
			dst = appendQualified(dst, p.Value, p.Array, p.Quality, p.Reason)
		case p.Array != nil:
			dst = appendArray(dst, p.Array)
		default:
			dst = AppendValue(dst, p.Value)
		}
	}
	dst = append(dst, '}')
	if it.Time != 0 {
		dst = append(dst, `,"time":`...)
		dst = strconv.AppendInt(dst, it.Time, 10)
	}
	if it.Origin != nil {
		dst = append(dst, `,"edged":{"epoch":`...)
		dst = strconv.AppendUint(dst, it.Origin.Epoch, 10)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, it.Origin.Seq, 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}
