// Package embedded is the default message engine: a durable on-disk log per
// queue in one bbolt file in the gateway's data dir.
//
// Durability: Publish returns after an fsync'd commit that stores the message
// and advances the queue's sequence counter in the same transaction, so a
// kill -9 at any point loses no published message and reuses no sequence
// number. Acks are applied in memory at once and deleted from disk in
// batches; a crash between the two redelivers those messages (at-least-once:
// the ingest de-duplicates them).
//
// Back-pressure: the queue is bounded by MaxBytes. When it is full, or the
// disk is, Publish returns bus.ErrFull and stores nothing; the oldest data is
// kept and the caller decides (edged holds the batch and retries, so polls
// stall and are counted, rather than data being overwritten). With
// DropOldest, a full queue instead drops its oldest messages, in the same
// commit that stores the new one, until the new one fits: history goes
// first, counted (Stats.Dropped) and logged, and polling never stalls.
package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edged/edged/bus"
)

// Options tune the bus.
type Options struct {
	MaxBytes int64 // queue size limit per queue (bodies); default 1 GiB
	// DropOldest: when a queue is full, drop its oldest messages to make
	// room instead of refusing the new one (see the package comment).
	DropOldest bool
	AckFlush   time.Duration // how often acked messages are deleted from disk; default 50ms
	Logger     *slog.Logger
}

// Bus is the embedded durable bus.
type Bus struct {
	db   *bolt.DB
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	queues map[string]*queue
	closed bool

	acks      chan ackReq
	ackerDone chan struct{}
	stop      chan struct{}
}

var _ bus.Bus = (*Bus)(nil)

var metaBucket = []byte("meta")

const headerLen = 12 // 8 bytes publish time (unix ns) + 4 bytes count

type entry struct {
	seq       uint64
	count     uint32
	size      int64
	published time.Time
	acked     bool
}

type queue struct {
	name      string
	bucket    []byte
	nextKey   []byte
	nextSeq   uint64
	entries   []entry // unacked (and acked-but-not-yet-popped) messages, by seq
	acked     int     // entries marked acked
	bytes     int64
	records   uint64
	cursor    uint64        // next seq to deliver to the consumer
	wake      chan struct{} // closed on publish or rewind
	rewind    chan struct{} // closed on Nack
	consumers int
	dropped   uint64 // records dropped to make room (DropOldest), since Open
	dropping  bool   // the last Publish dropped: log once per episode
}

type ackReq struct {
	q   *queue
	seq uint64
}

// Open opens (or creates) the bus in dir. Only one process may hold it: a
// second edged on the same data dir fails here with a clear error.
func Open(dir string, opts Options) (*Bus, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.AckFlush <= 0 {
		opts.AckFlush = 50 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("bus: data dir: %w", err)
	}
	path := filepath.Join(dir, "bus.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("bus: %s is locked: is another edged running on this data dir?", path)
		}
		return nil, fmt.Errorf("bus: open %s: %w", path, err)
	}
	b := &Bus{
		db:        db,
		opts:      opts,
		log:       opts.Logger,
		queues:    map[string]*queue{},
		acks:      make(chan ackReq, 4096),
		ackerDone: make(chan struct{}),
		stop:      make(chan struct{}),
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(metaBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("bus: init %s: %w", path, err)
	}
	go b.acker()
	return b, nil
}

// queue returns the named queue, loading its index from disk on first use.
// Callers hold b.mu.
func (b *Bus) queue(name string) (*queue, error) {
	if b.closed {
		return nil, bus.ErrClosed
	}
	if q, ok := b.queues[name]; ok {
		return q, nil
	}
	q := &queue{
		name:    name,
		bucket:  []byte("q:" + name),
		nextKey: []byte("next:" + name),
		wake:    make(chan struct{}),
		rewind:  make(chan struct{}),
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(q.bucket)
		if err != nil {
			return err
		}
		if v := tx.Bucket(metaBucket).Get(q.nextKey); len(v) == 8 {
			q.nextSeq = binary.BigEndian.Uint64(v)
		}
		if q.nextSeq == 0 {
			q.nextSeq = 1
		}
		return bk.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) < headerLen {
				return fmt.Errorf("corrupt entry %x in queue %s", k, name)
			}
			e := entry{
				seq:       binary.BigEndian.Uint64(k),
				published: time.Unix(0, int64(binary.BigEndian.Uint64(v))),
				count:     binary.BigEndian.Uint32(v[8:]),
				size:      int64(len(v) - headerLen),
			}
			q.entries = append(q.entries, e)
			q.bytes += e.size
			q.records += uint64(e.count)
			if end := e.seq + uint64(e.count); end > q.nextSeq {
				q.nextSeq = end // never reuse a stored sequence number
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bus: load queue %s: %w", name, err)
	}
	if len(q.entries) > 0 {
		q.cursor = q.entries[0].seq
	} else {
		q.cursor = q.nextSeq
	}
	b.queues[name] = q
	return q, nil
}

