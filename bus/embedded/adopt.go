package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edged/edged/bus"
)

// This file moves a backlog between stores when the gateway's bus kind is
// switched (embedded ↔ the ActiveMQ bus's outbox, which is an embedded bus
// too): messages keep their sequence numbers, so the ingest's
// de-duplication still recognises a message that had already reached it,
// and the sequence counter is carried over so numbers never repeat.

// AdoptResult counts what Adopt did with the messages it was given.
type AdoptResult struct {
	Adopted    int // stored under their own sequence numbers
	Duplicates int // already held under that number with the same content (a move repeated after a crash)
	Renumbered int // the number was taken by other content: stored under a new number at the end
}

// Adopt stores msgs in queue under their own sequence numbers and
// publication times, in one durable commit. It is for moving a backlog
// between stores and must not run while the queue has a consumer. A
// message whose number is already held with the same body is skipped; one
// whose number is held by a different body (a store that did not carry the
// counter, from before edged moved backlogs) gets a fresh number at the end
// of the queue rather than being lost. The queue's counter ends above every
// adopted number. MaxBytes applies: when the messages do not fit, nothing is
// stored and the error wraps bus.ErrFull.
func (b *Bus) Adopt(queueName string, msgs []bus.Message) (AdoptResult, error) {
	var res AdoptResult
	b.mu.Lock()
	defer b.mu.Unlock()
	q, err := b.queue(queueName)
	if err != nil {
		return res, err
	}
	if q.consumers > 0 {
		return res, fmt.Errorf("bus: adopt into %s: the queue has a consumer", queueName)
	}
	var size int64
	for _, m := range msgs {
		if m.Count == 0 || m.Seq == 0 {
			return res, fmt.Errorf("bus: adopt into %s: message %d spans %d sequence numbers", queueName, m.Seq, m.Count)
		}
		size += int64(len(m.Body))
	}
	if q.bytes+size > b.opts.MaxBytes {
		return res, fmt.Errorf("%w: adopting %d bytes into %s, which holds %d, limit %d", bus.ErrFull, size, queueName, q.bytes, b.opts.MaxBytes)
	}
	next := q.nextSeq
	var added []entry
	err = b.db.Update(func(tx *bolt.Tx) error {
		res = AdoptResult{}
		added = added[:0]
		next = q.nextSeq
		bk := tx.Bucket(q.bucket)
		var key [8]byte
		for _, m := range msgs {
			seq := m.Seq
			binary.BigEndian.PutUint64(key[:], seq)
			if v := bk.Get(key[:]); v != nil {
				if len(v) >= headerLen && binary.BigEndian.Uint32(v[8:]) == m.Count && bytes.Equal(v[headerLen:], m.Body) {
					res.Duplicates++
					continue
				}
				seq = next
				binary.BigEndian.PutUint64(key[:], seq)
				res.Renumbered++
			} else {
				res.Adopted++
			}
			published := m.Published
			if published.IsZero() {
				published = time.Now()
			}
			val := make([]byte, headerLen+len(m.Body))
			binary.BigEndian.PutUint64(val, uint64(published.UnixNano()))
			binary.BigEndian.PutUint32(val[8:], m.Count)
			copy(val[headerLen:], m.Body)
			if err := bk.Put(key[:], val); err != nil {
				return err
			}
			next = max(next, seq+uint64(m.Count))
			added = append(added, entry{seq: seq, count: m.Count, size: int64(len(m.Body)), published: time.Unix(0, published.UnixNano())})
		}
		var nk [8]byte
		binary.BigEndian.PutUint64(nk[:], next)
		return tx.Bucket(metaBucket).Put(q.nextKey, nk[:])
	})
	if err != nil {
		return AdoptResult{}, fmt.Errorf("bus: adopt into %s: %w", queueName, err)
	}
	q.nextSeq = next
	for _, e := range added {
		i := sort.Search(len(q.entries), func(i int) bool { return q.entries[i].seq >= e.seq })
		q.entries = append(q.entries, entry{})
		copy(q.entries[i+1:], q.entries[i:])
		q.entries[i] = e
		q.bytes += e.size
		q.records += uint64(e.count)
	}
	q.cursor = q.firstUnacked()
	close(q.wake)
	q.wake = make(chan struct{})
	return res, nil
}

// Reserve raises queue's next sequence number to at least next (durably),
// so a store taking over from another never hands out a number the other
// already used.
func (b *Bus) Reserve(queueName string, next uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, err := b.queue(queueName)
	if err != nil {
		return err
	}
	if next <= q.nextSeq {
		return nil
	}
	var nk [8]byte
	binary.BigEndian.PutUint64(nk[:], next)
	if err := b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(q.nextKey, nk[:]) }); err != nil {
		return fmt.Errorf("bus: reserve %s: %w", queueName, err)
	}
	q.nextSeq = next
	if q.consumers == 0 && len(q.entries) == 0 {
		q.cursor = next
	}
	return nil
}

// Queues lists the queues the store holds (with or without messages).
func (b *Bus) Queues() ([]string, error) {
	var names []string
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if n, ok := strings.CutPrefix(string(name), "q:"); ok {
				names = append(names, n)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bus: list queues: %w", err)
	}
	return names, nil
}

// MoveResult reports a Move.
type MoveResult struct {
	AdoptResult
	NextSeq uint64 // the counter carried over
}

// Move moves every unacked message of queue from one store to another, in
// batches of at most 256 messages or 16 MiB, each adopted durably by to
// before from lets go of it, and carries the sequence counter over. A crash
// in the middle leaves each message in one store or both (a repeated Move
// skips the copies); none is lost. Neither queue may have a consumer.
func Move(ctx context.Context, from, to *Bus, queue string) (MoveResult, error) {
	var res MoveResult
	st, err := from.Stats(queue)
	if err != nil {
		return res, err
	}
	res.NextSeq = st.NextSeq
	if err := to.Reserve(queue, st.NextSeq); err != nil {
		return res, err
	}
	if st.Depth == 0 {
		return res, nil
	}
	cctx, cancel := context.WithCancel(ctx)
	ch, err := from.Consume(cctx, queue)
	if err != nil {
		cancel()
		return res, err
	}
	defer func() {
		cancel()
		for range ch {
		}
	}()
	const maxMsgs, maxBytes = 256, 16 << 20
	for left := st.Depth; left > 0; {
		var batch []bus.Delivery
		var msgs []bus.Message
		size := 0
		for len(batch) < min(left, maxMsgs) && size < maxBytes {
			select {
			case d, ok := <-ch:
				if !ok {
					return res, errors.Join(fmt.Errorf("bus: move %s: the source closed with %d messages left", queue, left), ctx.Err())
				}
				batch = append(batch, d)
				msgs = append(msgs, d.Message())
				size += len(d.Message().Body)
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
		r, err := to.Adopt(queue, msgs)
		if err != nil {
			return res, err
		}
		res.Adopted += r.Adopted
		res.Duplicates += r.Duplicates
		res.Renumbered += r.Renumbered
		for _, d := range batch {
			if err := d.Ack(); err != nil {
				return res, fmt.Errorf("bus: move %s: %w", queue, err)
			}
		}
		left -= len(batch)
	}
	if st, err := to.Stats(queue); err == nil {
		res.NextSeq = st.NextSeq
	}
	return res, nil
}
