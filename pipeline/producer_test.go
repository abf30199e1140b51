package pipeline

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/embedded"
	"github.com/edged/edged/cache/memory"
	"github.com/edged/edged/config"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/modelsync"
	"github.com/edged/edged/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func fixture(t *testing.T, maxBytes int64) (*config.Config, *embedded.Bus) {
	cfg := &config.Config{
		Profiles: []config.Profile{{Name: "p", Points: []config.Point{{Name: "a", Type: "int16"}, {Name: "b", Type: "int16"}}}},
		Devices:  []config.Device{{Name: "d1", Profile: "p", ProductKey: "pk", DeviceKey: "d1"}},
	}
	b, err := embedded.Open(t.TempDir(), embedded.Options{MaxBytes: maxBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return cfg, b
}

func reading(i int) connectivity.Reading {
	now := time.Now()
	return connectivity.Reading{Device: 0, Time: now, Samples: []telemetry.Sample{
		{Point: 0, Value: telemetry.Int(int64(i)), Time: now}, {Point: 1, Value: telemetry.Int(int64(-i)), Time: now},
	}}
}

// drain reads every message on the bus and returns the records.
func drain(t *testing.T, b bus.Bus) (recs []telemetry.Record, msgs int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.Consume(ctx, bus.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case d := <-ch:
			m := d.Message()
			rs, err := telemetry.DecodeBatch(m.Body, m.Seq)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != int(m.Count) {
				t.Fatalf("message spans %d seqs but holds %d records", m.Count, len(rs))
			}
			recs = append(recs, rs...)
			msgs++
			d.Ack()
		case <-time.After(300 * time.Millisecond):
			return recs, msgs
		}
	}
}

func TestBatchesNumbersAndCaches(t *testing.T) {
	cfg, b := fixture(t, 1<<20)
	in := make(chan connectivity.Reading, 100)
	c := memory.New()
	p := NewProducer(ProducerOptions{In: in, Normaliser: modelsync.NewLive(modelsync.NewNormaliser(cfg)), Bus: b, Cache: c,
		Gateway: "gw", Epoch: 4, MaxRecords: 10, MaxPoints: 12, Linger: time.Hour})
	for i := range 25 {
		in <- reading(i)
	}
	close(in)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, msgs := drain(t, b)
	if len(recs) != 25 {
		t.Fatalf("%d records on the bus, want 25", len(recs))
	}
	// 12 points = 6 records per message (MaxPoints binds before MaxRecords);
	// the rest is flushed when the input closes, even with a long linger
	if msgs != 5 {
		t.Fatalf("%d messages, want 5 (4 full ones of 6 records and the final 1)", msgs)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || r.Epoch != 4 || r.Gateway != "gw" || r.Points[0].Value != telemetry.Int(int64(i)) {
			t.Fatalf("record %d = %+v", i, r)
		}
	}
	snap, _ := c.Get(context.Background(), "d1")
	if e := snap["a"]; e.Value != telemetry.Int(24) || e.Seq != 25 {
		t.Fatalf("cache a = %+v, want the last record's value and seq", e)
	}
}

func TestLingerFlushesPartialBatch(t *testing.T) {
	cfg, b := fixture(t, 1<<20)
	in := make(chan connectivity.Reading, 1)
	p := NewProducer(ProducerOptions{In: in, Normaliser: modelsync.NewLive(modelsync.NewNormaliser(cfg)), Bus: b, Cache: memory.New(),
		Gateway: "gw", Epoch: 1, MaxRecords: 1000, Linger: 20 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	in <- reading(1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := b.Stats(bus.Telemetry)
		if st.Records == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lone record was not flushed by the linger timer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestFullBusHoldsRecords: when the bus refuses (full), the producer keeps
// the batch and retries; once room is made every record gets through, in
// order, and none is lost.
func TestFullBusHoldsRecords(t *testing.T) {
	cfg, b := fixture(t, 1<<20)
	// fill the bus almost to its limit with a foreign message
	if _, err := b.Publish(context.Background(), bus.Telemetry, 1, make([]byte, 1<<20-100)); err != nil {
		t.Fatal(err)
	}
	in := make(chan connectivity.Reading) // unbuffered: a stalled producer stalls the sender
	p := NewProducer(ProducerOptions{In: in, Normaliser: modelsync.NewLive(modelsync.NewNormaliser(cfg)), Bus: b, Cache: memory.New(),
		Gateway: "gw", Epoch: 1, MaxRecords: 5, Linger: time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	sent := make(chan int, 1)
	go func() {
		n := 0
		for i := range 50 {
			select {
			case in <- reading(i):
				n++
			case <-time.After(500 * time.Millisecond):
				sent <- n // back-pressure reached the sender
				return
			}
		}
		sent <- n
	}()
	n := <-sent
	if n >= 50 {
		t.Fatal("the producer kept taking readings while the bus was full")
	}
	// make room: consume and ack the foreign message
	ctx, cancel := context.WithCancel(context.Background())
	ch, _ := b.Consume(ctx, bus.Telemetry)
	(<-ch).Ack()
	cancel()
	for range ch {
	}
	for i := n; i < 50; i++ {
		in <- reading(i)
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	recs, _ := drain(t, b)
	if len(recs) != 50 {
		t.Fatalf("%d records after the bus made room, want 50", len(recs))
	}
	for i, r := range recs {
		if r.Points[0].Value != telemetry.Int(int64(i)) {
			t.Fatalf("record %d holds reading %v: order lost", i, r.Points[0].Value)
		}
	}
}

// TestReportingPolicy: points the policy withholds do not reach the bus, a
// record left empty takes no sequence number, and the cache still gets
// every value (Seq 0 for a poll that sent nothing).
func TestReportingPolicy(t *testing.T) {
	cfg, b := fixture(t, 1<<20)
	cfg.Profiles[0].Report = &config.Report{Mode: "on_change"}
	in := make(chan connectivity.Reading, 10)
	c := memory.New()
	p := NewProducer(ProducerOptions{In: in, Normaliser: modelsync.NewLive(modelsync.NewNormaliser(cfg)), Bus: b, Cache: c,
		Gateway: "gw", Epoch: 1, MaxRecords: 100, Linger: time.Hour})
	vals := [][2]int64{{1, 1}, {1, 1}, {2, 1}, {2, 1}}
	for _, v := range vals {
		now := time.Now()
		in <- connectivity.Reading{Device: 0, Time: now, Samples: []telemetry.Sample{
			{Point: 0, Value: telemetry.Int(v[0]), Time: now}, {Point: 1, Value: telemetry.Int(v[1]), Time: now}}}
	}
	close(in)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, _ := drain(t, b)
	if len(recs) != 2 || len(recs[0].Points) != 2 || len(recs[1].Points) != 1 || recs[1].Points[0].ID != "a" || recs[1].Seq != 2 {
		t.Fatalf("records on the bus = %+v, want both points, then a alone with seq 2", recs)
	}
	snap, _ := c.Get(context.Background(), "d1")
	if e := snap["a"]; e.Value != telemetry.Int(2) || e.Seq != 0 {
		t.Fatalf("cache a = %+v, want the last poll's value with seq 0 (that poll sent nothing)", e)
	}
	if e := snap["b"]; e.Value != telemetry.Int(1) {
		t.Fatalf("cache b = %+v", e)
	}
}
