// Package cloudlink is the gateway's MQTT link to the cloud. The uplink
// consumes the bus in order, posts records as EnOS
// thing.measurepoint.post.batch requests at QoS 1 over mutual TLS, and acks
// each bus message only after the broker's PUBACK for it: the ingest stores a
// post durably before it acknowledges it, so a bus message leaves the gateway
// only once it is safe in the cloud.
package cloudlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/internal/backoff"
	"github.com/edged/edged/telemetry"
)

// DeadLetter is the queue that receives bus messages that cannot be decoded.
const DeadLetter = bus.DeadLetter

// Options configure the uplink.
type Options struct {
	Broker     string      // tls://host:port
	TLS        *tls.Config // with the client certificate (mutual TLS)
	ProductKey string      // the gateway's cloud identity
	DeviceKey  string
	Secret     string // secret login when set; else certificate login
	SignMethod string
	Gateway    string // gateway id carried in every post
	Epoch      uint64 // this node's fencing epoch

	Bus        bus.Bus
	MaxPayload int           // largest post in bytes (the cloud refuses larger ones); default 256 KiB
	InFlight   int           // posts awaiting PUBACK at once
	AckTimeout time.Duration // PUBACK deadline; past it the session is restarted
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Uplink is the cloud link stage.
type Uplink struct {
	o         Options
	m         *uplinkMetrics
	connected atomic.Bool
	lastErr   atomic.Value // string
	lastAck   atomic.Int64 // unix ms
	nextID    atomic.Uint64
}

// New builds the uplink. No I/O.
func New(o Options) *Uplink {
	if o.InFlight <= 0 {
		o.InFlight = 8
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = 256 << 10
	}
	if o.SignMethod == "" {
		o.SignMethod = "sha256"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	u := &Uplink{o: o, m: newUplinkMetrics(o.Registerer)}
	u.lastErr.Store("")
	return u
}

// Health is the uplink's state for /healthz.
type Health struct {
	Connected bool      `json:"connected"`
	LastError string    `json:"last_error,omitempty"`
	LastAck   time.Time `json:"last_ack,omitzero"`
}

// Health reports the link state.
func (u *Uplink) Health() Health {
	h := Health{Connected: u.connected.Load(), LastError: u.lastErr.Load().(string)}
	if ms := u.lastAck.Load(); ms > 0 {
		h.LastAck = time.UnixMilli(ms)
	}
	return h
}

// Run connects, delivers, and reconnects with backoff until ctx ends.
func (u *Uplink) Run(ctx context.Context) error {
	retry := backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second}
	for ctx.Err() == nil {
		err := u.session(ctx, &retry)
		u.connected.Store(false)
		u.m.connected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		u.lastErr.Store(err.Error())
		u.m.sessionErrors.Inc()
		d := retry.Next()
		u.o.Logger.Warn("cloud link down; retrying", "broker", u.o.Broker, "in", d.Round(time.Millisecond), "err", err)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
	return nil
}

func (u *Uplink) clientOptions(lost func(error)) (*mqtt.ClientOptions, error) {
	o := u.o
	opts := mqtt.NewClientOptions().
		AddBroker(o.Broker).
		SetTLSConfig(o.TLS).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(o.AckTimeout). // paho's default 0 lets a publish block forever
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost(err) })
	if o.Secret != "" {
		ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
		cid, user, pass, err := enos.MQTTLogin(o.DeviceKey, o.ProductKey, o.DeviceKey, o.Secret, o.SignMethod, ts)
		if err != nil {
			return nil, fmt.Errorf("cloud login: %w", err)
		}
		opts.SetClientID(cid).SetUsername(user).SetPassword(pass)
	} else {
		opts.SetClientID(o.DeviceKey).SetUsername(o.DeviceKey + "&" + o.ProductKey)
	}
	return opts, nil
}

// pending is one bus message on its way: one post, or several when the
// message is larger than a post may be. It is acked when every post is.
type pending struct {
	d       bus.Delivery
	toks    []mqtt.Token
	records int
	sent    time.Time
}

