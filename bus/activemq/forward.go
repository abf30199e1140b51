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
//
// Transactions are pipelined: up to txWindow are on the wire at once. Each
// is SENDs + COMMIT, followed by a receipt-bearing marker (ABORT of an empty
// transaction). The broker handles a connection's frames in order, so the
// marker's receipt means the COMMIT before it succeeded; a failed COMMIT is
// an ERROR frame, which closes the connection and fails every receipt still
// awaited. Only confirmed batches are acked in the outbox; after a failure
// the outbox gives back everything unconfirmed, in order, for the next
// connection (a batch committed just before the failure is sent again with
// the same sequence numbers; the ingest de-duplicates).
func (b *Bus) pump(queue string, conn *stomp.Conn, retry *backoff.Backoff) error {
	ctx, cancel := context.WithCancelCause(b.ctx)
	defer cancel(nil)
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
	window := make(chan *inflight, txWindow)
	confirmerDone := make(chan struct{})
	go func() {
		defer close(confirmerDone)
		b.confirm(ctx, cancel, queue, conn, window, retry)
	}()
	defer func() {
		cancel(nil)
		close(window)
		<-confirmerDone
		for range ch { // what was handed over is given back by the outbox
		}
	}()
	dest := b.dest(queue)
	for {
		var batch []bus.Delivery
		select {
		case d, ok := <-ch:
			if !ok {
				return context.Cause(ctx)
			}
			batch = append(make([]bus.Delivery, 0, b.o.TxMessages), d)
		case <-ctx.Done():
			return context.Cause(ctx)
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
		// index before sending: the consumer may ack a message before its
		// receipt is back
		b.mu.Lock()
		ix := b.index(queue)
		for _, d := range batch {
			m := d.Message()
			ix.add(m.Seq, m.Count, int64(len(m.Body)), m.Published, true)
		}
		b.mu.Unlock()
		f := &inflight{batch: batch, size: size, done: make(chan error, 1)}
		if err := b.send(conn, dest, batch); err != nil {
			b.forgetPending(queue, batch)
			return err
		}
		marker, err := conn.BeginWithError()
		if err != nil {
			b.forgetPending(queue, batch)
			return fmt.Errorf("activemq: begin: %w", err)
		}
		go func() { f.done <- marker.AbortWithReceipt() }()
		select {
		case window <- f:
		case <-ctx.Done():
			b.forgetPending(queue, batch)
			return context.Cause(ctx)
		}
	}
}

// txWindow is how many forwarding transactions may await their receipt.
const txWindow = 4

type inflight struct {
	batch []bus.Delivery
	size  int
	done  chan error // the marker's receipt
}

// confirm waits for each transaction's receipt in order and then acks its
// batch in the outbox. On a failure it cancels the pump.
func (b *Bus) confirm(ctx context.Context, cancel context.CancelCauseFunc, queue string, conn *stomp.Conn, window <-chan *inflight, retry *backoff.Backoff) {
	failed := false
	for f := range window {
		if failed {
			b.forgetPending(queue, f.batch)
			continue
		}
		var err error
		select {
		case err = <-f.done:
		case <-ctx.Done():
			// closing, or another batch failed: a receipt already on its way
			// still spares a resend
			t := time.NewTimer(2 * time.Second)
			select {
			case err = <-f.done:
			case <-t.C:
				err = context.Cause(ctx)
			}
			t.Stop()
		}
		if err == nil {
			// settle (count as on the broker) before the outbox lets go: Stats
			// may count a message twice for a moment, never zero times
			b.mu.Lock()
			ix := b.index(queue)
			for _, d := range f.batch {
				ix.settle(d.Message().Seq)
			}
			b.mu.Unlock()
			for _, d := range f.batch {
				if err = d.Ack(); err != nil {
					err = fmt.Errorf("activemq: outbox ack: %w", err)
					break
				}
			}
		}
		if err != nil {
			failed = true
			b.forgetPending(queue, f.batch)
			if ctx.Err() == nil {
				cancel(fmt.Errorf("activemq: transaction to %s not confirmed: %w", b.dest(queue), err))
			}
			continue
		}
		retry.Reset()
		b.m.txns.Inc()
		b.m.forwarded.Add(float64(len(f.batch)))
		b.m.forwardedBytes.Add(float64(f.size))
		b.mirror(conn, queue, f.batch)
	}
}

// forgetPending drops a batch that was not confirmed from the index: the
// outbox gives it back and it is forwarded again.
func (b *Bus) forgetPending(queue string, batch []bus.Delivery) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ix := b.index(queue)
	for _, d := range batch {
		if e, ok := ix.entries[d.Message().Seq]; ok && e.pending {
			ix.forget(d.Message().Seq)
		}
	}
}

// send puts batch on the wire as one transaction: SENDs and a COMMIT, not
// waiting for the broker (pump's marker receipt confirms it).
func (b *Bus) send(conn *stomp.Conn, dest string, batch []bus.Delivery) error {
	tx, err := conn.BeginWithError()
	if err != nil {
		return fmt.Errorf("activemq: begin: %w", err)
	}
	for _, d := range batch {
		m := d.Message()
		// No receipt per SEND (it costs a round trip each). The broker should
		// run with producer flow control and without sendFailIfNoSpace
		// (ActiveMQ's defaults): a broker that refuses a SEND that asked
		// for no response may still commit the rest of the transaction.
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
	if err := tx.Commit(); err != nil {
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
