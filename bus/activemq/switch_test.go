package activemq_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/activemq"
	"github.com/edged/edged/bus/embedded"
	"github.com/edged/edged/internal/testsvc"
)

// TestSwitchKinds moves a gateway's backlog embedded → activemq → embedded
// (the second switch first with the broker down, then up) and checks that
// every unacked message arrives once, in order, under its own sequence
// number, and that sequence numbers never repeat across the switches.
func TestSwitchKinds(t *testing.T) {
	testsvc.Integration(t)
	amq := testsvc.StartActiveMQ(t, nil)
	ctx := ctxT(t, 120*time.Second)
	dir := t.TempDir()
	o := activemq.Options{Addr: amq.Addr(), DataDir: dir, Prefix: uniquePrefix(t), HeartBeat: time.Second}
	body := func(seq uint64) []byte { return fmt.Appendf(nil, "records from %d", seq) }

	// 1. embedded: 30 messages of 2 records (seq 1..60), the first 5 acked
	eb, err := embedded.Open(dir, embedded.Options{AckFlush: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if _, err := eb.Publish(ctx, bus.Telemetry, 2, body(uint64(1+2*i))); err != nil {
			t.Fatal(err)
		}
	}
	consume(t, ctx, eb, 5, nil)
	eb.Close()

	// 2. switch to activemq: 25 messages move to the outbox, then the broker
	sw, err := activemq.FromEmbedded(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if sw.Local.Adopted != 25 || sw.Moved() != 25 {
		t.Fatalf("embedded → activemq moved %+v, want 25", sw)
	}
	if _, err := os.Stat(filepath.Join(dir, "bus.db")); !os.IsNotExist(err) {
		t.Fatalf("the emptied embedded store was not removed: %v", err)
	}
	ab, err := activemq.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 { // the counter was carried: 61, 63, ...
		seq, err := ab.Publish(ctx, bus.Telemetry, 2, body(uint64(61+2*i)))
		if err != nil || seq != uint64(61+2*i) {
			t.Fatalf("publish after the switch: seq %d, %v; want %d", seq, err, 61+2*i)
		}
	}
	consume(t, ctx, ab, 10, nil) // the cloud confirms seq 11..29
	waitOutboxEmpty(t, ctx, ab)
	ab.Close()
	if err := testsvc.StompSend(amq.Addr(), "/queue/"+o.Prefix+bus.Telemetry, "not ours"); err != nil {
		t.Fatal(err)
	}

	// 3. switch back with the broker down: the outbox is kept for a retry
	amq.Stop()
	eb, err = embedded.Open(dir, embedded.Options{AckFlush: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sw, err = activemq.ToEmbedded(ctx, o, eb)
	if err != nil {
		t.Fatal(err)
	}
	if sw.BrokerLeft == nil || sw.Moved() != 0 {
		t.Fatalf("activemq → embedded with the broker down: %+v, want BrokerLeft and nothing moved", sw)
	}
	seq, err := eb.Publish(ctx, bus.Telemetry, 2, body(81))
	if err != nil || seq != 81 {
		t.Fatalf("publish on embedded after the switch: seq %d, %v; want 81 (the counter carried)", seq, err)
	}
	eb.Close()

	// 4. the next start with the broker up drains it
	amq.Start()
	eb, err = embedded.Open(dir, embedded.Options{AckFlush: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	sw, err = activemq.ToEmbedded(ctx, o, eb)
	if err != nil {
		t.Fatal(err)
	}
	if sw.BrokerLeft != nil || sw.Broker.Adopted != 25 || sw.BrokerForeign != 1 {
		t.Fatalf("activemq → embedded with the broker up: %+v (left: %v), want 25 from the broker and 1 foreign left", sw, sw.BrokerLeft)
	}
	if _, err := os.Stat(filepath.Join(dir, "outbox")); !os.IsNotExist(err) {
		t.Fatalf("the drained outbox was not removed: %v", err)
	}
	// every unconfirmed message once, in order: seq 31..79 from the broker, then 81
	var want []uint64
	for s := uint64(31); s <= 81; s += 2 {
		want = append(want, s)
	}
	consume(t, ctx, eb, len(want), want)
	if st, _ := eb.Stats(bus.Telemetry); st.Depth != 0 || st.NextSeq != 83 {
		t.Fatalf("after the drain: %+v", st)
	}
}

// consume takes n deliveries, checks their sequence numbers and bodies
// against want (if given) and acks them.
func consume(t *testing.T, ctx context.Context, b bus.Bus, n int, want []uint64) {
	t.Helper()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := b.Consume(cctx, bus.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case d := <-ch:
			m := d.Message()
			if want != nil && (m.Seq != want[i] || string(m.Body) != fmt.Sprintf("records from %d", want[i]) || m.Count != 2) {
				t.Fatalf("delivery %d: seq %d count %d %q, want seq %d", i, m.Seq, m.Count, m.Body, want[i])
			}
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d deliveries", i, n)
		}
	}
	cancel()
	for range ch {
	}
}

func waitOutboxEmpty(t *testing.T, ctx context.Context, b *activemq.Bus) {
	t.Helper()
	for {
		st, err := b.OutboxStats(bus.Telemetry)
		if err != nil {
			t.Fatal(err)
		}
		if st.Depth == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the outbox still holds %d messages", st.Depth)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
