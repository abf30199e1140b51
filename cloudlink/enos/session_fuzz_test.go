package enos

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The session parsers (session.go) read requests from the network, so each
// has a fuzz target here. Every target runs each parser of its group on
// every input, under limits chosen by the input, and checks:
//
//   - determinism: the same input gives the same id, value and error twice;
//   - the documented guarantees of an accepted request: id non-empty and
//     within MaxIDLen, keys valid per ValidKey, SubLogin fields present with
//     a supported sign method, lists of 1 to MaxItems entries, at most
//     MaxPoints event values (an empty events object is an event without
//     output parameters) and 1 to MaxPoints attributes, every event and
//     attribute value valid JSON, an event time not negative;
//   - limits: the same input parsed without limits (every limit MaxInt)
//     never fails with ErrLimit; under the fuzzed limits it fails with the
//     same error, or with an error wrapping ErrLimit exactly when the
//     unlimited result is over a limit; what the limited parse accepts,
//     the unlimited one accepts unchanged;
//   - re-encoding: an accepted value, re-encoded as a request, parses to the
//     same value.

// sessionParser adapts one parser to the checks.
type sessionParser struct {
	name  string
	parse func(Limits, []byte) (string, any, error)
	// count is the number the parser bounds by limit(l); -1 when none
	count func(v any) int
	limit func(l Limits) int
	// check the documented guarantees of an accepted value
	check func(t *testing.T, v any)
	// encode v as a request with id
	encode func(id string, v any) []byte
	// norm maps a value to a form where re-encoding is the identity (nil:
	// the value as is)
	norm func(v any) any
}

var unlimited = Limits{MaxItems: math.MaxInt, MaxPoints: math.MaxInt, MaxIDLen: math.MaxInt}

func noCount(any) int          { return -1 }
func itemsLimit(l Limits) int  { return l.MaxItems }
func pointsLimit(l Limits) int { return l.MaxPoints }

func encodeRequest(id string, params any) []byte {
	b, err := json.Marshal(struct {
		ID     string `json:"id"`
		Method string `json:"method"`
		Params any    `json:"params"`
	}{id, "x", params})
	if err != nil {
		panic(err)
	}
	return b
}

func checkRef(t *testing.T, where string, d DeviceRef) {
	t.Helper()
	if !ValidKey(d.ProductKey) || !ValidKey(d.DeviceKey) {
		t.Fatalf("%s: accepted invalid keys %q/%q", where, d.ProductKey, d.DeviceKey)
	}
}

func checkSubLogin(t *testing.T, where string, s SubLogin) {
	t.Helper()
	checkRef(t, where, s.DeviceRef)
	if s.ClientID == "" || s.Timestamp == "" || s.Sign == "" {
		t.Fatalf("%s: accepted a login without clientId, timestamp or sign: %+v", where, s)
	}
	if !SignMethodSupported(s.SignMethod) {
		t.Fatalf("%s: accepted sign method %q", where, s.SignMethod)
	}
}

func checkSubLogins(t *testing.T, v any) {
	t.Helper()
	if len(v.([]SubLogin)) == 0 {
		t.Fatalf("accepted an empty list")
	}
	for i, s := range v.([]SubLogin) {
		checkSubLogin(t, "params["+strconv.Itoa(i)+"]", s)
	}
}

// normValues compacts every value (as re-encoding does) so that
// whitespace inside the values does not count.
func normValues(m map[string]json.RawMessage) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		b, err := json.Marshal(v)
		if err != nil {
			out[k] = "invalid: " + err.Error()
			continue
		}
		out[k] = string(b)
	}
	return out
}

func checkValues(t *testing.T, what string, m map[string]json.RawMessage) {
	t.Helper()
	for k, v := range m {
		if !json.Valid(v) {
			t.Fatalf("%s[%q] = %q: not valid JSON", what, k, v)
		}
	}
}

