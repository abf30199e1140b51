package cloudlink_test

import (
	"context"
	"testing"
	"time"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/certs"
	"github.com/edged/edged/cloudlink"
)

// TestTermsAndFencing: an uplink that is not activated stays logged in and
// delivers nothing; activated, it delivers under its epoch; once a newer
// epoch of the gateway has been stored, its posts are refused as fenced
// and its health says so; a new term clears that.
func TestTermsAndFencing(t *testing.T) {
	c := newCloud(t, freeAddr(t))
	c.start(t)
	tlsCfg, _, err := certs.ClientConfig(c.files.CACert, c.files.ClientCert, c.files.ClientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	node := func(b bus.Bus, name string) *cloudlink.Uplink {
		return cloudlink.New(cloudlink.Options{
			Broker: "tls://" + c.cfg.MQTTListen, TLS: tlsCfg, ProductKey: "gwPK", DeviceKey: "gwDK",
			Secret: "gwSecret", Gateway: "gw-test", ClientID: "gwDK." + name, Bus: b,
			InFlight: 4, AckTimeout: 5 * time.Second,
		})
	}
	ba, bb := openBus(t), openBus(t)
	a, b := node(ba, "a"), node(bb, "b")
	runUplink(t, a)
	runUplink(t, b)
	publishRecords(t, ba, 10)
	waitFor(t, "both logged in", func() bool { return a.Health().Connected && b.Health().Connected })
	time.Sleep(300 * time.Millisecond)
	if n, _ := c.sequences(t); n != 0 {
		t.Fatalf("%d records stored before any node was activated", n)
	}

	// b is active at epoch 7 and posts
	termB, endB := context.WithCancel(context.Background())
	defer endB()
	b.Activate(termB, 7)
	publishRecords(t, bb, 5)
	waitFor(t, "b's records stored", func() bool { n, _ := c.sequences(t); return n == 5 })

	// a, activated with an older epoch, is fenced: refused, not stored
	termA, endA := context.WithCancel(context.Background())
	a.Activate(termA, 3)
	waitFor(t, "a reports itself fenced", func() bool { return a.Health().Fenced })
	if n, _ := c.sequences(t); n != 5 {
		t.Fatalf("%d records stored, want b's 5 only", n)
	}
	if h := a.Health(); h.Refused == "" || h.RefusedAt.IsZero() {
		t.Fatalf("health %+v", h)
	}
	endA()
	// a new term clears the refusal
	termA2, endA2 := context.WithCancel(context.Background())
	defer endA2()
	a.Activate(termA2, 9)
	if a.Health().Fenced {
		t.Fatal("a new term still reports the old term's fencing")
	}
	publishRecords(t, ba, 1)
	waitFor(t, "a's new records stored under epoch 9", func() bool { n, _ := c.sequences(t); return n >= 6 })
}
