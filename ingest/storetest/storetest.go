// Package storetest is the conformance suite of ingest.Store: every
// implementation (the embedded bbolt store, later PostgreSQL) runs the same
// tests with Run.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/telemetry"
)

// Run runs the suite. newStore returns a fresh, empty store for one subtest
// and arranges for it to be closed (t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) ingest.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s ingest.Store)
	}{
		{"Values", testValues},
		{"Dedup", testDedup},
		{"NoDedupWithoutEdged", testNoDedup},
		{"Fencing", testFencing},
		{"LatestKeepsNewest", testLatestNewest},
		{"RangePaging", testRangePaging},
		{"Sequences", testSequences},
		{"Concurrent", testConcurrent},
		{"RefusesNUL", testRefusesNUL},
		{"Events", testEvents},
		{"Attributes", testAttributes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

// Durable checks that data, de-duplication and fencing state survive
// closing and opening the store again: reopen closes s and returns a store
// on the same data.
func Durable(t *testing.T, newStore func(t *testing.T) ingest.Store, reopen func(t *testing.T, s ingest.Store) ingest.Store) {
	testDurable(t, newStore(t), reopen)
}

// Item builds an item of device pk/dk at time t; seq 0 means no origin.
func Item(pk, dk string, t int64, epoch, seq uint64, pts ...enos.MeasurePoint) enos.Item {
	it := enos.Item{ProductKey: pk, DeviceKey: dk, Time: t, Points: pts}
	if seq != 0 {
		it.Origin = &enos.Origin{Epoch: epoch, Seq: seq}
	}
	return it
}

// P is a good measure point.
func P(id string, v telemetry.Value) enos.MeasurePoint { return enos.MeasurePoint{ID: id, Value: v} }

func mustAppend(t *testing.T, s ingest.Store, b *ingest.Batch) ingest.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), b)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return res
}

func sameReading(got ingest.Reading, want enos.MeasurePoint, tm int64, seq uint64) error {
	if got.Time != tm || got.Seq != seq || !got.Value.Equal(want.Value) || got.Quality != want.Quality || got.Reason != want.Reason ||
		(got.Array == nil) != (want.Array == nil) || len(got.Array) != len(want.Array) {
		return fmt.Errorf("got %+v, want %+v at %d seq %d", got, want, tm, seq)
	}
	for i := range got.Array {
		if !got.Array[i].Equal(want.Array[i]) {
			return fmt.Errorf("array: got %+v, want %+v", got.Array, want.Array)
		}
	}
	return nil
}

