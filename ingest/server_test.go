package ingest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/telemetry"
)

// Golden data of the official EnOS SDK, kept (with its source) in the
// protocol package's testdata.
const (
	vectorsFile = "../cloudlink/enos/testdata/enos_login_vectors.json"
	wireFile    = "../cloudlink/enos/testdata/enos_sdk_wire.jsonl"
)

func TestSecretLogin(t *testing.T) {
	e := startEnv(t, nil)
	e.login("gwPK", "gwDK", "gwSecret") // the SDK's form: hmacsha256, fractional timestamp

	now := fmt.Sprintf("%d", time.Now().UnixMilli())
	cid, user, pass, _ := enos.MQTTLogin("gwDK", "gwPK", "gwDK", "gwSecret", "sha256", now)
	tlsCfg := e.clientTLS(e.ca, "gwDK")
	for _, tt := range []struct {
		name, clientID, username, password, reason string
	}{
		{"wrong signature", cid, user, strings.Repeat("0", 64), refusedBadSignature},
		{"wrong secret", cid, user, mustSign(t, "sha256", "gwDK", "gwPK", "gwDK", now, "nope"), refusedBadSignature},
		{"unknown device", "x|securemode=2,signmethod=sha256,timestamp=" + now + "|", "nobody&gwPK", pass, refusedUnknownDevice},
		{"bad username", cid, "gwDK", pass, refusedBadUsername},
		{"garbled client id", "gwDK|securemode=2,signmethod=sha256", user, pass, refusedBadClientID},
		{"securemode", strings.Replace(cid, "securemode=2", "securemode=3", 1), user, pass, refusedBadClientID},
		{"sign method", strings.Replace(cid, "sha256", "sha512", 1), user, pass, refusedBadClientID},
		{"stale", "gwDK|securemode=2,signmethod=sha256,timestamp=1000|", user, mustSign(t, "sha256", "gwDK", "gwPK", "gwDK", "1000", "gwSecret"), refusedStaleTimestamp},
		{"no secret", "certOnly|securemode=2,signmethod=sha256,timestamp=" + now + "|", "certOnly&certPK", pass, refusedNoSecret},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.metric("ingest_connections_refused_total", tt.reason)
			if _, err := e.dial(tlsCfg, tt.clientID, tt.username, tt.password); err == nil {
				t.Fatal("login accepted")
			}
			if got := e.metric("ingest_connections_refused_total", tt.reason); got != before+1 {
				t.Errorf("refusals %q: %v, want %v", tt.reason, got, before+1)
			}
		})
	}
	if got := e.metric("ingest_connections_accepted_total", ""); got != 1 {
		t.Errorf("accepted %v", got)
	}
}