var (
	parseTopoAdd = sessionParser{
		name: "ParseTopoAdd",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, v, err := l.ParseTopoAdd(p)
			return id, v, err
		},
		count: func(v any) int { return len(v.([]SubLogin)) },
		limit: itemsLimit,
		check: checkSubLogins,
		encode: func(id string, v any) []byte {
			return encodeRequest(id, v)
		},
	}
	parseTopoDelete = sessionParser{
		name: "ParseTopoDelete",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, v, err := l.ParseTopoDelete(p)
			return id, v, err
		},
		count: func(v any) int { return len(v.([]DeviceRef)) },
		limit: itemsLimit,
		check: func(t *testing.T, v any) {
			if len(v.([]DeviceRef)) == 0 {
				t.Fatalf("accepted an empty list")
			}
			for i, d := range v.([]DeviceRef) {
				checkRef(t, "params["+strconv.Itoa(i)+"]", d)
			}
		},
		encode: func(id string, v any) []byte { return encodeRequest(id, v) },
	}
	parseTopoGet = sessionParser{
		name: "ParseTopoGet",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, err := l.ParseTopoGet(p)
			return id, nil, err
		},
		count:  noCount,
		limit:  itemsLimit,
		check:  func(*testing.T, any) {},
		encode: func(id string, _ any) []byte { return encodeRequest(id, struct{}{}) },
	}
	parseCombineLogin = sessionParser{
		name: "ParseCombineLogin",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, v, err := l.ParseCombineLogin(p)
			return id, v, err
		},
		count:  noCount,
		limit:  itemsLimit,
		check:  func(t *testing.T, v any) { checkSubLogin(t, "params", v.(SubLogin)) },
		encode: func(id string, v any) []byte { return encodeRequest(id, v) },
	}
	parseCombineLoginBatch = sessionParser{
		name: "ParseCombineLoginBatch",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, v, err := l.ParseCombineLoginBatch(p)
			return id, v, err
		},
		count: func(v any) int { return len(v.([]SubLogin)) },
		limit: itemsLimit,
		check: checkSubLogins,
		encode: func(id string, v any) []byte {
			return encodeRequest(id, map[string]any{"subDevices": v})
		},
	}
	parseCombineLogout = sessionParser{
		name: "ParseCombineLogout",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, v, err := l.ParseCombineLogout(p)
			return id, v, err
		},
		count:  noCount,
		limit:  itemsLimit,
		check:  func(t *testing.T, v any) { checkRef(t, "params", v.(DeviceRef)) },
		encode: func(id string, v any) []byte { return encodeRequest(id, v) },
	}
	parseEventPost = sessionParser{
		name: "ParseEventPost",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, v, err := l.ParseEventPost(p)
			return id, v, err
		},
		count: func(v any) int { return len(v.(Event).Values) },
		limit: pointsLimit,
		check: func(t *testing.T, v any) {
			ev := v.(Event)
			if ev.Values == nil {
				t.Fatalf("accepted an event without params.events")
			}
			if ev.Time < 0 {
				t.Fatalf("accepted time %d", ev.Time)
			}
			checkValues(t, "params.events", ev.Values)
		},
		encode: func(id string, v any) []byte {
			ev := v.(Event)
			p := map[string]any{"events": ev.Values}
			if ev.Time != 0 {
				p["time"] = ev.Time
			}
			return encodeRequest(id, p)
		},
		norm: func(v any) any {
			ev := v.(Event)
			return struct {
				V map[string]string
				T int64
			}{normValues(ev.Values), ev.Time}
		},
	}
	parseAttributeUpdate = sessionParser{
		name: "ParseAttributeUpdate",
		parse: func(l Limits, p []byte) (string, any, error) {
			id, v, err := l.ParseAttributeUpdate(p)
			return id, v, err
		},
		count: func(v any) int { return len(v.(map[string]json.RawMessage)) },
		limit: pointsLimit,
		check: func(t *testing.T, v any) {
			m := v.(map[string]json.RawMessage)
			if len(m) == 0 {
				t.Fatalf("accepted an empty attribute map")
			}
			checkValues(t, "params.attributes", m)
		},
		encode: func(id string, v any) []byte {
			return encodeRequest(id, map[string]any{"attributes": v})
		},
		norm: func(v any) any { return normValues(v.(map[string]json.RawMessage)) },
	}
)

