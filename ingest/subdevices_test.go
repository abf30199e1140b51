package ingest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/cloudlink/enos"
)

// subLogin is a sub-device's signed credentials as a gateway sends them.
func subLogin(t *testing.T, pk, dk, secret string) map[string]string {
	t.Helper()
	ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
	cid := pk + dk + ts
	sign, err := enos.Sign("sha256", enos.LoginParams(cid, pk, dk, ts), secret)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"productKey": pk, "deviceKey": dk, "clientId": cid, "timestamp": ts, "signMethod": "sha256", "sign": sign}
}

// gwClient is a gateway connection with its reply subscriptions.
type gwClient struct {
	t       *testing.T
	c       paho.Client
	replies map[string]<-chan enos.Reply
	id      int
}

// newGWClient logs the gateway in and subscribes to its replies and to
// those of the sub-devices subs (they must be in its topology).
func newGWClient(t *testing.T, e *env, subs ...string) *gwClient {
	g := &gwClient{t: t, c: e.login("gwPK", "gwDK", "gwSecret"), replies: map[string]<-chan enos.Reply{}}
	for _, s := range []string{enos.SuffixTopoAdd, enos.SuffixTopoGet, enos.SuffixTopoDelete, enos.SuffixPostBatch} {
		g.sub(enos.Topic("gwPK", "gwDK", s))
	}
	for _, s := range []string{enos.SuffixCombineLogin, enos.SuffixCombineLoginBatch, enos.SuffixCombineLogout} {
		g.sub(enos.SessionTopic("gwPK", "gwDK", s))
	}
	for _, dk := range subs {
		g.sub(enos.Topic("subPK", dk, enos.SuffixPost))
	}
	return g
}

func (g *gwClient) sub(topic string) {
	g.replies[topic] = subscribe(g.t, g.c, topic+enos.ReplySuffix)
}

// call publishes a request with a fresh id on topic and returns the reply.
func (g *gwClient) call(topic, method string, params any) enos.Reply {
	g.t.Helper()
	g.id++
	req := map[string]any{"id": strconv.Itoa(g.id), "version": "1.0", "method": method, "params": params}
	if method == enos.MethodPostBatch {
		req["allowOfflineSubDevice"] = false
	}
	b, err := json.Marshal(req)
	if err != nil {
		g.t.Fatal(err)
	}
	if !publish(g.c, topic, b, 5*time.Second) {
		g.t.Fatalf("%s: no PUBACK", topic)
	}
	r := nextReply(g.t, g.replies[topic])
	if r.ID != strconv.Itoa(g.id) {
		g.t.Fatalf("%s: reply id %s, want %d", topic, r.ID, g.id)
	}
	return r
}

func (g *gwClient) want(what string, r enos.Reply, code int, data string) {
	g.t.Helper()
	if r.Code != code || data != "" && string(r.Data) != data {
		g.t.Errorf("%s: reply %d %s %s, want %d %s", what, r.Code, r.Message, r.Data, code, data)
	}
}

func mp(v float64) map[string]any { return map[string]any{"measurepoints": map[string]any{"p": v}} }

