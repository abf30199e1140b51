package enos

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// wirePayload returns the payload the SDK published on topic.
func wirePayload(t *testing.T, topic string) []byte {
	t.Helper()
	for _, l := range loadWire(t) {
		if l.Dir == "device->server" && l.Kind == "PUBLISH" && l.Topic == topic {
			return []byte(l.Payload)
		}
	}
	t.Fatalf("no device->server PUBLISH on %s in the SDK capture", topic)
	return nil
}

// TestSessionSDKCapture parses the SDK's own topo/get, combine/login, event
// and attribute requests.
func TestSessionSDKCapture(t *testing.T) {
	var l Limits
	t.Run("topo/get", func(t *testing.T) {
		id, err := l.ParseTopoGet(wirePayload(t, "/sys/gwPK/gwDK/thing/topo/get"))
		if err != nil || id != "4" {
			t.Fatalf("ParseTopoGet = %q, %v; want 4", id, err)
		}
	})
	t.Run("combine/login", func(t *testing.T) {
		id, s, err := l.ParseCombineLogin(wirePayload(t, "/ext/session/gwPK/gwDK/combine/login"))
		want := SubLogin{
			DeviceRef: DeviceRef{ProductKey: "subPK", DeviceKey: "subDK"},
			ClientID:  "subPKsubDK1795315153737", Timestamp: "1795315153737", SignMethod: "hmacsha256",
			Sign: "3b64d10f662e47eb05bb682acfe8e96da907ab2b0c947f2c46f6a95a35081594",
		}
		if err != nil || id != "5" || s != want {
			t.Fatalf("ParseCombineLogin = %q, %+v, %v; want 5, %+v", id, s, err, want)
		}
		// the parsed fields are what the sign covers (the SDK's secret is in
		// enos_login_vectors.json)
		params := map[string]string{"clientId": s.ClientID, "deviceKey": s.DeviceKey, "productKey": s.ProductKey, "timestamp": s.Timestamp}
		if !VerifySign(s.SignMethod, params, "subSecret", s.Sign) {
			t.Fatal("the parsed login does not verify with the SDK's secret")
		}
		// combine.login.batch with the same login, as the SDK would send it
		batch := `{"id":"6","method":"combine.login.batch","params":{"subDevices":[` +
			string(rawParams(t, wirePayload(t, "/ext/session/gwPK/gwDK/combine/login"))) + `]}}`
		id, subs, err := l.ParseCombineLoginBatch([]byte(batch))
		if err != nil || id != "6" || len(subs) != 1 || subs[0] != want {
			t.Fatalf("ParseCombineLoginBatch = %q, %+v, %v", id, subs, err)
		}
	})
	t.Run("event", func(t *testing.T) {
		id, ev, err := l.ParseEventPost(wirePayload(t, "/sys/gwPK/gwDK/thing/event/overheat/post"))
		if err != nil || id != "2" || ev.Time != 1795315153734 || len(ev.Values) != 1 || string(ev.Values["temp"]) != "99" {
			t.Fatalf("ParseEventPost = %q, %+v, %v", id, ev, err)
		}
	})
	t.Run("attribute", func(t *testing.T) {
		id, attrs, err := l.ParseAttributeUpdate(wirePayload(t, "/sys/gwPK/gwDK/thing/attribute/update"))
		if err != nil || id != "3" || len(attrs) != 1 || string(attrs["ratedPower"]) != "5000" {
			t.Fatalf("ParseAttributeUpdate = %q, %v, %v", id, attrs, err)
		}
	})
}

func rawParams(t *testing.T, payload []byte) json.RawMessage {
	t.Helper()
	var r struct{ Params json.RawMessage }
	if err := json.Unmarshal(payload, &r); err != nil {
		t.Fatal(err)
	}
	return r.Params
}

var allSessionParsers = []sessionParser{
	parseTopoAdd, parseTopoDelete, parseTopoGet,
	parseCombineLogin, parseCombineLoginBatch, parseCombineLogout,
	parseEventPost, parseAttributeUpdate,
}

