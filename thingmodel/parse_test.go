package thingmodel

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

const canonicalInverter = `{"productKey":"inverterPK","version":3,"measurepoints":[` +
	`{"identifier":"activePower","name":"Active power","dataType":"float","unit":"kW","hasQuality":true,"min":-1000,"max":1000},` +
	`{"identifier":"energy","dataType":"double","unit":"kWh","hasQuality":false,"min":0},` +
	`{"identifier":"state","dataType":"enum","hasQuality":true,"enum":{"-1":"unknown","0":"off","2":"running","10":"fault"}},` +
	`{"identifier":"count","dataType":"int","hasQuality":false,"min":0,"max":65535},` +
	`{"identifier":"tiny","dataType":"float","hasQuality":false,"min":1e-7,"max":1e+21},` +
	`{"identifier":"label","name":"Label \"quoted\" ünïcode","dataType":"string","hasQuality":false}],` +
	`"attributes":[{"identifier":"ratedPower","name":"Rated power","dataType":"float","unit":"kW"},{"identifier":"firmware","dataType":"string"}],` +
	`"events":[{"identifier":"trip","name":"Trip","outputs":[{"identifier":"code","dataType":"int"},{"identifier":"at","dataType":"timestamp"}]},{"identifier":"heartbeat"}],` +
	`"services":[{"identifier":"setPower","inputs":[{"identifier":"power","dataType":"float","unit":"kW"}],"outputs":[{"identifier":"power","dataType":"float","unit":"kW"}]},{"identifier":"reset"}]}`

func TestParseCanonical(t *testing.T) {
	b, err := os.ReadFile("testdata/inverter.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if mp, ok := m.MeasurePoint("state"); !ok || mp.Enum["10"] != "fault" || !mp.HasQuality {
		t.Errorf("state: %+v", mp)
	}
	if m.Services[1].Inputs != nil || m.Services[1].Outputs != nil {
		t.Errorf("empty and null lists must read as nil: %+v", m.Services[1])
	}
	out, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != canonicalInverter {
		t.Errorf("canonical JSON\n got %s\nwant %s", out, canonicalInverter)
	}
	m2, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, m2) || !m.Equal(m2) {
		t.Errorf("re-parsed model differs:\n%+v\n%+v", m, m2)
	}
}

