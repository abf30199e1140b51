package thingmodel

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edged/edged/cloudlink/enos"
)

// DataTypes are the data types, in the order error messages list them.
var DataTypes = []DataType{Int, Float, Double, Bool, String, Enum, Timestamp}

const dataTypeList = "(int, float, double, bool, string, enum, timestamp)"

// Valid reports whether t is one of the data types.
func (t DataType) Valid() bool {
	for _, d := range DataTypes {
		if t == d {
			return true
		}
	}
	return false
}

// Numeric reports whether t is int, float or double: the types a min and
// a max may bound.
func (t DataType) Numeric() bool { return t == Int || t == Float || t == Double }

// ValidIdentifier reports whether id is an identifier: [A-Za-z_][A-Za-z0-9_]*,
// at most MaxIdentifierLen bytes.
func ValidIdentifier(id string) bool {
	if id == "" || len(id) > MaxIdentifierLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Validate checks what Parse cannot see in the JSON's shape: the product
// key is valid (enos.ValidKey); identifiers are valid (ValidIdentifier)
// and unique within their kind (measure points, attributes, events,
// services) and within their list (an event's outputs, a service's inputs,
// its outputs); every data type is one of the constants; min and max are
// given only for numeric types, are integers for int, and min <= max; enum
// values only for the enum type, which needs at least one, keyed by
// integers in canonical decimal form ("0", "-1", not "01" or "+1"); names,
// units and enum names are valid UTF-8 without control characters and
// within their length limits; the counts are within their limits. The
// version is not checked (0 is a model not yet stored). Errors are *Error.
func (m *Model) Validate() error {
	switch {
	case m.ProductKey == "":
		return errAt("productKey", "required")
	case !enos.ValidKey(m.ProductKey):
		return errAt("productKey", "%s is not a product key (1 to 256 bytes, no '&', '/', '+', '#', '|' or control characters)", strconv.Quote(m.ProductKey))
	case len(m.MeasurePoints) > MaxMeasurePoints:
		return errAt("measurepoints", "%d entries, more than %d", len(m.MeasurePoints), MaxMeasurePoints)
	case len(m.Attributes) > MaxAttributes:
		return errAt("attributes", "%d entries, more than %d", len(m.Attributes), MaxAttributes)
	case len(m.Events) > MaxEvents:
		return errAt("events", "%d entries, more than %d", len(m.Events), MaxEvents)
	case len(m.Services) > MaxServices:
		return errAt("services", "%d entries, more than %d", len(m.Services), MaxServices)
	}
	ids := uniq{}
	for i := range m.MeasurePoints {
		path := "measurepoints[" + strconv.Itoa(i) + "]"
		mp := &m.MeasurePoints[i]
		if err := ids.check(path, mp.Identifier); err != nil {
			return err
		}
		if err := checkCommon(path, mp.Name, mp.DataType, mp.Unit); err != nil {
			return err
		}
		if err := mp.checkLimits(path); err != nil {
			return err
		}
	}
	ids = uniq{}
	for i := range m.Attributes {
		path := "attributes[" + strconv.Itoa(i) + "]"
		a := &m.Attributes[i]
		if err := ids.check(path, a.Identifier); err != nil {
			return err
		}
		if err := checkCommon(path, a.Name, a.DataType, a.Unit); err != nil {
			return err
		}
	}
	ids = uniq{}
	for i := range m.Events {
		path := "events[" + strconv.Itoa(i) + "]"
		ev := &m.Events[i]
		if err := ids.check(path, ev.Identifier); err != nil {
			return err
		}
		if err := checkText(path+".name", ev.Name, MaxNameLen); err != nil {
			return err
		}
		if err := checkParams(path+".outputs", ev.Outputs); err != nil {
			return err
		}
	}
	ids = uniq{}
	for i := range m.Services {
		path := "services[" + strconv.Itoa(i) + "]"
		sv := &m.Services[i]
		if err := ids.check(path, sv.Identifier); err != nil {
			return err
		}
		if err := checkText(path+".name", sv.Name, MaxNameLen); err != nil {
			return err
		}
		if err := checkParams(path+".inputs", sv.Inputs); err != nil {
			return err
		}
		if err := checkParams(path+".outputs", sv.Outputs); err != nil {
			return err
		}
	}
	return nil
}

// uniq checks identifiers: valid, and unique among those checked before.
type uniq map[string]int

func (u uniq) check(path, id string) error {
	at := path + ".identifier"
	switch {
	case id == "":
		return errAt(at, "required")
	case !ValidIdentifier(id):
		return errAt(at, "%s is not an identifier ([A-Za-z_][A-Za-z0-9_]*, at most %d characters)", strconv.Quote(id), MaxIdentifierLen)
	}
	if first, dup := u[id]; dup {
		return errAt(at, "%s is also the identifier of entry %d", strconv.Quote(id), first)
	}
	u[id] = len(u)
	return nil
}

func checkParams(path string, ps []Param) error {
	if len(ps) > MaxParams {
		return errAt(path, "%d entries, more than %d", len(ps), MaxParams)
	}
	ids := uniq{}
	for i := range ps {
		at := path + "[" + strconv.Itoa(i) + "]"
		if err := ids.check(at, ps[i].Identifier); err != nil {
			return err
		}
		if err := checkCommon(at, "", ps[i].DataType, ps[i].Unit); err != nil {
			return err
		}
	}
	return nil
}

func checkCommon(path, name string, t DataType, unit string) error {
	if err := checkText(path+".name", name, MaxNameLen); err != nil {
		return err
	}
	if err := checkDataType(path+".dataType", t); err != nil {
		return err
	}
	return checkText(path+".unit", unit, MaxUnitLen)
}

func checkDataType(path string, t DataType) error {
	switch {
	case t == "":
		return errAt(path, "required %s", dataTypeList)
	case !t.Valid():
		return errAt(path, "%s is not a data type %s", strconv.Quote(string(t)), dataTypeList)
	}
	return nil
}

// checkText checks a name, unit or enum name (may be empty).
func checkText(path, s string, max int) error {
	switch {
	case len(s) > max:
		return errAt(path, "%d bytes, more than %d", len(s), max)
	case !utf8.ValidString(s):
		return errAt(path, "not valid UTF-8")
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errAt(path, "%s has a control character", strconv.Quote(s))
	}
	return nil
}

func (mp *MeasurePoint) checkLimits(path string) error {
	for _, b := range []struct {
		key string
		v   *float64
	}{{"min", mp.Min}, {"max", mp.Max}} {
		if b.v == nil {
			continue
		}
		at := path + "." + b.key
		f := *b.v
		switch {
		case !mp.DataType.Numeric():
			return errAt(at, "only for numeric data types (int, float, double), not %s", mp.DataType)
		case math.IsNaN(f) || math.IsInf(f, 0):
			return errAt(at, "not a finite number")
		case mp.DataType == Int && (f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63):
			return errAt(at, "%s is not an integer (dataType int)", formatFloat(nil, f))
		}
	}
	if mp.Min != nil && mp.Max != nil && *mp.Min > *mp.Max {
		return errAt(path, "min %s is greater than max %s", formatFloat(nil, *mp.Min), formatFloat(nil, *mp.Max))
	}
	at := path + ".enum"
	switch {
	case mp.DataType == Enum && len(mp.Enum) == 0:
		return errAt(at, "required for dataType enum: name at least one value")
	case mp.DataType != Enum && len(mp.Enum) > 0:
		return errAt(at, "only for dataType enum, not %s", mp.DataType)
	case len(mp.Enum) > MaxEnumValues:
		return errAt(at, "%d values, more than %d", len(mp.Enum), MaxEnumValues)
	}
	for _, k := range sortedEnumKeys(mp.Enum) {
		kat := at + "[" + strconv.Quote(k) + "]"
		if n, err := strconv.ParseInt(k, 10, 64); err != nil || strconv.FormatInt(n, 10) != k {
			return errAt(kat, "key %s is not an integer in decimal form", strconv.Quote(k))
		}
		v := mp.Enum[k]
		if v == "" {
			return errAt(kat, "empty name")
		}
		if err := checkText(kat, v, MaxNameLen); err != nil {
			return err
		}
	}
	return nil
}
