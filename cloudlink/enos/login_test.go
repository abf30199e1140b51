package enos

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"
)

type loginVector struct {
	Use          string            `json:"use"`
	MQTTClientID string            `json:"mqttClientId"`
	Username     string            `json:"username"`
	Params       map[string]string `json:"params"`
	Secret       string            `json:"secret"`
	SignMethod   string            `json:"signmethod"`
	Sign         string            `json:"sign"`
}

// loadLoginVectors reads testdata/enos_login_vectors.json (the official
// EnOS Python SDK's own signatures; see testdata/README.md).
func loadLoginVectors(t *testing.T) []loginVector {
	t.Helper()
	b, err := os.ReadFile("testdata/enos_login_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []loginVector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) != 2 {
		t.Fatalf("want 2 vectors, got %d", len(f.Vectors))
	}
	return f.Vectors
}

func TestLoginVectors(t *testing.T) {
	for _, v := range loadLoginVectors(t) {
		t.Run(v.Use, func(t *testing.T) {
			got, err := Sign(v.SignMethod, v.Params, v.Secret)
			if err != nil {
				t.Fatal(err)
			}
			if got != v.Sign {
				t.Errorf("Sign = %s, want %s", got, v.Sign)
			}
			if !VerifySign(v.SignMethod, v.Params, v.Secret, v.Sign) {
				t.Error("VerifySign refused the SDK's signature")
			}
			if !VerifySign("SHA256", v.Params, v.Secret, strings.ToUpper(v.Sign)) {
				t.Error("VerifySign must ignore the case of method and sign")
			}
			if VerifySign(v.SignMethod, v.Params, v.Secret+"x", v.Sign) {
				t.Error("VerifySign accepted a wrong secret")
			}
			bad := maps.Clone(v.Params)
			bad["timestamp"] += "1"
			if VerifySign(v.SignMethod, bad, v.Secret, v.Sign) {
				t.Error("VerifySign accepted a changed timestamp")
			}
			if VerifySign(v.SignMethod, v.Params, v.Secret, v.Sign[:10]) {
				t.Error("VerifySign accepted a truncated sign")
			}
			if v.MQTTClientID == "" {
				return
			}
			// The CONNECT fields, rebuilt from the inputs, must be the SDK's bytes.
			cid, opts, err := ParseClientID(v.MQTTClientID)
			if err != nil {
				t.Fatal(err)
			}
			if cid != v.Params["clientId"] || opts["timestamp"] != v.Params["timestamp"] || opts["signmethod"] != v.SignMethod || opts["securemode"] != "2" {
				t.Errorf("ParseClientID = %q %v", cid, opts)
			}
			dk, pk, err := ParseUsername(v.Username)
			if err != nil || dk != v.Params["deviceKey"] || pk != v.Params["productKey"] {
				t.Errorf("ParseUsername = %q %q %v", dk, pk, err)
			}
			clientID, username, password, err := MQTTLogin(cid, pk, dk, v.Secret, v.SignMethod, v.Params["timestamp"])
			if err != nil {
				t.Fatal(err)
			}
			if clientID != v.MQTTClientID || username != v.Username || password != v.Sign {
				t.Errorf("MQTTLogin = %q %q %q\nwant        %q %q %q", clientID, username, password, v.MQTTClientID, v.Username, v.Sign)
			}
		})
	}
}

func TestSignMethods(t *testing.T) {
	params := LoginParams("c", "p", "d", "1")
	// Independent values: printf 'clientIdcdeviceKeydproductKeyptimestamp1s' | sha256sum (sha1sum, md5sum)
	want := map[string]string{
		"sha256": "7c1371c772fabc548c39197b631a6b7c3de7c41e10c546d49db1bccad4c71d93",
		"sha1":   "db07a8376b09ee03dbadbd83cca58f12aee34bd3",
		"md5":    "96428a023bd2641dc373209095b1071b",
	}
	for _, m := range []string{"sha256", "SHA256", "hmacsha256", "HmacSHA256", "sha1", "hmacsha1", "md5", "hmacMD5"} {
		s, err := Sign(m, params, "s")
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if w := want[strings.TrimPrefix(strings.ToLower(m), "hmac")]; s != w {
			t.Errorf("%s: %s, want %s", m, s, w)
		}
	}
	if _, err := Sign("sha512", params, "s"); !errors.Is(err, ErrSignMethod) {
		t.Errorf("sha512: %v", err)
	}
	if VerifySign("sha512", params, "s", "") {
		t.Error("unknown method verified")
	}
}

