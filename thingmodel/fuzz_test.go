package thingmodel

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"strconv"
	"testing"
)

// FuzzParse: Parse never panics; what it refuses it refuses with an
// *Error; what it accepts is valid, re-encodes to canonical JSON that
// Parse accepts as an equal model, and that model re-encodes to the same
// bytes.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("testdata/inverter.json"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		canonicalInverter,
		`{"productKey":"p"}`,
		`{"productKey":"p","version":2,"measurepoints":[{"identifier":"a","dataType":"int","hasQuality":true,"min":-5,"max":5}]}`,
		`{"productKey":"p","measurepoints":[{"identifier":"s","dataType":"enum","hasQuality":false,"enum":{"0":"off","1":"on"}}]}`,
		`{"productKey":"p","measurepoints":[{"identifier":"f","dataType":"float","hasQuality":false,"min":-0,"max":1e-9}]}`,
		`{"productKey":"p\u0041","events":[{"identifier":"e","outputs":[{"identifier":"x","dataType":"bool","unit":"\u00b0C"}]}]}`,
		`{"productKey":"p","services":[{"identifier":"s","inputs":[{"identifier":"x","dataType":"string"}],"outputs":[]}]}`,
		`{"productKey":"p","measurepoints":null,"attributes":[{"identifier":"a","dataType":"timestamp","name":null}]}`,
		`{"productKey":"p","measurepoints":[{"identifier":"a","dataType":"flaot"}]}`,
		`[`, `{"productKey":"p",}`, `{"productKey":"p","productKey":"p"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v, want *Error", err, err)
			}
			if m != nil {
				t.Fatalf("a model with an error")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid model: %v", err)
		}
		enc, err := Marshal(m)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if len(enc) > MaxSize+MaxSize/2 {
			// Canonical JSON may be longer than a compact input only by
			// escapes; sanity bound.
			t.Logf("canonical JSON of %d bytes from %d", len(enc), len(b))
		}
		m2, err := Parse(enc)
		if err != nil && len(enc) <= MaxSize {
			t.Fatalf("canonical JSON refused: %v\n%s", err, enc)
		}
		if err != nil {
			return // longer than the input (escapes) and over the limit
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-parsed model differs:\n%#v\n%#v", m, m2)
		}
		if enc2 := m2.AppendJSON(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding differs:\n%s\n%s", enc, enc2)
		}
		if !m.Equal(m2) {
			t.Fatal("Equal is false for equal models")
		}
	})
}

// FuzzParseGetRequest: never panics; an accepted request has an id within
// its limit, and re-encoded parses the same.
func FuzzParseGetRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","version":"1.0","method":"thing.tsltemplate.get","params":{}}`,
		`{"id":7,"params":{"version":3}}`,
		`{"id":"x","params":null,"extra":[{"a":[1,2,{}]}]}`,
		`{"id":"1","params":{"version":0}}`,
		`{"id":"1","id":"1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseGetRequest(b)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v, want *Error", err, err)
			}
			if r.Version != 0 {
				t.Fatalf("version %d with an error", r.Version)
			}
			return
		}
		if r.ID == "" || len(r.ID) > MaxRequestIDLen {
			t.Fatalf("accepted id %q", r.ID)
		}
		enc := []byte(`{"id":` + strconv.Quote(r.ID) + `,"method":"` + MethodGet + `"`)
		if r.Version != 0 {
			enc = append(enc, `,"params":{"version":`+strconv.FormatUint(r.Version, 10)+`}`...)
		}
		enc = append(enc, '}')
		r2, err := ParseGetRequest(enc)
		if err != nil || r2 != r {
			t.Fatalf("re-encoded %s: %+v %v, want %+v", enc, r2, err, r)
		}
	})
}