// TestGatewaySubDevices runs a gateway with two sub-devices through the
// EnOS topology and session protocol: subDK declared in the registry, sub2
// added with thing/topo/add; logins single and batch, posts on their own
// topics and in batches, logout, delete, and the topology surviving a
// restart while logins end with the connection.
func TestGatewaySubDevices(t *testing.T) {
	e := startEnv(t, nil)
	g := newGWClient(t, e, "subDK")
	topo := func(s string) string { return enos.Topic("gwPK", "gwDK", s) }
	sess := func(s string) string { return enos.SessionTopic("gwPK", "gwDK", s) }
	subPost := func(dk string) string { return enos.Topic("subPK", dk, enos.SuffixPost) }
	item := func(dk string, v float64) map[string]any {
		return map[string]any{"productKey": "subPK", "deviceKey": dk, "measurepoints": map[string]any{"p": v}, "time": time.Now().UnixMilli() + int64(v)*1000}
	}

	// sub2 is registered but not in the topology: no login, no posts.
	g.want("login outside the topology", g.call(sess(enos.SuffixCombineLogin), "combine.login", subLogin(t, "subPK", "sub2", "sub2Secret")), enos.CodeForbidden, "")
	g.want("batch outside the topology", g.call(topo(enos.SuffixPostBatch), enos.MethodPostBatch, []any{item("sub2", 1)}), enos.CodeForbidden, "")

	// topo/add proves the secret; a bad sign refuses the whole request.
	bad := subLogin(t, "subPK", "sub2", "wrong")
	g.want("topo/add bad sign", g.call(topo(enos.SuffixTopoAdd), "thing.topo.add", []any{bad}), enos.CodeForbidden, "")
	g.want("topo/add unknown", g.call(topo(enos.SuffixTopoAdd), "thing.topo.add", []any{subLogin(t, "subPK", "nobody", "x")}), enos.CodeNotFound, "")
	g.want("topo/add", g.call(topo(enos.SuffixTopoAdd), "thing.topo.add", []any{subLogin(t, "subPK", "sub2", "sub2Secret")}), 200, `[{"productKey":"subPK","deviceKey":"sub2"}]`)
	g.want("topo/get", g.call(topo(enos.SuffixTopoGet), "thing.topo.get", map[string]any{}), 200, `[{"productKey":"subPK","deviceKey":"sub2"},{"productKey":"subPK","deviceKey":"subDK"}]`)
	g.sub(subPost("sub2")) // its topics are the gateway's now

	// In the topology but not logged in: its own topic and a batch without
	// allowOfflineSubDevice are refused.
	g.want("post before login", g.call(subPost("sub2"), enos.MethodPost, mp(1)), enos.CodeForbidden, "")
	g.want("batch before login", g.call(topo(enos.SuffixPostBatch), enos.MethodPostBatch, []any{item("subDK", 1)}), enos.CodeForbidden, "")

	// A batch login: each entry on its own.
	r := g.call(sess(enos.SuffixCombineLoginBatch), "combine.login.batch", map[string]any{"subDevices": []any{
		subLogin(t, "subPK", "subDK", "subSecret"), subLogin(t, "subPK", "sub2", "sub2Secret"), subLogin(t, "otherPK", "stranger", "strangerSecret"),
	}})
	var res struct {
		Logined []enos.DeviceRef `json:"loginedSubDevices"`
		Failed  []struct {
			enos.DeviceRef
			Code int `json:"code"`
		} `json:"failedSubDevices"`
	}
	if err := json.Unmarshal(r.Data, &res); err != nil || r.Code != 200 || len(res.Logined) != 2 || len(res.Failed) != 1 ||
		res.Failed[0].DeviceKey != "stranger" || res.Failed[0].Code != enos.CodeForbidden {
		t.Errorf("login batch: %d %s (%v)", r.Code, r.Data, err)
	}
	g.want("post after login", g.call(subPost("sub2"), enos.MethodPost, mp(2)), 200, "")
	g.want("batch after login", g.call(topo(enos.SuffixPostBatch), enos.MethodPostBatch, []any{item("subDK", 3), item("sub2", 4)}), 200, "")
	var tp struct {
		Online []enos.DeviceRef `json:"online"`
		Added  []enos.DeviceRef `json:"added"`
	}
	if e.get("/api/v1/devices/gwPK/gwDK/topology", &tp); len(tp.Online) != 2 || len(tp.Added) != 1 {
		t.Errorf("topology endpoint: %+v", tp)
	}
	var doc latestDoc
	if e.get("/api/v1/devices/subPK/sub2/latest", &doc); doc.Points["p"].Value != 4.0 {
		t.Errorf("sub2 latest %+v", doc.Points)
	}

	// Logout, then its topic is refused again; a second logout is a 404.
	logout := map[string]string{"productKey": "subPK", "deviceKey": "sub2"}
	g.want("logout", g.call(sess(enos.SuffixCombineLogout), "combine.logout", logout), 200, "")
	g.want("post after logout", g.call(subPost("sub2"), enos.MethodPost, mp(5)), enos.CodeForbidden, "")
	g.want("logout twice", g.call(sess(enos.SuffixCombineLogout), "combine.logout", logout), enos.CodeNotFound, "")

	// A declared sub-device is not the gateway's to delete; an added one is.
	g.want("delete declared", g.call(topo(enos.SuffixTopoDelete), "thing.topo.delete", []any{map[string]string{"productKey": "subPK", "deviceKey": "subDK"}}), enos.CodeForbidden, "")
	g.want("delete added", g.call(topo(enos.SuffixTopoDelete), "thing.topo.delete", []any{logout}), 200, "")
	g.want("delete twice", g.call(topo(enos.SuffixTopoDelete), "thing.topo.delete", []any{logout}), enos.CodeNotFound, "")
	g.want("topo/get after delete", g.call(topo(enos.SuffixTopoGet), "thing.topo.get", map[string]any{}), 200, `[{"productKey":"subPK","deviceKey":"subDK"}]`)
	g.want("malformed topo/add", g.call(topo(enos.SuffixTopoAdd), "thing.topo.add", map[string]any{"x": 1}), enos.CodeMalformed, "")

	// A plain device has no topology.
	plain := e.login("meterPK", "plain", "plainSecret")
	pr := subscribe(t, plain, enos.Topic("meterPK", "plain", enos.SuffixTopoAdd)+enos.ReplySuffix)
	body := fmt.Sprintf(`{"id":"1","method":"thing.topo.add","params":[%s]}`, mustJSON(t, subLogin(t, "subPK", "sub2", "sub2Secret")))
	if !publish(plain, enos.Topic("meterPK", "plain", enos.SuffixTopoAdd), []byte(body), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	if r := nextReply(t, pr); r.Code != enos.CodeForbidden {
		t.Errorf("topo/add by a plain device: %+v", r)
	}

	// The topology survives a restart; logins end with the connection.
	g.want("topo/add again", g.call(topo(enos.SuffixTopoAdd), "thing.topo.add", []any{subLogin(t, "subPK", "sub2", "sub2Secret")}), 200, "")
	g.c.Disconnect(100)
	plain.Disconnect(100)
	e.stop()
	e.start()
	g = newGWClient(t, e, "subDK", "sub2")
	g.want("topo/get after restart", g.call(topo(enos.SuffixTopoGet), "thing.topo.get", map[string]any{}), 200, `[{"productKey":"subPK","deviceKey":"sub2"},{"productKey":"subPK","deviceKey":"subDK"}]`)
	g.want("post on a new connection", g.call(subPost("subDK"), enos.MethodPost, mp(6)), enos.CodeForbidden, "")
	if n := e.metric("ingest_posts_rejected_total", rejectedOffline); n != 1 {
		t.Errorf("sub_offline rejections after restart: %v", n)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