// session runs one MQTT connection: it returns when the connection fails or
// a PUBACK is late (the error says which) or ctx ends. Deliveries it holds
// unacked are dropped; the next session's Consume starts again at the oldest
// unacked message, so nothing is skipped.
func (u *Uplink) session(ctx context.Context, retry *backoff.Backoff) error {
	o := u.o
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	opts, err := u.clientOptions(func(err error) { cancel(fmt.Errorf("connection lost: %w", err)) })
	if err != nil {
		return err
	}
	client := mqtt.NewClient(opts)
	tok := client.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		client.Disconnect(0)
		return errors.New("connect: no CONNACK within 15s")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer client.Disconnect(250)

	topic := enos.Topic(o.ProductKey, o.DeviceKey, enos.SuffixPostBatch)
	sub := client.Subscribe(topic+"_reply", 0, u.onReply)
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		return fmt.Errorf("subscribe to replies: %v", sub.Error())
	}
	u.connected.Store(true)
	u.m.connected.Set(1)
	u.lastErr.Store("")
	o.Logger.Info("cloud link up", "broker", o.Broker, "product_key", o.ProductKey, "device_key", o.DeviceKey)

	deliveries, err := o.Bus.Consume(sctx, bus.Telemetry)
	if err != nil {
		return fmt.Errorf("consume bus: %w", err)
	}
	window := make(chan pending, o.InFlight)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // acker: waits for PUBACKs in publish order
		defer wg.Done()
		first := true
	next:
		for p := range window {
			for _, tok := range p.toks {
				if !waitToken(sctx, tok, o.AckTimeout) {
					if sctx.Err() == nil {
						cancel(fmt.Errorf("no PUBACK within %s", o.AckTimeout))
					}
					continue next // drain; these deliveries are void
				}
				if err := tok.Error(); err != nil {
					cancel(fmt.Errorf("publish: %w", err))
					continue next
				}
			}
			if sctx.Err() != nil {
				continue
			}
			if err := p.d.Ack(); err != nil {
				cancel(fmt.Errorf("bus ack: %w", err))
				continue
			}
			if first {
				retry.Reset() // the link carries data again
				first = false
			}
			u.lastAck.Store(time.Now().UnixMilli())
			u.m.ackSeconds.Observe(time.Since(p.sent).Seconds())
			u.m.ackedRecords.Add(float64(p.records))
		}
	}()

	var buf []byte
	err = func() error {
		defer close(window)
		for {
			var d bus.Delivery
			var ok bool
			select {
			case d, ok = <-deliveries:
				if !ok {
					return nil
				}
			case <-sctx.Done():
				return nil
			}
			m := d.Message()
			recs, err := telemetry.DecodeBatch(m.Body, m.Seq)
			if err != nil {
				u.deadLetter(sctx, d, err)
				continue
			}
			p := pending{d: d, records: len(recs), sent: time.Now()}
			var tooBig error
			buf, tooBig = u.posts(buf, recs, func(payload []byte) {
				p.toks = append(p.toks, client.Publish(topic, 1, false, payload))
				u.m.postedBytes.Add(float64(len(payload)))
			})
			if tooBig != nil {
				// nothing was posted: a single record over the cloud's limit
				// can never be delivered; keep it for inspection
				u.deadLetter(sctx, d, tooBig)
				continue
			}
			u.m.postedRecords.Add(float64(len(recs)))
			select {
			case window <- p:
			case <-sctx.Done():
				return nil
			}
		}
	}()
	wg.Wait()
	for range deliveries {
		// void: the next session starts again at the oldest unacked message;
		// draining waits for the bus to release the consumer
	}
	if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
		return cause
	}
	return err
}

