// Package bustest is the conformance suite every bus.Bus implementation
// passes: the embedded bus now, the ActiveMQ bus later.
package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edged/edged/bus"
)

// Opener opens the implementation under test on the same backing store each
// time it is called (a data dir, a broker), so the suite can test restarts.
// maxBytes is the queue limit to configure.
type Opener func(t *testing.T, maxBytes int64) bus.Bus

// Run runs the suite. newOpener returns a fresh, empty backing store per
// subtest.
func Run(t *testing.T, newOpener func(t *testing.T) Opener) {
	t.Run("SequencesAreContiguous", func(t *testing.T) { sequences(t, newOpener(t)) })
	t.Run("InOrderAndAck", func(t *testing.T) { inOrderAndAck(t, newOpener(t)) })
	t.Run("NackRedelivers", func(t *testing.T) { nackRedelivers(t, newOpener(t)) })
	t.Run("UnackedSurviveRestart", func(t *testing.T) { survivesRestart(t, newOpener(t)) })
	t.Run("LiveDelivery", func(t *testing.T) { liveDelivery(t, newOpener(t)) })
	t.Run("FullIsReported", func(t *testing.T) { full(t, newOpener(t)) })
	t.Run("ReconsumeStartsAtOldestUnacked", func(t *testing.T) { reconsume(t, newOpener(t)) })
}

const q = "conformance"

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func publish(t *testing.T, b bus.Bus, count uint32, body string) uint64 {
	t.Helper()
	seq, err := b.Publish(ctxT(t), q, count, []byte(body))
	if err != nil {
		t.Fatalf("publish %q: %v", body, err)
	}
	return seq
}

func receive(t *testing.T, ch <-chan bus.Delivery) bus.Delivery {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
	}
	return nil
}

func expectNone(t *testing.T, ch <-chan bus.Delivery) {
	t.Helper()
	select {
	case d := <-ch:
		t.Fatalf("unexpected delivery seq %d %q", d.Message().Seq, d.Message().Body)
	case <-time.After(100 * time.Millisecond):
	}
}

// eventually retries check until it passes or 10 s have gone by: a broker
// bus learns its backlog asynchronously (forwarding, the start-up browse),
// so its Stats converge rather than change in the same instant.
func eventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sequences(t *testing.T, open Opener) {
	b := open(t, 1<<20)
	first := publish(t, b, 3, "a")
	if first == 0 {
		t.Fatal("sequence numbers start at 1, got 0")
	}
	if s := publish(t, b, 5, "b"); s != first+3 {
		t.Fatalf("second message seq = %d, want %d", s, first+3)
	}
	if s := publish(t, b, 1, "c"); s != first+8 {
		t.Fatalf("third message seq = %d, want %d", s, first+8)
	}
	eventually(t, func() error {
		st, err := b.Stats(q)
		if err != nil {
			return err
		}
		if st.Depth != 3 || st.Records != 9 || st.Bytes != 3 || st.NextSeq != first+9 {
			return fmt.Errorf("stats = %+v, want depth 3, records 9, bytes 3, next %d", st, first+9)
		}
		if st.Oldest.IsZero() || time.Since(st.Oldest) > time.Minute {
			return fmt.Errorf("oldest = %v", st.Oldest)
		}
		return nil
	})
	if _, err := b.Publish(ctxT(t), q, 0, []byte("x")); err == nil {
		t.Fatal("publish with count 0 succeeded")
	}
}

