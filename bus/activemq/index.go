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
	entries map[uint64]indexEntry
	records uint64 // of the settled entries
	bytes   int64  // of the settled entries
	// acked by the consumer while still pending: the outbox still counts
	// them until their batch is confirmed; Stats subtracts these
	ackedPending        int
	ackedPendingRecords uint64
	ackedPendingBytes   int64
	recovering          bool                // the start-up browse has not finished
	tomb                map[uint64]struct{} // acked while recovering
}

type indexEntry struct {
	count     uint32
	size      int64
	published time.Time
	// pending: being forwarded, still counted by the outbox (Stats must not
	// count it twice); settle clears it
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
	if _, ok := ix.entries[seq]; ok {
		return
	}
	ix.entries[seq] = indexEntry{count: count, size: size, published: published, pending: pending}
	if !pending {
		ix.records += uint64(count)
		ix.bytes += size
	}
}

// settle: the outbox no longer holds the message.
func (ix *index) settle(seq uint64) {
	e, ok := ix.entries[seq]
	if !ok || !e.pending {
		return
	}
	if e.acked {
		ix.forget(seq)
		return
	}
	e.pending = false
	ix.entries[seq] = e
	ix.records += uint64(e.count)
	ix.bytes += e.size
}

// depth is the number of settled entries.
func (ix *index) depth() int {
	n := 0
	for _, e := range ix.entries {
		if !e.pending {
			n++
		}
	}
	return n
}

// remove drops an acked message.
func (ix *index) remove(seq uint64) {
	if ix.recovering {
		ix.tomb[seq] = struct{}{}
	}
	if e, ok := ix.entries[seq]; ok && e.pending {
		if !e.acked { // the consumer beat the forwarder's receipt
			e.acked = true
			ix.entries[seq] = e
			ix.ackedPending++
			ix.ackedPendingRecords += uint64(e.count)
			ix.ackedPendingBytes += e.size
		}
		return
	}
	ix.forget(seq)
}

// forget drops a message that is not (or no longer) on the broker.
func (ix *index) forget(seq uint64) {
	e, ok := ix.entries[seq]
	if !ok {
		return
	}
	delete(ix.entries, seq)
	if e.acked {
		ix.ackedPending--
		ix.ackedPendingRecords -= uint64(e.count)
		ix.ackedPendingBytes -= e.size
	}
	if !e.pending {
		ix.records -= uint64(e.count)
		ix.bytes -= e.size
	}
}

func (ix *index) oldest() time.Time {
	var o time.Time
	for _, e := range ix.entries {
		if !e.pending && (o.IsZero() || e.published.Before(o)) {
			o = e.published
		}
	}
	return o
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
			b.log.Debug("browse message", "headers", m.Header)
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
