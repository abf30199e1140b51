package ingest

import (
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/edged/edged/cloudlink/enos"
)

// FuzzOpenTopology: the topology file is read at start from disk, where
// anything may have been left (a hand edit, a disk fault). OpenTopology
// never panics, and what it accepts holds only valid device keys (every
// entry reaches topics and the store); opened twice, the same. (It does
// not save what it opened: save fsyncs, which slows fuzzing to a few execs
// a second.)
func FuzzOpenTopology(f *testing.F) {
	for _, s := range []string{
		// as save writes it
		"{\n \"gateways\": [\n  {\n   \"productKey\": \"gwPK\",\n   \"deviceKey\": \"gwDK\",\n   \"subDevices\": [\n    {\n     \"productKey\": \"subPK\",\n     \"deviceKey\": \"subDK\"\n    }\n   ]\n  }\n ]\n}\n",
		`{"gateways":[{"productKey":"gwPK","deviceKey":"gwDK","subDevices":[{"productKey":"a","deviceKey":"b"},{"productKey":"a","deviceKey":"b"}]},{"productKey":"gwPK","deviceKey":"gw2","subDevices":[]}]}`,
		`{"gateways":[{"productKey":"gwPK","deviceKey":"gwDK","subDevices":[{"productKey":"a","deviceKey":"1"}]},{"productKey":"gwPK","deviceKey":"gwDK","subDevices":[{"productKey":"a","deviceKey":"2"}]}]}`,
		``, `{}`, `null`, `[]`, `{"gateways":null}`, `{"gateways":[null]}`, `{"gateways":{}}`,
		`{"gateways":[{"productKey":"gwPK","deviceKey":"gwDK","subDevices":"x"}]}`,
		`{"gateways":[{"productKey":"gwPK","deviceKey":"gwDK","subDevices":[{"productKey":1}]}]}`,
		"{\"gateways\":[]}\n\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "topology.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		topo, err := OpenTopology(path)
		if err != nil {
			if topo != nil {
				t.Fatalf("OpenTopology returned a topology with error %v", err)
			}
			return
		}
		for gw, subs := range topo.added {
			if !enos.ValidKey(gw.pk) || !enos.ValidKey(gw.dk) {
				t.Fatalf("accepted gateway %q/%q from %q", gw.pk, gw.dk, data)
			}
			for s := range subs {
				if !enos.ValidKey(s.pk) || !enos.ValidKey(s.dk) {
					t.Fatalf("accepted sub-device %q/%q of gateway %q/%q from %q", s.pk, s.dk, gw.pk, gw.dk, data)
				}
			}
		}
		again, err := OpenTopology(path)
		if err != nil || !maps.EqualFunc(topo.added, again.added, maps.Equal) {
			t.Fatalf("opened twice: %v, then %v (%v)", topo.added, again.added, err)
		}
	})
}
