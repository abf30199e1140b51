package thingmodel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// Limits of a model. Parse refuses a document over MaxSize before reading
// it; Validate refuses a model over any of the counts.
const (
	MaxSize          = 1 << 20 // bytes of a model's JSON
	MaxMeasurePoints = 10000
	MaxAttributes    = 1000
	MaxEvents        = 1000
	MaxServices      = 1000
	MaxParams        = 256  // inputs, or outputs, of one event or service
	MaxEnumValues    = 1024 // named values of one enum measure point
	MaxIdentifierLen = 64
	MaxNameLen       = 256 // a name, or the name of an enum value
	MaxUnitLen       = 64
)

// Error is a model refused by Parse or Validate. Path is where, as a JSON
// path ("measurepoints[3].dataType"); "" for the document as a whole.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func errAt(path, format string, args ...any) *Error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Parse reads a model from its JSON form, strictly: the document is one
// object, every key is known and appears once (matched exactly, not
// case-insensitively), every value has its type; null is taken for an
// absent optional field. Empty arrays and an empty enum map read as absent
// (nil). The model is then checked with Validate. A refusal is an *Error
// naming the JSON path of the fault.
func Parse(b []byte) (*Model, error) {
	if len(b) > MaxSize {
		return nil, errAt("", "model of %d bytes is over the limit of %d", len(b), MaxSize)
	}
	if !utf8.Valid(b) {
		return nil, errAt("", "not valid UTF-8")
	}
	p := newParser(b)
	m := &Model{}
	if err := p.model(m); err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// parser reads JSON tokens with encoding/json's Decoder (the syntax is
// its) and checks the shape itself.
type parser struct {
	d *json.Decoder
}

func newParser(b []byte) *parser {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return &parser{d: d}
}

// token reads the next token; a syntax error is reported with its offset.
func (p *parser) token(path string) (json.Token, error) {
	t, err := p.d.Token()
	if err == nil {
		return t, nil
	}
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return nil, errAt(path, "malformed JSON at byte %d: %s", se.Offset, se.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, errAt(path, "unexpected end of JSON")
	}
	return nil, errAt(path, "malformed JSON: %v", err)
}

// end checks that nothing follows the document.
func (p *parser) end() error {
	if _, err := p.d.Token(); !errors.Is(err, io.EOF) {
		return errAt("", "more than one JSON value")
	}
	return nil
}

// describe names a token in an error.
func describe(t json.Token) string {
	switch v := t.(type) {
	case nil:
		return "null"
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return strconv.Quote(v.String())
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", t)
}

// open reads the start of an object ('{') or an array ('['). With
// optional, null reads as absent (present false).
func (p *parser) open(path string, want json.Delim, optional bool) (present bool, err error) {
	t, err := p.token(path)
	if err != nil {
		return false, err
	}
	if t == nil && optional {
		return false, nil
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		what := "an object"
		if want == '[' {
			what = "an array"
		}
		return false, errAt(path, "want %s, got %s", what, describe(t))
	}
	return true, nil
}

// object reads the members of an object whose '{' was read: fn reads each
// value. A key appearing twice is refused.
func (p *parser) object(path string, fn func(key string) error) error {
	var seen map[string]bool
	for p.d.More() {
		t, err := p.token(path)
		if err != nil {
			return err
		}
		key, _ := t.(string) // the Decoder gives object keys as strings
		if seen == nil {
			seen = map[string]bool{}
		}
		if seen[key] {
			return errAt(path, "key %q appears twice", key)
		}
		seen[key] = true
		if err := fn(key); err != nil {
			return err
		}
	}
	_, err := p.token(path) // '}'
	return err
}

// array reads the elements of an array whose '[' was read, at most max.
func (p *parser) array(path string, max int, fn func(i int, path string) error) error {
	i := 0
	for p.d.More() {
		if i == max {
			return errAt(path, "more than %d entries", max)
		}
		if err := fn(i, path+"["+strconv.Itoa(i)+"]"); err != nil {
			return err
		}
		i++
	}
	_, err := p.token(path) // ']'
	return err
}

func unknownKey(path, key, known string) error {
	return errAt(path, "unknown key %q (known: %s)", key, known)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// str reads a string; with optional, null reads as "".
func (p *parser) str(path string, optional bool) (string, error) {
	t, err := p.token(path)
	if err != nil {
		return "", err
	}
	if t == nil && optional {
		return "", nil
	}
	s, ok := t.(string)
	if !ok {
		return "", errAt(path, "want a string, got %s", describe(t))
	}
	return s, nil
}

func (p *parser) boolean(path string) (bool, error) {
	t, err := p.token(path)
	if err != nil {
		return false, err
	}
	b, ok := t.(bool)
	if !ok {
		return false, errAt(path, "want true or false, got %s", describe(t))
	}
	return b, nil
}

// float reads a number; null reads as nil.
func (p *parser) float(path string) (*float64, error) {
	t, err := p.token(path)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, nil
	}
	n, ok := t.(json.Number)
	if !ok {
		return nil, errAt(path, "want a number, got %s", describe(t))
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, errAt(path, "%s is out of range", n)
	}
	return &f, nil
}

// uint reads a non-negative integer.
func (p *parser) uint(path string) (uint64, error) {
	t, err := p.token(path)
	if err != nil {
		return 0, err
	}
	n, ok := t.(json.Number)
	if !ok {
		return 0, errAt(path, "want a non-negative integer, got %s", describe(t))
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		return 0, errAt(path, "want a non-negative integer, got %s", n)
	}
	return v, nil
}

func (p *parser) dataType(path string) (DataType, error) {
	s, err := p.str(path, false)
	return DataType(s), err
}

func (p *parser) model(m *Model) error {
	if _, err := p.open("", '{', false); err != nil {
		return err
	}
	return p.object("", func(key string) error {
		var err error
		switch key {
		case "productKey":
			m.ProductKey, err = p.str(key, false)
		case "version":
			m.Version, err = p.uint(key)
		case "measurepoints":
			err = list(p, key, MaxMeasurePoints, &m.MeasurePoints, p.measurePoint)
		case "attributes":
			err = list(p, key, MaxAttributes, &m.Attributes, p.attribute)
		case "events":
			err = list(p, key, MaxEvents, &m.Events, p.event)
		case "services":
			err = list(p, key, MaxServices, &m.Services, p.service)
		default:
			err = unknownKey("", key, "productKey, version, measurepoints, attributes, events, services")
		}
		return err
	})
}

// list reads an optional array of objects into *out (nil when empty).
func list[T any](p *parser, path string, max int, out *[]T, elem func(path string, v *T) error) error {
	present, err := p.open(path, '[', true)
	if err != nil || !present {
		return err
	}
	var vs []T
	err = p.array(path, max, func(_ int, path string) error {
		var v T
		if err := elem(path, &v); err != nil {
			return err
		}
		vs = append(vs, v)
		return nil
	})
	*out = vs
	return err
}

func (p *parser) measurePoint(path string, mp *MeasurePoint) error {
	if _, err := p.open(path, '{', false); err != nil {
		return err
	}
	return p.object(path, func(key string) error {
		var err error
		at := join(path, key)
		switch key {
		case "identifier":
			mp.Identifier, err = p.str(at, false)
		case "name":
			mp.Name, err = p.str(at, true)
		case "dataType":
			mp.DataType, err = p.dataType(at)
		case "unit":
			mp.Unit, err = p.str(at, true)
		case "hasQuality":
			mp.HasQuality, err = p.boolean(at)
		case "min":
			mp.Min, err = p.float(at)
		case "max":
			mp.Max, err = p.float(at)
		case "enum":
			mp.Enum, err = p.enum(at)
		default:
			err = unknownKey(path, key, "identifier, name, dataType, unit, hasQuality, min, max, enum")
		}
		return err
	})
}

// enum reads the named values of an enum point; null or {} read as nil.
func (p *parser) enum(path string) (map[string]string, error) {
	present, err := p.open(path, '{', true)
	if err != nil || !present {
		return nil, err
	}
	var e map[string]string
	err = p.object(path, func(key string) error {
		if len(e) == MaxEnumValues {
			return errAt(path, "more than %d values", MaxEnumValues)
		}
		v, err := p.str(path+"["+strconv.Quote(key)+"]", false)
		if err != nil {
			return err
		}
		if e == nil {
			e = map[string]string{}
		}
		e[key] = v
		return nil
	})
	return e, err
}

func (p *parser) attribute(path string, a *Attribute) error {
	if _, err := p.open(path, '{', false); err != nil {
		return err
	}
	return p.object(path, func(key string) error {
		var err error
		at := join(path, key)
		switch key {
		case "identifier":
			a.Identifier, err = p.str(at, false)
		case "name":
			a.Name, err = p.str(at, true)
		case "dataType":
			a.DataType, err = p.dataType(at)
		case "unit":
			a.Unit, err = p.str(at, true)
		default:
			err = unknownKey(path, key, "identifier, name, dataType, unit")
		}
		return err
	})
}

func (p *parser) param(path string, pa *Param) error {
	if _, err := p.open(path, '{', false); err != nil {
		return err
	}
	return p.object(path, func(key string) error {
		var err error
		at := join(path, key)
		switch key {
		case "identifier":
			pa.Identifier, err = p.str(at, false)
		case "dataType":
			pa.DataType, err = p.dataType(at)
		case "unit":
			pa.Unit, err = p.str(at, true)
		default:
			err = unknownKey(path, key, "identifier, dataType, unit")
		}
		return err
	})
}

func (p *parser) event(path string, ev *Event) error {
	if _, err := p.open(path, '{', false); err != nil {
		return err
	}
	return p.object(path, func(key string) error {
		var err error
		at := join(path, key)
		switch key {
		case "identifier":
			ev.Identifier, err = p.str(at, false)
		case "name":
			ev.Name, err = p.str(at, true)
		case "outputs":
			err = list(p, at, MaxParams, &ev.Outputs, p.param)
		default:
			err = unknownKey(path, key, "identifier, name, outputs")
		}
		return err
	})
}

func (p *parser) service(path string, sv *Service) error {
	if _, err := p.open(path, '{', false); err != nil {
		return err
	}
	return p.object(path, func(key string) error {
		var err error
		at := join(path, key)
		switch key {
		case "identifier":
			sv.Identifier, err = p.str(at, false)
		case "name":
			sv.Name, err = p.str(at, true)
		case "inputs":
			err = list(p, at, MaxParams, &sv.Inputs, p.param)
		case "outputs":
			err = list(p, at, MaxParams, &sv.Outputs, p.param)
		default:
			err = unknownKey(path, key, "identifier, name, inputs, outputs")
		}
		return err
	})
}
