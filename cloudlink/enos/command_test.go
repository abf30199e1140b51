package enos

import (
	"strings"
	"testing"

	"github.com/edged/edged/telemetry"
)

func TestParseMeasurepointSet(t *testing.T) {
	cases := []struct {
		name, in string
		want     []SetPoint // nil: refused
		msg      string
	}{
		{"typed values in payload order", `{"id":"c1","version":"1.0","method":"thing.service.measurepoint.set","params":{"speed":42.5,"run":true,"n":7,"big":18446744073709551615,"neg":-3,"s":"on"}}`,
			[]SetPoint{{"speed", telemetry.Float(42.5)}, {"run", telemetry.Bool(true)}, {"n", telemetry.Int(7)},
				{"big", telemetry.Uint(18446744073709551615)}, {"neg", telemetry.Int(-3)}, {"s", telemetry.String("on")}}, ""},
		{"no method, numeric id", `{"id":12,"params":{"a":"1"}}`, []SetPoint{{"a", telemetry.String("1")}}, ""},
		{"another method", `{"id":"1","method":"thing.service.restart","params":{"a":1}}`, nil, "method"},
		{"null value", `{"id":"1","params":{"a":null}}`, nil, "got null"},
		{"struct value", `{"id":"1","params":{"a":{"x":1}}}`, nil, "struct and array"},
		{"array value", `{"id":"1","params":{"a":[1]}}`, nil, "struct and array"},
		{"twice", `{"id":"1","params":{"a":1,"a":2}}`, nil, "given twice"},
		{"empty", `{"id":"1","params":{}}`, nil, "no measure points"},
		{"empty id", `{"id":"1","params":{"":1}}`, nil, "empty measure point id"},
		{"params not an object", `{"id":"1","params":[1]}`, nil, "want an object"},
		{"truncated", `{"id":"1","params":{"a":1`, nil, ""},
		{"trailing garbage", `{"id":"1","params":{"a":1}}x`, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseMeasurepointSet([]byte(c.in))
			if c.want == nil {
				if err == nil || !strings.Contains(err.Error(), c.msg) {
					t.Fatalf("err = %v, want one containing %q", err, c.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Points) != len(c.want) {
				t.Fatalf("points = %v, want %v", got.Points, c.want)
			}
			for i := range c.want {
				if got.Points[i] != c.want[i] {
					t.Fatalf("point %d = %v, want %v", i, got.Points[i], c.want[i])
				}
			}
		})
	}
}

// FuzzParseMeasurepointSet: never panics; an accepted request re-encodes
// (AppendMeasurepointSet) into one that parses to the same points.
func FuzzParseMeasurepointSet(f *testing.F) {
	f.Add([]byte(`{"id":"c1","version":"1.0","method":"thing.service.measurepoint.set","params":{"speed":42.5,"run":true,"s":"\u00e9"}}`))
	f.Add([]byte(`{"id":7,"params":{"a":"1","b":-0.0,"c":1e400}}`))
	f.Add([]byte(`{"params":{"a":18446744073709551616}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		req, err := ParseMeasurepointSet(payload)
		if err != nil {
			return
		}
		once := AppendMeasurepointSet(nil, req)
		req2, err := ParseMeasurepointSet(once)
		if err != nil {
			t.Fatalf("re-encoded request refused: %v\n%s\nfrom %q", err, once, payload)
		}
		if req2.ID != req.ID || len(req2.Points) != len(req.Points) {
			t.Fatalf("round trip: %+v -> %+v", req, req2)
		}
		if twice := AppendMeasurepointSet(nil, req2); string(twice) != string(once) {
			t.Fatalf("re-encoding not stable:\n%s\n%s", once, twice)
		}
	})
}
