package activemq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-stomp/stomp/v3"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/embedded"
)

// Switching the bus kind (bus.kind in the config, then a restart) moves the
// backlog with it; see embedded.Move for how messages keep their sequence
// numbers and the counter is carried over.
//
//	embedded → activemq: FromEmbedded moves the embedded bus's store
//	    (data_dir/bus.db) into the outbox before Open; the forwarder then
//	    sends it to the broker, oldest first.
//	activemq → embedded: ToEmbedded drains this gateway's queues on the
//	    broker (when the config still names it) and the outbox into the
//	    embedded bus before it is used.

// Switched reports what a switch moved.
type Switched struct {
	Local         embedded.AdoptResult // from the other local store
	Broker        embedded.AdoptResult // from the broker's queues
	BrokerForeign int                  // messages without edged headers left on the broker
	// BrokerLeft: the broker could not be drained (not configured or not
	// reachable): whatever it holds for this gateway stays there. The
	// outbox (with the sequence counter) is kept so the next start tries
	// again.
	BrokerLeft error
}

// Moved is the number of messages moved.
func (s Switched) Moved() int {
	return s.Local.Adopted + s.Local.Renumbered + s.Broker.Adopted + s.Broker.Renumbered
}

// FromEmbedded moves the backlog an embedded bus left in o.DataDir into the
// outbox of the ActiveMQ bus about to be opened on it, then removes the
// embedded store. Nothing to do (no store) is not an error.
func FromEmbedded(ctx context.Context, o Options) (Switched, error) {
	var res Switched
	o.defaults()
	path := filepath.Join(o.DataDir, "bus.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	from, err := embedded.Open(o.DataDir, embedded.Options{Logger: o.Logger, MaxBytes: 1 << 62})
	if err != nil {
		return res, fmt.Errorf("activemq: the embedded bus's backlog: %w", err)
	}
	defer from.Close()
	to, err := embedded.Open(filepath.Join(o.DataDir, "outbox"), embedded.Options{MaxBytes: 2 * o.MaxBytes, Logger: o.Logger})
	if err != nil {
		return res, fmt.Errorf("activemq: outbox: %w", err)
	}
	defer to.Close()
	queues, err := from.Queues()
	if err != nil {
		return res, err
	}
	for _, q := range queues {
		r, err := embedded.Move(ctx, from, to, q)
		res.Local = add(res.Local, r.AdoptResult)
		if err != nil {
			return res, fmt.Errorf("activemq: move the embedded bus's %s backlog into the outbox: %w", q, err)
		}
	}
	if err := from.Close(); err != nil {
		return res, err
	}
	if err := os.Remove(path); err != nil {
		return res, fmt.Errorf("activemq: remove the emptied embedded store: %w", err)
	}
	return res, nil
}

// ToEmbedded moves what an ActiveMQ bus on o.DataDir left behind into dst,
// the embedded bus taking over: this gateway's messages on the broker (if
// o.Addr is set and the broker answers) and the outbox. The outbox is
// removed once both are empty; while the broker could not be drained it is
// kept (it holds the sequence counter) and res.BrokerLeft says why. dst must
// have no consumer yet.
func ToEmbedded(ctx context.Context, o Options, dst *embedded.Bus) (Switched, error) {
	var res Switched
	o.defaults()
	dir := filepath.Join(o.DataDir, "outbox")
	if _, err := os.Stat(filepath.Join(dir, "bus.db")); errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	ob, err := embedded.Open(dir, embedded.Options{Logger: o.Logger, MaxBytes: 1 << 62})
	if err != nil {
		return res, fmt.Errorf("activemq: outbox: %w", err)
	}
	defer ob.Close()
	queues, err := ob.Queues()
	if err != nil {
		return res, err
	}
	for _, q := range queues {
		r, err := embedded.Move(ctx, ob, dst, q)
		res.Local = add(res.Local, r.AdoptResult)
		if err != nil {
			return res, fmt.Errorf("activemq: move the outbox's %s backlog: %w", q, err)
		}
	}
	if o.Addr == "" {
		res.BrokerLeft = errors.New("bus.activemq.address is not set: the broker's queues were not drained")
	} else {
		b := &Bus{o: o, log: o.Logger, m: newMetrics(nil)}
		for _, q := range []string{bus.Telemetry, bus.DeadLetter} {
			r, foreign, err := b.drain(ctx, q, dst)
			res.Broker = add(res.Broker, r)
			res.BrokerForeign += foreign
			if err != nil {
				res.BrokerLeft = err
				break
			}
		}
	}
	if res.BrokerLeft != nil {
		return res, nil
	}
	if err := ob.Close(); err != nil {
		return res, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return res, fmt.Errorf("activemq: remove the emptied outbox: %w", err)
	}
	return res, nil
}

func add(a, b embedded.AdoptResult) embedded.AdoptResult {
	return embedded.AdoptResult{Adopted: a.Adopted + b.Adopted, Duplicates: a.Duplicates + b.Duplicates, Renumbered: a.Renumbered + b.Renumbered}
}

// drainQuiet is how long a subscription must stay silent for its queue to
// count as drained; drain asks twice, on two connections.
const drainQuiet = 2 * time.Second

// drain consumes queue on the broker into dst: each batch adopted durably
// there before it is acked on the broker. It stops when two subscriptions
// in a row receive nothing of ours for drainQuiet. Foreign messages (no
// edged headers) are left on the broker and counted.
func (b *Bus) drain(ctx context.Context, queue string, dst *embedded.Bus) (embedded.AdoptResult, int, error) {
	var res embedded.AdoptResult
	foreign := 0
	for quiet := 0; quiet < 2; {
		r, f, n, err := b.drainSession(ctx, queue, dst)
		res = add(res, r)
		foreign = max(foreign, f) // each session sees the same foreign messages again
		if err != nil {
			return res, foreign, err
		}
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return res, foreign, nil
}

func (b *Bus) drainSession(ctx context.Context, queue string, dst *embedded.Bus) (res embedded.AdoptResult, foreign, n int, err error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := b.dial(dctx)
	cancel()
	if err != nil {
		return res, 0, 0, err
	}
	defer disconnect(conn) // a DISCONNECT with a receipt: the acks before it are done
	dest := b.dest(queue)
	const prefetch = 128
	sub, err := conn.Subscribe(dest, stomp.AckClientIndividual,
		stomp.SubscribeOpt.Header("activemq.prefetchSize", strconv.Itoa(prefetch)),
		stomp.SubscribeOpt.Header("activemq.exclusive", "true"))
	if err != nil {
		return res, 0, 0, fmt.Errorf("activemq: subscribe %s: %w", dest, err)
	}
	for {
		var batch []*stomp.Message
		var msgs []bus.Message
		t := time.NewTimer(drainQuiet)
	gather:
		for len(batch) < prefetch/2 {
			var m *stomp.Message
			var ok bool
			if len(batch) == 0 {
				select {
				case m, ok = <-sub.C:
				case <-t.C:
					break gather
				case <-ctx.Done():
					t.Stop()
					return res, foreign, n, ctx.Err()
				}
			} else {
				select {
				case m, ok = <-sub.C:
				default:
					break gather
				}
			}
			if !ok {
				t.Stop()
				return res, foreign, n, fmt.Errorf("activemq: subscription to %s closed", dest)
			}
			if m.Err != nil {
				t.Stop()
				return res, foreign, n, fmt.Errorf("activemq: %s: %w", dest, m.Err)
			}
			seq, count, published, valid := parseHeaders(m.Header.Get)
			if !valid {
				foreign++
				continue
			}
			batch = append(batch, m)
			msgs = append(msgs, bus.Message{Seq: seq, Count: count, Published: published, Body: m.Body})
		}
		t.Stop()
		if len(batch) == 0 {
			return res, foreign, n, nil
		}
		r, err := dst.Adopt(queue, msgs)
		if err != nil {
			return res, foreign, n, err
		}
		res = add(res, r)
		for _, m := range batch {
			if err := conn.Ack(m); err != nil {
				return res, foreign, n, fmt.Errorf("activemq: ack on %s: %w", dest, err)
			}
		}
		n += len(batch)
	}
}
