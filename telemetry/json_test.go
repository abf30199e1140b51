package telemetry

import (
	"encoding/json"
	"math"
	"testing"
)

func TestAppendJSON(t *testing.T) {
	recs := []Record{{
		Gateway: "gw\"1", Epoch: 3, Seq: 1021, Device: "m1", ProductKey: "pk", DeviceKey: "dk", Time: 1700000000000,
		Points: []Point{
			{ID: "v", Value: Float(230.1), Quality: Good},
			{ID: "big", Value: Uint(math.MaxUint64), Quality: Good},
			{ID: "neg", Value: Int(-5), Quality: Good},
			{ID: "on", Value: Bool(true), Quality: Good},
			{ID: "s", Value: String("a\x01\xffb"), Quality: Good},
			{ID: "i", Quality: Bad, Reason: "timeout"},
			{ID: "nan", Value: Float(math.NaN()), Quality: Bad, Reason: "not a number"},
		},
	}}
	got := string(AppendJSON(nil, recs))
	want := `{"records":[{"gateway":"gw\"1","epoch":3,"seq":1021,"device":"m1","product_key":"pk","device_key":"dk","time":1700000000000,` +
		`"points":[{"id":"v","value":230.1,"quality":"good"},{"id":"big","value":18446744073709551615,"quality":"good"},` +
		`{"id":"neg","value":-5,"quality":"good"},{"id":"on","value":true,"quality":"good"},{"id":"s","value":"a\u0001\ufffdb","quality":"good"},` +
		`{"id":"i","quality":"bad","reason":"timeout"},{"id":"nan","value":null,"quality":"bad","reason":"not a number"}]}]}`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Fatal("not valid JSON")
	}
}

func FuzzAppendJSONIsValid(f *testing.F) {
	f.Add("gw", "dev", "id", "str", 1.5, int64(-1))
	f.Fuzz(func(t *testing.T, gw, dev, id, s string, fl float64, i int64) {
		recs := []Record{{Gateway: gw, Device: dev, Points: []Point{
			{ID: id, Value: String(s)}, {ID: id, Value: Float(fl)}, {ID: id, Value: Int(i)}, {ID: id, Reason: s},
		}}}
		if out := AppendJSON(nil, recs); !json.Valid(out) {
			t.Fatalf("invalid JSON: %s", out)
		}
	})
}