func TestParseClientID(t *testing.T) {
	tests := []struct {
		in   string
		cid  string
		opts map[string]string
		err  bool
	}{
		{in: "gw|securemode=2,signmethod=sha256,timestamp=1700000000000.5|", cid: "gw", opts: map[string]string{"securemode": "2", "signmethod": "sha256", "timestamp": "1700000000000.5"}},
		{in: "plain-client", cid: "plain-client"},
		{in: "gw||", cid: "gw", opts: map[string]string{}},
		{in: "gw|a=b=c|", cid: "gw", opts: map[string]string{"a": "b=c"}},
		{in: "gw|a=|", cid: "gw", opts: map[string]string{"a": ""}},
		{in: "", err: true},
		{in: "|a=1|", err: true},
		{in: "gw|a=1", err: true},
		{in: "gw|a=1|x", err: true},
		{in: "gw|a=1||", err: true},
		{in: "gw|a|", err: true},
		{in: "gw|=1|", err: true},
		{in: "gw|a=1,,b=2|", err: true},
		{in: "gw|a=1,a=2|", err: true},
	}
	for _, tt := range tests {
		cid, opts, err := ParseClientID(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		if tt.err {
			continue
		}
		if cid != tt.cid || !maps.Equal(opts, tt.opts) {
			t.Errorf("%q: got %q %v, want %q %v", tt.in, cid, opts, tt.cid, tt.opts)
		}
	}
}

func TestParseUsername(t *testing.T) {
	for in, ok := range map[string]bool{
		"gwDK&gwPK": true, "a&b": true,
		"gwDK": false, "&pk": false, "dk&": false, "dk&pk&x": false, "d/k&pk": false, "dk&p+k": false, "": false,
	} {
		_, _, err := ParseUsername(in)
		if (err == nil) != ok {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestMQTTLoginRejects(t *testing.T) {
	for _, args := range [][6]string{
		{"", "pk", "dk", "s", "sha256", "1"},
		{"a|b", "pk", "dk", "s", "sha256", "1"},
		{"c", "p&k", "dk", "s", "sha256", "1"},
		{"c", "pk", "d/k", "s", "sha256", "1"},
		{"c", "pk", "dk", "s", "sha512", "1"},
		{"c", "pk", "dk", "s", "sha256", ""},
		{"c", "pk", "dk", "s", "sha256", "1,2"},
	} {
		if _, _, _, err := MQTTLogin(args[0], args[1], args[2], args[3], args[4], args[5]); err == nil {
			t.Errorf("MQTTLogin%q: no error", args)
		}
	}
}

func TestTopics(t *testing.T) {
	topic := Topic("gwPK", "gwDK", SuffixPostBatch)
	if topic != "/sys/gwPK/gwDK/thing/measurepoint/post/batch" {
		t.Fatal(topic)
	}
	pk, dk, suffix, ok := ParseTopic(topic)
	if !ok || pk != "gwPK" || dk != "gwDK" || suffix != SuffixPostBatch {
		t.Errorf("ParseTopic = %q %q %q %v", pk, dk, suffix, ok)
	}
	pk, dk, suffix, ok = ParseSessionTopic(SessionTopic("gwPK", "gwDK", SuffixCombineLogin))
	if !ok || pk != "gwPK" || dk != "gwDK" || suffix != SuffixCombineLogin {
		t.Errorf("ParseSessionTopic = %q %q %q %v", pk, dk, suffix, ok)
	}
	for _, bad := range []string{"", "/sys/", "/sys/pk", "/sys/pk/dk", "/sys/pk/dk/", "/sys//dk/x", "/sys/pk//x", "/sys/+/dk/x", "/sys/pk/#/x", "sys/pk/dk/x", "/ext/session/pk/dk/x"} {
		if _, _, _, ok := ParseTopic(bad); ok {
			t.Errorf("ParseTopic(%q) ok", bad)
		}
	}
}