func mustSign(t *testing.T, method, cid, pk, dk, ts, secret string) string {
	s, err := enos.Sign(method, enos.LoginParams(cid, pk, dk, ts), secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTLSRefusals(t *testing.T) {
	e := startEnv(t, nil)
	cid, user, pass, _ := enos.MQTTLogin("gwDK", "gwPK", "gwDK", "gwSecret", "sha256", strconv.FormatInt(time.Now().UnixMilli(), 10))
	other := newTestCA(t, "another CA")
	if _, err := e.dial(e.clientTLS(other, "gwDK"), cid, user, pass); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	eventually(t, "tls_bad_cert counted", func() bool { return e.metric("ingest_connections_refused_total", refusedTLSBadCert) == 1 })
	if _, err := e.dial(e.clientTLS(nil, ""), cid, user, pass); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	eventually(t, "tls_no_cert counted", func() bool { return e.metric("ingest_connections_refused_total", refusedTLSNoCert) == 1 })
	// The server still serves.
	e.login("gwPK", "gwDK", "gwSecret")
}

func TestCertLogin(t *testing.T) {
	e := startEnv(t, nil)
	if _, err := e.dial(e.clientTLS(e.ca, "gwDK"), "gw-cert", "gwDK&gwPK", ""); err != nil {
		t.Fatalf("certificate login: %v", err)
	}
	gw, err := e.dial(e.clientTLS(e.ca, "gwDK"), "same-id", "gwDK&gwPK", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dial(e.clientTLS(e.ca, "certOnly"), "same-id", "certOnly&certPK", ""); err != nil {
		t.Fatalf("certificate-only device: %v", err)
	}
	// Another device's client id does not take over gwDK's session.
	if !publish(gw, enos.Topic("gwPK", "gwDK", enos.SuffixPost), []byte(`{"id":"1","params":{"measurepoints":{"v":1}}}`), 5*time.Second) {
		t.Error("gwDK was disconnected by another device using the same client id")
	}
	if _, err := e.dial(e.clientTLS(e.ca, "someoneElse"), "gw-cert2", "gwDK&gwPK", ""); err == nil {
		t.Error("a certificate for another CommonName logged in as gwDK")
	}
	if _, err := e.dial(e.clientTLS(e.ca, "plain"), "p", "plain&meterPK", ""); err == nil {
		t.Error("certificate login without cert_login: true")
	}
	if got := e.metric("ingest_connections_refused_total", refusedCertMismatch); got != 1 {
		t.Errorf("cert_mismatch %v", got)
	}
	if got := e.metric("ingest_connections_refused_total", refusedNoCertLogin); got != 1 {
		t.Errorf("cert_login_off %v", got)
	}
}

// testRecords is a gateway's batch: n records of meter-1 and meter-2.
func testRecords(epoch, firstSeq uint64, n int) []telemetry.Record {
	recs := make([]telemetry.Record, n)
	for i := range recs {
		seq := firstSeq + uint64(i)
		recs[i] = telemetry.Record{
			Gateway: "gw-01", Epoch: epoch, Seq: seq, ProductKey: "meterPK", DeviceKey: "meter-" + strconv.Itoa(1+i%2),
			Time: 1700000000000 + int64(seq)*1000,
			Points: []telemetry.Point{
				{ID: "voltage", Value: telemetry.Float(230 + float64(seq)/10)},
				{ID: "breaker", Value: telemetry.Bool(seq%2 == 0)},
				{ID: "current", Quality: telemetry.Bad, Reason: "timeout"},
				{ID: "energy", Value: telemetry.Uint(seq * 1000)},
			},
		}
	}
	return recs
}

var batchTopic = enos.Topic("gwPK", "gwDK", enos.SuffixPostBatch)

type latestDoc struct {
	ProductKey string `json:"productKey"`
	DeviceKey  string `json:"deviceKey"`
	Points     map[string]struct {
		Time        int64  `json:"time"`
		Seq         uint64 `json:"seq"`
		Value       any    `json:"value"`
		Quality     string `json:"quality"`
		QualityCode int    `json:"qualityCode"`
		Reason      string `json:"reason"`
	} `json:"points"`
}

func TestPostBatchStoredAndQueried(t *testing.T) {
	e := startEnv(t, nil)
	c := e.login("gwPK", "gwDK", "gwSecret")
	replies := subscribe(t, c, batchTopic+enos.ReplySuffix)
	recs := testRecords(1, 1, 10)
	if !publish(c, batchTopic, enos.AppendPostBatch(nil, 17, "gw-01", 1, recs), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	if r := nextReply(t, replies); r.ID != "17" || r.Code != 200 || r.Message != "" || string(r.Data) != "{}" {
		t.Fatalf("reply %+v", r)
	}
	// The PUBACK came after the commit: the data is there now, no waiting.
	var doc latestDoc
	if code := e.get("/api/v1/devices/meterPK/meter-2/latest", &doc); code != 200 {
		t.Fatalf("latest: %d", code)
	}
	v := doc.Points["voltage"]
	if doc.ProductKey != "meterPK" || v.Time != 1700000010000 || v.Seq != 10 || v.Value != 231.0 || v.Quality != "good" {
		t.Errorf("latest voltage %+v", v)
	}
	if cur := doc.Points["current"]; cur.Value != nil || cur.Quality != "bad" || cur.QualityCode != 1 || cur.Reason != "timeout" {
		t.Errorf("latest current %+v", cur)
	}
	if en := doc.Points["energy"]; en.Value != 10000.0 {
		t.Errorf("latest energy %+v", en)
	}
	// Range: meter-1 has seqs 1,3,5,7,9; page by 2 within a window.
	var page struct {
		Readings []struct {
			Time  int64   `json:"time"`
			Seq   uint64  `json:"seq"`
			Value float64 `json:"value"`
		} `json:"readings"`
		Next string `json:"next"`
	}
	from := time.UnixMilli(1700000003000).UTC().Format(time.RFC3339)
	if code := e.get("/api/v1/devices/meterPK/meter-1/points/voltage?from="+from+"&to=1700000009000&limit=2", &page); code != 200 {
		t.Fatalf("points: %d", code)
	}
	if len(page.Readings) != 2 || page.Readings[0].Seq != 3 || page.Readings[1].Seq != 5 || page.Readings[0].Value != 230.3 || page.Next == "" {
		t.Fatalf("page 1: %+v", page)
	}
	next := page.Next
	page.Next = ""
	e.get("/api/v1/devices/meterPK/meter-1/points/voltage?from="+from+"&to=1700000009000&limit=2&cursor="+next, &page)
	if len(page.Readings) != 1 || page.Readings[0].Seq != 7 || page.Next != "" {
		t.Fatalf("page 2: %+v", page)
	}
	var seqs Sequences
	if code := e.get("/api/v1/gateways/gw-01/sequences", &seqs); code != 200 || seqs.Total != 10 || seqs.Epoch != 1 || fmt.Sprint(seqs.Epochs) != "[{1 10 [[1 10]]}]" {
		t.Errorf("sequences %d %+v", code, seqs)
	}
	if got := e.metric("ingest_points_stored_total", ""); got != 40 {
		t.Errorf("points stored %v", got)
	}
	if got := e.metric("ingest_posts_accepted_total", ""); got != 1 {
		t.Errorf("posts %v", got)
	}
}

func TestDuplicatesAndFencing(t *testing.T) {
	e := startEnv(t, nil)
	c := e.login("gwPK", "gwDK", "gwSecret")
	replies := subscribe(t, c, batchTopic+enos.ReplySuffix)
	batch := enos.AppendPostBatch(nil, 1, "gw-01", 3, testRecords(3, 1, 20))
	for i := range 2 {
		if !publish(c, batchTopic, batch, 5*time.Second) {
			t.Fatal("no PUBACK")
		}
		if r := nextReply(t, replies); r.Code != 200 {
			t.Fatalf("post %d: %+v", i, r)
		}
	}
	if got := e.metric("ingest_items_duplicate_total", ""); got != 20 {
		t.Errorf("duplicates %v", got)
	}
	if got := e.metric("ingest_items_stored_total", ""); got != 20 {
		t.Errorf("stored %v", got)
	}
	var seqs Sequences
	e.get("/api/v1/gateways/gw-01/sequences", &seqs)
	if seqs.Total != 20 || seqs.Duplicates != 20 {
		t.Errorf("sequences %+v", seqs)
	}
	// A node still sending with an older epoch is fenced, acknowledged and told.
	old := enos.AppendPostBatch(nil, 2, "gw-01", 2, testRecords(2, 100, 5))
	if !publish(c, batchTopic, old, 5*time.Second) {
		t.Fatal("no PUBACK for a fenced post")
	}
	if r := nextReply(t, replies); r.ID != "2" || r.Code != enos.CodeForbidden || !strings.Contains(r.Message, "fenced") {
		t.Errorf("fenced reply %+v", r)
	}
	if got := e.metric("ingest_posts_rejected_total", rejectedFenced); got != 1 {
		t.Errorf("fenced %v", got)
	}
	e.get("/api/v1/gateways/gw-01/sequences", &seqs)
	if seqs.Total != 20 {
		t.Errorf("a fenced post was stored: %+v", seqs)
	}
}

func TestMalformedAndLimits(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.MaxPayload = 8 << 10; c.MaxItems = 5 })
	c := e.login("gwPK", "gwDK", "gwSecret")
	replies := subscribe(t, c, batchTopic+enos.ReplySuffix)
	for _, tt := range []struct {
		name, payload string
		code          int
		reason        string
	}{
		{"not JSON", `{"id":"m1","params":[{"measurepoints":{"a":1}}`, 400, rejectedMalformed},
		{"wrong type", `{"id":"m2","params":{"measurepoints":{}}}`, 400, rejectedMalformed},
		{"no measurepoints", `{"id":"m3","params":[{"time":1}]}`, 400, rejectedMalformed},
		{"resume method on post topic", `{"id":"m4","method":"thing.measurepoint.resume.batch","params":[]}`, 400, rejectedMalformed},
		{"too many items", string(enos.AppendPostBatch(nil, 5, "gw-01", 1, testRecords(1, 1, 6))), 413, rejectedLimit},
		{"over MaxPayload", `{"id":"big","params":[{"measurepoints":{"s":"` + strings.Repeat("x", 9<<10) + `"}}]}`, 413, rejectedTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.metric("ingest_posts_rejected_total", tt.reason)
			if !publish(c, batchTopic, []byte(tt.payload), 5*time.Second) {
				t.Fatal("no PUBACK: a final refusal must be acknowledged")
			}
			r := nextReply(t, replies)
			id, _ := enos.PeekID([]byte(tt.payload))
			if r.ID != id || r.Code != tt.code || r.Message == "" {
				t.Errorf("reply %+v, want id %q code %d", r, id, tt.code)
			}
			if got := e.metric("ingest_posts_rejected_total", tt.reason); got != before+1 {
				t.Errorf("%s: %v", tt.reason, got)
			}
		})
	}
	// No id to answer: counted, no reply.
	before := e.metric("ingest_posts_rejected_total", rejectedMalformed)
	if !publish(c, batchTopic, []byte("\x00\xff garbage"), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	if got := e.metric("ingest_posts_rejected_total", rejectedMalformed); got != before+1 {
		t.Errorf("garbage not counted")
	}
	// Still serving on the same connection.
	if !publish(c, batchTopic, enos.AppendPostBatch(nil, 99, "gw-01", 1, testRecords(1, 1, 3)), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	if r := nextReply(t, replies); r.ID != "99" || r.Code != 200 {
		t.Errorf("good post after bad ones: %+v", r)
	}
	// Beyond the hard packet limit the broker closes the connection: no PUBACK.
	huge := make([]byte, 2*e.cfg.MaxPayload+70<<10)
	if publish(c, batchTopic, huge, 2*time.Second) {
		t.Error("a packet over the hard limit was acknowledged")
	}
	eventually(t, "packet_too_large counted", func() bool { return e.metric("ingest_posts_rejected_total", rejectedPacketLarge) == 1 })
	if var200 := e.get("/healthz", nil); var200 != 200 {
		t.Errorf("healthz %d", var200)
	}
}

func TestACL(t *testing.T) {
	e := startEnv(t, nil)
	plain := e.login("meterPK", "plain", "plainSecret")
	own := enos.Topic("meterPK", "plain", enos.SuffixPostBatch)
	replies := subscribe(t, plain, own+enos.ReplySuffix)

	// Subscribing to another device's replies is refused (SUBACK 0x80).
	tok := plain.Subscribe(batchTopic+enos.ReplySuffix, 1, nil)
	tok.WaitTimeout(5 * time.Second)
	if got := tok.(interface{ Result() map[string]byte }).Result()[batchTopic+enos.ReplySuffix]; got != 0x80 {
		t.Errorf("SUBACK for another device's topic: %#x", got)
	}
	for _, f := range []string{"/sys/meterPK/plain/#", "#", "/sys/+/plain/thing/measurepoint/post_reply", "/sys/meterPK/plain/thing/measurepoint/post"} {
		tok := plain.Subscribe(f, 1, nil)
		tok.WaitTimeout(5 * time.Second)
		if got := tok.(interface{ Result() map[string]byte }).Result()[f]; got != 0x80 {
			t.Errorf("SUBACK for %s: %#x", f, got)
		}
	}
	// Its own commands it may subscribe to.
	tok = plain.Subscribe("/sys/meterPK/plain/thing/service/#", 1, nil)
	tok.WaitTimeout(5 * time.Second)
	if got := tok.(interface{ Result() map[string]byte }).Result()["/sys/meterPK/plain/thing/service/#"]; got != 1 {
		t.Errorf("SUBACK for its own service topics: %#x", got)
	}
	if got := e.metric("ingest_acl_denied_total", "subscribe"); got != 5 {
		t.Errorf("subscribe denials %v", got)
	}

	// A device that is not a gateway posts only for itself.
	if !publish(plain, own, enos.AppendPostBatch(nil, 3, "plain", 1, testRecords(1, 1, 1)), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	if r := nextReply(t, replies); r.Code != enos.CodeForbidden || r.ID != "3" {
		t.Errorf("post for another device: %+v", r)
	}
	self := `{"id":"4","params":[{"measurepoints":{"t":1.5}},{"productKey":"meterPK","deviceKey":"plain","measurepoints":{"t":2.5},"time":5}]}`
	if !publish(plain, own, []byte(self), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	if r := nextReply(t, replies); r.Code != 200 {
		t.Errorf("post for itself: %+v", r)
	}
	// Publishing on another device's topic closes the connection (MQTT 3.1.1 has no negative PUBACK).
	if publish(plain, batchTopic, []byte(`{}`), 2*time.Second) {
		t.Error("publish on another device's topic acknowledged")
	}
	eventually(t, "publish denial counted", func() bool { return e.metric("ingest_acl_denied_total", "publish") == 1 })
}

// TestSDKReplay replays the official SDK's capture: its CONNECT fields
// verbatim, its subscriptions and publishes (a float timestamp string, the
// 'hmacsha256' label, the broken event method string, a batch item with
// empty keys meaning the gateway). Every request the official server
// answered is answered alike: same id, code and data (but the assetId
// EnOS invents). The two commands the capture shows going down are not
// sent: ingestd has no command path yet.
func TestSDKReplay(t *testing.T) {
	var vecs struct {
		Vectors []struct {
			Params map[string]string `json:"params"`
		} `json:"vectors"`
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vecs); err != nil {
		t.Fatal(err)
	}
	ts, _ := strconv.ParseFloat(vecs.Vectors[0].Params["timestamp"], 64)
	captured := time.UnixMilli(int64(ts)) // the capture's clock: its logins are fresh then
	e := startEnv(t, func(c *Config) { c.Now = func() time.Time { return captured } })

	f, err := os.Open(wireFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type line struct {
		Dir, Kind, Topic, Payload    string
		ClientID, Username, Password string
		QoS                          byte
	}
	var lines []line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if lines[0].Kind != "CONNECT" {
		t.Fatal("capture does not start with CONNECT")
	}
	client, err := e.dial(e.clientTLS(e.ca, "gwDK"), lines[0].ClientID, lines[0].Username, lines[0].Password)
	if err != nil {
		t.Fatalf("the SDK's own CONNECT fields were refused: %v", err)
	}
	replies := map[string]<-chan enos.Reply{}
	checked := 0
	for i, l := range lines[1:] {
		if l.Dir != "device->server" {
			continue
		}
		switch l.Kind {
		case "SUBSCRIBE":
			replies[l.Topic] = subscribe(t, client, l.Topic)
		case "PUBLISH":
			tok := client.Publish(l.Topic, l.QoS, false, []byte(l.Payload))
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("%s: not acknowledged", l.Topic)
			}
			// The capture's next line is the official server's reply, if
			// it answered: ours must match it.
			if i+2 >= len(lines) || lines[i+2].Dir != "server->device" || lines[i+2].Topic != l.Topic+enos.ReplySuffix {
				continue
			}
			ch, subscribed := replies[l.Topic+enos.ReplySuffix]
			if !subscribed {
				t.Fatalf("the capture did not subscribe to %s", l.Topic+enos.ReplySuffix)
			}
			if err := sameReply(nextReply(t, ch), lines[i+2].Payload); err != nil {
				t.Errorf("%s: %v", l.Topic, err)
			}
			checked++
		}
	}
	if checked != 7 {
		t.Errorf("%d requests answered as the capture shows, want 7", checked)
	}
	// The event and the attribute are stored.
	var evs struct {
		Events []Event `json:"events"`
	}
	e.get("/api/v1/devices/gwPK/gwDK/events", &evs)
	if len(evs.Events) != 1 || evs.Events[0].Name != "overheat" || evs.Events[0].Time != 1795315153734 || string(evs.Events[0].Values) != `{"temp":99}` {
		t.Errorf("events %+v", evs.Events)
	}
	var attrs struct {
		Attributes map[string]Attribute `json:"attributes"`
	}
	e.get("/api/v1/devices/gwPK/gwDK/attributes", &attrs)
	if a := attrs.Attributes["ratedPower"]; string(a.Value) != "5000" || a.Time != captured.UnixMilli() {
		t.Errorf("attributes %+v", attrs.Attributes)
	}
	// What the SDK posted is stored: the foreign quality code included.
	var doc latestDoc
	e.get("/api/v1/devices/gwPK/gwDK/latest", &doc)
	if p := doc.Points["power"]; p.Value != 3.2 || p.QualityCode != 9 || p.Quality != "9" {
		t.Errorf("power %+v", p)
	}
	if p := doc.Points["temp"]; p.Value != 21.5 || p.Time != 1795315153721 {
		t.Errorf("gateway temp %+v (the batch's older reading must not replace it)", p)
	}
	e.get("/api/v1/devices/subPK/subDK/latest", &doc)
	if p := doc.Points["temp"]; p.Value != 18.0 || p.Time != 1795315153738 {
		t.Errorf("sub-device temp %+v", p)
	}
	if code := e.get("/api/v1/gateways/gwDK/sequences", nil); code != 404 {
		t.Errorf("a plain device has no sequences: %d", code)
	}
}

// TestRestart: a new Server on the same DataDir keeps data, de-duplication
// and the fence.
func TestRestart(t *testing.T) {
	e := startEnv(t, nil)
	batch := enos.AppendPostBatch(nil, 1, "gw-01", 7, testRecords(7, 1, 10))
	post := func(payload []byte) enos.Reply {
		c := e.login("gwPK", "gwDK", "gwSecret")
		replies := subscribe(t, c, batchTopic+enos.ReplySuffix)
		if !publish(c, batchTopic, payload, 5*time.Second) {
			t.Fatal("no PUBACK")
		}
		r := nextReply(t, replies)
		c.Disconnect(50)
		return r
	}
	if r := post(batch); r.Code != 200 {
		t.Fatal(r)
	}
	e.stop()
	e.start()
	if r := post(batch); r.Code != 200 {
		t.Fatal(r)
	}
	if got := e.metric("ingest_items_duplicate_total", ""); got != 10 {
		t.Errorf("after restart, duplicates %v (de-duplication state lost?)", got)
	}
	if r := post(enos.AppendPostBatch(nil, 2, "gw-01", 6, testRecords(6, 50, 1))); r.Code != enos.CodeForbidden {
		t.Errorf("after restart, an older epoch: %+v", r)
	}
	var doc latestDoc
	if code := e.get("/api/v1/devices/meterPK/meter-2/latest", &doc); code != 200 || doc.Points["voltage"].Seq != 10 {
		t.Errorf("after restart: %d %+v", code, doc)
	}
}

func TestHTTP(t *testing.T) {
	e := startEnv(t, nil)
	var health map[string]string
	if code := e.get("/healthz", &health); code != 200 || health["status"] != "ok" || health["mqtt"] != "up" || health["store"] != "ok" {
		t.Errorf("healthz %d %v", code, health)
	}
	var er struct{ Error string }
	for path, want := range map[string]int{
		"/api/v1/devices/nope/nada/latest":                  404,
		"/api/v1/devices/nope/nada/points/v":                404,
		"/api/v1/devices/gwPK/gwDK/points/never":            404,
		"/api/v1/gateways/nobody/sequences":                 404,
		"/api/v1/devices/gwPK/gwDK/points/v?from=yesterday": 400,
		"/api/v1/devices/gwPK/gwDK/points/v?limit=0":        400,
		"/api/v1/devices/gwPK/gwDK/points/v?limit=99999":    400,
		"/nothing/here": 404,
	} {
		er.Error = ""
		if code := e.get(path, &er); code != want || er.Error == "" {
			t.Errorf("%s: %d %q, want %d with an error", path, code, er.Error, want)
		}
	}
	// A registered device without data is known: empty points.
	var doc latestDoc
	if code := e.get("/api/v1/devices/gwPK/gwDK/latest", &doc); code != 200 || doc.Points == nil || len(doc.Points) != 0 {
		t.Errorf("registered device without data: %d %+v", code, doc)
	}
	// Store a point, then a bad cursor is a 400.
	c := e.login("gwPK", "gwDK", "gwSecret")
	if !publish(c, enos.Topic("gwPK", "gwDK", enos.SuffixPost), []byte(`{"id":"1","params":{"measurepoints":{"v":1}}}`), 5*time.Second) {
		t.Fatal("no PUBACK")
	}
	if code := e.get("/api/v1/devices/gwPK/gwDK/points/v?cursor=zz", &er); code != 400 {
		t.Errorf("bad cursor: %d", code)
	}
	var page struct {
		Readings []struct{ Time int64 } `json:"readings"`
	}
	if code := e.get("/api/v1/devices/gwPK/gwDK/points/v", &page); code != 200 || len(page.Readings) != 1 || math.Abs(float64(page.Readings[0].Time-time.Now().UnixMilli())) > 60e3 {
		t.Errorf("a post without time gets the arrival time: %d %+v", code, page)
	}
	resp := e.get("/metrics", nil)
	if resp != 200 {
		t.Errorf("/metrics %d", resp)
	}
}

// failingStore fails Append while fail is set.
type failingStore struct {
	Store
	fail atomic.Bool
}

func (f *failingStore) Append(ctx context.Context, b *Batch) (AppendResult, error) {
	if f.fail.Load() {
		return AppendResult{}, errors.New("disk on fire")
	}
	return f.Store.Append(ctx, b)
}

// TestStoreFailureWithholdsPUBACK: no PUBACK while the store fails (the
// gateway keeps the post and sends it again), a 500 reply says why.
func TestStoreFailureWithholdsPUBACK(t *testing.T) {
	bolt, err := OpenBoltStore(filepath.Join(t.TempDir(), "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	fs := &failingStore{Store: bolt}
	fs.fail.Store(true)
	e := startEnv(t, func(c *Config) { c.Store = fs; c.DataDir = "" })
	c := e.login("gwPK", "gwDK", "gwSecret")
	replies := subscribe(t, c, batchTopic+enos.ReplySuffix)
	batch := enos.AppendPostBatch(nil, 8, "gw-01", 1, testRecords(1, 1, 5))
	if publish(c, batchTopic, batch, time.Second) {
		t.Fatal("PUBACK although the store failed")
	}
	if r := nextReply(t, replies); r.ID != "8" || r.Code != enos.CodeInternal {
		t.Errorf("reply %+v", r)
	}
	if got := e.metric("ingest_posts_rejected_total", rejectedStore); got != 1 {
		t.Errorf("store_error %v", got)
	}
	fs.fail.Store(false)
	if !publish(c, batchTopic, batch, 5*time.Second) {
		t.Fatal("no PUBACK once the store works")
	}
	if r := nextReply(t, replies); r.Code != 200 {
		t.Errorf("reply %+v", r)
	}
	var seqs Sequences
	if e.get("/api/v1/gateways/gw-01/sequences", &seqs); seqs.Total != 5 || seqs.Duplicates != 0 {
		t.Errorf("sequences %+v", seqs)
	}
}

// BenchmarkIngestMQTT measures the whole path: a paho client posts
// batches of 500 records × 10 points over TLS, up to 8 awaiting PUBACK (the
// gateway's default in_flight), each parsed, de-duplicated and committed
// (fsync'd) before its PUBACK.
func BenchmarkIngestMQTT(b *testing.B) {
	e := startEnv(b, nil)
	c := e.login("gwPK", "gwDK", "gwSecret")
	recs := make([]telemetry.Record, 500)
	var buf []byte
	b.ReportAllocs()
	var toks []interface {
		WaitTimeout(time.Duration) bool
		Error() error
	}
	seq := uint64(0)
	for i := 0; b.Loop(); i++ {
		for j := range recs {
			seq++
			pts := make([]telemetry.Point, 10)
			for k := range pts {
				pts[k] = telemetry.Point{ID: "point" + strconv.Itoa(k), Value: telemetry.Float(float64(seq) / 3)}
			}
			recs[j] = telemetry.Record{Epoch: 1, Seq: seq, ProductKey: "meterPK", DeviceKey: "meter-" + strconv.Itoa(j%50), Time: 1700000000000 + int64(seq), Points: pts}
		}
		buf = enos.AppendPostBatch(buf[:0], uint64(i), "gw-01", 1, recs)
		toks = append(toks, c.Publish(batchTopic, 1, false, append([]byte(nil), buf...)))
		if len(toks) == 8 {
			if tok := toks[0]; !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				b.Fatal("no PUBACK")
			}
			toks = toks[1:]
		}
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatal("no PUBACK")
		}
	}
	b.ReportMetric(float64(seq*10)/b.Elapsed().Seconds(), "points/s")
}

// sameReply compares a reply with the official server's reply in the
// capture: id, code and data. An object's "assetId" (an EnOS asset id,
// which this ingest does not have) is not compared.
func sameReply(got enos.Reply, want string) error {
	var w struct {
		ID   string          `json:"id"`
		Code int             `json:"code"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		return fmt.Errorf("capture reply: %v", err)
	}
	if got.ID != w.ID || got.Code != w.Code {
		return fmt.Errorf("reply id %s code %d (%s), the capture has id %s code %d", got.ID, got.Code, got.Message, w.ID, w.Code)
	}
	var gd, wd any
	if err := json.Unmarshal(got.Data, &gd); err != nil {
		return fmt.Errorf("reply data %s: %v", got.Data, err)
	}
	if err := json.Unmarshal(w.Data, &wd); err != nil {
		return fmt.Errorf("capture data: %v", err)
	}
	if m, ok := wd.(map[string]any); ok {
		delete(m, "assetId")
	}
	if !reflect.DeepEqual(gd, wd) {
		return fmt.Errorf("reply data %s, the capture has %s", got.Data, w.Data)
	}
	return nil
}