func inOrderAndAck(t *testing.T, open Opener) {
	b := open(t, 1<<20)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var want []uint64
	for i := range 50 {
		want = append(want, publish(t, b, 1, fmt.Sprint(i)))
	}
	ch, err := b.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	for i, seq := range want {
		d := receive(t, ch)
		m := d.Message()
		if m.Seq != seq || string(m.Body) != fmt.Sprint(i) || m.Count != 1 {
			t.Fatalf("delivery %d = seq %d body %q, want seq %d body %q", i, m.Seq, m.Body, seq, fmt.Sprint(i))
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	expectNone(t, ch)
	eventually(t, func() error {
		st, _ := b.Stats(q)
		if st.Depth != 0 || st.Bytes != 0 || !st.Oldest.IsZero() {
			return fmt.Errorf("after acking all: %+v", st)
		}
		return nil
	})
}

func nackRedelivers(t *testing.T, open Opener) {
	b := open(t, 1<<20)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	s1 := publish(t, b, 1, "one")
	s2 := publish(t, b, 1, "two")
	s3 := publish(t, b, 1, "three")
	ch, err := b.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	d1 := receive(t, ch)
	d2 := receive(t, ch)
	if err := d1.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := d2.Nack(); err != nil {
		t.Fatal(err)
	}
	if err := d2.Ack(); err == nil {
		t.Fatal("ack after nack of the same delivery succeeded")
	}
	// two and everything after it come again, in order; three may have been
	// in the hand-over when the nack came, and may arrive once before them
	d := receive(t, ch)
	if d.Message().Seq == s3 {
		d = receive(t, ch)
	}
	for i, w := range []uint64{s2, s3} {
		if i > 0 {
			d = receive(t, ch)
		}
		if d.Message().Seq != w {
			t.Fatalf("after nack got seq %d, want %d", d.Message().Seq, w)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	_ = s1
	expectNone(t, ch)
}

func survivesRestart(t *testing.T, open Opener) {
	b := open(t, 1<<20)
	s1 := publish(t, b, 2, "keep-1")
	s2 := publish(t, b, 2, "keep-2")
	ctx, cancel := context.WithCancel(ctxT(t))
	ch, err := b.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	d := receive(t, ch)
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2 := open(t, 1<<20)
	eventually(t, func() error {
		st, err := b2.Stats(q)
		if err != nil {
			return err
		}
		if st.Depth != 1 || st.Records != 2 || st.NextSeq != s2+2 {
			return fmt.Errorf("after restart: %+v, want depth 1, records 2, next %d", st, s2+2)
		}
		return nil
	})
	if s3 := publish(t, b2, 1, "new"); s3 != s2+2 {
		t.Fatalf("seq after restart = %d, want %d (no reuse, no gap)", s3, s2+2)
	}
	ctx2, cancel2 := context.WithCancel(ctxT(t))
	defer cancel2()
	ch2, err := b2.Consume(ctx2, q)
	if err != nil {
		t.Fatal(err)
	}
	d = receive(t, ch2)
	if m := d.Message(); m.Seq != s2 || string(m.Body) != "keep-2" || m.Count != 2 {
		t.Fatalf("first after restart = %d %q count %d, want %d keep-2 (seq %d was acked)", m.Seq, m.Body, m.Count, s2, s1)
	}
}

func liveDelivery(t *testing.T, open Opener) {
	b := open(t, 1<<20)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	ch, err := b.Consume(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	expectNone(t, ch)
	body := bytes.Repeat([]byte{0, 1, 2, 255}, 1000)
	seq, err := b.Publish(ctx, q, 7, body)
	if err != nil {
		t.Fatal(err)
	}
	d := receive(t, ch)
	if m := d.Message(); m.Seq != seq || !bytes.Equal(m.Body, body) || m.Count != 7 {
		t.Fatalf("live delivery = seq %d count %d len %d", m.Seq, m.Count, len(m.Body))
	}
	if _, err := b.Consume(ctx, q); err == nil {
		t.Fatal("a second consumer on the same queue was accepted")
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("delivery after cancel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after ctx cancel")
	}
}

func full(t *testing.T, open Opener) {
	b := open(t, 1<<20)
	chunk := make([]byte, 300<<10)
	for i := range 3 {
		if _, err := b.Publish(ctxT(t), q, 1, chunk); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	_, err := b.Publish(ctxT(t), q, 1, chunk)
	if !errors.Is(err, bus.ErrFull) {
		t.Fatalf("publish over the limit: err = %v, want ErrFull", err)
	}
	eventually(t, func() error {
		if st, _ := b.Stats(q); st.Depth != 3 {
			return fmt.Errorf("depth after refused publish = %d, want 3", st.Depth)
		}
		return nil
	})
	// acking makes room again
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	ch, _ := b.Consume(ctx, q)
	if err := receive(t, ch).Ack(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctxT(t), q, 1, chunk); err != nil {
		t.Fatalf("publish after ack: %v", err)
	}
}

func reconsume(t *testing.T, open Opener) {
	b := open(t, 1<<20)
	s1 := publish(t, b, 1, "a")
	publish(t, b, 1, "b")
	ctx, cancel := context.WithCancel(ctxT(t))
	ch, _ := b.Consume(ctx, q)
	receive(t, ch) // held, neither acked nor nacked: the consumer died
	receive(t, ch)
	cancel()
	for range ch {
	}
	ctx2, cancel2 := context.WithCancel(ctxT(t))
	defer cancel2()
	var ch2 <-chan bus.Delivery
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		// the old consumer's goroutine may take a moment to let go
		ch2, err = b.Consume(ctx2, q)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if d := receive(t, ch2); d.Message().Seq != s1 {
		t.Fatalf("new consumer starts at %d, want %d", d.Message().Seq, s1)
	}
}
