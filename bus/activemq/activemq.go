// Package activemq is the production message engine: the bus on an
// ActiveMQ Classic broker over STOMP (github.com/go-stomp/stomp/v3).
//
// # Data path
//
//	Publish → local outbox (embedded bus, fsync'd, assigns the sequence numbers)
//	        → forwarder: STOMP transaction of up to 64 messages, committed with a receipt
//	        → broker queue /queue/{prefix}{queue} (persistent, KahaDB)
//	        → Consume: one exclusive subscription, client-individual acks, bounded prefetch
//	        → Ack after the cloud's PUBACK
//
// Why an outbox: the bus contract makes Publish assign sequence numbers that
// never repeat or skip, durably, and return once the message is durable.
// The outbox (the embedded bus in a sub-directory of the data dir) does that
// in one local fsync, independent of the broker. It is also the documented
// policy for a broker that is down or full: edged keeps polling and spills to
// the outbox, bounded by MaxBytes; when the broker returns the outbox drains
// in order. Only when the outbox itself is full does Publish return
// bus.ErrFull (the producer then holds its batch and polls stall: the oldest
// data is kept). A crash between the broker's commit and the outbox's ack
// sends that batch again with the same sequence numbers; the ingest
// de-duplicates them.
//
// Each message forwarded to the telemetry queue can also be mirrored, after
// the commit, to a topic for local subscribers (Options.Mirror); topic
// messages are not persistent (a subscriber that is not connected misses
// them, by design of topics).
//
// # Headers
//
// Every message carries edged-seq (first sequence number), edged-count
// (sequence numbers it spans) and edged-published (unix ms when it became
// durable in the outbox). A message on our queue without valid headers is
// foreign: the consumer moves it to the dead-letter queue and counts it.
package activemq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/embedded"
)

