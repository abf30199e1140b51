package activemq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/internal/backoff"
)

// errRewind ends a consumer session after a Nack: the next session starts at
// the oldest unacked message, which is how the broker redelivers in order.
var errRewind = errors.New("rewind")

// Consume implements bus.Bus. It holds one exclusive subscription
// (activemq.exclusive, so a second edged on the same broker, the HA standby,
// receives nothing while this one consumes) with client-individual acks and
// at most Prefetch unacked messages, on its own connection; when the
// connection fails it reconnects with backoff and the broker redelivers what
// was not acked, in order.
//
// Deliveries made before a reconnect are stale: their Ack is not sent (the
// broker has already given the message back and delivers it again) and
// counted; Ack returns nil, as for the embedded bus the contract is
// at-least-once and the ingest de-duplicates.
func (b *Bus) Consume(ctx context.Context, queue string) (<-chan bus.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	if b.consumers[queue] {
		return nil, fmt.Errorf("activemq: queue %q already has a consumer", queue)
	}
	b.consumers[queue] = true
	out := make(chan bus.Delivery)
	c := &consumer{b: b, queue: queue, dest: b.dest(queue), out: out}
	b.wg.Add(1)
	go c.run(ctx)
	return out, nil
}

type consumer struct {
	b     *Bus
	queue string
	dest  string
	out   chan bus.Delivery

	mu     sync.Mutex
	gen    uint64 // session generation; deliveries of older ones are stale
	conn   *stomp.Conn
	rewind chan struct{} // closed by a Nack of the current session
}

func (c *consumer) run(parent context.Context) {
	b := c.b
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(b.ctx, cancel)
	defer func() {
		stop()
		cancel()
		b.mu.Lock()
		delete(b.consumers, c.queue)
		b.mu.Unlock()
		close(c.out)
		b.wg.Done()
	}()
	retry := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		err := c.session(ctx, &retry)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRewind) {
			continue
		}
		b.setLink(false, err)
		t := time.NewTimer(retry.Next())
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// session runs one connection and subscription until it fails, a Nack asks
// for a rewind, or ctx ends. Closing the connection gives every unacked
// message back to the queue, in order.
func (c *consumer) session(ctx context.Context, retry *backoff.Backoff) error {
	b := c.b
	conn, err := b.dial(ctx)
	if err != nil {
		return err
	}
	sub, err := conn.Subscribe(c.dest, stomp.AckClientIndividual,
		stomp.SubscribeOpt.Header("activemq.prefetchSize", strconv.Itoa(b.o.Prefetch)),
		stomp.SubscribeOpt.Header("activemq.exclusive", "true"))
	if err != nil {
		disconnect(conn)
		return fmt.Errorf("activemq: subscribe %s: %w", c.dest, err)
	}
	b.setLink(true, nil)
	rewind := make(chan struct{})
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.conn = conn
	c.rewind = rewind
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.gen == gen {
			c.gen++ // whatever this session handed out is stale now
			c.conn = nil
		}
		c.mu.Unlock()
	}()

	// go-stomp's I/O goroutine blocks (heart-beats included) while a
	// subscription's channel is full: keep reading it. The broker sends at
	// most Prefetch unacked messages, so this buffer never holds more.
	msgs := make(chan *stomp.Message, b.o.Prefetch+16)
	go func() {
		defer close(msgs)
		for m := range sub.C {
			select {
			case msgs <- m:
			default: // cannot happen while the broker honours the prefetch
				b.log.Error("broker sent more than the prefetch; dropping the session", "prefetch", b.o.Prefetch)
				go conn.MustDisconnect()
				for range sub.C {
				}
				return
			}
		}
	}()
	defer func() {
		// a graceful DISCONNECT: the acks queued before it reach the broker
		// first, then the broker gives back what is unacked
		disconnect(conn)
		for range msgs {
		}
	}()

	for {
		var m *stomp.Message
		var ok bool
		select {
		case m, ok = <-msgs:
		case <-rewind:
			return errRewind
		case <-ctx.Done():
			return nil
		}
		if !ok {
			return fmt.Errorf("activemq: subscription to %s closed", c.dest)
		}
		if m.Err != nil {
			return fmt.Errorf("activemq: %s: %w", c.dest, m.Err)
		}
		seq, count, published, valid := parseHeaders(m.Header.Get)
		if !valid {
			if c.queue != bus.DeadLetter {
				if err := c.foreign(conn, m); err != nil {
					return err
				}
				continue
			}
			count = 1 // the dead-letter queue also holds foreign messages
		}
		retry.Reset()
		d := &delivery{c: c, gen: gen, m: m, msg: bus.Message{Seq: seq, Count: count, Published: published, Body: m.Body}}
		select {
		case c.out <- d:
		case <-rewind:
			return errRewind
		case <-ctx.Done():
			return nil
		}
	}
}

// foreign moves a message that edged did not publish to the dead-letter
// queue (persistently, confirmed by a receipt) and then acks it.
func (c *consumer) foreign(conn *stomp.Conn, m *stomp.Message) error {
	b := c.b
	id := m.Header.Get("message-id")
	b.log.Error("foreign message on our queue (no edged headers): moved to the dead-letter queue",
		"queue", c.dest, "message_id", id, "content_type", m.ContentType, "bytes", len(m.Body))
	err := conn.Send(b.dest(bus.DeadLetter), m.ContentType, m.Body,
		stomp.SendOpt.Receipt,
		stomp.SendOpt.Header("persistent", "true"),
		stomp.SendOpt.Header("edged-foreign-from", c.dest),
		stomp.SendOpt.Header("edged-foreign-id", id))
	if err != nil {
		return fmt.Errorf("activemq: dead-letter a foreign message: %w", err)
	}
	if err := conn.Ack(m); err != nil {
		return fmt.Errorf("activemq: ack a foreign message: %w", err)
	}
	b.m.foreign.Inc()
	return nil
}

type delivery struct {
	c    *consumer
	gen  uint64
	m    *stomp.Message
	msg  bus.Message
	done atomic.Bool
}

func (d *delivery) Message() bus.Message { return d.msg }

// Ack implements bus.Delivery.
func (d *delivery) Ack() error {
	if !d.done.CompareAndSwap(false, true) {
		return errors.New("activemq: delivery already acked or nacked")
	}
	c := d.c
	c.mu.Lock()
	conn := c.conn
	stale := d.gen != c.gen || conn == nil
	c.mu.Unlock()
	if stale {
		c.b.m.staleAcks.Inc()
		return nil
	}
	if err := conn.Ack(d.m); err != nil {
		// the connection just failed: the broker gives the message back
		c.b.m.staleAcks.Inc()
		return nil
	}
	c.b.m.acked.Inc()
	c.b.mu.Lock()
	c.b.index(c.queue).remove(d.msg.Seq)
	c.b.mu.Unlock()
	return nil
}

// Nack implements bus.Delivery: the session ends and a new one starts at the
// oldest unacked message (STOMP NACK is not used: ActiveMQ treats it as a
// poison acknowledgement and moves the message to its DLQ).
func (d *delivery) Nack() error {
	if !d.done.CompareAndSwap(false, true) {
		return errors.New("activemq: delivery already acked or nacked")
	}
	c := d.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.gen == c.gen {
		c.gen++ // every delivery of this session is stale from now on
		close(c.rewind)
	}
	return nil
}
