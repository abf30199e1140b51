// Package cloudlink is the gateway's MQTT link to the cloud. The uplink
// posts records as EnOS batch requests at QoS 1 over mutual TLS, and acks
// each bus message only after the broker's PUBACK for it: the ingest stores a
// post durably before it acknowledges it, so a bus message leaves the gateway
// only once it is safe in the cloud.
//
// Two channels, like EnOS Edge's breakpoint resume: real-time data goes on
// thing.measurepoint.post.batch; history — what was queued before this
// session began (an outage, a restart) or is older than ResumeAfter — goes on
// thing.measurepoint.resume.batch, at a bounded rate (ResumeRate), while
// real-time data keeps flowing: fresh messages reach the uplink through the
// producer's tap (bus.Tap) and are posted at once, ahead of the ordered
// consumer that drains the backlog. Within each channel, posts go out in
// sequence order, so each device's records keep their order.
package cloudlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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
	// Epoch, when not 0, activates the uplink for the whole of Run with
	// this fencing epoch (a single node). An HA node leaves it 0 and calls
	// Activate at each term.
	Epoch uint64
	// ClientID is the MQTT client id; default DeviceKey. The nodes of an
	// HA pair share the device identity and need distinct client ids, or
	// each login would take over the other's session.
	ClientID string

	Bus        bus.Bus
	MaxPayload int           // largest post in bytes (the cloud refuses larger ones); default 256 KiB
	InFlight   int           // posts awaiting PUBACK at once
	AckTimeout time.Duration // PUBACK deadline; past it the session is restarted

	// Tap is the producer's real-time path; without it, real-time data
	// waits behind a backlog (everything still goes on the right channel).
	Tap *bus.Tap
	// ResumeAfter: a message older than this is history, posted on
	// resume/batch; default 120 minutes (as EnOS).
	ResumeAfter time.Duration
	// ResumeRate bounds the backlog's drain in measure points per second;
	// default 50000. Keep it several times the live rate, or a backlog
	// never drains.
	ResumeRate int
	// ResumeInFlight: backlog posts awaiting PUBACK at once; default
	// InFlight/2, at least 1.
	ResumeInFlight int
	// ConfirmByReply acks a bus message only on the cloud's reply (code
	// 200, or a final 4xx refusal) instead of the broker's PUBACK: needed
	// behind an external broker (Mosquitto and ingestd workers), whose
	// PUBACK means "received", not "stored". A 5xx reply, or none within
	// AckTimeout, restarts the session and the data is sent again.
	ConfirmByReply bool
	// Commander executes commands from the cloud (measurepoint/set); nil
	// answers every command 501.
	Commander Commander
	// CommandTimeout bounds one command's execution; default 8 s (the
	// ingest waits 10 s for the reply by default).
	CommandTimeout time.Duration
	// ReconnectMax caps the backoff between connection attempts; default
	// 10 s (attempts are jittered, so a fleet does not reconnect at once).
	ReconnectMax time.Duration
	// OnConnect is called (on its own goroutine) each time a session is
	// up: e.g. to check for new device models.
	OnConnect  func()
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Uplink is the cloud link stage.
type Uplink struct {
	o         Options
	waiters   sync.Map // post id → chan enos.Reply, with ConfirmByReply
	m         *uplinkMetrics
	connected atomic.Bool
	lastErr   atomic.Value // string
	lastAck   atomic.Int64 // unix ms
	nextID    atomic.Uint64
	link      atomic.Pointer[link] // the session, while one is up
	refusal   atomic.Pointer[refusal]
	epoch     atomic.Uint64 // the active term's, stamped on posts

	termMu sync.Mutex
	term   *activeTerm   // the latest activation
	termCh chan struct{} // closed at each activation
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
	if o.ResumeAfter <= 0 {
		o.ResumeAfter = 120 * time.Minute
	}
	if o.ResumeRate <= 0 {
		o.ResumeRate = 50000
	}
	if o.ResumeInFlight <= 0 {
		o.ResumeInFlight = max(1, o.InFlight/2)
	}
	if o.SignMethod == "" {
		o.SignMethod = "sha256"
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = 10 * time.Second
	}
	if o.ClientID == "" {
		o.ClientID = o.DeviceKey
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 8 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	u := &Uplink{o: o, m: newUplinkMetrics(o.Registerer), termCh: make(chan struct{})}
	u.lastErr.Store("")
	return u
}

// Health is the uplink's state for /healthz.
type Health struct {
	Connected bool      `json:"connected"`
	LastError string    `json:"last_error,omitempty"`
	LastAck   time.Time `json:"last_ack,omitzero"`
	// Refused: the cloud's last refusal of a post in this term (4xx: the
	// data is not stored and will not be sent again), and when.
	Refused   string    `json:"last_refusal,omitempty"`
	RefusedAt time.Time `json:"last_refusal_at,omitzero"`
	// Fenced: the cloud refused a post because a newer epoch of this
	// gateway exists (another node is active, or the epochs were reset by
	// rebuilding etcd or moving to HA: see the README).
	Fenced bool `json:"fenced,omitempty"`
}

type refusal struct {
	msg    string
	at     time.Time
	fenced bool
}

// Health reports the link state.
func (u *Uplink) Health() Health {
	h := Health{Connected: u.connected.Load(), LastError: u.lastErr.Load().(string)}
	if ms := u.lastAck.Load(); ms > 0 {
		h.LastAck = time.UnixMilli(ms)
	}
	if r := u.refusal.Load(); r != nil {
		h.Refused, h.RefusedAt, h.Fenced = r.msg, r.at, r.fenced
	}
	return h
}

// Run connects, delivers, and reconnects with backoff until ctx ends.
func (u *Uplink) Run(ctx context.Context) error {
	if u.o.Epoch != 0 {
		u.Activate(ctx, u.o.Epoch)
	}
	retry := backoff.Backoff{Min: 500 * time.Millisecond, Max: u.o.ReconnectMax}
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
		cid, user, pass, err := enos.MQTTLogin(o.ClientID, o.ProductKey, o.DeviceKey, o.Secret, o.SignMethod, ts)
		if err != nil {
			return nil, fmt.Errorf("cloud login: %w", err)
		}
		opts.SetClientID(cid).SetUsername(user).SetPassword(pass)
	} else {
		opts.SetClientID(o.ClientID).SetUsername(o.DeviceKey + "&" + o.ProductKey)
	}
	return opts, nil
}