// TestSessionEnvelopeErrors: the envelope (JSON object, id, params) is
// checked the same way by every parser.
func TestSessionEnvelopeErrors(t *testing.T) {
	long := strings.Repeat("x", 65)
	for _, c := range []struct {
		name, payload string
		limits        Limits
		want          string
		limit         bool // wraps ErrLimit
		paramsOnly    bool // ParseTopoGet does not need params
	}{
		{name: "not JSON", payload: `{"id":"1",`, want: "not a JSON request object: unexpected end of JSON input"},
		{name: "trailing bytes", payload: `{"id":"1","params":{}} x`, want: "not a JSON request object: invalid character 'x' after top-level value"},
		{name: "an array", payload: `[{"id":"1"}]`, want: "not a JSON request object: json: cannot unmarshal array into Go value of type enos.request"},
		{name: "a string", payload: `"x"`, want: "not a JSON request object: json: cannot unmarshal string into Go value of type enos.request"},
		{name: "method a number", payload: `{"id":"1","method":5,"params":{}}`, want: "not a JSON request object: json: cannot unmarshal number into Go struct field request.method of type string"},
		{name: "id missing", payload: `{"params":{}}`, want: "id: required"},
		{name: "id null", payload: `{"id":null,"params":{}}`, want: "id: want a string or a non-negative integer, got null"},
		{name: "id negative", payload: `{"id":-1,"params":{}}`, want: "id: want a string or a non-negative integer, got -1"},
		{name: "id float", payload: `{"id":1.5,"params":{}}`, want: "id: want a string or a non-negative integer, got 1.5"},
		{name: "id exponent", payload: `{"id":1e3,"params":{}}`, want: "id: want a string or a non-negative integer, got 1e3"},
		{name: "id object", payload: `{"id":{"n":1},"params":{}}`, want: `id: want a string or a non-negative integer, got {"n":1}`},
		{name: "id array", payload: `{"id":["1"],"params":{}}`, want: `id: want a string or a non-negative integer, got ["1"]`},
		{name: "id bool", payload: `{"id":true,"params":{}}`, want: "id: want a string or a non-negative integer, got true"},
		{name: "id past uint64", payload: `{"id":18446744073709551616,"params":{}}`, want: "id: want a string or a non-negative integer, got 18446744073709551616"},
		{name: "id empty", payload: `{"id":"","params":{}}`, want: "id: empty"},
		{name: "id too long", payload: `{"id":"` + long + `","params":{}}`, want: "payload exceeds a limit: id of 65 bytes, limit 64", limit: true},
		{name: "numeric id over a small limit", payload: `{"id":12345,"params":{}}`, limits: Limits{MaxIDLen: 4}, want: "payload exceeds a limit: id of 5 bytes, limit 4", limit: true},
		{name: "id length counted after unescaping", payload: `{"id":"\u00e9\u00e9\u00e9","params":{}}`, limits: Limits{MaxIDLen: 5}, want: "payload exceeds a limit: id of 6 bytes, limit 5", limit: true},
		{name: "params missing", payload: `{"id":"1"}`, want: "params: required", paramsOnly: true},
		{name: "params null", payload: `{"id":"1","params":null}`, want: "params: required", paramsOnly: true},
	} {
		for _, p := range allSessionParsers {
			t.Run(c.name+"/"+p.name, func(t *testing.T) {
				_, _, err := p.parse(c.limits, []byte(c.payload))
				if c.paramsOnly && p.name == "ParseTopoGet" {
					if err != nil {
						t.Fatalf("ParseTopoGet needs no params: %v", err)
					}
					return
				}
				if err == nil || err.Error() != c.want {
					t.Fatalf("error %v, want %q", err, c.want)
				}
				if errors.Is(err, ErrLimit) != c.limit {
					t.Fatalf("errors.Is(%v, ErrLimit) = %v", err, !c.limit)
				}
			})
		}
	}
}