// Options configure the bus.
type Options struct {
	Addr      string      // broker STOMP address, host:port
	TLS       *tls.Config // stomp+ssl (with a client certificate) when set
	Login     string
	Passcode  string
	Prefix    string // destination name prefix, default "edged."; queue Q is /queue/{Prefix}Q
	DataDir   string // the outbox lives in DataDir/outbox
	MaxBytes  int64  // per queue, outbox and broker backlog together; default 1 GiB
	Prefetch  int    // unacked messages the broker may push to the consumer; default 16
	HeartBeat time.Duration
	// Mirror maps a queue to a topic name (without prefix) that receives a
	// copy of each message, rendered by Render, for local subscribers.
	Mirror map[string]string
	Render func(queue string, body []byte) (contentType string, out []byte, err error)
	// TxMessages and TxBytes bound one forwarding transaction (64, 4 MiB).
	TxMessages int
	TxBytes    int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Bus is the ActiveMQ bus. It is safe for concurrent use.
type Bus struct {
	o      Options
	log    *slog.Logger
	outbox *embedded.Bus
	m      *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	forwarders map[string]bool
	consumers  map[string]bool
	idx        map[string]*index
	link       bus.LinkState
	downLogged bool // the current outage has been logged
	sendConn   *stomp.Conn
	closed     bool
}

var (
	_ bus.Bus    = (*Bus)(nil)
	_ bus.Linked = (*Bus)(nil)
)

// Open opens the outbox and starts forwarding and recovering the broker
// backlog's index in the background. It does not need the broker: a broker
// that is down is retried with backoff and reported by LinkState.
func Open(o Options) (*Bus, error) {
	if o.Addr == "" {
		return nil, errors.New("activemq: no broker address")
	}
	if o.DataDir == "" {
		return nil, errors.New("activemq: no data dir for the outbox")
	}
	o.defaults()
	// Publish enforces MaxBytes over outbox and broker together; the
	// outbox's own limit is a hard cap above it (a batch the consumer
	// already acked may sit in the outbox until its receipt is back)
	ob, err := embedded.Open(filepath.Join(o.DataDir, "outbox"), embedded.Options{MaxBytes: 2 * o.MaxBytes, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("activemq: outbox: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		o: o, log: o.Logger, outbox: ob, m: newMetrics(o.Registerer),
		ctx: ctx, cancel: cancel,
		forwarders: map[string]bool{}, consumers: map[string]bool{}, idx: map[string]*index{},
		link: bus.LinkState{Broker: o.Addr, Since: time.Now(), Error: "not connected yet"},
	}
	// what an earlier run left: outbox messages to forward, a broker backlog to index
	for _, q := range []string{bus.Telemetry, bus.DeadLetter} {
		st, err := ob.Stats(q)
		if err == nil && st.Depth > 0 {
			b.startForwarder(q)
		}
		b.mu.Lock()
		b.index(q)
		b.mu.Unlock()
	}
	return b, nil
}

// defaults fills in the documented defaults.
func (o *Options) defaults() {
	if o.Prefix == "" {
		o.Prefix = "edged."
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 16
	}
	if o.HeartBeat <= 0 {
		o.HeartBeat = 5 * time.Second
	}
	if o.TxMessages <= 0 {
		o.TxMessages = 64
	}
	if o.TxBytes <= 0 {
		o.TxBytes = 4 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// dest is the broker destination of a bus queue.
func (b *Bus) dest(queue string) string { return "/queue/" + b.o.Prefix + queue }

// Publish implements bus.Bus: the message is durable in the outbox when it
// returns, and forwarded to the broker in the background.
func (b *Bus) Publish(ctx context.Context, queue string, count uint32, body []byte) (uint64, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, bus.ErrClosed
	}
	_, _, brokerBytes, _ := b.index(queue).backlog()
	b.mu.Unlock()
	if st, err := b.outbox.Stats(queue); err == nil && st.Bytes+brokerBytes+int64(len(body)) > b.o.MaxBytes {
		return 0, fmt.Errorf("%w: %d bytes queued (outbox %d, broker %d), limit %d", bus.ErrFull, st.Bytes+brokerBytes, st.Bytes, brokerBytes, b.o.MaxBytes)
	}
	seq, err := b.outbox.Publish(ctx, queue, count, body)
	if err != nil {
		return 0, err
	}
	b.startForwarder(queue)
	return seq, nil
}

// Stats implements bus.Bus: the outbox (not yet on the broker) plus the
// broker's backlog as this bus knows it. The broker part is exact for what
// this process forwarded and for what it found on the queue when it started
// (it browses the queue once, in the background, after connecting); until
// that browse is done, messages an earlier run left on the broker are not
// counted. NextSeq and MaxBytes are exact.
func (b *Bus) Stats(queue string) (bus.Stats, error) {
	st, err := b.outbox.Stats(queue)
	if err != nil {
		return st, err
	}
	st.MaxBytes = b.o.MaxBytes
	b.mu.Lock()
	defer b.mu.Unlock()
	depth, records, bytes, o := b.index(queue).backlog()
	st.Depth += depth
	st.Records += records
	st.Bytes += bytes
	if !o.IsZero() && (st.Oldest.IsZero() || o.Before(st.Oldest)) {
		st.Oldest = o
	}
	return st, nil
}

// OutboxStats reports what is in the local outbox only: published, not yet
// on the broker (the spill while the broker is down or slow).
func (b *Bus) OutboxStats(queue string) (bus.Stats, error) { return b.outbox.Stats(queue) }

// LinkState implements bus.Linked.
func (b *Bus) LinkState() bus.LinkState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.link
}

func (b *Bus) setLink(up bool, err error) {
	b.mu.Lock()
	changed := b.link.Up != up || (!up && !b.downLogged)
	b.downLogged = !up
	if changed {
		b.link.Since = time.Now()
	}
	b.link.Up = up
	b.link.Error = ""
	if err != nil {
		b.link.Error = err.Error()
	}
	b.mu.Unlock()
	if up {
		b.m.up.Set(1)
	} else {
		b.m.up.Set(0)
	}
	switch {
	case changed && up:
		b.log.Info("broker link up", "broker", b.o.Addr)
	case changed:
		b.log.Error("broker link down; publishing continues into the local outbox", "broker", b.o.Addr, "err", err)
	}
}

// Close stops forwarding and consuming and closes the outbox. Messages stay
// where they are: in the outbox or on the broker.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	if b.sendConn != nil {
		disconnect(b.sendConn)
		b.sendConn = nil
	}
	b.mu.Unlock()
	return b.outbox.Close()
}

// headers of our messages
const (
	hSeq       = "edged-seq"
	hCount     = "edged-count"
	hPublished = "edged-published"
)

// parseHeaders reads our headers from a message; ok is false for a foreign
// message.
func parseHeaders(get func(string) string) (seq uint64, count uint32, published time.Time, ok bool) {
	seq, err1 := strconv.ParseUint(get(hSeq), 10, 64)
	c, err2 := strconv.ParseUint(get(hCount), 10, 32)
	ms, err3 := strconv.ParseInt(get(hPublished), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || seq == 0 || c == 0 {
		return 0, 0, time.Time{}, false
	}
	return seq, uint32(c), time.UnixMilli(ms), true
}

type metrics struct {
	up                                   prometheus.Gauge
	forwarded, forwardedBytes, acked     prometheus.Counter
	foreign, staleAcks, reconnects, txns prometheus.Counter
	mirrorErrors                         prometheus.Counter
}

func newMetrics(r prometheus.Registerer) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		up:             prometheus.NewGauge(prometheus.GaugeOpts{Name: "edged_bus_broker_up", Help: "1 while the STOMP connection to ActiveMQ is up."}),
		forwarded:      c("edged_bus_forwarded_messages_total", "Messages moved from the local outbox to the broker (committed)."),
		forwardedBytes: c("edged_bus_forwarded_bytes_total", "Bytes moved from the local outbox to the broker."),
		txns:           c("edged_bus_forward_transactions_total", "STOMP transactions committed by the forwarder."),
		acked:          c("edged_bus_acked_messages_total", "Messages acknowledged to the broker after the cloud confirmed them."),
		foreign:        c("edged_bus_foreign_messages_total", "Messages on our queue without edged headers, moved to the dead-letter queue."),
		staleAcks:      c("edged_bus_stale_acks_total", "Acks of deliveries made before a reconnect (the broker redelivers those messages; the ingest de-duplicates)."),
		reconnects:     c("edged_bus_broker_connects_total", "STOMP connections opened to the broker."),
		mirrorErrors:   c("edged_bus_mirror_errors_total", "Messages not mirrored to the local topic (rendering or sending failed)."),
	}
	if r != nil {
		r.MustRegister(m.up, m.forwarded, m.forwardedBytes, m.txns, m.acked, m.foreign, m.staleAcks, m.reconnects, m.mirrorErrors)
	}
	return m
}
