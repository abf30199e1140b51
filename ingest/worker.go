package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/cloudlink/enos"
)

// WorkerConfig is ingestd in scale-out mode: one of several workers behind
// an external MQTT broker (Mosquitto) that terminates the devices' mutual
// TLS, writing to a shared store (PostgreSQL).
//
// The broker authenticates devices by their client certificate and its
// ACL confines each to the topics of its own device key (see
// scripts/mosquitto.sh); the workers share the requests through a shared
// subscription ($share/{Group}/...), each request reaching one worker, and
// answer on the _reply topics. The store's de-duplication is exact across
// workers.
//
// What changes for devices: the broker's PUBACK means the broker has the
// request, not that it is stored — the reply (code 200) does. edged waits
// for it with cloud.confirm: reply. EnOS secret logins are not verified
// (Mosquitto checks the certificate; it has no EnOS signature check), and
// sub-device sessions (combine.*) and thing/topo/add|delete are refused:
// declare sub-devices in the registry. Thing models are not served:
// thing/tsltemplate/get is answered 501, as a worker has no model store
// (the models live in the data dir of one ingestd run, and workers share
// only the PostgreSQL store); serve models from an ingestd run.
type WorkerConfig struct {
	Broker   string      // tls://host:port of the external broker
	TLS      *tls.Config // the worker's client certificate and the broker's CA
	ClientID string      // unique per worker; default ingestd-{host}-{pid}
	Group    string      // shared subscription group; default "ingest"
	// Handlers is how many requests one worker processes at once; default 8.
	Handlers int

	HTTPListen   string // the query API, /healthz, /metrics
	Store        Store  // shared by the workers; required, and stays the caller's to close
	RegistryFile string

	MaxPayload int // as Config
	MaxItems   int
	Now        func() time.Time
	Gatherer   prometheus.Gatherer
}

// Worker is one scale-out worker. Build it with NewWorker, run it with Run.
type Worker struct {
	s   *Server
	cfg WorkerConfig
}

// NewWorker checks the config and reads the registry; no I/O otherwise.
func NewWorker(cfg WorkerConfig, log *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	switch {
	case cfg.Broker == "" || cfg.TLS == nil:
		return nil, errors.New("ingest worker: Broker and TLS are required")
	case cfg.Store == nil:
		return nil, errors.New("ingest worker: a shared Store (PostgreSQL) is required")
	case cfg.HTTPListen == "":
		return nil, errors.New("ingest worker: HTTPListen is required")
	case cfg.RegistryFile == "":
		return nil, errors.New("ingest worker: RegistryFile is required")
	}
	if cfg.Group == "" {
		cfg.Group = "ingest"
	}
	if cfg.Handlers <= 0 {
		cfg.Handlers = 8
	}
	if cfg.ClientID == "" {
		host, _ := os.Hostname()
		cfg.ClientID = fmt.Sprintf("ingestd-%s-%d", host, os.Getpid())
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := Config{MaxPayload: cfg.MaxPayload, MaxItems: cfg.MaxItems, Now: cfg.Now}
	c.setDefaults()
	registry, err := LoadRegistry(cfg.RegistryFile)
	if err != nil {
		return nil, err
	}
	topo, _ := OpenTopology("") // in memory, and stays empty: topo/add is refused
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("ingest worker: metrics: %w", err)
	}
	g := cfg.Gatherer
	if g == nil {
		g, _ = reg.(prometheus.Gatherer)
	}
	s := &Server{
		cfg: c, log: log, reg: registry, topo: topo, metrics: m, gatherer: g,
		limits: enos.Limits{MaxItems: c.MaxItems}, ready: make(chan struct{}),
		scaleOut: true, store: cfg.Store,
	}
	return &Worker{s: s, cfg: cfg}, nil
}

// Ready is closed once Run serves.
func (w *Worker) Ready() <-chan struct{} { return w.s.ready }

// HTTPAddr is the bound HTTP address; nil before Ready.
func (w *Worker) HTTPAddr() net.Addr { return w.s.HTTPAddr() }

// job is one request taken from the broker.
type job struct{ msg paho.Message }