// pending is one bus message on its way: one post, or several when the
// message is larger than a post may be. It is done when every post is
// acknowledged: then its delivery is acked, or, for a message posted from
// the tap, its claim is settled.
type pending struct {
	d       bus.Delivery // nil for a message posted from the tap
	claim   *claim       // set for a message posted from the tap
	toks    []mqtt.Token
	replies []reply // with ConfirmByReply
	records int
	sent    time.Time
}

// reply is a post awaiting the cloud's answer.
type reply struct {
	id string
	ch chan enos.Reply
}

// publisher returns the function posts calls for each payload: it
// publishes on topic and records the token (and the reply to wait for)
// in p.
func (u *Uplink) publisher(client mqtt.Client, topic string, p *pending) func(id uint64, payload []byte) {
	return func(id uint64, payload []byte) {
		if u.o.ConfirmByReply {
			r := reply{id: strconv.FormatUint(id, 10), ch: make(chan enos.Reply, 1)}
			u.waiters.Store(r.id, r.ch)
			p.replies = append(p.replies, r)
		}
		p.toks = append(p.toks, client.Publish(topic, 1, false, payload))
		u.m.postedBytes.Add(float64(len(payload)))
	}
}

// confirmed waits for the replies of p: nil when every one is 200 or a
// final refusal (4xx, logged by onReply), an error otherwise.
func (u *Uplink) confirmed(ctx context.Context, p *pending) error {
	defer func() {
		for _, r := range p.replies {
			u.waiters.Delete(r.id)
		}
	}()
	deadline := time.NewTimer(u.o.AckTimeout)
	defer deadline.Stop()
	for _, r := range p.replies {
		select {
		case rep := <-r.ch:
			if rep.Code >= 500 || rep.Code < 200 {
				return fmt.Errorf("the cloud answered post %s with %d %s: sending again", r.id, rep.Code, rep.Message)
			}
		case <-deadline.C:
			return fmt.Errorf("no reply to post %s within %s", r.id, u.o.AckTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// claims are the messages the tap posted ahead of the ordered consumer,
// and where that consumer is. One lock orders the two: a message is posted
// by whichever takes it first, and the live channel's posts go out in
// sequence order.
type claims struct {
	mu     sync.Mutex
	pos    uint64 // the consumer's next sequence: it has seen every message below
	maxEnd uint64 // end of the newest message the tap posted
	m      map[uint64]*claim
}

type claim struct {
	seq   uint64
	acked bool         // the cloud has it
	d     bus.Delivery // the consumer's delivery of it, once it got there
}

// maxClaims bounds the messages the tap may post ahead of the consumer;
// past it, fresh messages wait for the consumer (and go out as history).
const maxClaims = 100000

// settle records the cloud's acknowledgement of c and returns the
// delivery to ack, if the consumer has reached it.
func (cs *claims) settle(c *claim) bus.Delivery {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c.acked = true
	if c.d != nil {
		delete(cs.m, c.seq)
	}
	return c.d
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
	opts.SetDefaultPublishHandler(u.commandHandler(sctx, make(chan struct{}, maxCommands)))
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

	liveTopic := enos.Topic(o.ProductKey, o.DeviceKey, enos.SuffixPostBatch)
	resumeTopic := enos.Topic(o.ProductKey, o.DeviceKey, enos.SuffixResumeBatch)
	replyQoS := byte(0)
	if o.ConfirmByReply {
		replyQoS = 1 // a lost reply would mean sending again
	}
	defer u.waiters.Clear() // posts of this session are void after it
	for _, t := range []string{liveTopic, resumeTopic} {
		sub := client.Subscribe(t+enos.ReplySuffix, replyQoS, u.onReply)
		if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
			return fmt.Errorf("subscribe to replies: %v", sub.Error())
		}
	}
	st, err := o.Bus.Stats(bus.Telemetry)
	if err != nil {
		return fmt.Errorf("bus stats: %w", err)
	}
	u.connected.Store(true)
	u.m.connected.Set(1)
	u.lastErr.Store("")
	o.Logger.Info("cloud link up", "broker", o.Broker, "product_key", o.ProductKey, "device_key", o.DeviceKey,
		"backlog_records", st.Records, "backlog_oldest", st.Oldest)
	u.link.Store(&link{client: client, ctx: sctx})
	defer u.link.Store(nil)
	if o.OnConnect != nil {
		go o.OnConnect()
	}
	// The link stays up across terms: a standby is logged in (it fetches
	// models) and starts delivering the moment it is activated.
	for {
		t, ok := u.waitTerm(sctx)
		if !ok {
			break
		}
		if err := u.serve(sctx, cancel, t, client, liveTopic, resumeTopic, retry); err != nil && sctx.Err() == nil {
			return err
		}
		if sctx.Err() == nil {
			o.Logger.Info("standing by: delivery stopped with the term; the cloud link stays up", "epoch", t.epoch)
		}
	}
	if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
		return cause
	}
	return nil
}

// serve delivers the bus to the cloud while term t lasts (and the
// session). It returns nil when the term ends; ending the session is
// cancel's (a late PUBACK, a failed publish).
func (u *Uplink) serve(sctx context.Context, cancel context.CancelCauseFunc, t *activeTerm, client mqtt.Client, liveTopic, resumeTopic string, retry *backoff.Backoff) error {
	o := u.o
	tctx, tcancel := context.WithCancel(sctx)
	defer tcancel()
	stop := context.AfterFunc(t.ctx, tcancel)
	defer stop()
	u.epoch.Store(t.epoch)
	// Everything queued before this term (or session) began is history: it
	// goes on resume/batch, and what is published from now on overtakes it.
	st, err := o.Bus.Stats(bus.Telemetry)
	if err != nil {
		return fmt.Errorf("bus stats: %w", err)
	}
	watermark := st.NextSeq
	deliveries, err := o.Bus.Consume(tctx, bus.Telemetry)
	if err != nil {
		return fmt.Errorf("consume bus: %w", err)
	}
	liveWin := make(chan pending, o.InFlight)
	resumeWin := make(chan pending, o.ResumeInFlight)
	cl := &claims{m: map[uint64]*claim{}}

	var ackers sync.WaitGroup
	first := atomic.Bool{}
	first.Store(true)
	acker := func(window <-chan pending) { // waits for PUBACKs in publish order
		defer ackers.Done()
	next:
		for p := range window {
			for _, tok := range p.toks {
				if !waitToken(tctx, tok, o.AckTimeout) {
					if tctx.Err() == nil {
						cancel(fmt.Errorf("no PUBACK within %s", o.AckTimeout))
					}
					continue next // drain; these deliveries are void
				}
				if err := tok.Error(); err != nil {
					cancel(fmt.Errorf("publish: %w", err))
					continue next
				}
			}
			if tctx.Err() != nil {
				continue
			}
			if o.ConfirmByReply {
				if err := u.confirmed(tctx, &p); err != nil {
					cancel(err)
					continue
				}
			}
			d := p.d
			if p.claim != nil {
				d = cl.settle(p.claim)
			}
			if d != nil {
				if err := d.Ack(); err != nil {
					cancel(fmt.Errorf("bus ack: %w", err))
					continue
				}
			}
			if first.CompareAndSwap(true, false) {
				retry.Reset() // the link carries data again
			}
			u.lastAck.Store(time.Now().UnixMilli())
			u.m.ackSeconds.Observe(time.Since(p.sent).Seconds())
			u.m.ackedRecords.Add(float64(p.records))
		}
	}
	ackers.Add(2)
	go acker(liveWin)
	go acker(resumeWin)

	var writers sync.WaitGroup
	if o.Tap != nil {
		writers.Add(1)
		go func() {
			defer writers.Done()
			u.tapLoop(tctx, client, liveTopic, watermark, cl, liveWin)
		}()
	}
	err = u.consumeLoop(tctx, client, liveTopic, resumeTopic, watermark, deliveries, cl, liveWin, resumeWin)
	writers.Wait()
	close(liveWin)
	close(resumeWin)
	ackers.Wait()
	for range deliveries {
		// void: the next session starts again at the oldest unacked message;
		// draining waits for the bus to release the consumer
	}
	if tctx.Err() != nil {
		return nil // the term or the session ended; session says which
	}
	return err
}

// tapLoop posts fresh messages from the tap on the live channel, ahead of
// the ordered consumer. It skips what the consumer has already reached,
// what was queued before the session (history), and messages it cannot
// decode or post (the consumer deals with them).
func (u *Uplink) tapLoop(ctx context.Context, client mqtt.Client, topic string, watermark uint64, cl *claims, window chan<- pending) {
	var buf []byte
	for {
		var m bus.Message
		select {
		case m = <-u.o.Tap.C():
		case <-ctx.Done():
			return
		}
		if m.Seq < watermark || time.Since(m.Published) > u.o.ResumeAfter {
			continue // history: the consumer posts it on resume/batch
		}
		recs, err := telemetry.DecodeBatch(m.Body, m.Seq)
		if err != nil {
			continue
		}
		p := pending{records: len(recs), sent: time.Now()}
		cl.mu.Lock()
		if m.Seq < cl.pos || len(cl.m) >= maxClaims {
			cl.mu.Unlock()
			continue
		}
		var tooBig error
		buf, tooBig = u.posts(buf, recs, false, u.publisher(client, topic, &p))
		if tooBig == nil {
			p.claim = &claim{seq: m.Seq}
			cl.m[m.Seq] = p.claim
			cl.maxEnd = m.Seq + uint64(m.Count)
		}
		cl.mu.Unlock()
		if tooBig != nil {
			continue // nothing was posted; the consumer dead-letters it
		}
		u.m.postedRecords.Add(float64(len(recs)))
		u.m.tapRecords.Add(float64(len(recs)))
		select {
		case window <- p:
		case <-ctx.Done():
			return
		}
	}
}

// consumeLoop reads the queue in order. A message the tap has posted is
// acked once the cloud has it; history (queued before the session began,
// older than ResumeAfter, or passed over by the tap) goes on resume/batch
// at ResumeRate, yielding to the live channel; the rest goes live.
func (u *Uplink) consumeLoop(ctx context.Context, client mqtt.Client, liveTopic, resumeTopic string, watermark uint64,
	deliveries <-chan bus.Delivery, cl *claims, liveWin, resumeWin chan<- pending) error {
	var buf []byte
	pace := pacer{rate: float64(u.o.ResumeRate)}
	for {
		var d bus.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
			if !ok {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
		m := d.Message()
		cl.mu.Lock()
		cl.pos = max(cl.pos, m.Seq+uint64(m.Count))
		if c, claimed := cl.m[m.Seq]; claimed {
			c.d = d
			acked := c.acked
			if acked {
				delete(cl.m, m.Seq)
			}
			cl.mu.Unlock()
			if acked {
				if err := d.Ack(); err != nil {
					return fmt.Errorf("bus ack: %w", err)
				}
			}
			continue
		}
		history := m.Seq < watermark || m.Seq < cl.maxEnd || time.Since(m.Published) > u.o.ResumeAfter
		if history {
			cl.mu.Unlock()
		}
		recs, err := telemetry.DecodeBatch(m.Body, m.Seq)
		if err != nil {
			if !history {
				cl.mu.Unlock()
			}
			u.deadLetter(ctx, d, err)
			continue
		}
		topic, window := liveTopic, liveWin
		if history {
			topic, window = resumeTopic, resumeWin
			n := 0
			for i := range recs {
				n += len(recs[i].Points)
			}
			// Real-time first: wait while the live channel is busy, then
			// for the rate budget.
			for len(liveWin) > cap(liveWin)/2 && ctx.Err() == nil {
				sleepCtx(ctx, 5*time.Millisecond)
			}
			if err := pace.wait(ctx, n); err != nil {
				return nil
			}
		}
		p := pending{d: d, records: len(recs), sent: time.Now()}
		var tooBig error
		buf, tooBig = u.posts(buf, recs, history, u.publisher(client, topic, &p))
		if !history {
			cl.mu.Unlock()
		}
		if tooBig != nil {
			// nothing was posted: a single record over the cloud's limit
			// can never be delivered; keep it for inspection
			u.deadLetter(ctx, d, tooBig)
			continue
		}
		u.m.postedRecords.Add(float64(len(recs)))
		if history {
			u.m.resumedRecords.Add(float64(len(recs)))
		}
		select {
		case window <- p:
		case <-ctx.Done():
			return nil
		}
	}
}

// pacer spaces the backlog's posts to a rate in points per second, with up
// to a second's burst.
type pacer struct {
	rate float64
	next time.Time
}

func (p *pacer) wait(ctx context.Context, points int) error {
	now := time.Now()
	if p.next.Before(now.Add(-time.Second)) {
		p.next = now.Add(-time.Second)
	}
	if d := p.next.Sub(now); d > 0 {
		if !sleepCtx(ctx, d) {
			return ctx.Err()
		}
	}
	p.next = p.next.Add(time.Duration(float64(points) / p.rate * float64(time.Second)))
	return nil
}

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// posts encodes recs as one post, or, when that is over MaxPayload, as
// several smaller ones (halving until each fits), and hands each payload to
// publish in record order; resume picks the resume/batch method. A single
// record over the limit is an error and nothing is published.
func (u *Uplink) posts(buf []byte, recs []telemetry.Record, resume bool, publish func(id uint64, payload []byte)) ([]byte, error) {
	encode := enos.AppendPostBatch
	if resume {
		encode = enos.AppendResumeBatch
	}
	id := u.nextID.Add(1)
	buf = encode(buf[:0], id, u.o.Gateway, u.epoch.Load(), recs)
	if len(buf) <= u.o.MaxPayload { // the common case: one post
		publish(id, append([]byte(nil), buf...)) // paho keeps the payload until PUBACK
		return buf, nil
	}
	var parts [][]telemetry.Record
	var split func(rs []telemetry.Record) error
	split = func(rs []telemetry.Record) error {
		buf = encode(buf[:0], 0, u.o.Gateway, u.epoch.Load(), rs)
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
		id := u.nextID.Add(1)
		buf = encode(buf[:0], id, u.o.Gateway, u.epoch.Load(), part)
		publish(id, append([]byte(nil), buf...)) // paho keeps the payload until PUBACK
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
	if ch, ok := u.waiters.Load(r.ID); ok {
		select {
		case ch.(chan enos.Reply) <- r:
		default: // a duplicate reply
		}
	}
	if r.Code != 200 && !strings.HasPrefix(r.ID, "r") { // requests' callers judge their replies
		u.o.Logger.Error("cloud rejected a post", "id", r.ID, "code", r.Code, "message", r.Message)
		if r.Code >= 400 && r.Code < 500 {
			u.refusal.Store(&refusal{msg: fmt.Sprintf("%d %s", r.Code, r.Message), at: time.Now(), fenced: strings.HasPrefix(r.Message, "fenced")})
		}
	}
}

type uplinkMetrics struct {
	connected                                                             prometheus.Gauge
	sessionErrors, postedRecords, postedBytes, ackedRecords, deadLettered prometheus.Counter
	resumedRecords, tapRecords                                            prometheus.Counter
	ackSeconds                                                            prometheus.Histogram
	replies, commands                                                     *prometheus.CounterVec
}

func newUplinkMetrics(r prometheus.Registerer) *uplinkMetrics {
	m := &uplinkMetrics{
		connected:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "edged_uplink_connected", Help: "1 while the MQTT session to the cloud is up."}),
		sessionErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_session_errors_total", Help: "Cloud sessions that failed (connect refused, connection lost, PUBACK late)."}),
		postedRecords:  prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_posted_records_total", Help: "Records posted (including re-posts after a failure)."}),
		resumedRecords: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_resumed_records_total", Help: "Records posted as history on resume/batch (queued before the session began, or older than resume_after)."}),
		tapRecords:     prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_live_ahead_records_total", Help: "Real-time records posted from the producer's tap, ahead of the ordered consumer."}),
		postedBytes:    prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_posted_bytes_total", Help: "Payload bytes posted."}),
		ackedRecords:   prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_acked_records_total", Help: "Records acknowledged by the cloud (PUBACK) and removed from the bus."}),
		deadLettered:   prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_uplink_dead_lettered_total", Help: "Bus messages that could not be decoded, moved to the dead-letter queue."}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edged_uplink_ack_duration_seconds", Help: "Time from posting to PUBACK.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 5},
		}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_uplink_replies_total", Help: "Replies from the cloud by result code."}, []string{"code"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_commands_total",
			Help: "Commands from the cloud by the reply code edged answered (200, 400, 403, 404, 501, 502, 503, 504, ...), or unexpected (a message that is not a command)."}, []string{"result"}),
	}
	if r != nil {
		r.MustRegister(m.connected, m.sessionErrors, m.postedRecords, m.resumedRecords, m.tapRecords, m.postedBytes, m.ackedRecords, m.deadLettered, m.ackSeconds, m.replies, m.commands)
	}
	return m
}