// Publish implements bus.Bus.
func (b *Bus) Publish(ctx context.Context, queueName string, count uint32, body []byte) (uint64, error) {
	if count == 0 {
		return 0, errors.New("bus: publish: count must be at least 1")
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	q, err := b.queue(queueName)
	if err != nil {
		return 0, err
	}
	var drop []entry // the oldest unacked messages that make room (DropOldest)
	if over := q.bytes + int64(len(body)) - b.opts.MaxBytes; over > 0 {
		if !b.opts.DropOldest || int64(len(body)) > b.opts.MaxBytes {
			return 0, fmt.Errorf("%w: %s holds %d bytes, limit %d", bus.ErrFull, queueName, q.bytes, b.opts.MaxBytes)
		}
		for _, e := range q.entries {
			if over <= 0 {
				break
			}
			if !e.acked {
				drop = append(drop, e)
				over -= e.size
			}
		}
	} else if q.dropping {
		q.dropping = false
		b.log.Info("bus: queue has room again: no more dropping", "queue", queueName, "dropped_records", q.dropped)
	}
	seq := q.nextSeq
	now := time.Now()
	val := make([]byte, headerLen+len(body))
	binary.BigEndian.PutUint64(val, uint64(now.UnixNano()))
	binary.BigEndian.PutUint32(val[8:], count)
	copy(val[headerLen:], body)
	var key, next [8]byte
	binary.BigEndian.PutUint64(key[:], seq)
	binary.BigEndian.PutUint64(next[:], seq+uint64(count))
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(q.bucket)
		for _, e := range drop {
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], e.seq)
			if err := bk.Delete(k[:]); err != nil {
				return err
			}
		}
		if err := bk.Put(key[:], val); err != nil {
			return err
		}
		return tx.Bucket(metaBucket).Put(q.nextKey, next[:])
	})
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return 0, fmt.Errorf("%w: disk full: %v", bus.ErrFull, err)
		}
		return 0, fmt.Errorf("bus: publish to %s: %w", queueName, err)
	}
	if len(drop) > 0 {
		b.dropLocked(q, drop)
	}
	q.nextSeq = seq + uint64(count)
	q.entries = append(q.entries, entry{seq: seq, count: count, size: int64(len(body)), published: now})
	q.bytes += int64(len(body))
	q.records += uint64(count)
	close(q.wake)
	q.wake = make(chan struct{})
	return seq, nil
}

// dropLocked removes dropped messages from the index (they are already
// deleted on disk) and counts them. A delivery of one still in flight
// acks nothing. Callers hold b.mu.
func (b *Bus) dropLocked(q *queue, drop []entry) {
	gone := make(map[uint64]bool, len(drop))
	var records uint64
	for _, e := range drop {
		gone[e.seq] = true
		records += uint64(e.count)
		q.bytes -= e.size
	}
	kept := q.entries[:0]
	for _, e := range q.entries {
		if !gone[e.seq] {
			kept = append(kept, e)
		}
	}
	q.entries = kept
	q.records -= records
	q.dropped += records
	if !q.dropping {
		q.dropping = true
		b.log.Warn("bus: queue full: dropping the oldest messages to keep polling (counted in Stats.Dropped)",
			"queue", q.name, "first_seq", drop[0].seq, "records", records, "max_bytes", b.opts.MaxBytes)
	}
}

// Consume implements bus.Bus. Delivery starts at the oldest unacked message.
func (b *Bus) Consume(ctx context.Context, queueName string) (<-chan bus.Delivery, error) {
	b.mu.Lock()
	q, err := b.queue(queueName)
	if err == nil && q.consumers > 0 {
		err = fmt.Errorf("bus: queue %s already has a consumer", queueName)
	}
	if err != nil {
		b.mu.Unlock()
		return nil, err
	}
	q.consumers++
	q.cursor = q.firstUnacked()
	b.mu.Unlock()

	ch := make(chan bus.Delivery)
	go b.deliver(ctx, q, ch)
	return ch, nil
}

// firstUnacked returns the seq of the oldest unacked message, or nextSeq.
func (q *queue) firstUnacked() uint64 {
	for _, e := range q.entries {
		if !e.acked {
			return e.seq
		}
	}
	return q.nextSeq
}

// next finds the first unacked entry at or after the cursor. Callers hold b.mu.
func (q *queue) next() (entry, bool) {
	i := sort.Search(len(q.entries), func(i int) bool { return q.entries[i].seq >= q.cursor })
	for ; i < len(q.entries); i++ {
		if !q.entries[i].acked {
			return q.entries[i], true
		}
	}
	return entry{}, false
}