func TestParseMinimal(t *testing.T) {
	m, err := Parse([]byte(`{"productKey":"p"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(m.AppendJSON(nil)); got != `{"productKey":"p","version":0,"measurepoints":[]}` {
		t.Errorf("got %s", got)
	}
}

// TestParseErrors is the golden table of refusals: each message names the
// JSON path of the fault.
func TestParseErrors(t *testing.T) {
	mp := func(s string) string { return `{"productKey":"p","measurepoints":[` + s + `]}` }
	ok := `{"identifier":"a","dataType":"float","hasQuality":false}`
	for _, tt := range []struct{ in, want string }{
		{``, `unexpected end of JSON`},
		{`[]`, `want an object, got an array`},
		{`{"productKey":"p"} {}`, `more than one JSON value`},
		{`{"productKey":"p",}`, `malformed JSON at byte 18: invalid character '}' looking for beginning of object key string`},
		{`{"productKey":"p","ProductKey":"q"}`, `unknown key "ProductKey" (known: productKey, version, measurepoints, attributes, events, services)`},
		{`{"productKey":"p","productKey":"p"}`, `key "productKey" appears twice`},
		{"{\"productKey\":\"p\xff\"}", `not valid UTF-8`},
		{`{}`, `productKey: required`},
		{`{"productKey":null}`, `productKey: want a string, got null`},
		{`{"productKey":"a/b"}`, `productKey: "a/b" is not a product key (1 to 256 bytes, no '&', '/', '+', '#', '|' or control characters)`},
		{`{"productKey":"p","version":-1}`, `version: want a non-negative integer, got -1`},
		{`{"productKey":"p","version":1.5}`, `version: want a non-negative integer, got 1.5`},
		{`{"productKey":"p","measurepoints":{}}`, `measurepoints: want an array, got an object`},
		{mp(ok + `,` + ok), `measurepoints[1].identifier: "a" is also the identifier of entry 0`},
		{mp(ok + `,` + strings.Replace(ok, `"a"`, `"b"`, 1) + `,` + strings.Replace(ok, `"a"`, `"c"`, 1) + `,{"identifier":"d","dataType":"flaot","hasQuality":false}`), `measurepoints[3].dataType: "flaot" is not a data type (int, float, double, bool, string, enum, timestamp)`},
		{mp(`{"identifier":"a","hasQuality":false}`), `measurepoints[0].dataType: required (int, float, double, bool, string, enum, timestamp)`},
		{mp(`{"dataType":"int"}`), `measurepoints[0].identifier: required`},
		{mp(`{"identifier":"1a","dataType":"int"}`), `measurepoints[0].identifier: "1a" is not an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)`},
		{mp(`{"identifier":"` + strings.Repeat("a", 65) + `","dataType":"int"}`), `measurepoints[0].identifier: "` + strings.Repeat("a", 65) + `" is not an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)`},
		{mp(`{"identifier":"a-b","dataType":"int"}`), `measurepoints[0].identifier: "a-b" is not an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)`},
		{mp(`{"identifier":"a","dataType":"int","datatype":"int"}`), `measurepoints[0]: unknown key "datatype" (known: identifier, name, dataType, unit, hasQuality, min, max, enum)`},
		{mp(`{"identifier":"a","dataType":"int","hasQuality":"yes"}`), `measurepoints[0].hasQuality: want true or false, got a string`},
		{mp(`{"identifier":"a","dataType":"int","min":"1"}`), `measurepoints[0].min: want a number, got a string`},
		{mp(`{"identifier":"a","dataType":"int","min":1e999}`), `measurepoints[0].min: 1e999 is out of range`},
		{mp(`{"identifier":"a","dataType":"int","min":1.5}`), `measurepoints[0].min: 1.5 is not an integer (dataType int)`},
		{mp(`{"identifier":"a","dataType":"float","min":2,"max":1}`), `measurepoints[0]: min 2 is greater than max 1`},
		{mp(`{"identifier":"a","dataType":"string","max":1}`), `measurepoints[0].max: only for numeric data types (int, float, double), not string`},
		{mp(`{"identifier":"a","dataType":"int","enum":{"0":"off"}}`), `measurepoints[0].enum: only for dataType enum, not int`},
		{mp(`{"identifier":"a","dataType":"enum"}`), `measurepoints[0].enum: required for dataType enum: name at least one value`},
		{mp(`{"identifier":"a","dataType":"enum","enum":{"01":"x"}}`), `measurepoints[0].enum["01"]: key "01" is not an integer in decimal form`},
		{mp(`{"identifier":"a","dataType":"enum","enum":{"on":"x"}}`), `measurepoints[0].enum["on"]: key "on" is not an integer in decimal form`},
		{mp(`{"identifier":"a","dataType":"enum","enum":{"1":""}}`), `measurepoints[0].enum["1"]: empty name`},
		{mp(`{"identifier":"a","dataType":"enum","enum":{"1":2}}`), `measurepoints[0].enum["1"]: want a string, got a number`},
		{mp(`{"identifier":"a","dataType":"enum","enum":{"1":"a","1":"b"}}`), `measurepoints[0].enum: key "1" appears twice`},
		{mp(`{"identifier":"a","dataType":"int","unit":"k\nW"}`), `measurepoints[0].unit: "k\nW" has a control character`},
		{mp(`{"identifier":"a","dataType":"int","name":"` + strings.Repeat("x", 257) + `"}`), `measurepoints[0].name: 257 bytes, more than 256`},
		{`{"productKey":"p","attributes":[{"identifier":"a","dataType":"int"},{"identifier":"a","dataType":"int"}]}`, `attributes[1].identifier: "a" is also the identifier of entry 0`},
		{`{"productKey":"p","attributes":[{"identifier":"a","dataType":"int","min":1}]}`, `attributes[0]: unknown key "min" (known: identifier, name, dataType, unit)`},
		{`{"productKey":"p","events":[{"identifier":"e","outputs":[{"identifier":"x","dataType":"int"},{"identifier":"x","dataType":"bool"}]}]}`, `events[0].outputs[1].identifier: "x" is also the identifier of entry 0`},
		{`{"productKey":"p","events":[{"identifier":"e"},{"identifier":"e"}]}`, `events[1].identifier: "e" is also the identifier of entry 0`},
		{`{"productKey":"p","services":[{"identifier":"s","inputs":[{"identifier":"x","dataType":"real"}]}]}`, `services[0].inputs[0].dataType: "real" is not a data type (int, float, double, bool, string, enum, timestamp)`},
		{`{"productKey":"p","services":[{"identifier":"s","outputs":[{"identifier":"x"}]}]}`, `services[0].outputs[0].dataType: required (int, float, double, bool, string, enum, timestamp)`},
		{`{"productKey":"p","services":[{"identifier":"s","inputs":[{"identifier":"x","dataType":"int","name":"n"}]}]}`, `services[0].inputs[0]: unknown key "name" (known: identifier, dataType, unit)`},
	} {
		m, err := Parse([]byte(tt.in))
		if err == nil {
			t.Errorf("%s: accepted: %+v", tt.in, m)
			continue
		}
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("%s: error %T, want *Error", tt.in, err)
		}
		if err.Error() != tt.want {
			t.Errorf("%.80s:\n got %s\nwant %s", tt.in, err, tt.want)
		}
	}
}

func TestParseLimits(t *testing.T) {
	if _, err := Parse(make([]byte, MaxSize+1)); err == nil || err.Error() != "model of 1048577 bytes is over the limit of 1048576" {
		t.Errorf("size: %v", err)
	}
	var b strings.Builder
	b.WriteString(`{"productKey":"p","events":[{"identifier":"e","outputs":[`)
	for i := range MaxParams + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"identifier":"x","dataType":"int"}`)
	}
	b.WriteString(`]}]}`)
	if _, err := Parse([]byte(b.String())); err == nil || err.Error() != "events[0].outputs: more than 256 entries" {
		t.Errorf("params: %v", err)
	}
	m := &Model{ProductKey: "p", MeasurePoints: make([]MeasurePoint, MaxMeasurePoints+1)}
	if err := m.Validate(); err == nil || err.Error() != "measurepoints: 10001 entries, more than 10000" {
		t.Errorf("measure points: %v", err)
	}
	if _, err := Marshal(m); err == nil {
		t.Error("Marshal of an invalid model")
	}
}

func TestParseGetRequest(t *testing.T) {
	for _, tt := range []struct {
		in      string
		id      string
		version uint64
		err     string
	}{
		{`{"id":"1","version":"1.0","method":"thing.tsltemplate.get","params":{}}`, "1", 0, ""},
		{`{"id":7,"params":{"version":3}}`, "7", 3, ""},
		{`{"id":"x","params":null,"secureMode":2,"extra":{"a":[1,{"b":null}]}}`, "x", 0, ""},
		{`{"id":"x"}`, "x", 0, ""},
		{`{"params":{}}`, "", 0, "id: required"},
		{`{"id":""}`, "", 0, "id: empty"},
		{`{"id":-1}`, "", 0, "id: want a string or a non-negative integer, got -1"},
		{`{"id":"` + strings.Repeat("i", 65) + `"}`, "", 0, "id: 65 bytes, more than 64"},
		{`{"id":"1","method":"thing.topo.get"}`, "1", 0, `method: "thing.topo.get", want thing.tsltemplate.get`},
		{`{"id":"1","params":{"version":0}}`, "1", 0, "params.version: want a positive integer, got 0"},
		{`{"id":"1","params":{"version":"2"}}`, "1", 0, "params.version: want a non-negative integer, got a string"},
		{`{"id":"1","params":{"v":2}}`, "1", 0, `params: unknown key "v" (known: version)`},
		{`{"id":"1","params":[]}`, "1", 0, "params: want an object, got an array"},
		{`{"id":"1","id":"2"}`, "1", 0, `key "id" appears twice`},
		{`{"id":"1"}x`, "1", 0, "more than one JSON value"},
		{`"x"`, "", 0, "want an object, got a string"},
	} {
		r, err := ParseGetRequest([]byte(tt.in))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.err || r.ID != tt.id || r.Version != tt.version {
			t.Errorf("%s: %+v %q, want id %q version %d error %q", tt.in, r, got, tt.id, tt.version, tt.err)
		}
	}
}