// Run connects to the broker (reconnecting on its own), serves HTTP, and
// processes requests until ctx ends. A request is acknowledged to the
// broker once it is processed (stored, or refused with its reply).
func (w *Worker) Run(ctx context.Context) error {
	s, cfg := w.s, w.cfg
	hln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("ingest worker: http listen: %w", err)
	}
	s.httpAddr = hln.Addr()

	jobs := make(chan job, 4*cfg.Handlers)
	filters := map[string]byte{}
	for _, f := range []string{"/sys/+/+/thing/#", "/ext/session/+/+/#"} {
		filters["$share/"+cfg.Group+"/"+f] = 1
	}
	var client paho.Client
	opts := paho.NewClientOptions().
		AddBroker(cfg.Broker).
		SetTLSConfig(cfg.TLS).
		SetClientID(cfg.ClientID).
		// A persistent session: what the broker sent and this worker did not
		// acknowledge is sent again when it reconnects.
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true). // the handler only queues: it never waits on the client
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(5 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetKeepAlive(15 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.brokerUp.Store(false)
			s.log.Warn("broker connection lost; reconnecting", "broker", cfg.Broker, "error", err)
		}).
		SetOnConnectHandler(func(c paho.Client) {
			// Subscriptions are remade on every connect: the broker keeps
			// them in the persistent session, and this makes a first start
			// and a lost session alike.
			tok := c.SubscribeMultiple(filters, func(_ paho.Client, m paho.Message) {
				select {
				case jobs <- job{m}:
				case <-ctx.Done():
				}
			})
			go func() {
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					s.log.Error("subscription failed; reconnecting", "error", tok.Error())
					return
				}
				s.brokerUp.Store(true)
				s.log.Info("worker subscribed", "broker", cfg.Broker, "group", cfg.Group, "client_id", cfg.ClientID)
			}()
		})
	client = paho.NewClient(opts)
	s.publish = func(topic string, payload []byte) error {
		client.Publish(topic, 1, false, payload) // not awaited: the handler must not wait on the client
		return nil
	}
	client.Connect() // retries on its own (SetConnectRetry)

	var wg sync.WaitGroup
	hctx, stopHandlers := context.WithCancel(context.Background())
	for range cfg.Handlers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case j := <-jobs:
					w.process(j.msg)
				case <-hctx.Done():
					return
				}
			}
		}()
	}

	hs := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Serve(hln) }()
	s.log.Info("ingest worker serving", "broker", cfg.Broker, "http", s.httpAddr.String(), "devices", s.reg.Len())
	close(s.ready)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-httpDone:
		serveErr = fmt.Errorf("ingest worker: http: %w", serveErr)
	}
	// Finish the requests in hand, then leave: what was not acknowledged
	// goes to this worker's session again, or, when the device times out
	// waiting for its reply, is sent again (and taken by another worker).
	// No UNSUBSCRIBE first: Mosquitto 2.0.11 was seen never to deliver to
	// a shared subscription made again by the same client id after an
	// unsubscribe (e2e/scaleout_test.go, a restarted worker got nothing).
	drain := time.After(5 * time.Second)
drainLoop:
	for {
		select {
		case j := <-jobs:
			w.process(j.msg)
		case <-drain:
			break drainLoop
		default:
			break drainLoop
		}
	}
	stopHandlers()
	wg.Wait()
	client.Disconnect(500)
	s.brokerUp.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if serveErr == nil {
		<-httpDone
	}
	s.log.Info("ingest worker stopped")
	return serveErr
}

// process handles one request. The device is the topic's: the broker's ACL
// lets a device publish only on its own topics. Replies (ours, and the
// devices' answers to commands) also match the subscription and are
// skipped.
func (w *Worker) process(m paho.Message) {
	s := w.s
	defer m.Ack()
	topic := m.Topic()
	pk, dk, suffix, ok := enos.ParseTopic(topic)
	if !ok {
		pk, dk, suffix, ok = enos.ParseSessionTopic(topic)
	}
	if !ok || strings.HasSuffix(suffix, enos.ReplySuffix) {
		return
	}
	dev, known := s.reg.Device(pk, dk)
	if !known || dev.Disabled {
		id, _ := enos.PeekID(m.Payload())
		s.reject(topic, id, rejectedForbidden, enos.CodeForbidden, fmt.Sprintf("device %s/%s is not registered or is disabled", pk, dk))
		return
	}
	if err := s.handle(nil, dev, topic, m.Payload()); errors.Is(err, packets.ErrRejectPacket) {
		// The store failed and the reply says 500: the device sends again.
		s.log.Warn("request not stored", "topic", topic)
	}
}