func (b *Bus) deliver(ctx context.Context, q *queue, ch chan<- bus.Delivery) {
	defer close(ch)
	defer func() {
		b.mu.Lock()
		q.consumers--
		b.mu.Unlock()
	}()
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return
		}
		e, ok := q.next()
		wake, rewind := q.wake, q.rewind
		b.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-b.stop:
				return
			case <-wake:
			case <-rewind:
			}
			continue
		}
		body, err := b.read(q, e.seq)
		if err != nil {
			b.log.Error("bus: cannot read message; it stays queued", "queue", q.name, "seq", e.seq, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-b.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if body == nil { // acked and deleted meanwhile
			b.mu.Lock()
			if q.cursor == e.seq {
				q.cursor = e.seq + uint64(e.count)
			}
			b.mu.Unlock()
			continue
		}
		d := &delivery{b: b, q: q, msg: bus.Message{Seq: e.seq, Count: e.count, Published: e.published, Body: body}}
		select {
		case <-rewind: // a Nack came while reading: start over from the cursor
			continue
		default:
		}
		select {
		case ch <- d:
			b.mu.Lock()
			// a Nack during the hand-over moved the cursor back: keep it there
			if q.rewind == rewind {
				q.cursor = e.seq + uint64(e.count)
			}
			b.mu.Unlock()
		case <-rewind:
		case <-ctx.Done():
			return
		case <-b.stop:
			return
		}
	}
}

func (b *Bus) read(q *queue, seq uint64) ([]byte, error) {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], seq)
	var body []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(q.bucket).Get(key[:])
		if v == nil {
			return nil
		}
		if len(v) < headerLen {
			return fmt.Errorf("corrupt message %d", seq)
		}
		body = append([]byte(nil), v[headerLen:]...)
		return nil
	})
	return body, err
}

type delivery struct {
	b    *Bus
	q    *queue
	msg  bus.Message
	done bool
}

func (d *delivery) Message() bus.Message { return d.msg }

func (d *delivery) Ack() error {
	b, q := d.b, d.q
	b.mu.Lock()
	if d.done {
		b.mu.Unlock()
		return errors.New("bus: delivery acked or nacked twice")
	}
	d.done = true
	if b.closed {
		b.mu.Unlock()
		return bus.ErrClosed
	}
	i := sort.Search(len(q.entries), func(i int) bool { return q.entries[i].seq >= d.msg.Seq })
	if i < len(q.entries) && q.entries[i].seq == d.msg.Seq && !q.entries[i].acked {
		q.entries[i].acked = true
		q.acked++
		q.bytes -= q.entries[i].size
		q.records -= uint64(q.entries[i].count)
		// pop the acked prefix
		n := 0
		for n < len(q.entries) && q.entries[n].acked {
			n++
		}
		if n > 0 {
			q.entries = append(q.entries[:0], q.entries[n:]...)
			q.acked -= n
		}
	}
	b.mu.Unlock()
	select {
	case b.acks <- ackReq{q: q, seq: d.msg.Seq}:
		return nil
	case <-b.stop:
		return bus.ErrClosed
	}
}

func (d *delivery) Nack() error {
	b, q := d.b, d.q
	b.mu.Lock()
	defer b.mu.Unlock()
	if d.done {
		return errors.New("bus: delivery acked or nacked twice")
	}
	d.done = true
	if d.msg.Seq < q.cursor {
		q.cursor = d.msg.Seq
	}
	close(q.rewind)
	q.rewind = make(chan struct{})
	return nil
}

// acker deletes acked messages from disk in batches.
func (b *Bus) acker() {
	defer close(b.ackerDone)
	t := time.NewTicker(b.opts.AckFlush)
	defer t.Stop()
	var pending []ackReq
	flush := func() {
		if len(pending) == 0 {
			return
		}
		err := b.db.Update(func(tx *bolt.Tx) error {
			var key [8]byte
			for _, a := range pending {
				binary.BigEndian.PutUint64(key[:], a.seq)
				if err := tx.Bucket(a.q.bucket).Delete(key[:]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			// the messages stay on disk and are redelivered after a restart
			b.log.Error("bus: deleting acked messages failed", "n", len(pending), "err", err)
		}
		pending = pending[:0]
	}
	for {
		select {
		case a := <-b.acks:
			pending = append(pending, a)
			if len(pending) >= 1024 {
				flush()
			}
		case <-t.C:
			flush()
		case <-b.stop:
			for {
				select {
				case a := <-b.acks:
					pending = append(pending, a)
				default:
					flush()
					return
				}
			}
		}
	}
}

// Stats implements bus.Bus.
func (b *Bus) Stats(queueName string) (bus.Stats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, err := b.queue(queueName)
	if err != nil {
		return bus.Stats{}, err
	}
	s := bus.Stats{
		Depth:    len(q.entries) - q.acked,
		Records:  q.records,
		Bytes:    q.bytes,
		NextSeq:  q.nextSeq,
		MaxBytes: b.opts.MaxBytes,
		Dropped:  q.dropped,
	}
	for _, e := range q.entries {
		if !e.acked {
			s.Oldest = e.published
			break
		}
	}
	return s, nil
}

// Close implements bus.Bus: pending ack deletions are flushed, consumers
// stop, unacked messages stay stored.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.stop)
	b.mu.Unlock()
	<-b.ackerDone
	return b.db.Close()
}
