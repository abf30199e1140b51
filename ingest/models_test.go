package ingest

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/thingmodel"
)

// testModel is a model of product pk with measure point ids.
func testModel(pk string, version int, ids ...string) string {
	var mps []string
	for _, id := range ids {
		mps = append(mps, `{"identifier":"`+id+`","dataType":"float","unit":"kW","hasQuality":true,"min":0,"max":100}`)
	}
	v := ""
	if version >= 0 {
		v = `"version":` + itoa(version) + `,`
	}
	return `{"productKey":"` + pk + `",` + v + `"measurepoints":[` + strings.Join(mps, ",") + `]}`
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// modelOf parses a model API response body.
func modelOf(t *testing.T, body string) *thingmodel.Model {
	t.Helper()
	m, err := thingmodel.Parse([]byte(body))
	if err != nil {
		t.Fatalf("response is not a model: %v: %s", err, body)
	}
	return m
}

func TestModelAPI(t *testing.T) {
	e := startAdminEnv(t)
	const path = "/api/v1/models/meterPK"

	for _, r := range []struct{ method, path string }{{"GET", "/api/v1/models"}, {"GET", path}, {"PUT", path}} {
		if code, _, body := e.api(r.method, r.path, "", testModel("meterPK", 0, "p")); code != http.StatusUnauthorized {
			t.Errorf("%s %s without token: %d %s", r.method, r.path, code, body)
		}
		if code, _, body := e.api(r.method, r.path, "wrong", testModel("meterPK", 0, "p")); code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong token: %d %s", r.method, r.path, code, body)
		}
	}
	if b := e.admin("GET", "/api/v1/models", "", 200); strings.TrimSpace(b) != `{"models":[]}` {
		t.Errorf("empty list: %s", b)
	}
	if b := e.admin("GET", path, "", 404); !strings.Contains(b, "product meterPK has no thing model") {
		t.Errorf("no model: %s", b)
	}

	// Version 1, then the same again: no new version.
	m := modelOf(t, e.admin("PUT", path, testModel("meterPK", 0, "power"), 201))
	if m.Version != 1 || m.ProductKey != "meterPK" || len(m.MeasurePoints) != 1 {
		t.Fatalf("v1: %+v", m)
	}
	if m := modelOf(t, e.admin("PUT", path, testModel("meterPK", -1, "power"), 200)); m.Version != 1 {
		t.Errorf("unchanged: version %d", m.Version)
	}
	// Version 2 without a version; version 3 with the right one.
	if m := modelOf(t, e.admin("PUT", path, testModel("meterPK", 0, "power", "energy"), 201)); m.Version != 2 {
		t.Errorf("v2: version %d", m.Version)
	}
	if b := e.admin("PUT", path, testModel("meterPK", 2, "power", "energy", "voltage"), 409); !strings.Contains(b, "meterPK is at version 2; the body's version 2 is not the next (3)") {
		t.Errorf("conflict: %s", b)
	}
	e.admin("PUT", path, testModel("meterPK", 1, "power"), 409) // equal to an older version: still a conflict
	v3 := testModel("meterPK", 3, "power", "energy", "voltage")
	if m := modelOf(t, e.admin("PUT", path, v3, 201)); m.Version != 3 || len(m.MeasurePoints) != 3 {
		t.Errorf("v3: %+v", m)
	}
	if m := modelOf(t, e.admin("PUT", path, v3, 200)); m.Version != 3 { // a retry
		t.Errorf("retried v3: %+v", m)
	}

	// Refusals with the parser's message.
	for _, tt := range []struct {
		body string
		code int
		want string
	}{
		{`{"productKey":"meterPK","measurepoints":[{"identifier":"p","dataType":"flaot","hasQuality":false}]}`, 400,
			`measurepoints[0].dataType: \"flaot\" is not a data type (int, float, double, bool, string, enum, timestamp)`},
		{`{"productKey":"meterPK","measurepoints":[],"extra":1}`, 400, `unknown key \"extra\"`},
		{`not json`, 400, `malformed JSON`},
		{testModel("otherPK", 0, "p"), 400, `productKey: the body's \"otherPK\" is not the path's \"meterPK\"`},
		{`{"productKey":"meterPK","measurepoints":[` + strings.Repeat(` `, thingmodel.MaxSize) + `]}`, 413, `body over 1048576 bytes`},
	} {
		if b := e.admin("PUT", path, tt.body, tt.code); !strings.Contains(b, tt.want) {
			t.Errorf("%.60s: %s, want %s", tt.body, b, tt.want)
		}
	}

	// Versions.
	if m := modelOf(t, e.admin("GET", path, "", 200)); m.Version != 3 {
		t.Errorf("latest: %d", m.Version)
	}
	if m := modelOf(t, e.admin("GET", path+"?version=1", "", 200)); m.Version != 1 || len(m.MeasurePoints) != 1 {
		t.Errorf("version 1: %+v", m)
	}
	if b := e.admin("GET", path+"?version=7", "", 404); !strings.Contains(b, "no thing model version 7 (the latest is 3)") {
		t.Errorf("version 7: %s", b)
	}
	e.admin("GET", path+"?version=x", "", 400)
	e.admin("GET", path+"?version=0", "", 400)
	e.admin("PUT", "/api/v1/models/otherPK", testModel("otherPK", 0, "q"), 201)
	if b := e.admin("GET", "/api/v1/models", "", 200); strings.TrimSpace(b) != `{"models":[{"productKey":"meterPK","version":3,"versions":3},{"productKey":"otherPK","version":1,"versions":1}]}` {
		t.Errorf("list: %s", b)
	}
	for r, want := range map[string]float64{"created": 4, "unchanged": 2, "conflict": 2, "invalid": 5} {
		if got := e.metric("ingest_model_updates_total", r); got != want {
			t.Errorf("ingest_model_updates_total{result=%q} = %v, want %v", r, got, want)
		}
	}
}

