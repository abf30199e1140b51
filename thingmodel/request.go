package thingmodel

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// MethodGet is the method of a thing/tsltemplate/get request.
const MethodGet = "thing.tsltemplate.get"

// MaxRequestIDLen bounds a request's id, as enos.DefaultLimits does.
const MaxRequestIDLen = 64

// GetRequest is a thing/tsltemplate/get request: a device, or a gateway
// for a sub-device, asks for the model of the product in the topic.
//
//	{"id":"1","version":"1.0","method":"thing.tsltemplate.get","params":{}}
//	{"id":"2","version":"1.0","method":"thing.tsltemplate.get","params":{"version":3}}
type GetRequest struct {
	ID string
	// Version asks for that version of the model; 0: the latest.
	Version uint64
}

// ParseGetRequest parses a thing/tsltemplate/get request. The id is
// required: a non-empty string of at most MaxRequestIDLen bytes, or a
// non-negative integer (kept as its text). method, if there, must be
// MethodGet; version (the protocol's) a string; params, if there and not
// null, an object with at most "version", a positive integer. Other keys
// of the envelope are skipped (the EnOS SDKs send some); a key twice,
// another key in params, or anything after the object is refused. The
// error is an *Error; id is returned when it was read, so that the refusal
// can be answered.
func ParseGetRequest(b []byte) (GetRequest, error) {
	var r GetRequest
	if len(b) > MaxSize {
		return r, errAt("", "request of %d bytes is over the limit of %d", len(b), MaxSize)
	}
	if !utf8.Valid(b) {
		return r, errAt("", "not valid UTF-8")
	}
	p := newParser(b)
	if _, err := p.open("", '{', false); err != nil {
		return r, err
	}
	hasID := false
	err := p.object("", func(key string) error {
		switch key {
		case "id":
			id, err := p.requestID()
			if err != nil {
				return err
			}
			r.ID, hasID = id, true
		case "method":
			m, err := p.str(key, false)
			if err != nil {
				return err
			}
			if m != MethodGet {
				return errAt(key, "%s, want %s", strconv.Quote(m), MethodGet)
			}
		case "version":
			if _, err := p.str(key, false); err != nil {
				return err
			}
		case "params":
			present, err := p.open(key, '{', true)
			if err != nil || !present {
				return err
			}
			return p.object(key, func(pkey string) error {
				if pkey != "version" {
					return unknownKey(key, pkey, "version")
				}
				v, err := p.uint("params.version")
				if err == nil && v == 0 {
					err = errAt("params.version", "want a positive integer, got 0")
				}
				r.Version = v
				return err
			})
		default:
			return p.skip(key)
		}
		return nil
	})
	if err == nil {
		err = p.end()
	}
	if err == nil && !hasID {
		err = errAt("id", "required")
	}
	if err != nil {
		return GetRequest{ID: r.ID}, err
	}
	return r, nil
}

// requestID reads an id: a string, or a non-negative integer.
func (p *parser) requestID() (string, error) {
	t, err := p.token("id")
	if err != nil {
		return "", err
	}
	var id string
	switch v := t.(type) {
	case string:
		id = v
	case json.Number:
		if _, err := strconv.ParseUint(string(v), 10, 64); err != nil {
			return "", errAt("id", "want a string or a non-negative integer, got %s", v)
		}
		id = string(v)
	default:
		return "", errAt("id", "want a string or a non-negative integer, got %s", describe(t))
	}
	switch {
	case id == "":
		return "", errAt("id", "empty")
	case len(id) > MaxRequestIDLen:
		return "", errAt("id", "%d bytes, more than %d", len(id), MaxRequestIDLen)
	}
	return id, nil
}

// skip reads and discards one value of any shape.
func (p *parser) skip(path string) error {
	depth := 0
	for {
		t, err := p.token(path)
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}