// TestSessionParsers: each parser's params, good and bad.
func TestSessionParsers(t *testing.T) {
	const (
		login  = `{"productKey":"subPK","deviceKey":"subDK","clientId":"c1","timestamp":"1700000000000","signMethod":"sha256","sign":"ab"}`
		login2 = `{"productKey":"subPK","deviceKey":"subDK2","clientId":"c2","timestamp":"1700000000001","signMethod":"MD5","sign":"cd"}`
		keys   = "productKey and deviceKey are required, without '&', '/', '+', '#', '|' or control characters"
	)
	sub := func(dk, cid, ts, method, sign string) SubLogin {
		return SubLogin{DeviceRef: DeviceRef{ProductKey: "subPK", DeviceKey: dk}, ClientID: cid, Timestamp: ts, SignMethod: method, Sign: sign}
	}
	sub1, sub2 := sub("subDK", "c1", "1700000000000", "sha256", "ab"), sub("subDK2", "c2", "1700000000001", "MD5", "cd")
	raw := func(kv ...string) map[string]json.RawMessage {
		m := map[string]json.RawMessage{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = json.RawMessage(kv[i+1])
		}
		return m
	}
	for _, c := range []struct {
		name    string
		p       sessionParser
		limits  Limits
		payload string
		want    any    // the value on success
		err     string // the exact error, "" for success
		limit   bool
	}{
		// thing.topo.add
		{name: "two logins", p: parseTopoAdd, payload: `{"id":"1","method":"thing.topo.add","params":[` + login + `,` + login2 + `]}`, want: []SubLogin{sub1, sub2}},
		{name: "extra keys skipped", p: parseTopoAdd, payload: `{"id":1,"params":[{"productKey":"subPK","deviceKey":"subDK","clientId":"c1","timestamp":"1700000000000","signMethod":"sha256","sign":"ab","secureMode":"2","cleanSession":"False"}]}`, want: []SubLogin{sub1}},
		{name: "params an object", p: parseTopoAdd, payload: `{"id":"1","params":` + login + `}`, err: "params: want an array of objects: json: cannot unmarshal object into Go value of type []enos.SubLogin"},
		{name: "params empty", p: parseTopoAdd, payload: `{"id":"1","params":[]}`, err: "params: empty"},
		{name: "too many", p: parseTopoAdd, limits: Limits{MaxItems: 1}, payload: `{"id":"1","params":[` + login + `,` + login2 + `]}`, err: "payload exceeds a limit: params has 2 entries, limit 1", limit: true},
		{name: "deviceKey with /", p: parseTopoAdd, payload: `{"id":"1","params":[` + login + `,{"productKey":"subPK","deviceKey":"a/b","clientId":"c","timestamp":"1","signMethod":"sha1","sign":"x"}]}`, err: "params[1]: " + keys},
		{name: "sign missing", p: parseTopoAdd, payload: `{"id":"1","params":[{"productKey":"subPK","deviceKey":"subDK","clientId":"c","timestamp":"1","signMethod":"sha1"}]}`, err: "params[0]: clientId, timestamp and sign are required"},
		{name: "clientId missing", p: parseTopoAdd, payload: `{"id":"1","params":[{"productKey":"subPK","deviceKey":"subDK","timestamp":"1","signMethod":"sha1","sign":"x"}]}`, err: "params[0]: clientId, timestamp and sign are required"},
		{name: "signMethod missing", p: parseTopoAdd, payload: `{"id":"1","params":[{"productKey":"subPK","deviceKey":"subDK","clientId":"c","timestamp":"1","sign":"x"}]}`, err: `params[0]: signMethod "" is not one of sha256, sha1, md5 (or their hmac labels)`},
		{name: "signMethod unknown", p: parseTopoAdd, payload: `{"id":"1","params":[{"productKey":"subPK","deviceKey":"subDK","clientId":"c","timestamp":"1","signMethod":"sha512","sign":"x"}]}`, err: `params[0]: signMethod "sha512" is not one of sha256, sha1, md5 (or their hmac labels)`},
		{name: "timestamp a number", p: parseTopoAdd, payload: `{"id":"1","params":[{"productKey":"subPK","deviceKey":"subDK","clientId":"c","timestamp":1,"signMethod":"sha1","sign":"x"}]}`, err: "params: want an array of objects: json: cannot unmarshal number into Go struct field SubLogin.timestamp of type string"},

		// thing.topo.delete
		{name: "two refs", p: parseTopoDelete, payload: `{"id":"2","params":[{"productKey":"subPK","deviceKey":"subDK"},{"productKey":"p","deviceKey":"d","extra":1}]}`, want: []DeviceRef{{"subPK", "subDK"}, {"p", "d"}}},
		{name: "deviceKey with #", p: parseTopoDelete, payload: `{"id":"2","params":[{"productKey":"subPK","deviceKey":"sub#DK"}]}`, err: "params[0]: " + keys},
		{name: "productKey missing", p: parseTopoDelete, payload: `{"id":"2","params":[{"deviceKey":"subDK"}]}`, err: "params[0]: " + keys},
		{name: "null entry", p: parseTopoDelete, payload: `{"id":"2","params":[null]}`, err: "params[0]: " + keys},
		{name: "control character", p: parseTopoDelete, payload: `{"id":"2","params":[{"productKey":"p\n","deviceKey":"d"}]}`, err: "params[0]: " + keys},
		{name: "entries strings", p: parseTopoDelete, payload: `{"id":"2","params":["subPK/subDK"]}`, err: "params: want an array of objects: json: cannot unmarshal string into Go value of type enos.DeviceRef"},
		{name: "too many", p: parseTopoDelete, limits: Limits{MaxItems: 2}, payload: `{"id":"2","params":[{"productKey":"a","deviceKey":"b"},{"productKey":"a","deviceKey":"c"},{"productKey":"a","deviceKey":"d"}]}`, err: "payload exceeds a limit: params has 3 entries, limit 2", limit: true},

		// thing.topo.get
		{name: "no params", p: parseTopoGet, payload: `{"id":"3"}`},
		{name: "numeric id", p: parseTopoGet, payload: `{"id":42,"params":{}}`},

		// combine.login
		{name: "login", p: parseCombineLogin, payload: `{"id":"4","params":` + login + `}`, want: sub1},
		{name: "params an array", p: parseCombineLogin, payload: `{"id":"4","params":[` + login + `]}`, err: "params: want an object: json: cannot unmarshal array into Go value of type enos.SubLogin"},
		{name: "params a string", p: parseCombineLogin, payload: `{"id":"4","params":"subPK"}`, err: "params: want an object: json: cannot unmarshal string into Go value of type enos.SubLogin"},
		{name: "timestamp missing", p: parseCombineLogin, payload: `{"id":"4","params":{"productKey":"subPK","deviceKey":"subDK","clientId":"c","signMethod":"sha1","sign":"x"}}`, err: "params: clientId, timestamp and sign are required"},
		{name: "productKey with &", p: parseCombineLogin, payload: `{"id":"4","params":{"productKey":"a&b","deviceKey":"subDK","clientId":"c","timestamp":"1","signMethod":"sha1","sign":"x"}}`, err: "params: " + keys},
		{name: "deviceKey a number", p: parseCombineLogin, payload: `{"id":"4","params":{"productKey":"subPK","deviceKey":7}}`, err: "params: want an object: json: cannot unmarshal number into Go struct field SubLogin.DeviceRef.deviceKey of type string"},

		// combine.login.batch
		{name: "batch", p: parseCombineLoginBatch, payload: `{"id":"5","params":{"subDevices":[` + login + `,` + login2 + `]}}`, want: []SubLogin{sub1, sub2}},
		{name: "subDevices missing", p: parseCombineLoginBatch, payload: `{"id":"5","params":{}}`, err: "params.subDevices: want an array of objects: unexpected end of JSON input"},
		{name: "subDevices null", p: parseCombineLoginBatch, payload: `{"id":"5","params":{"subDevices":null}}`, err: "params.subDevices: empty"},
		{name: "subDevices an object", p: parseCombineLoginBatch, payload: `{"id":"5","params":{"subDevices":` + login + `}}`, err: "params.subDevices: want an array of objects: json: cannot unmarshal object into Go value of type []enos.SubLogin"},
		{name: "params an array", p: parseCombineLoginBatch, payload: `{"id":"5","params":[` + login + `]}`, err: `params: want an object: json: cannot unmarshal array into Go value of type struct { SubDevices json.RawMessage "json:\"subDevices\"" }`},
		{name: "second sign missing", p: parseCombineLoginBatch, payload: `{"id":"5","params":{"subDevices":[` + login + `,{"productKey":"subPK","deviceKey":"d","clientId":"c","timestamp":"1","signMethod":"sha1"}]}}`, err: "params.subDevices[1]: clientId, timestamp and sign are required"},
		{name: "too many", p: parseCombineLoginBatch, limits: Limits{MaxItems: 1}, payload: `{"id":"5","params":{"subDevices":[` + login + `,` + login2 + `]}}`, err: "payload exceeds a limit: params.subDevices has 2 entries, limit 1", limit: true},

		// combine.logout
		{name: "logout", p: parseCombineLogout, payload: `{"id":"6","params":{"productKey":"subPK","deviceKey":"subDK"}}`, want: DeviceRef{"subPK", "subDK"}},
		{name: "deviceKey with +", p: parseCombineLogout, payload: `{"id":"6","params":{"productKey":"subPK","deviceKey":"sub+DK"}}`, err: "params: " + keys},
		{name: "deviceKey with |", p: parseCombineLogout, payload: `{"id":"6","params":{"productKey":"subPK","deviceKey":"sub|DK"}}`, err: "params: " + keys},
		{name: "empty params", p: parseCombineLogout, payload: `{"id":"6","params":{}}`, err: "params: " + keys},
		{name: "params an array", p: parseCombineLogout, payload: `{"id":"6","params":[{"productKey":"subPK","deviceKey":"subDK"}]}`, err: "params: want an object: json: cannot unmarshal array into Go value of type enos.DeviceRef"},

		// thing.event.{id}.post
		{name: "time a numeric string", p: parseEventPost, payload: `{"id":"7","params":{"events":{"temp":99,"msg":"hot"},"time":"1795315153734"}}`, want: Event{Values: raw("temp", "99", "msg", `"hot"`), Time: 1795315153734}},
		{name: "time absent", p: parseEventPost, payload: `{"id":"7","params":{"events":{"temp":[1,2]}}}`, want: Event{Values: raw("temp", "[1,2]")}},
		{name: "time null", p: parseEventPost, payload: `{"id":"7","params":{"events":{"a":1},"time":null}}`, want: Event{Values: raw("a", "1")}},
		{name: "no output parameters", p: parseEventPost, payload: `{"id":"7","params":{"events":{}}}`, want: Event{Values: raw()}},
		{name: "events missing", p: parseEventPost, payload: `{"id":"7","params":{"time":1}}`, err: "params.events: required (an object)"},
		{name: "events null", p: parseEventPost, payload: `{"id":"7","params":{"events":null}}`, err: "params.events: required (an object)"},
		{name: "events an array", p: parseEventPost, payload: `{"id":"7","params":{"events":[1]}}`, err: "params: want {events: {...}, time}: json: cannot unmarshal array into Go struct field .events of type map[string]json.RawMessage"},
		{name: "events a string", p: parseEventPost, payload: `{"id":"7","params":{"events":"hot"}}`, err: "params: want {events: {...}, time}: json: cannot unmarshal string into Go struct field .events of type map[string]json.RawMessage"},
		{name: "params an array", p: parseEventPost, payload: `{"id":"7","params":[]}`, err: `params: want {events: {...}, time}: json: cannot unmarshal array into Go value of type struct { Events map[string]json.RawMessage "json:\"events\""; Time json.RawMessage "json:\"time\"" }`},
		{name: "time a word", p: parseEventPost, payload: `{"id":"7","params":{"events":{"a":1},"time":"soon"}}`, err: `params.time: want unix milliseconds, got "soon"`},
		{name: "time negative", p: parseEventPost, payload: `{"id":"7","params":{"events":{"a":1},"time":-5}}`, err: "params.time: want unix milliseconds, got -5"},
		{name: "time a float", p: parseEventPost, payload: `{"id":"7","params":{"events":{"a":1},"time":1.5e12}}`, err: "params.time: want unix milliseconds, got 1.5e12"},
		{name: "time an object", p: parseEventPost, payload: `{"id":"7","params":{"events":{"a":1},"time":{}}}`, err: "params.time: want unix milliseconds, got {}"},
		{name: "too many values", p: parseEventPost, limits: Limits{MaxPoints: 2}, payload: `{"id":"7","params":{"events":{"a":1,"b":2,"c":3}}}`, err: "payload exceeds a limit: params.events has 3 values, limit 2", limit: true},

		// thing.attribute.update
		{name: "attributes", p: parseAttributeUpdate, payload: `{"id":"8","params":{"attributes":{"ratedPower":5000,"name":"A"}}}`, want: raw("ratedPower", "5000", "name", `"A"`)},
		{name: "attributes empty", p: parseAttributeUpdate, payload: `{"id":"8","params":{"attributes":{}}}`, err: "params.attributes: required (a non-empty object)"},
		{name: "attributes missing", p: parseAttributeUpdate, payload: `{"id":"8","params":{}}`, err: "params.attributes: required (a non-empty object)"},
		{name: "attributes an array", p: parseAttributeUpdate, payload: `{"id":"8","params":{"attributes":[1]}}`, err: "params: want {attributes: {...}}: json: cannot unmarshal array into Go struct field .attributes of type map[string]json.RawMessage"},
		{name: "too many values", p: parseAttributeUpdate, limits: Limits{MaxPoints: 1}, payload: `{"id":"8","params":{"attributes":{"a":1,"b":2}}}`, err: "payload exceeds a limit: params.attributes has 2 values, limit 1", limit: true},
	} {
		t.Run(c.p.name+"/"+c.name, func(t *testing.T) {
			_, v, err := c.p.parse(c.limits, []byte(c.payload))
			if c.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.want != nil && !reflect.DeepEqual(v, c.want) {
					t.Fatalf("got %#v\nwant %#v", v, c.want)
				}
				checkSessionParser(t, c.p, c.limits, []byte(c.payload)) // the fuzz targets' properties
				return
			}
			if err == nil || err.Error() != c.err {
				t.Fatalf("error %v\nwant %s", err, c.err)
			}
			if errors.Is(err, ErrLimit) != c.limit {
				t.Fatalf("errors.Is(%v, ErrLimit) = %v", err, !c.limit)
			}
		})
	}
}