func TestModelAPIDisabled(t *testing.T) {
	e := startEnv(t, nil)
	if code, _, body := e.api("GET", "/api/v1/models", testAdminToken, ""); code != http.StatusForbidden {
		t.Errorf("%d %s", code, body)
	}
}

// tslGet publishes a thing/tsltemplate/get request on pk/dk's topic and
// returns the reply.
func tslGet(t *testing.T, c paho.Client, replies <-chan enos.Reply, pk, dk, payload string) enos.Reply {
	t.Helper()
	if !publish(c, enos.Topic(pk, dk, enos.SuffixTSLTemplateGet), []byte(payload), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	return nextReply(t, replies)
}

func TestTSLTemplateGet(t *testing.T) {
	e := startAdminEnv(t)
	v1 := e.admin("PUT", "/api/v1/models/meterPK", testModel("meterPK", 0, "power"), 201)
	v2 := e.admin("PUT", "/api/v1/models/meterPK", testModel("meterPK", 0, "power", "energy"), 201)
	sub := e.admin("PUT", "/api/v1/models/subPK", testModel("subPK", 0, "current"), 201)

	// A plain device asks for its product's model.
	c := e.login("meterPK", "plain", "plainSecret")
	replies := subscribe(t, c, enos.Topic("meterPK", "plain", enos.SuffixTSLTemplateGet)+enos.ReplySuffix)
	for _, tt := range []struct {
		req  string
		id   string
		code int
		data string
		msg  string
	}{
		{`{"id":"1","version":"1.0","method":"thing.tsltemplate.get","params":{}}`, "1", 200, v2, ""},
		{`{"id":"2","version":"1.0","method":"thing.tsltemplate.get","params":{"version":1}}`, "2", 200, v1, ""},
		{`{"id":3,"params":{"version":9}}`, "3", 404, "{}", "product meterPK has no thing model version 9 (the latest is 2)"},
		{`{"id":"4","params":{"version":"1"}}`, "4", 400, "{}", "params.version: want a non-negative integer, got a string"},
		{`{"id":"5","method":"thing.topo.get"}`, "5", 400, "{}", `method: "thing.topo.get", want thing.tsltemplate.get`},
		{`{"id":"6","params":{"version":1}`, "6", 400, "{}", "unexpected end of JSON"},
	} {
		r := tslGet(t, c, replies, "meterPK", "plain", tt.req)
		if r.ID != tt.id || r.Code != tt.code || strings.TrimSpace(string(r.Data)) != strings.TrimSpace(tt.data) || r.Message != tt.msg {
			t.Errorf("%s: reply %s %d %q %s", tt.req, r.ID, r.Code, r.Message, r.Data)
		}
	}

	// A product without a model.
	s := e.login("otherPK", "stranger", "strangerSecret")
	sr := subscribe(t, s, enos.Topic("otherPK", "stranger", enos.SuffixTSLTemplateGet)+enos.ReplySuffix)
	if r := tslGet(t, s, sr, "otherPK", "stranger", `{"id":"1","params":{}}`); r.Code != 404 || r.Message != "product otherPK has no thing model" {
		t.Errorf("no model: %d %s", r.Code, r.Message)
	}

	// A gateway asks for its sub-devices' models (declared, one by a
	// wildcard), without logging them in.
	g := e.login("gwPK", "gwDK", "gwSecret")
	for _, d := range []struct{ pk, dk, want string }{{"subPK", "subDK", sub}, {"meterPK", "m42", v2}} {
		gr := subscribe(t, g, enos.Topic(d.pk, d.dk, enos.SuffixTSLTemplateGet)+enos.ReplySuffix)
		r := tslGet(t, g, gr, d.pk, d.dk, `{"id":"g1","version":"1.0","method":"thing.tsltemplate.get","params":{}}`)
		if r.ID != "g1" || r.Code != 200 || strings.TrimSpace(string(r.Data)) != strings.TrimSpace(d.want) {
			t.Errorf("gateway for %s/%s: %d %s %s", d.pk, d.dk, r.Code, r.Message, r.Data)
		}
		if m := modelOf(t, string(r.Data)); m.ProductKey != d.pk {
			t.Errorf("gateway for %s/%s: model of %s", d.pk, d.dk, m.ProductKey)
		}
	}
	// Not in its topology: the ACL refuses the request.
	before := e.metric("ingest_acl_denied_total", "publish")
	g.Publish(enos.Topic("otherPK", "stranger", enos.SuffixTSLTemplateGet), 1, false, `{"id":"x"}`).WaitTimeout(time.Second)
	eventually(t, "publish denial counted", func() bool { return e.metric("ingest_acl_denied_total", "publish") == before+1 })

	for r, want := range map[string]float64{"served": 4, "not_found": 2, "malformed": 3} {
		if got := e.metric("ingest_model_requests_total", r); got != want {
			t.Errorf("ingest_model_requests_total{result=%q} = %v, want %v", r, got, want)
		}
	}
}

func TestModelPersistence(t *testing.T) {
	e := startAdminEnv(t)
	e.admin("PUT", "/api/v1/models/meterPK", testModel("meterPK", 0, "power"), 201)
	v2 := e.admin("PUT", "/api/v1/models/meterPK", testModel("meterPK", 0, "power", "energy"), 201)
	odd := "odd.PK %x"
	e.admin("PUT", "/api/v1/models/odd.PK%20%25x", testModel(odd, 0, "x"), 201)
	e.stop()
	for _, f := range []string{"meterPK/1.json", "meterPK/2.json", "odd%2EPK%20%25x/1.json"} {
		if _, err := os.Stat(filepath.Join(e.cfg.DataDir, "models", f)); err != nil {
			t.Error(err)
		}
	}
	e.start()
	if b := e.admin("GET", "/api/v1/models/meterPK", "", 200); b != v2 {
		t.Errorf("latest after restart: %s, want %s", b, v2)
	}
	if m := modelOf(t, e.admin("GET", "/api/v1/models/meterPK?version=1", "", 200)); m.Version != 1 {
		t.Errorf("version 1 after restart: %+v", m)
	}
	if m := modelOf(t, e.admin("GET", "/api/v1/models/odd.PK%20%25x", "", 200)); m.ProductKey != odd {
		t.Errorf("odd product key: %+v", m)
	}
	// The next version follows on.
	if m := modelOf(t, e.admin("PUT", "/api/v1/models/meterPK", testModel("meterPK", 3, "power", "energy", "v"), 201)); m.Version != 3 {
		t.Errorf("v3 after restart: %+v", m)
	}
	c := e.login("meterPK", "plain", "plainSecret")
	replies := subscribe(t, c, enos.Topic("meterPK", "plain", enos.SuffixTSLTemplateGet)+enos.ReplySuffix)
	if r := tslGet(t, c, replies, "meterPK", "plain", `{"id":"1","params":{"version":2}}`); r.Code != 200 || strings.TrimSpace(string(r.Data)) != strings.TrimSpace(v2) {
		t.Errorf("MQTT after restart: %d %s %s", r.Code, r.Message, r.Data)
	}
}

func TestModelStoreLoad(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenModelStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := thingmodel.Parse([]byte(testModel("p", 0, "a")))
	if _, v, created, err := s.Put(m); err != nil || v != 1 || !created {
		t.Fatalf("put: %d %v %v", v, created, err)
	}
	writeFile(t, filepath.Join(dir, "p", ".tmp-123"), "half a write")
	if s, err = OpenModelStore(dir); err != nil || s.Latest("p") != 1 {
		t.Fatalf("reopen: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "p", ".tmp-123")); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	for name, content := range map[string]string{
		"p/2.json":     `{"productKey":"p","version":2,"measurepoints":[{"identifier":"a","dataType":"flaot"}]}`,
		"p/02.json":    testModel("p", 2, "a"),
		"p/3.json":     testModel("p", 4, "a"),
		"p/x.txt":      "",
		"a%2Fb/1.json": testModel("a/b", 1, "a"),
	} {
		d := t.TempDir()
		if err := os.MkdirAll(filepath.Join(d, filepath.Dir(name)), 0o750); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(d, name), content)
		_, err := OpenModelStore(d)
		if err == nil || !strings.Contains(err.Error(), filepath.Join(d, filepath.Dir(name))) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEscapeKey(t *testing.T) {
	for _, pk := range []string{"abc", "A-b_9", ".", "..", "a.b", "ä%x", "a\\b:c d"} {
		name := escapeKey(pk)
		if strings.ContainsAny(name, "./\\: ") {
			t.Errorf("%q → %q", pk, name)
		}
		if back, ok := unescapeKey(name); !ok || back != pk {
			t.Errorf("%q → %q → %q %v", pk, name, back, ok)
		}
	}
	for _, name := range []string{"a%2", "a%zz", "a%61", "%2F"} {
		if pk, ok := unescapeKey(name); ok {
			t.Errorf("%q accepted as %q", name, pk)
		}
	}
}

// A scale-out worker has no model store: it answers 501, honestly.
func TestTSLTemplateGetWorker(t *testing.T) {
	dir := t.TempDir()
	regFile := filepath.Join(dir, "registry.yaml")
	writeFile(t, regFile, testRegistry)
	store, err := OpenBoltStore(filepath.Join(dir, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	w, err := NewWorker(WorkerConfig{Broker: "tls://127.0.0.1:1", TLS: &tls.Config{}, HTTPListen: "127.0.0.1:0", Store: store, RegistryFile: regFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	w.s.publish = func(topic string, payload []byte) error {
		if topic == enos.Topic("meterPK", "plain", enos.SuffixTSLTemplateGet)+enos.ReplySuffix {
			got = payload
		}
		return nil
	}
	dev, _ := w.s.reg.Device("meterPK", "plain")
	w.s.handle(nil, dev, enos.Topic("meterPK", "plain", enos.SuffixTSLTemplateGet), []byte(`{"id":"1","params":{}}`))
	r, err := enos.ParseReply(got)
	if err != nil || r.ID != "1" || r.Code != enos.CodeNotImplemented || !strings.Contains(r.Message, "not served by ingestd workers") {
		t.Errorf("reply %+v %v", r, err)
	}
}