// fuzzLimits makes small limits from one byte, so that the limit paths are
// reached: items and points 1-3, id 1-15 bytes; 0 keeps the default.
func fuzzLimits(b uint8) Limits {
	return Limits{MaxItems: int(b & 3), MaxPoints: int(b >> 2 & 3), MaxIDLen: int(b >> 4)}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// checkSessionParser runs every check of the file's comment on one parser.
func checkSessionParser(t *testing.T, p sessionParser, l Limits, payload []byte) {
	t.Helper()
	el := l.orDefault() // the limits in force
	id, v, err := p.parse(l, payload)

	// deterministic
	id2, v2, err2 := p.parse(l, payload)
	if id != id2 || !reflect.DeepEqual(v, v2) || errText(err) != errText(err2) {
		t.Fatalf("%s not deterministic on %q:\n%q %#v %v\n%q %#v %v", p.name, payload, id, v, err, id2, v2, err2)
	}

	// without limits
	uid, uv, uerr := p.parse(unlimited, payload)
	if errors.Is(uerr, ErrLimit) {
		t.Fatalf("%s without limits: %v", p.name, uerr)
	}
	var over bool // the unlimited result is over one of l's limits
	if uerr == nil {
		n := p.count(uv)
		over = len(uid) > el.MaxIDLen || n >= 0 && n > p.limit(el)
	}

	if err != nil {
		switch {
		case errors.Is(err, ErrLimit):
			if uerr == nil && !over {
				t.Fatalf("%s under %+v: %v, but the request (id %q, count %d) is within the limits", p.name, el, err, uid, p.count(uv))
			}
		case errText(err) != errText(uerr):
			t.Fatalf("%s under %+v: %v; without limits: %v", p.name, el, err, uerr)
		}
		return
	}

	// accepted: the guarantees
	if uerr != nil || uid != id || !reflect.DeepEqual(uv, v) {
		t.Fatalf("%s under %+v accepted %q (id %q, %#v); without limits: id %q, %#v, %v", p.name, el, payload, id, v, uid, uv, uerr)
	}
	if over {
		t.Fatalf("%s under %+v accepted an id of %d bytes and %d items", p.name, el, len(id), p.count(v))
	}
	if id == "" {
		t.Fatalf("%s accepted an empty id: %q", p.name, payload)
	}
	p.check(t, v)

	// re-encoded, the same value
	again := p.encode(id, v)
	rid, rv, rerr := p.parse(l, again)
	if rerr != nil {
		t.Fatalf("%s refused its own re-encoding %s: %v\n(from %q)", p.name, again, rerr, payload)
	}
	norm := p.norm
	if norm == nil {
		norm = func(v any) any { return v }
	}
	if rid != id || !reflect.DeepEqual(norm(rv), norm(v)) {
		t.Fatalf("%s: re-encoding changed the value:\n%q %#v\n%q %#v\n%s\n(from %q)", p.name, id, v, rid, rv, again, payload)
	}
}

// addWire seeds f with the PUBLISH payloads of the SDK capture on topics
// containing one of parts.
func addWire(f *testing.F, parts ...string) {
	for _, l := range loadWire(f) {
		if l.Kind != "PUBLISH" || l.Payload == "" {
			continue
		}
		for _, p := range parts {
			if strings.Contains(l.Topic, p) && !strings.HasSuffix(l.Topic, "_reply") {
				f.Add([]byte(l.Payload), uint8(0))
				f.Add([]byte(l.Payload), uint8(0x11)) // 1 item, 1 point, 1-byte id
			}
		}
	}
}

// envelopeSeeds are edge cases of the common envelope, for every target.
var envelopeSeeds = []string{
	``, `null`, `[]`, `"x"`, `{}`, `{"id":null,"params":{}}`,
	`{"id":-1,"params":{}}`, `{"id":1.5,"params":{}}`, `{"id":1e3,"params":{}}`, `{"id":{"a":1},"params":{}}`,
	`{"id":"","params":{}}`, `{"id":18446744073709551615,"params":{}}`, `{"id":18446744073709551616,"params":{}}`,
	`{"id":"` + strings.Repeat("x", 65) + `","params":{}}`, `{"id":"\u00e9\ud800","params":{}}`,
	`{"id":"1"}`, `{"id":"1","params":null}`, `{"id":"1","params": 7}`, `{"ID":"1","Params":{},"id":"2"}`,
	`{"id":"1","method":5,"params":{}}`, `{"id":"1","params":{}} trailing`,
}

func addEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds {
		f.Add([]byte(s), uint8(0))
	}
}

const (
	seedSubLogin  = `{"productKey":"subPK","deviceKey":"subDK","clientId":"subPKsubDK1795315153737","timestamp":"1795315153737","signMethod":"hmacsha256","sign":"3b64d10f662e47eb05bb682acfe8e96da907ab2b0c947f2c46f6a95a35081594","secureMode":"2","cleanSession":"False"}`
	seedSubLogin2 = `{"productKey":"subPK","deviceKey":"subDK2","clientId":"c","timestamp":"1","signMethod":"SHA1","sign":"ab"}`
)

// FuzzTopoRequests: ParseTopoAdd, ParseTopoDelete and ParseTopoGet.
func FuzzTopoRequests(f *testing.F) {
	addWire(f, "/thing/topo/")
	addEnvelope(f)
	for _, s := range []string{
		`{"id":"10","version":"1.0","method":"thing.topo.add","params":[` + seedSubLogin + `,` + seedSubLogin2 + `]}`,
		`{"id":11,"method":"thing.topo.add","params":[` + seedSubLogin + `,{"productKey":"subPK","deviceKey":"a/b","clientId":"c","timestamp":"1","signMethod":"md5","sign":"x"}]}`,
		`{"id":"12","params":[{"productKey":"subPK","deviceKey":"subDK","clientId":"c","timestamp":1,"signMethod":"md5","sign":"x"}]}`,
		`{"id":"13","params":[{"productKey":"subPK","deviceKey":"subDK","clientId":"c","timestamp":"1","signMethod":"sha512","sign":"x"}]}`,
		`{"id":"14","method":"thing.topo.delete","params":[{"productKey":"subPK","deviceKey":"subDK"},{"productKey":"p","deviceKey":"d"},{"productKey":"p","deviceKey":"e"}]}`,
		`{"id":"15","params":[{"productKey":"subPK","deviceKey":"sub#DK"}]}`,
		`{"id":"16","params":[null]}`, `{"id":"17","params":[]}`, `{"id":"18","params":["a"]}`,
		`{"id":"19","params":[{"productKey":"p\u0000","deviceKey":"d"}]}`,
		`{"id":"20","params":[{"productKey":"` + strings.Repeat("p", 257) + `","deviceKey":"d"}]}`,
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(0x21))
	}
	f.Fuzz(func(t *testing.T, payload []byte, lim uint8) {
		l := fuzzLimits(lim)
		checkSessionParser(t, parseTopoAdd, l, payload)
		checkSessionParser(t, parseTopoDelete, l, payload)
		checkSessionParser(t, parseTopoGet, l, payload)
	})
}