// posts encodes recs as one post, or, when that is over MaxPayload, as
// several smaller ones (halving until each fits), and hands each payload to
// publish in record order. A single record over the limit is an error and
// nothing is published.
func (u *Uplink) posts(buf []byte, recs []telemetry.Record, publish func([]byte)) ([]byte, error) {
	buf = enos.AppendPostBatch(buf[:0], u.nextID.Add(1), u.o.Gateway, u.o.Epoch, recs)
	if len(buf) <= u.o.MaxPayload { // the common case: one post
		publish(append([]byte(nil), buf...)) // paho keeps the payload until PUBACK
		return buf, nil
	}
	var parts [][]telemetry.Record
	var split func(rs []telemetry.Record) error
	split = func(rs []telemetry.Record) error {
		buf = enos.AppendPostBatch(buf[:0], 0, u.o.Gateway, u.o.Epoch, rs)
		if len(buf) <= u.o.MaxPayload {
			parts = append(parts, rs)
			return nil
		}
		if len(rs) == 1 {
			return fmt.Errorf("record seq %d of device %s encodes to %d bytes, over the cloud's limit of %d", rs[0].Seq, rs[0].Device, len(buf), u.o.MaxPayload)
		}
		if err := split(rs[:len(rs)/2]); err != nil {
			return err
		}
		return split(rs[len(rs)/2:])
	}
	if err := split(recs); err != nil {
		return buf, err
	}
	for _, part := range parts {
		buf = enos.AppendPostBatch(buf[:0], u.nextID.Add(1), u.o.Gateway, u.o.Epoch, part)
		publish(append([]byte(nil), buf...)) // paho keeps the payload until PUBACK
	}
	return buf, nil
}

func waitToken(ctx context.Context, t mqtt.Token, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return true
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// deadLetter moves a message that cannot be decoded out of the way, so one
// corrupt message cannot block the queue, and keeps it for inspection.
func (u *Uplink) deadLetter(ctx context.Context, d bus.Delivery, cause error) {
	m := d.Message()
	u.m.deadLettered.Inc()
	if _, err := u.o.Bus.Publish(ctx, DeadLetter, m.Count, m.Body); err != nil {
		u.o.Logger.Error("corrupt bus message could not be dead-lettered; it stays queued", "seq", m.Seq, "err", err)
		d.Nack()
		return
	}
	u.o.Logger.Error("corrupt bus message moved to the dead-letter queue", "seq", m.Seq, "records", m.Count, "err", cause)
	d.Ack()
}

// onReply counts the ingest's replies; it never blocks (paho calls it on its
// own goroutine).
func (u *Uplink) onReply(_ mqtt.Client, msg mqtt.Message) {
	r, err := enos.ParseReply(msg.Payload())
	if err != nil {
		u.m.replies.WithLabelValues("malformed").Inc()
		return
	}
	u.m.replies.WithLabelValues(strconv.Itoa(r.Code)).Inc()
	if r.Code != 200 {
		u.o.Logger.Error("cloud rejected a post", "id", r.ID, "code", r.Code, "message", r.Message)
	}
}

type uplinkMetrics struct {
	connected                                                             prometheus.Gauge
	sessionErrors, postedRecords, postedBytes, ackedRecords, deadLettered prometheus.Counter
	ackSeconds                                                            prometheus.Histogram
	replies                                                               *prometheus.CounterVec
}

func newUplinkMetrics(r prometheus.Registerer) *uplinkMetrics {
	m := &uplinkMetrics{
		connected:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "edged_uplink_connected", Help: "1 while the MQTT session to the cloud is up."}),
		sessionErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_session_errors_total", Help: "Cloud sessions that failed (connect refused, connection lost, PUBACK late)."}),
		postedRecords: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_posted_records_total", Help: "Records posted (including re-posts after a failure)."}),
		postedBytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_posted_bytes_total", Help: "Payload bytes posted."}),
		ackedRecords:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_acked_records_total", Help: "Records acknowledged by the cloud (PUBACK) and removed from the bus."}),
		deadLettered:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_dead_lettered_total", Help: "Bus messages that could not be decoded, moved to the dead-letter queue."}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edged_uplink_ack_duration_seconds", Help: "Time from posting to PUBACK.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 5},
		}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_uplink_replies_total", Help: "Replies from the cloud by result code."}, []string{"code"}),
	}
	if r != nil {
		r.MustRegister(m.connected, m.sessionErrors, m.postedRecords, m.postedBytes, m.ackedRecords, m.deadLettered, m.ackSeconds, m.replies)
	}
	return m
}