func testValues(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	pts := []enos.MeasurePoint{
		P("bool", telemetry.Bool(true)),
		P("int", telemetry.Int(math.MinInt64)),
		P("uint", telemetry.Uint(math.MaxUint64)),
		P("float", telemetry.Float(-230.125)),
		P("string", telemetry.String("a\x01é😀")),
		P("none", telemetry.Value{}),
		{ID: "bad", Quality: enos.QualityBad, Reason: "timeout"},
		{ID: "stale", Value: telemetry.Float(1.5), Quality: enos.QualityStale},
		{ID: "foreign", Value: telemetry.Int(3), Quality: 9},
		{ID: "array", Array: []telemetry.Value{telemetry.String("1.02"), telemetry.Float(2.5), {}}},
		{ID: "emptyArray", Array: []telemetry.Value{}},
	}
	res := mustAppend(t, s, &ingest.Batch{Items: []enos.Item{Item("pk", "dk", 1700000000000, 0, 0, pts...)}})
	if res != (ingest.AppendResult{Stored: 1, Points: len(pts)}) {
		t.Errorf("result %+v", res)
	}
	latest, err := s.Latest(ctx, "pk", "dk")
	if err != nil {
		t.Fatal(err)
	}
	if len(latest) != len(pts) {
		t.Errorf("Latest has %d points, want %d", len(latest), len(pts))
	}
	for _, p := range pts {
		if err := sameReading(latest[p.ID], p, 1700000000000, 0); err != nil {
			t.Errorf("latest %s: %v", p.ID, err)
		}
		page, err := s.Range(ctx, "pk", "dk", p.ID, 0, math.MaxInt64, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Readings) != 1 || page.Next != "" {
			t.Fatalf("range %s: %+v", p.ID, page)
		}
		if err := sameReading(page.Readings[0], p, 1700000000000, 0); err != nil {
			t.Errorf("range %s: %v", p.ID, err)
		}
	}
	// Devices are separate: a prefix of a key is another device.
	mustAppend(t, s, &ingest.Batch{Items: []enos.Item{Item("pk", "d", 1, 0, 0, P("bool", telemetry.Bool(false)))}})
	if l, _ := s.Latest(ctx, "pk", "d"); len(l) != 1 {
		t.Errorf("device d: %v", l)
	}
	if l, err := s.Latest(ctx, "pk", "nobody"); err != nil || len(l) != 0 {
		t.Errorf("unknown device: %v %v", l, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func batchOf(gw string, epoch uint64, seqs ...uint64) *ingest.Batch {
	b := &ingest.Batch{Gateway: gw, Epoch: epoch}
	for _, q := range seqs {
		it := Item("pk", "meter", 1000+int64(q%1e9), 0, 0, P("v", telemetry.Int(int64(q))))
		it.Origin = &enos.Origin{Epoch: epoch, Seq: q}
		b.Items = append(b.Items, it)
	}
	return b
}

func testDedup(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	if res := mustAppend(t, s, batchOf("gw", 1, 1, 2, 3)); res != (ingest.AppendResult{Stored: 3, Points: 3}) {
		t.Errorf("first: %+v", res)
	}
	if res := mustAppend(t, s, batchOf("gw", 1, 1, 2, 3)); res != (ingest.AppendResult{Duplicates: 3}) {
		t.Errorf("again: %+v", res)
	}
	if res := mustAppend(t, s, batchOf("gw", 1, 3, 4, 4)); res != (ingest.AppendResult{Stored: 1, Duplicates: 2, Points: 1}) {
		t.Errorf("overlap and in-batch duplicate: %+v", res)
	}
	// Another gateway's sequences are its own.
	if res := mustAppend(t, s, batchOf("gw2", 1, 1)); res.Stored != 1 {
		t.Errorf("gw2: %+v", res)
	}
	// The same seq from another origin epoch is another record.
	b := batchOf("gw", 2, 1)
	b.Items[0].Origin.Epoch = 7
	if res := mustAppend(t, s, b); res.Stored != 1 {
		t.Errorf("other origin epoch: %+v", res)
	}
	page, err := s.Range(ctx, "pk", "meter", "v", 0, math.MaxInt64, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	// seqs 1..4 of gw, 1 of gw2 (same key as gw's 1: replaced), 1 of origin epoch 7 (same key)
	if len(page.Readings) != 4 {
		t.Errorf("range: %+v", page.Readings)
	}
}

func testNoDedup(t *testing.T, s ingest.Store) {
	b := &ingest.Batch{Items: []enos.Item{Item("pk", "plain", 5, 0, 0, P("t", telemetry.Float(21.5)))}}
	for range 2 {
		if res := mustAppend(t, s, b); res != (ingest.AppendResult{Stored: 1, Points: 1}) {
			t.Errorf("%+v", res)
		}
	}
	page, _ := s.Range(context.Background(), "pk", "plain", "t", 0, math.MaxInt64, "", 0)
	if len(page.Readings) != 1 {
		t.Errorf("the same reading twice is one reading: %+v", page.Readings)
	}
	// a second post at the same time with another point keeps the first
	// point; the same point again replaces it
	mustAppend(t, s, &ingest.Batch{Items: []enos.Item{Item("pk", "plain", 5, 0, 0, P("h", telemetry.Int(40)))}})
	mustAppend(t, s, &ingest.Batch{Items: []enos.Item{Item("pk", "plain", 5, 0, 0, P("t", telemetry.Float(22)))}})
	for id, want := range map[string]telemetry.Value{"t": telemetry.Float(22), "h": telemetry.Int(40)} {
		page, _ := s.Range(context.Background(), "pk", "plain", id, 0, math.MaxInt64, "", 0)
		if len(page.Readings) != 1 || !page.Readings[0].Value.Equal(want) {
			t.Errorf("%s at time 5 after three posts: %+v, want one reading %v", id, page.Readings, want)
		}
	}
	// Items without an origin in a gateway's batch are stored without de-duplication.
	gb := &ingest.Batch{Gateway: "gw", Epoch: 1, Items: []enos.Item{Item("pk", "plain", 6, 0, 0, P("t", telemetry.Float(1)))}}
	for range 2 {
		if res := mustAppend(t, s, gb); res.Stored != 1 {
			t.Errorf("%+v", res)
		}
	}
}

func testFencing(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	mustAppend(t, s, batchOf("gw", 3, 1))
	_, err := s.Append(ctx, batchOf("gw", 2, 2))
	var fe *ingest.FencedError
	if !errors.Is(err, ingest.ErrFenced) || !errors.As(err, &fe) || fe.Epoch != 2 || fe.Newest != 3 || fe.Gateway != "gw" {
		t.Fatalf("lower epoch: %v", err)
	}
	if page, _ := s.Range(ctx, "pk", "meter", "v", 0, math.MaxInt64, "", 0); len(page.Readings) != 1 {
		t.Errorf("a fenced post stored something: %+v", page.Readings)
	}
	mustAppend(t, s, batchOf("gw", 3, 2))
	mustAppend(t, s, batchOf("gw", 4, 3))
	if _, err := s.Append(ctx, batchOf("gw", 3, 4)); !errors.Is(err, ingest.ErrFenced) {
		t.Errorf("epoch 3 after 4: %v", err)
	}
	// Another gateway is not fenced by gw's epoch; a plain device never is.
	mustAppend(t, s, batchOf("other", 1, 1))
	mustAppend(t, s, &ingest.Batch{Items: []enos.Item{Item("pk", "plain", 1, 0, 0, P("t", telemetry.Int(1)))}})
	seqs, err := s.Sequences(ctx, "gw")
	if err != nil || seqs.Epoch != 4 {
		t.Errorf("Sequences epoch: %+v %v", seqs, err)
	}
}

func testLatestNewest(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	live := Item("pk", "dk", 2000, 1, 10, P("v", telemetry.Int(2000)))
	backlog := &ingest.Batch{Gateway: "gw", Epoch: 1, Items: []enos.Item{
		Item("pk", "dk", 1000, 1, 5, P("v", telemetry.Int(1000))),
		Item("pk", "dk", 1500, 1, 6, P("v", telemetry.Int(1500)), P("w", telemetry.Int(1))),
	}}
	mustAppend(t, s, &ingest.Batch{Gateway: "gw", Epoch: 1, Items: []enos.Item{live}})
	mustAppend(t, s, backlog)
	l, err := s.Latest(ctx, "pk", "dk")
	if err != nil {
		t.Fatal(err)
	}
	if l["v"].Time != 2000 || l["v"].Value.I != 2000 || l["v"].Seq != 10 {
		t.Errorf("a resumed older reading replaced the newer: %+v", l["v"])
	}
	if l["w"].Time != 1500 {
		t.Errorf("w: %+v", l["w"])
	}
	// Within one post the newest wins too, whatever the order.
	mustAppend(t, s, &ingest.Batch{Gateway: "gw", Epoch: 1, Items: []enos.Item{
		Item("pk", "dk", 3001, 1, 12, P("v", telemetry.Int(3001))),
		Item("pk", "dk", 3000, 1, 11, P("v", telemetry.Int(3000))),
	}})
	if l, _ := s.Latest(ctx, "pk", "dk"); l["v"].Time != 3001 {
		t.Errorf("in-post order: %+v", l["v"])
	}
}

func testRangePaging(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	b := &ingest.Batch{Gateway: "gw", Epoch: 1}
	for i := range 25 {
		b.Items = append(b.Items, Item("pk", "dk", 1000+int64(i)*10, 1, uint64(i+1), P("v", telemetry.Int(int64(i)))))
	}
	// Two readings at the same time, told apart by their sequence.
	b.Items = append(b.Items, Item("pk", "dk", 1000, 1, 100, P("v", telemetry.Int(-1))))
	mustAppend(t, s, b)
	var got []ingest.Reading
	cursor := ""
	pages := 0
	for {
		page, err := s.Range(ctx, "pk", "dk", "v", 0, math.MaxInt64, cursor, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, page.Readings...)
		if page.Next == "" {
			break
		}
		if len(page.Readings) != 10 || pages > 5 {
			t.Fatalf("page %d: %d readings, next %q", pages, len(page.Readings), page.Next)
		}
		cursor = page.Next
	}
	if len(got) != 26 || pages != 3 {
		t.Fatalf("%d readings in %d pages", len(got), pages)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Time < got[i-1].Time || (got[i].Time == got[i-1].Time && got[i].Seq <= got[i-1].Seq) {
			t.Fatalf("not in (time, seq) order at %d: %+v %+v", i, got[i-1], got[i])
		}
	}
	if got[0].Seq != 1 || got[1].Seq != 100 {
		t.Errorf("same time ordered by seq: %+v %+v", got[0], got[1])
	}
	// from is inclusive, to exclusive.
	page, err := s.Range(ctx, "pk", "dk", "v", 1010, 1050, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Readings) != 4 || page.Readings[0].Time != 1010 || page.Readings[3].Time != 1040 {
		t.Errorf("[1010,1050): %+v", page.Readings)
	}
	// A cursor with a narrower window keeps to the window.
	page, _ = s.Range(ctx, "pk", "dk", "v", 1010, 1050, "", 2)
	page, _ = s.Range(ctx, "pk", "dk", "v", 1010, 1050, page.Next, 2)
	if len(page.Readings) != 2 || page.Readings[0].Time != 1030 || page.Next != "" {
		t.Errorf("second page of [1010,1050): %+v", page)
	}
	if _, err := s.Range(ctx, "pk", "dk", "v", 0, math.MaxInt64, "not-a-cursor", 0); !errors.Is(err, ingest.ErrBadCursor) {
		t.Errorf("bad cursor: %v", err)
	}
	if page, err := s.Range(ctx, "pk", "dk", "nope", 0, math.MaxInt64, "", 0); err != nil || len(page.Readings) != 0 {
		t.Errorf("unknown point: %+v %v", page, err)
	}
}

func testSequences(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	if _, err := s.Sequences(ctx, "gw"); !errors.Is(err, ingest.ErrNotFound) {
		t.Errorf("unknown gateway: %v", err)
	}
	// Out of order, with gaps, then filling a gap; two origin epochs.
	for _, seqs := range [][]uint64{{5, 3, 1}, {2}, {9, 10, 8}, {4}, {20}, {0}} {
		mustAppend(t, s, batchOf("gw", 2, seqs...))
	}
	b := batchOf("gw", 2, 7)
	b.Items[0].Origin.Epoch = 1
	mustAppend(t, s, b)
	mustAppend(t, s, batchOf("gw", 2, 1, 2, 30)) // two duplicates
	mustAppend(t, s, batchOf("gw", 2, 30))       // and one more
	got, err := s.Sequences(ctx, "gw")
	if err != nil {
		t.Fatal(err)
	}
	want := ingest.Sequences{Gateway: "gw", Epoch: 2, Total: 12, Duplicates: 3, Epochs: []ingest.EpochRange{
		{Epoch: 1, Count: 1, Ranges: [][2]uint64{{7, 7}}},
		{Epoch: 2, Count: 11, Ranges: [][2]uint64{{0, 5}, {8, 10}, {20, 20}, {30, 30}}},
	}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	// Filling the last gaps merges everything into one range.
	mustAppend(t, s, batchOf("gw", 2, 6, 7))
	mustAppend(t, s, batchOf("gw", 2, 11, 12, 13, 14, 15, 16, 17, 18, 19))
	got, _ = s.Sequences(ctx, "gw")
	if len(got.Epochs) != 2 || fmt.Sprint(got.Epochs[1].Ranges) != "[[0 20] [30 30]]" || got.Epochs[1].Count != 22 {
		t.Errorf("merged: %+v", got)
	}
	// The extremes of uint64.
	mustAppend(t, s, batchOf("edge", 1, math.MaxUint64, math.MaxUint64-1))
	got, _ = s.Sequences(ctx, "edge")
	if fmt.Sprint(got.Epochs[0].Ranges) != fmt.Sprint([][2]uint64{{math.MaxUint64 - 1, math.MaxUint64}}) {
		t.Errorf("edge: %+v", got)
	}
	// A gateway whose id is a prefix of another's is another gateway.
	if got, _ := s.Sequences(ctx, "g"); len(got.Epochs) != 0 {
		t.Errorf("g: %+v", got)
	}
}

func testConcurrent(t *testing.T, s ingest.Store) {
	const writers, posts, per = 4, 10, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for p := range posts {
				var seqs []uint64
				for i := range per {
					seqs = append(seqs, uint64(w*posts*per+p*per+i+1))
				}
				if _, err := s.Append(context.Background(), batchOf("gw", 1, seqs...)); err != nil {
					t.Error(err)
				}
				if _, err := s.Append(context.Background(), batchOf("gw", 1, seqs...)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got, err := s.Sequences(context.Background(), "gw")
	if err != nil || got.Total != writers*posts*per || len(got.Epochs) != 1 || len(got.Epochs[0].Ranges) != 1 {
		t.Errorf("%+v %v", got, err)
	}
}

func testRefusesNUL(t *testing.T, s ingest.Store) {
	for _, b := range []*ingest.Batch{
		{Items: []enos.Item{Item("p\x00k", "dk", 1, 0, 0, P("v", telemetry.Int(1)))}},
		{Items: []enos.Item{Item("pk", "", 1, 0, 0, P("v", telemetry.Int(1)))}},
		{Items: []enos.Item{Item("pk", "dk", 1, 0, 0, P("v\x00", telemetry.Int(1)))}},
		{Gateway: "g\x00w", Items: []enos.Item{Item("pk", "dk", 1, 0, 0, P("v", telemetry.Int(1)))}},
	} {
		if _, err := s.Append(context.Background(), b); err == nil {
			t.Errorf("%+v: no error", b)
		}
	}
}

func testDurable(t *testing.T, s ingest.Store, reopen func(t *testing.T, s ingest.Store) ingest.Store) {
	ctx := context.Background()
	mustAppend(t, s, batchOf("gw", 5, 1, 2, 3))
	s = reopen(t, s)
	if res := mustAppend(t, s, batchOf("gw", 5, 2, 3, 4)); res.Stored != 1 || res.Duplicates != 2 {
		t.Errorf("de-duplication state lost: %+v", res)
	}
	if seqs, _ := s.Sequences(ctx, "gw"); seqs.Duplicates != 2 || seqs.Total != 4 || seqs.Epoch != 5 {
		t.Errorf("sequences after reopen: %+v", seqs)
	}
	if _, err := s.Append(ctx, batchOf("gw", 4, 9)); !errors.Is(err, ingest.ErrFenced) {
		t.Errorf("fencing state lost: %v", err)
	}
	if l, _ := s.Latest(ctx, "pk", "meter"); l["v"].Value.I != 4 {
		t.Errorf("latest: %+v", l)
	}
}

// sameJSON reports whether two JSON texts hold the same value (a store may
// reorder an object's keys or change its spacing).
func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func testEvents(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	ev := func(name string, tm int64, id, values string) ingest.Event {
		return ingest.Event{ProductKey: "pk", DeviceKey: "dk", Name: name, Time: tm, ID: id, Values: json.RawMessage(values)}
	}
	in := []ingest.Event{
		ev("overheat", 1000, "1", `{"temp": 99, "where": "stator"}`),
		ev("overheat", 2000, "2", `{"temp": 101.5}`),
		ev("trip", 2000, "3", `{}`),
		ev("overheat", -5, "4", `{"nested": {"a": [1, true, null]}}`),
		ev("trip", 3000, "5", `{"reason": "über"}`),
	}
	for _, e := range in {
		if err := s.AppendEvent(ctx, e); err != nil {
			t.Fatalf("AppendEvent %+v: %v", e, err)
		}
	}
	// The same (device, name, time, id) again replaces: a QoS 1 resend.
	if err := s.AppendEvent(ctx, ev("overheat", 2000, "2", `{"temp": 102}`)); err != nil {
		t.Fatal(err)
	}
	// Another device's events stay apart.
	other := ev("trip", 2500, "9", `{}`)
	other.DeviceKey = "dk2"
	if err := s.AppendEvent(ctx, other); err != nil {
		t.Fatal(err)
	}
	want := []ingest.Event{in[3], in[0], ev("overheat", 2000, "2", `{"temp": 102}`), in[2], in[4]}
	var got []ingest.Event
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, err := s.Events(ctx, "pk", "dk", math.MinInt64, math.MaxInt64, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > 2 {
			t.Fatalf("page of %d events, limit 2", len(p.Events))
		}
		got = append(got, p.Events...)
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ProductKey != w.ProductKey || g.DeviceKey != w.DeviceKey || g.Name != w.Name || g.Time != w.Time || g.ID != w.ID || !sameJSON(g.Values, w.Values) {
			t.Errorf("event %d: %+v %s, want %+v %s", i, g, g.Values, w, w.Values)
		}
	}
	// A time range: from <= time < to.
	p, err := s.Events(ctx, "pk", "dk", 1000, 3000, "", 0)
	if err != nil || len(p.Events) != 3 || p.Next != "" {
		t.Errorf("range [1000, 3000): %+v %v", p, err)
	}
	if p, err := s.Events(ctx, "pk", "nobody", math.MinInt64, math.MaxInt64, "", 0); err != nil || len(p.Events) != 0 {
		t.Errorf("no events: %+v %v", p, err)
	}
	if _, err := s.Events(ctx, "pk", "dk", 0, 10, "not a cursor", 0); !errors.Is(err, ingest.ErrBadCursor) {
		t.Errorf("bad cursor: %v", err)
	}
	for _, bad := range []ingest.Event{ev("a\x00b", 1, "1", `{}`), ev("a", 1, "", `{}`), ev("a", 1, "1", `[1]`), ev("a", 1, "1", `{"x":`)} {
		if err := s.AppendEvent(ctx, bad); err == nil {
			t.Errorf("AppendEvent %q %q %s accepted", bad.Name, bad.ID, bad.Values)
		}
	}
}

func testAttributes(t *testing.T, s ingest.Store) {
	ctx := context.Background()
	if a, err := s.Attributes(ctx, "pk", "dk"); err != nil || len(a) != 0 {
		t.Fatalf("no attributes: %v %v", a, err)
	}
	set := func(at int64, kv map[string]string) error {
		m := map[string]json.RawMessage{}
		for k, v := range kv {
			m[k] = json.RawMessage(v)
		}
		return s.SetAttributes(ctx, "pk", "dk", m, at)
	}
	if err := set(1000, map[string]string{"ratedPower": "5000", "model": `"X-1"`, "tags": `["a", "b"]`}); err != nil {
		t.Fatal(err)
	}
	if err := set(2000, map[string]string{"ratedPower": "5500.5"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Attributes(ctx, "pk", "dk")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ingest.Attribute{
		"ratedPower": {Value: json.RawMessage("5500.5"), Time: 2000},
		"model":      {Value: json.RawMessage(`"X-1"`), Time: 1000},
		"tags":       {Value: json.RawMessage(`["a","b"]`), Time: 1000},
	}
	if len(got) != len(want) {
		t.Fatalf("attributes %v", got)
	}
	for k, w := range want {
		if g := got[k]; g.Time != w.Time || !sameJSON(g.Value, w.Value) {
			t.Errorf("attribute %s: %s at %d, want %s at %d", k, g.Value, g.Time, w.Value, w.Time)
		}
	}
	// All or nothing: a bad value stores none of the update.
	if err := set(3000, map[string]string{"ratedPower": "1", "broken": "{"}); err == nil {
		t.Error("a value that is not JSON accepted")
	}
	if err := set(3000, map[string]string{"ratedPower": "1", "a\x00b": "1"}); err == nil {
		t.Error("a name with NUL accepted")
	}
	if got, _ := s.Attributes(ctx, "pk", "dk"); string(got["ratedPower"].Value) != "5500.5" {
		t.Errorf("a refused update changed ratedPower to %s", got["ratedPower"].Value)
	}
	if other, err := s.Attributes(ctx, "pk", "dk2"); err != nil || len(other) != 0 {
		t.Errorf("another device: %v %v", other, err)
	}
}
