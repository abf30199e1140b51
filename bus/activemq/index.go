package activemq

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/go-stomp/stomp/v3"

	"github.com/edged/edged/internal/backoff"
)

// index is what the bus knows of a queue's broker backlog, for Stats and for
// the MaxBytes bound: the messages it forwarded and those it found on the
// broker at start, less those acked. Callers hold Bus.mu.
type index struct {
	entries    map[uint64]indexEntry
	recovering bool                // the start-up browse has not finished
	tomb       map[uint64]struct{} // acked while recovering
}

type indexEntry struct {
	count     uint32
	size      int64
	published time.Time
	// pending: being forwarded, still counted by the outbox; settle clears it
	pending bool
	acked   bool // pending and already acked by the consumer
}

// index returns the queue's index; on first use it starts the browse that
// learns what an earlier run left on the broker. Callers hold b.mu.
func (b *Bus) index(queue string) *index {
	ix := b.idx[queue]
	if ix == nil {
		ix = &index{entries: map[uint64]indexEntry{}, tomb: map[uint64]struct{}{}}
		b.idx[queue] = ix
		if !b.closed {
			ix.recovering = true
			b.wg.Add(1)
			go b.recover(queue)
		}
	}
	return ix
}

// add records a message on the broker (pending: not yet acked in the outbox).
func (ix *index) add(seq uint64, count uint32, size int64, published time.Time, pending bool) {
	if _, ok := ix.entries[seq]; !ok {
		ix.entries[seq] = indexEntry{count: count, size: size, published: published, pending: pending}
	}
}

// settle: the outbox no longer holds the message.
func (ix *index) settle(seq uint64) {
	e, ok := ix.entries[seq]
	switch {
	case !ok || !e.pending:
	case e.acked:
		delete(ix.entries, seq)
	default:
		e.pending = false
		ix.entries[seq] = e
	}
}

// remove drops an acked message. One still pending stays, marked, until its
// batch settles: the outbox counts it until then.
func (ix *index) remove(seq uint64) {
	if ix.recovering {
		ix.tomb[seq] = struct{}{}
	}
	if e, ok := ix.entries[seq]; ok && e.pending {
		e.acked = true // the consumer beat the forwarder's receipt
		ix.entries[seq] = e
		return
	}
	delete(ix.entries, seq)
}

// forget drops a message that is not (or no longer) on the broker.
func (ix *index) forget(seq uint64) { delete(ix.entries, seq) }

// backlog is the index's contribution to Stats, added to the outbox's own
// figures: settled messages count; a pending one is the outbox's, unless the
// consumer already acked it, then it is taken off the outbox's count (so the
// figures may be negative on their own; records wraps, and the sum with the
// outbox's figures is exact).
func (ix *index) backlog() (depth int, records uint64, bytes int64, oldest time.Time) {
	for _, e := range ix.entries {
		switch {
		case !e.pending:
			depth++
			records += uint64(e.count)
			bytes += e.size
			if oldest.IsZero() || e.published.Before(oldest) {
				oldest = e.published
			}
		case e.acked:
			depth--
			records -= uint64(e.count)
			bytes -= e.size
		}
	}
	return depth, records, bytes, oldest
}

// recover browses the broker queue once (a STOMP browser subscription sees
// the messages without consuming them) to learn the backlog an earlier run
// left there. ActiveMQ ends a browse after maxBrowsePageSize messages (400
// by default): a larger backlog left by an earlier run is undercounted in
// Stats (the messages themselves are all delivered). It retries until the broker answers or the bus closes.
func (b *Bus) recover(queue string) {
	defer b.wg.Done()
	retry := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for b.ctx.Err() == nil {
		found, err := b.browse(b.ctx, queue)
		if err == nil {
			b.mu.Lock()
			ix := b.index(queue)
			for seq, e := range found {
				if _, acked := ix.tomb[seq]; !acked {
					ix.add(seq, e.count, e.size, e.published, false)
				}
			}
			ix.recovering = false
			ix.tomb = map[uint64]struct{}{}
			b.mu.Unlock()
			b.log.Debug("browse done", "queue", b.dest(queue), "found", len(found))
			if len(found) > 0 {
				b.log.Info("broker backlog found at start", "queue", b.dest(queue), "messages", len(found))
			}
			return
		}
		t := time.NewTimer(retry.Next())
		select {
		case <-t.C:
		case <-b.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (b *Bus) browse(ctx context.Context, queue string) (map[uint64]indexEntry, error) {
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer disconnect(conn)
	sub, err := conn.Subscribe(b.dest(queue), stomp.AckAuto,
		stomp.SubscribeOpt.Header("browser", "true"),
		stomp.SubscribeOpt.Header("activemq.prefetchSize", "256"))
	if err != nil {
		return nil, err
	}
	found := map[uint64]indexEntry{}
	for {
		select {
		case m, ok := <-sub.C:
			if !ok {
				return nil, fmt.Errorf("activemq: browse %s: subscription closed", b.dest(queue))
			}
			if m.Err != nil {
				return nil, fmt.Errorf("activemq: browse %s: %w", b.dest(queue), m.Err)
			}
			if m.Header.Get("browser") == "end" {
				return found, nil
			}
			if seq, count, pub, ok := parseHeaders(m.Header.Get); ok {
				size, err := strconv.ParseInt(m.Header.Get("content-length"), 10, 64)
				if err != nil {
					size = int64(len(m.Body))
				}
				found[seq] = indexEntry{count: count, size: size, published: pub}
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
