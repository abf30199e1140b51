package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/embedded"
)

func open(t *testing.T, dir string, maxBytes int64) *embedded.Bus {
	t.Helper()
	b, err := embedded.Open(dir, embedded.Options{MaxBytes: maxBytes, AckFlush: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// drain consumes n messages and acks them.
func drain(t *testing.T, b *embedded.Bus, queue string, n int) []bus.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := b.Consume(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	var out []bus.Message
	for len(out) < n {
		select {
		case d := <-ch:
			out = append(out, d.Message())
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d messages delivered", len(out), n)
		}
	}
	cancel()
	for range ch {
	}
	return out
}

func TestMoveKeepsNumbersAndCarriesTheCounter(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	from := open(t, filepath.Join(dir, "a"), 0)
	to := open(t, filepath.Join(dir, "b"), 0)
	// to already holds an older message of its own (seq 1, 2 records)
	if _, err := to.Publish(ctx, bus.Telemetry, 2, []byte("old")); err != nil {
		t.Fatal(err)
	}
	// from has used numbers 1..30: the first three messages acked, seven left
	var want []bus.Message
	for i := range 10 {
		seq, err := from.Publish(ctx, bus.Telemetry, 3, fmt.Appendf(nil, "m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if i >= 3 {
			want = append(want, bus.Message{Seq: seq, Count: 3, Body: fmt.Appendf(nil, "m%d", i)})
		}
	}
	drain(t, from, bus.Telemetry, 3)

	res, err := embedded.Move(ctx, from, to, bus.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	if res.Adopted != 7 || res.Duplicates != 0 || res.Renumbered != 0 || res.NextSeq != 31 {
		t.Fatalf("move: %+v, want 7 adopted, next 31", res)
	}
	if st, _ := from.Stats(bus.Telemetry); st.Depth != 0 {
		t.Fatalf("source still holds %d messages", st.Depth)
	}
	st, _ := to.Stats(bus.Telemetry)
	if st.Depth != 8 || st.Records != 2+21 || st.NextSeq != 31 {
		t.Fatalf("destination stats %+v", st)
	}
	// delivered in sequence order: to's own seq 1, then the moved 10..30
	got := drain(t, to, bus.Telemetry, 8)
	if got[0].Seq != 1 || string(got[0].Body) != "old" {
		t.Fatalf("first delivery %d %q", got[0].Seq, got[0].Body)
	}
	for i, w := range want {
		g := got[i+1]
		if g.Seq != w.Seq || g.Count != w.Count || string(g.Body) != string(w.Body) {
			t.Fatalf("delivery %d: seq %d count %d %q, want %d %d %q", i+1, g.Seq, g.Count, g.Body, w.Seq, w.Count, w.Body)
		}
	}
	// the counter was carried: the next publish follows the moved numbers
	if seq, err := to.Publish(ctx, bus.Telemetry, 1, []byte("new")); err != nil || seq != 31 {
		t.Fatalf("publish after move: seq %d, %v; want 31", seq, err)
	}
}

func TestAdoptSkipsCopiesAndRenumbersClashes(t *testing.T) {
	ctx := context.Background()
	b := open(t, t.TempDir(), 0)
	if _, err := b.Publish(ctx, bus.Telemetry, 2, []byte("mine")); err != nil { // seq 1
		t.Fatal(err)
	}
	now := time.Now()
	res, err := b.Adopt(bus.Telemetry, []bus.Message{
		{Seq: 1, Count: 2, Body: []byte("mine"), Published: now},  // the same message again: a repeated move
		{Seq: 1, Count: 2, Body: []byte("other"), Published: now}, // a clash: kept under a new number
		{Seq: 7, Count: 1, Body: []byte("seven"), Published: now},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res != (embedded.AdoptResult{Adopted: 1, Duplicates: 1, Renumbered: 1}) {
		t.Fatalf("adopt: %+v", res)
	}
	got := drain(t, b, bus.Telemetry, 3)
	var seqs []uint64
	var bodies []string
	for _, m := range got {
		seqs = append(seqs, m.Seq)
		bodies = append(bodies, string(m.Body))
	}
	// "other" took the number after the counter (3), "seven" kept 7
	if fmt.Sprint(seqs) != "[1 3 7]" || fmt.Sprint(bodies) != "[mine other seven]" {
		t.Fatalf("delivered %v %v", seqs, bodies)
	}
	if st, _ := b.Stats(bus.Telemetry); st.NextSeq != 8 {
		t.Fatalf("next seq %d, want 8", st.NextSeq)
	}
}

func TestAdoptRespectsTheLimitAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	b, err := embedded.Open(dir, embedded.Options{MaxBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Adopt(bus.Telemetry, []bus.Message{{Seq: 5, Count: 1, Body: make([]byte, 11)}})
	if !errors.Is(err, bus.ErrFull) {
		t.Fatalf("adopting more than MaxBytes: %v, want ErrFull", err)
	}
	if _, err := b.Adopt(bus.Telemetry, []bus.Message{{Seq: 5, Count: 4, Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(bus.Telemetry, 100); err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(bus.Telemetry, 50); err != nil { // never lowers
		t.Fatal(err)
	}
	b.Close()
	b = open(t, dir, 0)
	st, err := b.Stats(bus.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth != 1 || st.Records != 4 || st.NextSeq != 100 {
		t.Fatalf("after reopen: %+v", st)
	}
	if q, err := b.Queues(); err != nil || fmt.Sprint(q) != "[telemetry]" {
		t.Fatalf("queues %v %v", q, err)
	}
}
