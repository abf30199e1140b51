package activemq

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/go-stomp/stomp/v3"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/internal/backoff"
)

// startForwarder starts the goroutine that moves queue's outbox messages to
// the broker, once per queue.
func (b *Bus) startForwarder(queue string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.forwarders[queue] {
		return
	}
	b.forwarders[queue] = true
	b.wg.Add(1)
	go b.forward(queue)
}

// producer returns the shared sending connection, dialling it if needed.
func (b *Bus) producer(ctx context.Context) (*stomp.Conn, error) {
	b.mu.Lock()
	c := b.sendConn
	b.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sendConn != nil { // another forwarder was quicker
		go disconnect(c)
		return b.sendConn, nil
	}
	if b.closed {
		go disconnect(c)
		return nil, bus.ErrClosed
	}
	b.sendConn = c
	return c, nil
}

// dropProducer discards a connection that failed, so the next use redials.
func (b *Bus) dropProducer(c *stomp.Conn) {
	b.mu.Lock()
	if b.sendConn == c {
		b.sendConn = nil
	}
	b.mu.Unlock()
	go c.MustDisconnect()
}

// forward runs until the bus closes: outbox → broker, in order, in
// transactions; on any failure the outbox gives the unacked messages back
// and they are sent again after a reconnect (same sequence numbers).
func (b *Bus) forward(queue string) {
	defer b.wg.Done()
	retry := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for b.ctx.Err() == nil {
		conn, err := b.producer(b.ctx)
		if err == nil {
			b.setLink(true, nil)
			err = b.pump(queue, conn, &retry)
			if err != nil && b.ctx.Err() == nil {
				b.dropProducer(conn)
			}
		}
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			b.setLink(false, err)
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

// pump forwards until an error; it returns nil only when the bus closes.
func (b *Bus) pump(queue string, conn *stomp.Conn, retry *backoff.Backoff) error {
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	var ch <-chan bus.Delivery
	var err error
	for i := 0; ; i++ { // the previous pump's consumer may take a moment to let go
		if ch, err = b.outbox.Consume(ctx, queue); err == nil || i == 100 || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("activemq: outbox: %w", err)
	}
	defer func() {
		cancel()
		for range ch { // what was handed over is given back by the outbox
		}
	}()
	dest := b.dest(queue)
	batch := make([]bus.Delivery, 0, b.o.TxMessages)
	for {
		batch = batch[:0]
		select {
		case d, ok := <-ch:
			if !ok {
				return nil
			}
			batch = append(batch, d)
		case <-ctx.Done():
			return nil
		}
		size := len(batch[0].Message().Body)
	more:
		for len(batch) < b.o.TxMessages && size < b.o.TxBytes {
			select {
			case d, ok := <-ch:
				if !ok {
					break more
				}
				batch = append(batch, d)
				size += len(d.Message().Body)
			default:
				break more
			}
		}
		// index before sending (the consumer may ack a message before the
		// commit's receipt is back), ack the outbox after: Stats may count
		// a message twice for a moment, never zero times
		b.mu.Lock()
		ix := b.index(queue)
		for _, d := range batch {
			m := d.Message()
			ix.add(m.Seq, m.Count, int64(len(m.Body)), m.Published, true)
		}
		b.mu.Unlock()
		if err := b.send(conn, dest, batch); err != nil {
			b.mu.Lock()
			for _, d := range batch { // the outbox has them again
				ix.forget(d.Message().Seq)
			}
			b.mu.Unlock()
			return err
		}
		retry.Reset()
		for _, d := range batch {
			if err := d.Ack(); err != nil {
				return fmt.Errorf("activemq: outbox ack: %w", err)
			}
		}
		b.mu.Lock()
		for _, d := range batch {
			ix.settle(d.Message().Seq)
		}
		b.mu.Unlock()
		b.m.txns.Inc()
		b.m.forwarded.Add(float64(len(batch)))
		b.m.forwardedBytes.Add(float64(size))
		b.mirror(conn, queue, batch)
	}
}

// send stores batch on the broker in one transaction, committed with a
// receipt: when it returns nil every message is persistent on the broker.
func (b *Bus) send(conn *stomp.Conn, dest string, batch []bus.Delivery) error {
	tx, err := conn.BeginWithError()
	if err != nil {
		return fmt.Errorf("activemq: begin: %w", err)
	}
	for _, d := range batch {
		m := d.Message()
		err := tx.Send(dest, "application/vnd.edged.batch", m.Body,
			stomp.SendOpt.Header("persistent", "true"),
			stomp.SendOpt.Header(hSeq, strconv.FormatUint(m.Seq, 10)),
			stomp.SendOpt.Header(hCount, strconv.FormatUint(uint64(m.Count), 10)),
			stomp.SendOpt.Header(hPublished, strconv.FormatInt(m.Published.UnixMilli(), 10)),
		)
		if err != nil {
			tx.Abort()
			return fmt.Errorf("activemq: send to %s: %w", dest, err)
		}
	}
	if err := tx.CommitWithReceipt(); err != nil {
		// an ERROR frame (e.g. the broker's store is full) carries the
		// broker's message, which go-stomp's error repeats
		return fmt.Errorf("activemq: commit to %s: %w", dest, err)
	}
	return nil
}

// mirror copies a committed batch to the queue's local topic, if any. Best
// effort: the queue is the system of record.
func (b *Bus) mirror(conn *stomp.Conn, queue string, batch []bus.Delivery) {
	topic, ok := b.o.Mirror[queue]
	if !ok || b.o.Render == nil {
		return
	}
	for _, d := range batch {
		ct, out, err := b.o.Render(queue, d.Message().Body)
		if err == nil {
			err = conn.Send("/topic/"+b.o.Prefix+topic, ct, out, stomp.SendOpt.Header("persistent", "false"))
		}
		if err != nil {
			b.m.mirrorErrors.Inc()
		}
	}
}
