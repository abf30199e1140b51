package embedded

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/edged/edged/bus"
)

// TestDropOldest: a full queue with DropOldest drops its oldest messages in
// the commit that stores the new one, counts their records, and what
// remains survives a reopen; without it, Publish refuses (ErrFull).
func TestDropOldest(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, Options{MaxBytes: 1000, DropOldest: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 300) }
	for i := range 10 {
		if _, err := b.Publish(ctx, bus.Telemetry, 5, body(i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	st, err := b.Stats(bus.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth != 3 || st.Bytes != 900 || st.Records != 15 || st.Dropped != 35 || st.NextSeq != 51 {
		t.Fatalf("stats %+v: want the 3 newest messages kept, 7 × 5 records dropped", st)
	}
	// The consumer sees the survivors, oldest first, and nothing of the dropped.
	cctx, cancel := context.WithCancel(ctx)
	ch, err := b.Consume(cctx, bus.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	for i := 7; i < 10; i++ {
		select {
		case d := <-ch:
			if m := d.Message(); m.Seq != uint64(1+5*i) || !bytes.Equal(m.Body, body(i)) {
				t.Fatalf("delivery seq %d, want %d", m.Seq, 1+5*i)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no delivery")
		}
	}
	cancel()
	for range ch {
	}
	// A message over the whole budget is refused, not made room for.
	if _, err := b.Publish(ctx, bus.Telemetry, 1, make([]byte, 1001)); err == nil {
		t.Fatal("a message over MaxBytes accepted")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The drops were committed: a reopened bus holds the same three.
	b, err = Open(dir, Options{MaxBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, _ = b.Stats(bus.Telemetry)
	if st.Depth != 3 || st.NextSeq != 51 {
		t.Fatalf("after reopen %+v", st)
	}
	// Without DropOldest a full queue refuses.
	if _, err := b.Publish(ctx, bus.Telemetry, 1, body(0)); err == nil {
		t.Fatal("publish into a full queue without DropOldest accepted")
	}
}