// FuzzCombineRequests: ParseCombineLogin, ParseCombineLoginBatch and
// ParseCombineLogout.
func FuzzCombineRequests(f *testing.F) {
	addWire(f, "/combine/")
	addEnvelope(f)
	for _, s := range []string{
		`{"id":"30","method":"combine.login.batch","params":{"subDevices":[` + seedSubLogin + `,` + seedSubLogin2 + `]}}`,
		`{"id":"31","params":{"subDevices":[` + seedSubLogin + `,{"productKey":"subPK","deviceKey":"d","clientId":"c","timestamp":"1","signMethod":"md5"}]}}`,
		`{"id":"32","params":{"subDevices":null}}`, `{"id":"33","params":{}}`, `{"id":"34","params":{"subDevices":{}}}`,
		`{"id":"35","params":[` + seedSubLogin + `]}`,
		`{"id":"36","method":"combine.logout","params":{"productKey":"subPK","deviceKey":"subDK"}}`,
		`{"id":"37","params":{"productKey":"subPK","deviceKey":"sub+DK"}}`,
		`{"id":"38","params":{"productKey":"subPK","deviceKey":"subDK","clientId":"","timestamp":"1","signMethod":"md5","sign":"x"}}`,
		`{"id":"39","params":{"productKey":1,"deviceKey":"subDK"}}`,
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(0x21))
	}
	f.Fuzz(func(t *testing.T, payload []byte, lim uint8) {
		l := fuzzLimits(lim)
		checkSessionParser(t, parseCombineLogin, l, payload)
		checkSessionParser(t, parseCombineLoginBatch, l, payload)
		checkSessionParser(t, parseCombineLogout, l, payload)
	})
}

// FuzzEventPost: ParseEventPost.
func FuzzEventPost(f *testing.F) {
	addWire(f, "/thing/event/")
	addEnvelope(f)
	for _, s := range []string{
		`{"id":"40","params":{"events":{"temp":99,"msg":"hot","list":[1, 2, {"a": null}]},"time":"1795315153734"}}`,
		`{"id":"41","params":{"events":{}}}`, `{"id":"42","params":{"events":null}}`, `{"id":"43","params":{"events":[1]}}`,
		`{"id":"44","params":{"events":{"a":1},"time":"soon"}}`, `{"id":"45","params":{"events":{"a":1},"time":-1}}`,
		`{"id":"46","params":{"events":{"a":1},"time":1.5}}`, `{"id":"47","params":{"events":{"a":1},"time":null}}`,
		`{"id":"48","params":{"events":{"a":1},"time":"null"}}`, `{"id":"49","params":{"events":{"a":1},"time":""}}`,
		`{"id":"50","params":{"events":{"a":1,"b":2,"c":3,"d":4},"time":"+5"}}`,
		`{"id":"51","params":{"events":{"a":"<&>\u2028","a":2}}}`,
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(0x24))
	}
	f.Fuzz(func(t *testing.T, payload []byte, lim uint8) {
		checkSessionParser(t, parseEventPost, fuzzLimits(lim), payload)
	})
}

// FuzzAttributeUpdate: ParseAttributeUpdate.
func FuzzAttributeUpdate(f *testing.F) {
	addWire(f, "/thing/attribute/")
	addEnvelope(f)
	for _, s := range []string{
		`{"id":"60","params":{"attributes":{"ratedPower":5000,"name":"inverter \"A\"","tags":["x", "y"]}}}`,
		`{"id":"61","params":{"attributes":{}}}`, `{"id":"62","params":{"attributes":null}}`,
		`{"id":"63","params":{"attributes":[1]}}`, `{"id":"64","params":{}}`,
		`{"id":"65","params":{"attributes":{"a":1,"b":2,"c":3,"d":4}}}`,
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(0x24))
	}
	f.Fuzz(func(t *testing.T, payload []byte, lim uint8) {
		checkSessionParser(t, parseAttributeUpdate, fuzzLimits(lim), payload)
	})
}
