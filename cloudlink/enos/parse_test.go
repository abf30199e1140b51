package enos

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/edged/edged/telemetry"
)

// WireLine is one line of testdata/enos_sdk_wire.jsonl.
type wireLine struct {
	Dir      string `json:"dir"`
	Kind     string `json:"kind"`
	QoS      byte   `json:"qos"`
	Topic    string `json:"topic"`
	Payload  string `json:"payload"`
	ClientID string `json:"clientId"`
	Username string `json:"username"`
	Password string `json:"password"`
}

func loadWire(t testing.TB) []wireLine {
	t.Helper()
	f, err := os.Open("testdata/enos_sdk_wire.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []wireLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l wireLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// TestSDKWire parses every measure point post the official SDK sent.
func TestSDKWire(t *testing.T) {
	posts := 0
	for _, l := range loadWire(t) {
		if l.Dir != "device->server" || l.Kind != "PUBLISH" {
			continue
		}
		pk, dk, suffix, ok := ParseTopic(l.Topic)
		if !ok && !strings.HasPrefix(l.Topic, "/ext/session/") {
			t.Errorf("ParseTopic(%q) failed", l.Topic)
		}
		switch suffix {
		case SuffixPost:
			posts++
			p, err := ParsePost([]byte(l.Payload))
			if err != nil {
				t.Fatalf("%s: %v", l.Payload, err)
			}
			if p.Method != MethodPost || p.Sender != nil || p.Item.Origin != nil || p.Item.Time == 0 || len(p.Item.Points) == 0 {
				t.Errorf("%s: %+v", l.Payload, p)
			}
			if pk == "gwPK" && dk == "gwDK" {
				// {"temp": 21.5, "power": {"value": 3.2, "quality": 9}}
				want := []MeasurePoint{{ID: "temp", Value: telemetry.Float(21.5)}, {ID: "power", Value: telemetry.Float(3.2), Quality: 9}}
				if !pointsEqual(p.Item.Points, want) || p.ID != "1" || p.Item.Time != 1795315153721 {
					t.Errorf("got %+v", p)
				}
			}
		case SuffixPostBatch:
			posts++
			pb, err := ParsePostBatch([]byte(l.Payload))
			if err != nil {
				t.Fatalf("%s: %v", l.Payload, err)
			}
			if pb.ID != "7" || len(pb.Items) != 2 || pb.AllowOfflineSubDevice || pb.SkipInvalidMeasurepoints || pb.Sender != nil {
				t.Errorf("got %+v", pb)
			}
			if it := pb.Items[0]; it.ProductKey != "subPK" || it.DeviceKey != "subDK" || it.Time != 1700000000000 || !pointsEqual(it.Points, []MeasurePoint{{ID: "temp", Value: telemetry.Int(1)}}) {
				t.Errorf("item 0: %+v", it)
			}
			if it := pb.Items[1]; it.ProductKey != "" || it.DeviceKey != "" || it.Time != 1700000001000 {
				t.Errorf("item 1 (the gateway itself): %+v", it)
			}
		}
	}
	if posts != 3 {
		t.Errorf("parsed %d measure point posts, want 3", posts)
	}
}

func pointsEqual(a, b []MeasurePoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || !a[i].Value.Equal(b[i].Value) || a[i].Quality != b[i].Quality || a[i].Reason != b[i].Reason || (a[i].Array == nil) != (b[i].Array == nil) || len(a[i].Array) != len(b[i].Array) {
			return false
		}
		for j := range a[i].Array {
			if !a[i].Array[j].Equal(b[i].Array[j]) {
				return false
			}
		}
	}
	return true
}

// TestParseBriefExample parses the batch of the wire format's description.
func TestParseBriefExample(t *testing.T) {
	const in = `{"id":"17","version":"1.0","method":"thing.measurepoint.post.batch","params":[{"productKey":"meterPK","deviceKey":"meter-1","measurepoints":{"voltage":230.1,"breaker":true,"current":{"value":null,"quality":1,"reason":"timeout"}},"time":1700000000000,"edged":{"epoch":1,"seq":1234}}],"edged":{"gateway":"gw-01","epoch":3}}`
	pb, err := ParsePostBatch([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if pb.ID != "17" || pb.Version != "1.0" || pb.Method != MethodPostBatch || *pb.Sender != (Sender{"gw-01", 3}) || len(pb.Items) != 1 {
		t.Fatalf("%+v", pb)
	}
	it := pb.Items[0]
	if it.ProductKey != "meterPK" || it.DeviceKey != "meter-1" || it.Time != 1700000000000 || *it.Origin != (Origin{1, 1234}) {
		t.Errorf("%+v", it)
	}
	want := []MeasurePoint{
		{ID: "voltage", Value: telemetry.Float(230.1)},
		{ID: "breaker", Value: telemetry.Bool(true)},
		{ID: "current", Quality: QualityBad, Reason: "timeout"},
	}
	if !pointsEqual(it.Points, want) {
		t.Errorf("points %+v", it.Points)
	}
}

// TestParseLoose covers what other SDKs send.
func TestParseLoose(t *testing.T) {
	const in = `{"id": 42, "method": "thing.measurepoint.resume.batch", "params": [
	  {"productKey": "pk", "deviceKey": "dk", "assetId": "x",
	   "measurepoints": {"branchCurr": ["1.02", "2.02"], "on": "true", "n": "7", "big": 18446744073709551615,
	                     "neg": -3, "e": 1e3, "s": "a\"b\u00e9\ud83d\ude00", "nil": null,
	                     "q": {"value": [1, 2.5], "quality": "2", "reason": null}},
	   "time": "1700000000000.7"},
	  {"productKey": null, "deviceKey": null, "measurepoints": {}, "time": ""}],
	 "allowOfflineSubDevice": "TRUE", "skipInvalidMeasurepoints": 0, "sys": {"ack": 1}}`
	pb, err := ParsePostBatch([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if pb.ID != "42" || pb.Method != MethodResumeBatch || !pb.AllowOfflineSubDevice || pb.SkipInvalidMeasurepoints {
		t.Errorf("%+v", pb)
	}
	want := []MeasurePoint{
		{ID: "branchCurr", Array: []telemetry.Value{telemetry.String("1.02"), telemetry.String("2.02")}},
		{ID: "on", Value: telemetry.String("true")},
		{ID: "n", Value: telemetry.String("7")},
		{ID: "big", Value: telemetry.Uint(18446744073709551615)},
		{ID: "neg", Value: telemetry.Int(-3)},
		{ID: "e", Value: telemetry.Float(1000)},
		{ID: "s", Value: telemetry.String("a\"bé😀")},
		{ID: "nil"},
		{ID: "q", Array: []telemetry.Value{telemetry.Int(1), telemetry.Float(2.5)}, Quality: 2},
	}
	if it := pb.Items[0]; !pointsEqual(it.Points, want) || it.Time != 1700000000000 {
		t.Errorf("item 0: %+v", it)
	}
	if it := pb.Items[1]; it.ProductKey != "" || it.Time != 0 || len(it.Points) != 0 {
		t.Errorf("item 1: %+v", it)
	}
}

func TestParseErrors(t *testing.T) {
	const ok = `"id":"1","params":[{"measurepoints":{"a":1}}]`
	tests := []struct {
		name, in string
		limit    bool
		msg      string
	}{
		{"empty", ``, false, "want '{'"},
		{"not json", `hello`, false, "want '{'"},
		{"truncated", `{"id":"1","params":[{"measurepoints":{"a":1}`, false, "want ',' or '}'"},
		{"trailing", `{` + ok + `} x`, false, "after the JSON value"},
		{"no id", `{"params":[]}`, false, "id is required"},
		{"empty id", `{"id":"","params":[]}`, false, "id is required"},
		{"id object", `{"id":{},"params":[]}`, false, "want a string or an integer"},
		{"id too long", `{"id":"` + strings.Repeat("9", 65) + `","params":[]}`, true, "longer than 64"},
		{"no params", `{"id":"1"}`, false, "params is required"},
		{"params object", `{"id":"1","params":{}}`, false, "want an array of items"},
		{"item not object", `{"id":"1","params":[1]}`, false, "params[0]: want an object"},
		{"missing measurepoints", `{"id":"1","params":[{"time":1}]}`, false, "measurepoints is required"},
		{"measurepoints array", `{"id":"1","params":[{"measurepoints":[]}]}`, false, "want an object"},
		{"nested array", `{"id":"1","params":[{"measurepoints":{"a":[[1]]}}]}`, false, `"a"[0]: want a number`},
		{"struct point", `{"id":"1","params":[{"measurepoints":{"a":{"x":1}}}]}`, false, "unknown key"},
		{"object without value", `{"id":"1","params":[{"measurepoints":{"a":{"quality":1}}}]}`, false, "needs a value"},
		{"bad quality", `{"id":"1","params":[{"measurepoints":{"a":{"value":1,"quality":"bad"}}}]}`, false, "integer quality"},
		{"number out of range", `{"id":"1","params":[{"measurepoints":{"a":1e999}}]}`, false, "out of range"},
		{"bad number", `{"id":"1","params":[{"measurepoints":{"a":01}}]}`, false, "want ',' or '}'"},
		{"bad time", `{"id":"1","params":[{"measurepoints":{"a":1},"time":"soon"}]}`, false, "unix millisecond"},
		{"negative time", `{"id":"1","params":[{"measurepoints":{"a":1},"time":-5}]}`, false, "out of range"},
		{"half keys", `{"id":"1","params":[{"productKey":"p","measurepoints":{"a":1}}]}`, false, "go together"},
		{"key type", `{"id":"1","params":[{"productKey":1,"deviceKey":"d","measurepoints":{"a":1}}]}`, false, "want a string"},
		{"wrong method", `{"id":"1","method":"thing.measurepoint.post","params":[]}`, false, "is not thing.measurepoint.post.batch"},
		{"item edged alone", `{"id":"1","params":[{"measurepoints":{},"edged":{"epoch":1,"seq":2}}]}`, false, "top-level edged"},
		{"edged seq string", `{"id":"1","params":[{"measurepoints":{},"edged":{"epoch":1,"seq":"2"}}],"edged":{"gateway":"g","epoch":1}}`, false, "want a number"},
		{"edged no gateway", `{"id":"1","params":[],"edged":{"epoch":1}}`, false, "non-empty gateway"},
		{"edged negative epoch", `{"id":"1","params":[],"edged":{"gateway":"g","epoch":-1}}`, false, "unsigned"},
		{"duplicate params", `{"id":"1","params":[],"params":[]}`, false, "duplicate key"},
		{"bad flag", `{` + ok + `,"allowOfflineSubDevice":"maybe"}`, false, "want a bool"},
		{"deep unknown", `{` + ok + `,"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, false, "nesting too deep"},
		{"control char", "{\"id\":\"1\n\",\"params\":[]}", false, "control character"},
		{"bad escape", `{"id":"\x","params":[]}`, false, "bad escape"},
		{"too many items", `{"id":"1","params":[` + strings.Repeat(`{"measurepoints":{}},`, 10000) + `{"measurepoints":{}}]}`, true, "more than 10000 items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePostBatch([]byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Errorf("not an *Error: %T", err)
			}
			if errors.Is(err, ErrLimit) != tt.limit || errors.Is(err, ErrMalformed) == tt.limit {
				t.Errorf("limit %v: %v", tt.limit, err)
			}
		})
	}
	// The limits are configurable.
	l := Limits{MaxItems: 1, MaxPoints: 1}
	if _, err := l.ParsePostBatch([]byte(`{"id":"1","params":[{"measurepoints":{}},{"measurepoints":{}}]}`)); !errors.Is(err, ErrLimit) {
		t.Errorf("MaxItems 1: %v", err)
	}
	if _, err := l.ParsePost([]byte(`{"id":"1","params":{"measurepoints":{"a":1,"b":2}}}`)); !errors.Is(err, ErrLimit) {
		t.Errorf("MaxPoints 1: %v", err)
	}
}

func TestParsePost(t *testing.T) {
	p, err := ParsePost([]byte(`{"id":"5","version":"1.0","method":"thing.measurepoint.resume","params":{"measurepoints":{"t":1.5},"time":7,"edged":{"epoch":2,"seq":9}},"edged":{"gateway":"gw","epoch":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != "5" || p.Method != MethodResume || p.Item.Time != 7 || *p.Item.Origin != (Origin{2, 9}) || *p.Sender != (Sender{"gw", 2}) {
		t.Errorf("%+v", p)
	}
	if _, err := ParsePost([]byte(`{"id":"5","params":[]}`)); err == nil {
		t.Error("a batch's params accepted by ParsePost")
	}
	if _, err := ParsePost([]byte(`{"id":"5","method":"thing.measurepoint.post.batch","params":{"measurepoints":{}}}`)); err == nil {
		t.Error("batch method accepted by ParsePost")
	}
}

func TestPeekID(t *testing.T) {
	for in, want := range map[string]string{
		`{"id":"7","params":`:                             "7",
		`{"version":"1.0","id":12,"params":[}`:            "12",
		`{"params":[{"measurepoints":{}}],"id":"x"} junk`: "x",
		`{"params":[{"measurepoints":{}}` + "\x00":        "",
		`not json`: "",
	} {
		got, ok := PeekID([]byte(in))
		if got != want || ok != (want != "") {
			t.Errorf("PeekID(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

func TestReply(t *testing.T) {
	b := AppendReply(nil, Reply{ID: "7", Code: CodeOK})
	if string(b) != `{"id":"7","code":200,"message":"","data":{}}` {
		t.Errorf("%s", b)
	}
	r, err := ParseReply(AppendReply(nil, Reply{ID: "a\"b", Code: 403, Message: "fenced", Data: json.RawMessage(`{"epoch":4}`)}))
	if err != nil || r.ID != "a\"b" || r.Code != 403 || r.Message != "fenced" || string(r.Data) != `{"epoch":4}` {
		t.Errorf("%+v %v", r, err)
	}
	// The SDK's replies to commands, and the test server's replies it accepted.
	for _, l := range loadWire(t) {
		if l.Kind == "PUBLISH" && strings.HasSuffix(l.Topic, ReplySuffix) {
			r, err := ParseReply([]byte(l.Payload))
			if err != nil || r.Code != 200 || r.ID == "" {
				t.Errorf("%s: %+v %v", l.Payload, r, err)
			}
		}
	}
	for _, bad := range []string{`{}`, `{"id":"1"}`, `{"code":200}`, `{"id":"1","code":"200"}`, `{"id":"1","code":2.5}`, `[`} {
		if _, err := ParseReply([]byte(bad)); err == nil {
			t.Errorf("ParseReply(%s): no error", bad)
		}
	}
}
