package ingest

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/cloudlink/enos"
)

// answer makes c execute commands on filter the EnOS SDK way: without
// subscribing (a route only), replying with code and data unless silent.
// It counts what it received.
func answer(t *testing.T, c paho.Client, filter string, code int, data string, silent bool) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	c.AddRoute(filter, func(cl paho.Client, m paho.Message) {
		n.Add(1)
		if silent || strings.HasSuffix(m.Topic(), enos.ReplySuffix) {
			return
		}
		var req struct {
			ID     string          `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(m.Payload(), &req); err != nil {
			t.Errorf("command %s: %v", m.Payload(), err)
			return
		}
		rep, _ := json.Marshal(map[string]any{"id": req.ID, "code": code, "message": req.Method, "data": json.RawMessage(data)})
		cl.Publish(m.Topic()+enos.ReplySuffix, 1, false, rep) // not awaited in a handler
	})
	return &n
}

type cmdResult struct {
	ID      string          `json:"id"`
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// TestCommands: commands reach a device and a gateway's sub-device without
// their subscribing, the replies come back to the HTTP caller, nothing
// reaches a device it is not for, and offline, silent and unauthorised
// cases get their own answers.
func TestCommands(t *testing.T) {
	e := startAdminEnv(t)
	plain := e.login("meterPK", "plain", "plainSecret")
	plainGot := answer(t, plain, "/sys/+/+/thing/service/#", 200, `{"ok":true}`, false)
	gw := e.login("gwPK", "gwDK", "gwSecret")
	gwGot := answer(t, gw, "/sys/+/+/thing/service/#", 200, `{"written":["temperature"]}`, false)
	silent := e.login("subPK", "sub2", "sub2Secret") // registered, not in a topology: speaks for itself
	silentGot := answer(t, silent, "/sys/+/+/thing/service/#", 0, "", true)

	call := func(path, body string, want int) cmdResult {
		t.Helper()
		code, _, b := e.api("POST", path, testAdminToken, body)
		if code != want {
			t.Fatalf("POST %s: %d %s, want %d", path, code, b, want)
		}
		var r cmdResult
		if code == 200 {
			if err := json.Unmarshal([]byte(b), &r); err != nil {
				t.Fatal(err)
			}
		}
		return r
	}
	r := call("/api/v1/devices/meterPK/plain/services/restart", `{"delay":5}`, 200)
	if r.Code != 200 || r.Message != "thing.service.restart" || string(r.Data) != `{"ok":true}` {
		t.Errorf("plain device's reply %+v", r)
	}
	// A declared sub-device: the command travels on its topic over the gateway's connection.
	r = call("/api/v1/devices/subPK/subDK/services/measurepoint/set", `{"temperature": 30.5}`, 200)
	if r.Code != 200 || r.Message != "thing.service.measurepoint.set" || string(r.Data) != `{"written":["temperature"]}` {
		t.Errorf("sub-device's reply through the gateway %+v", r)
	}
	if n := plainGot.Load(); n != 1 {
		t.Errorf("the plain device received %d commands, want its own 1 only", n)
	}
	if n := gwGot.Load(); n != 1 {
		t.Errorf("the gateway received %d commands, want its sub-device's 1 only", n)
	}
	// No reply in time: 504; the device did get it.
	code, _, b := e.api("POST", "/api/v1/devices/subPK/sub2/services/restart?timeout=300ms", testAdminToken, `{}`)
	if code != 504 || silentGot.Load() != 1 {
		t.Errorf("silent device: %d %s, received %d", code, b, silentGot.Load())
	}
	// Registered but not connected: 404 at once.
	if code, _, b := e.api("POST", "/api/v1/devices/certPK/certOnly/services/restart", testAdminToken, `{}`); code != 404 || !strings.Contains(b, "offline") {
		t.Errorf("offline device: %d %s", code, b)
	}
	// Bad requests and tokens.
	for _, c := range []struct {
		path, token, body string
		want              int
	}{
		{"/api/v1/devices/meterPK/plain/services/restart", "", `{}`, 401},
		{"/api/v1/devices/meterPK/plain/services/restart", "wrong", `{}`, 401},
		{"/api/v1/devices/meterPK/plain/services/restart", testAdminToken, `[1]`, 400},
		{"/api/v1/devices/meterPK/plain/services/restart", testAdminToken, `{`, 400},
		{"/api/v1/devices/meterPK/plain/services/restart?timeout=1h", testAdminToken, `{}`, 400},
		{"/api/v1/devices/nobodyPK/nobody/services/restart", testAdminToken, `{}`, 404},
	} {
		if code, _, b := e.api("POST", c.path, c.token, c.body); code != c.want {
			t.Errorf("POST %s (token %q, body %s): %d %s, want %d", c.path, c.token, c.body, code, b, c.want)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if plainGot.Load() != 1 {
		t.Errorf("refused requests reached the device: %d commands", plainGot.Load())
	}
	if got := e.metric("ingest_commands_total", "replied"); got != 2 {
		t.Errorf("replied commands %v, want 2", got)
	}
}

// TestCommandReplyFenced: a reply carrying an epoch older than the newest
// the gateway has posted with (a node whose HA term is over) reaches the
// caller as a 403 "fenced", not as the device's success.
func TestCommandReplyFenced(t *testing.T) {
	e := startAdminEnv(t)
	if _, err := e.srv.store.Append(t.Context(), &Batch{Gateway: "gw-ha", Epoch: 5}); err != nil {
		t.Fatal(err)
	}
	var epoch atomic.Uint64
	gw := e.login("gwPK", "gwDK", "gwSecret")
	gw.AddRoute("/sys/+/+/thing/service/#", func(cl paho.Client, m paho.Message) {
		if strings.HasSuffix(m.Topic(), enos.ReplySuffix) {
			return
		}
		id, _ := enos.PeekID(m.Payload())
		rep := enos.AppendReply(nil, enos.Reply{ID: id, Code: 200, Message: "success", Sender: &enos.Sender{Gateway: "gw-ha", Epoch: epoch.Load()}})
		cl.Publish(m.Topic()+enos.ReplySuffix, 1, false, rep)
	})
	for _, c := range []struct {
		epoch uint64
		code  int
	}{{3, 403}, {5, 200}, {6, 200}} {
		epoch.Store(c.epoch)
		code, _, b := e.api("POST", "/api/v1/devices/subPK/subDK/services/measurepoint/set", testAdminToken, `{"temperature": 1}`)
		var r cmdResult
		if code != 200 || json.Unmarshal([]byte(b), &r) != nil || r.Code != c.code || (c.code == 403) != strings.Contains(r.Message, "fenced") {
			t.Fatalf("reply of epoch %d: HTTP %d %s, want code %d", c.epoch, code, b, c.code)
		}
	}
}
