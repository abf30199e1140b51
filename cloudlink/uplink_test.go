package cloudlink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/embedded"
	"github.com/edged/edged/certs"
	"github.com/edged/edged/cloudlink"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cloud is a real ingest server (in process) with dev certificates.
type cloud struct {
	dir   string
	files certs.DevFiles
	cfg   ingest.Config
	stop  context.CancelFunc
	done  chan error
	http  string
}

func newCloud(t *testing.T, mqttAddr string) *cloud {
	t.Helper()
	dir := t.TempDir()
	files, err := certs.MakeDev(filepath.Join(dir, "certs"), certs.DevOptions{GatewayCN: "gwDK"})
	if err != nil {
		t.Fatal(err)
	}
	reg := filepath.Join(dir, "registry.yaml")
	os.WriteFile(reg, []byte("devices:\n  - {product_key: gwPK, device_key: gwDK, secret: gwSecret, cert_login: true, gateway: true, sub_devices: [{product_key: meterPK, device_key: \"*\"}]}\n"), 0o600)
	return &cloud{dir: dir, files: files, cfg: ingest.Config{
		MQTTListen: mqttAddr, HTTPListen: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"),
		CertFile: files.ServerCert, KeyFile: files.ServerKey, ClientCAFile: files.CACert, RegistryFile: reg,
	}}
}

