package cloudlink_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/certs"
	"github.com/edged/edged/cloudlink"
	"github.com/edged/edged/telemetry"
)

// publishLive publishes one record of device dk as the producer does: on
// the bus, then offered to the tap.
func publishLive(t *testing.T, b bus.Bus, tap *bus.Tap, dk string, v int) {
	t.Helper()
	recs := []telemetry.Record{{
		Device: dk, ProductKey: "meterPK", DeviceKey: dk, Time: time.Now().UnixMilli(),
		Points: []telemetry.Point{{ID: "v", Value: telemetry.Int(int64(v))}, {ID: "w", Value: telemetry.Int(int64(v))}},
	}}
	body := telemetry.AppendBatch(nil, "gw-test", 1, recs)
	seq, err := b.Publish(context.Background(), bus.Telemetry, 1, body)
	if err != nil {
		t.Fatal(err)
	}
	tap.Offer(bus.Message{Seq: seq, Count: 1, Published: time.Now(), Body: body})
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func uplinkWithTap(t *testing.T, c *cloud, b bus.Bus, tap *bus.Tap, reg prometheus.Registerer, rate int, after time.Duration) *cloudlink.Uplink {
	tlsCfg, _, err := certs.ClientConfig(c.files.CACert, c.files.ClientCert, c.files.ClientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	return cloudlink.New(cloudlink.Options{
		Broker: "tls://" + c.cfg.MQTTListen, TLS: tlsCfg, ProductKey: "gwPK", DeviceKey: "gwDK",
		Secret: "gwSecret", Gateway: "gw-test", Epoch: 1, Bus: b, InFlight: 4, AckTimeout: 5 * time.Second,
		Tap: tap, ResumeRate: rate, ResumeAfter: after, Registerer: reg,
	})
}

// TestBacklogResumesWhileLiveOvertakes: 300 records queued while the cloud
// is down go out on resume/batch at a bounded rate (600 points at 150
// points/s: about three seconds), and records published after the link is
// up overtake them on post/batch: the first live record is stored while the
// backlog is still draining. In the end every sequence is stored once.
func TestBacklogResumesWhileLiveOvertakes(t *testing.T) {
	c := newCloud(t, freeAddr(t))
	b := openBus(t)
	tap := bus.NewTap(0)
	publishRecords(t, b, 300) // the outage's backlog: never offered to the tap
	reg := prometheus.NewRegistry()
	u := uplinkWithTap(t, c, b, tap, reg, 150, 0)
	c.start(t)
	runUplink(t, u)
	waitFor(t, "the link up", func() bool { return u.Health().Connected })
	for i := range 50 {
		publishLive(t, b, tap, "live", i)
		time.Sleep(10 * time.Millisecond)
	}
	var backlogStored uint64
	waitFor(t, "the newest live record stored", func() bool {
		n, _ := c.sequences(t)
		resp, err := http.Get(c.http + "/api/v1/devices/meterPK/live/latest")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			Points map[string]struct{ Value float64 } `json:"points"`
		}
		if err := jsonDecode(resp, &doc); err != nil || doc.Points["v"].Value != 49 {
			return false
		}
		backlogStored = n - 50
		return true
	})
	if backlogStored >= 300 {
		t.Errorf("the live records were stored only after the whole backlog: live data did not overtake it")
	}
	waitFor(t, "every record stored", func() bool { n, _ := c.sequences(t); return n == 350 })
	waitFor(t, "bus emptied", func() bool { st, _ := b.Stats(bus.Telemetry); return st.Depth == 0 })
	if n, d := c.sequences(t); n != 350 || d != 0 {
		t.Errorf("stored %d, duplicates %d; want 350, 0", n, d)
	}
	if r := counter(t, reg, "edged_uplink_resumed_records_total"); r != 300 {
		t.Errorf("%v records resumed, want the 300 of the backlog", r)
	}
	if l := counter(t, reg, "edged_uplink_live_ahead_records_total"); l != 50 {
		t.Errorf("%v records posted live ahead of the backlog, want 50", l)
	}
	t.Logf("live record 49 stored when %d of 300 backlog records were", backlogStored)
}

// TestOldRecordsAreHistory: with the link up all along, records older than
// ResumeAfter still go on resume/batch, and the tap does not post them.
func TestOldRecordsAreHistory(t *testing.T) {
	c := newCloud(t, freeAddr(t))
	c.start(t)
	b := openBus(t)
	tap := bus.NewTap(0)
	reg := prometheus.NewRegistry()
	u := uplinkWithTap(t, c, b, tap, reg, 0, time.Nanosecond)
	runUplink(t, u)
	waitFor(t, "the link up", func() bool { return u.Health().Connected })
	for i := range 20 {
		publishLive(t, b, tap, "old", i)
	}
	waitFor(t, "every record stored", func() bool { n, _ := c.sequences(t); return n == 20 })
	if r := counter(t, reg, "edged_uplink_resumed_records_total"); r != 20 {
		t.Errorf("%v records resumed, want 20", r)
	}
	if l := counter(t, reg, "edged_uplink_live_ahead_records_total"); l != 0 {
		t.Errorf("%v old records posted live", l)
	}
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }
