package enos

import (
	"strconv"
	"strings"

	"github.com/edged/edged/telemetry"
)

// Commands down: the cloud publishes a service request on
// /sys/{pk}/{dk}/thing/service/{serviceId} (measure points are set with the
// service measurepoint/set) and the device answers on the topic + "_reply".

// MethodMeasurepointSet is the method of a measure point set request.
const MethodMeasurepointSet = "thing.service.measurepoint.set"

// ServiceMethod returns the method of the service serviceID
// ("thing.service." + serviceID with '/' as '.').
func ServiceMethod(serviceID string) string {
	return "thing.service." + strings.ReplaceAll(serviceID, "/", ".")
}

// SetPoint is one measure point of a set request and the value asked for.
type SetPoint struct {
	ID    string
	Value telemetry.Value
}

// MeasurepointSet is a thing.service.measurepoint.set request: the measure
// points to set, in the order of the payload.
type MeasurepointSet struct {
	ID      string
	Version string
	Points  []SetPoint
}

// ParseMeasurepointSet parses a measure point set request with
// DefaultLimits.
func ParseMeasurepointSet(payload []byte) (*MeasurepointSet, error) {
	return DefaultLimits.ParseMeasurepointSet(payload)
}

// ParseMeasurepointSet parses a thing.service.measurepoint.set request:
// params is an object of measure point id → value, kept in payload order.
// A value is a JSON number (KindInt when integral within int64, KindUint
// above, else KindFloat), a bool or a string (the SDKs send numbers and
// bools as strings: the device model decides what a string means); null,
// objects (struct measure points) and arrays are refused, as are a
// repeated measure point, an empty params object, and a method other than
// MethodMeasurepointSet (an absent method is accepted). At most MaxPoints
// measure points. Errors are *Error.
func (l Limits) ParseMeasurepointSet(payload []byte) (*MeasurepointSet, error) {
	l = l.orDefault()
	req := &MeasurepointSet{}
	env := envelope{methods: setMethods}
	p := parser{s: scanner{b: payload}, lim: l}
	err := p.envelope(&env, func() *Error {
		if p.s.peek() != '{' {
			return p.s.errf("want an object of measure point ids and values, got " + p.s.what())
		}
		start := p.s.i
		seen := map[string]struct{}{}
		err := p.s.object(func(key []byte) *Error {
			if len(req.Points) >= l.MaxPoints {
				e := p.s.errf("more than " + strconv.Itoa(l.MaxPoints) + " measure points")
				e.Limit = true
				return e
			}
			if len(key) == 0 {
				return p.s.errf("empty measure point id")
			}
			if _, dup := seen[string(key)]; dup {
				return p.s.errf("measure point " + strconv.Quote(string(key)) + " given twice")
			}
			id := string(key)
			seen[id] = struct{}{}
			switch p.s.peek() {
			case '{', '[':
				return p.s.errf("want a number, bool or string, got " + p.s.what() + " (struct and array measure points are not supported)").in(strconv.Quote(id))
			case 'n':
				return p.s.errf("want a number, bool or string, got null").in(strconv.Quote(id))
			}
			v, err := p.scalar()
			if err != nil {
				return err.in(strconv.Quote(id))
			}
			req.Points = append(req.Points, SetPoint{ID: id, Value: v})
			return nil
		})
		if err != nil {
			return err
		}
		if len(req.Points) == 0 {
			return &Error{Offset: start, Msg: "no measure points to set"}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	req.ID, req.Version = env.id, env.version
	return req, nil
}

var setMethods = []string{MethodMeasurepointSet}

// AppendMeasurepointSet appends the request as JSON (version "1.0", method
// MethodMeasurepointSet, params in the order of r.Points). Values are
// encoded by AppendValue.
func AppendMeasurepointSet(dst []byte, r *MeasurepointSet) []byte {
	version := r.Version
	if version == "" {
		version = "1.0"
	}
	dst = append(dst, `{"id":`...)
	dst = telemetry.AppendJSONString(dst, r.ID)
	dst = append(dst, `,"version":`...)
	dst = telemetry.AppendJSONString(dst, version)
	dst = append(dst, `,"method":"`+MethodMeasurepointSet+`","params":{`...)
	for i, sp := range r.Points {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = telemetry.AppendJSONString(dst, sp.ID)
		dst = append(dst, ':')
		dst = AppendValue(dst, sp.Value)
	}
	return append(dst, "}}"...)
}
