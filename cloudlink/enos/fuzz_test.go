package enos

import (
	"maps"
	"testing"
)

// FuzzParsePostBatch: the parser never panics, and what it accepts
// re-encodes (AppendJSON) into a payload it accepts again, unchanged by a
// second round.
func FuzzParsePostBatch(f *testing.F) {
	for _, l := range loadWire(f) {
		if l.Kind == "PUBLISH" {
			f.Add([]byte(l.Payload))
		}
	}
	f.Add([]byte(`{"id":"17","version":"1.0","method":"thing.measurepoint.post.batch","params":[{"productKey":"meterPK","deviceKey":"meter-1","measurepoints":{"voltage":230.1,"breaker":true,"current":{"value":null,"quality":1,"reason":"timeout"}},"time":1700000000000,"edged":{"epoch":1,"seq":1234}}],"edged":{"gateway":"gw-01","epoch":3}}`))
	f.Add([]byte(`{"id": 42, "params": [{"productKey": null, "deviceKey": null, "measurepoints": {"a": ["1", 2, 3.5e3, null, true], "b": {"value": "\ud83d\ude00\u00e9", "quality": "9"}}, "time": "17.5"}], "allowOfflineSubDevice": ""}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		pb, err := ParsePostBatch(payload)
		if err != nil {
			return
		}
		once := pb.AppendJSON(nil)
		pb2, err := ParsePostBatch(once)
		if err != nil {
			t.Fatalf("re-encoded batch refused: %v\n%s\nfrom %q", err, once, payload)
		}
		if twice := pb2.AppendJSON(nil); string(twice) != string(once) {
			t.Fatalf("re-encoding not stable:\n%s\n%s", once, twice)
		}
		// The single-post parser must not panic either.
		if p, err := ParsePost(payload); err == nil {
			if _, err := ParsePost(p.AppendJSON(nil)); err != nil {
				t.Fatalf("re-encoded post refused: %v", err)
			}
		}
		_, _ = ParseReply(payload)
		_, _ = PeekID(payload)
	})
}

// FuzzParseClientID: never panics; an accepted client id, rebuilt with
// FormatClientID, parses to the same id and options.
func FuzzParseClientID(f *testing.F) {
	for _, v := range []string{
		"gwDK|securemode=2,signmethod=hmacsha256,timestamp=1795315153716.9314|",
		"plain", "gw||", "gw|a=b=c|", "|x=1|", "gw|a=1,a=2|", "gw|a=1|x",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cid, opts, err := ParseClientID(s)
		if err != nil {
			return
		}
		again := FormatClientID(cid, opts)
		cid2, opts2, err := ParseClientID(again)
		if err != nil {
			t.Fatalf("%q -> %q: %v", s, again, err)
		}
		if cid2 != cid || len(opts2) != len(opts) || (len(opts) > 0 && !maps.Equal(opts, opts2)) {
			t.Fatalf("%q -> %q: %q %v, want %q %v", s, again, cid2, opts2, cid, opts)
		}
	})
}