func (c *cloud) start(t *testing.T) {
	t.Helper()
	srv, err := ingest.New(c.cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop, c.done = cancel, make(chan error, 1)
	go func() { c.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-c.done:
		t.Fatalf("ingest did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("ingest not ready in 10s")
	}
	c.http = "http://" + srv.HTTPAddr().String()
	t.Cleanup(func() { c.shutdown(t) })
}

func (c *cloud) shutdown(t *testing.T) {
	if c.stop == nil {
		return
	}
	c.stop()
	if err := <-c.done; err != nil {
		t.Errorf("ingest Run: %v", err)
	}
	c.stop = nil
}

func (c *cloud) sequences(t *testing.T) (count uint64, dups uint64) {
	t.Helper()
	resp, err := http.Get(c.http + "/api/v1/gateways/gw-test/sequences")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return 0, 0
	}
	var doc struct {
		Epochs []struct {
			Count uint64 `json:"count"`
		} `json:"epochs"`
		Duplicates uint64 `json:"duplicates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, e := range doc.Epochs {
		count += e.Count
	}
	return count, doc.Duplicates
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func publishRecords(t *testing.T, b bus.Bus, n int) {
	t.Helper()
	for i := range n {
		recs := []telemetry.Record{{
			Device: "m1", ProductKey: "meterPK", DeviceKey: "m1", Time: time.Now().UnixMilli(),
			Points: []telemetry.Point{{ID: "v", Value: telemetry.Float(float64(i))}, {ID: "n", Value: telemetry.Int(int64(i))}},
		}}
		if _, err := b.Publish(context.Background(), bus.Telemetry, 1, telemetry.AppendBatch(nil, "gw-test", 1, recs)); err != nil {
			t.Fatal(err)
		}
	}
}

func newUplink(t *testing.T, c *cloud, b bus.Bus, secret string) *cloudlink.Uplink {
	tlsCfg, _, err := certs.ClientConfig(c.files.CACert, c.files.ClientCert, c.files.ClientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	return cloudlink.New(cloudlink.Options{
		Broker: "tls://" + c.cfg.MQTTListen, TLS: tlsCfg, ProductKey: "gwPK", DeviceKey: "gwDK",
		Secret: secret, SignMethod: "sha256", Gateway: "gw-test", Epoch: 1, Bus: b,
		InFlight: 4, AckTimeout: 5 * time.Second,
	})
}

func runUplink(t *testing.T, u *cloudlink.Uplink) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("uplink Run: %v", err)
		}
	})
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func openBus(t *testing.T) bus.Bus {
	b, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestDeliversAndAcksAfterPuback(t *testing.T) {
	for _, login := range []struct{ name, secret string }{{"secret login", "gwSecret"}, {"certificate login", ""}} {
		t.Run(login.name, func(t *testing.T) {
			c := newCloud(t, freeAddr(t))
			c.start(t)
			b := openBus(t)
			publishRecords(t, b, 50)
			u := newUplink(t, c, b, login.secret)
			runUplink(t, u)
			waitFor(t, "50 records stored", func() bool { n, _ := c.sequences(t); return n == 50 })
			waitFor(t, "bus emptied by acks", func() bool { st, _ := b.Stats(bus.Telemetry); return st.Depth == 0 })
			if h := u.Health(); !h.Connected || h.LastAck.IsZero() {
				t.Fatalf("health = %+v", h)
			}
		})
	}
}

// TestCloudDownThenUp: with the ingest unreachable the records wait on the
// bus; when it comes up they all arrive.
func TestCloudDownThenUp(t *testing.T) {
	addr := freeAddr(t)
	c := newCloud(t, addr)
	b := openBus(t)
	u := newUplink(t, c, b, "gwSecret")
	runUplink(t, u)
	publishRecords(t, b, 20)
	time.Sleep(time.Second)
	if st, _ := b.Stats(bus.Telemetry); st.Depth != 20 {
		t.Fatalf("depth with the cloud down = %d, want 20", st.Depth)
	}
	if h := u.Health(); h.Connected || h.LastError == "" {
		t.Fatalf("health with the cloud down = %+v", h)
	}
	c.start(t)
	waitFor(t, "20 records stored after the cloud came up", func() bool { n, _ := c.sequences(t); return n == 20 })
	// restart the cloud mid-stream: nothing lost, duplicates discarded
	c.shutdown(t)
	publishRecords(t, b, 30)
	c.start(t)
	waitFor(t, "50 records stored after a cloud restart", func() bool { n, _ := c.sequences(t); return n == 50 })
	waitFor(t, "bus emptied", func() bool { st, _ := b.Stats(bus.Telemetry); return st.Depth == 0 })
}

func TestWrongSecretIsRefused(t *testing.T) {
	c := newCloud(t, freeAddr(t))
	c.start(t)
	b := openBus(t)
	publishRecords(t, b, 5)
	u := newUplink(t, c, b, "not-the-secret")
	runUplink(t, u)
	waitFor(t, "the refusal reported", func() bool { return u.Health().LastError != "" })
	if n, _ := c.sequences(t); n != 0 {
		t.Fatalf("%d records stored with a wrong secret", n)
	}
	if st, _ := b.Stats(bus.Telemetry); st.Depth != 5 {
		t.Fatalf("depth = %d: refused records must stay queued", st.Depth)
	}
}

func TestCorruptMessageIsDeadLettered(t *testing.T) {
	c := newCloud(t, freeAddr(t))
	c.start(t)
	b := openBus(t)
	publishRecords(t, b, 3)
	if _, err := b.Publish(context.Background(), bus.Telemetry, 1, []byte("not a record batch")); err != nil {
		t.Fatal(err)
	}
	publishRecords(t, b, 3)
	u := newUplink(t, c, b, "gwSecret")
	runUplink(t, u)
	waitFor(t, "the good records stored", func() bool { n, _ := c.sequences(t); return n == 6 })
	waitFor(t, "the queue emptied", func() bool { st, _ := b.Stats(bus.Telemetry); return st.Depth == 0 })
	st, err := b.Stats(cloudlink.DeadLetter)
	if err != nil || st.Depth != 1 {
		t.Fatalf("dead-letter queue = %+v, %v; want the corrupt message", st, err)
	}
}

// TestOversizeMessageIsSplit: a bus message larger than a post may be is
// sent as several posts and acked once all are stored.
func TestOversizeMessageIsSplit(t *testing.T) {
	c := newCloud(t, freeAddr(t))
	c.start(t)
	b := openBus(t)
	recs := make([]telemetry.Record, 40)
	for i := range recs {
		recs[i] = telemetry.Record{Device: "m1", ProductKey: "meterPK", DeviceKey: "m1", Time: time.Now().UnixMilli()}
		for j := range 100 {
			recs[i].Points = append(recs[i].Points, telemetry.Point{ID: fmt.Sprintf("point-%03d", j), Quality: telemetry.Bad, Reason: "link down"})
		}
	}
	if _, err := b.Publish(context.Background(), bus.Telemetry, uint32(len(recs)), telemetry.AppendBatch(nil, "gw-test", 1, recs)); err != nil {
		t.Fatal(err)
	}
	tlsCfg, _, _ := certs.ClientConfig(c.files.CACert, c.files.ClientCert, c.files.ClientKey, "")
	u := cloudlink.New(cloudlink.Options{
		Broker: "tls://" + c.cfg.MQTTListen, TLS: tlsCfg, ProductKey: "gwPK", DeviceKey: "gwDK",
		Secret: "gwSecret", Gateway: "gw-test", Epoch: 1, Bus: b, MaxPayload: 32 << 10,
	})
	runUplink(t, u)
	waitFor(t, "all 40 records stored", func() bool { n, _ := c.sequences(t); return n == 40 })
	waitFor(t, "bus emptied", func() bool { st, _ := b.Stats(bus.Telemetry); return st.Depth == 0 })
}
