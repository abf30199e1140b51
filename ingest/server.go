// Package ingest is ingestd's cloud side: an embedded MQTT broker (mochi)
// that speaks the EnOS device protocol over mutual TLS, verifies device
// logins against a registry, stores measure point posts durably with
// de-duplication and fencing, and serves what it stored over HTTP.
//
// The guarantee to the gateway: a PUBACK means the post was processed for
// good — stored durably, or refused with a final (4xx) code in its reply.
// A store failure withholds the PUBACK, so the gateway sends again.
package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/cloudlink/enos"
)

// Config is one ingest service.
type Config struct {
	MQTTListen string // "127.0.0.1:8883": MQTT over TLS, client certificates required
	HTTPListen string // "127.0.0.1:8080": the query API, /healthz, /metrics
	DataDir    string // the embedded store: DataDir/ingest.db

	// Store, if set, is used instead of the embedded store (and DataDir);
	// it stays the caller's to close. This is where another Store
	// implementation (PostgreSQL) plugs in.
	Store Store

	CertFile, KeyFile string // the server's certificate and key (PEM)
	// ClientCAFile holds the CA certificates (PEM) that client certificates
	// must chain to. Mutual TLS is required for every connection; a secret
	// login needs a valid client certificate too.
	ClientCAFile string

	RegistryFile string // devices allowed to connect (see Registry)
	// TopologyFile persists the sub-devices gateways add with
	// thing/topo/add; default DataDir/topology.json (in memory only when
	// there is no DataDir).
	TopologyFile string
	// ModelsDir holds the versions of the products' thing models (see
	// ModelStore); default DataDir/models (in memory only when there is
	// no DataDir).
	ModelsDir string

	// MaxPayload bounds a request's payload; default 512 KiB. A larger
	// one, up to twice the size, is answered with code 413 (and
	// acknowledged: sending it again cannot help, the gateway must split
	// it); an MQTT packet beyond that closes the connection.
	MaxPayload int
	// MaxItems bounds the items of one batch post; default 10000.
	MaxItems int
	// MaxConns bounds the open MQTT connections; default 10000. ConnRatePerIP
	// bounds new connections per second from one IP address (burst
	// ConnBurstPerIP); default 20/s, burst 100; negative disables. Past
	// either, a connection is closed before its TLS handshake and counted
	// (reasons too_many_connections, connection_rate), so a flood from one
	// place does not crowd out other clients.
	MaxConns       int
	ConnRatePerIP  float64
	ConnBurstPerIP int
	// LoginMaxSkew is how far a secret login's timestamp may be from the
	// server's clock; default 1h; negative disables the check. The login
	// travels inside mutual TLS, so the timestamp guards against replay by
	// a holder of the password, not by an eavesdropper.
	LoginMaxSkew time.Duration
	// Now is the clock for login timestamps and for items posted without a
	// time; default time.Now.
	Now func() time.Time
	// Gatherer is what /metrics serves; default the Registerer given to New
	// if it is also a Gatherer (a *prometheus.Registry is both). With
	// neither, /metrics is not served.
	Gatherer prometheus.Gatherer
	// AdminTokenFile holds the bearer token of the registry API
	// (/api/v1/registry/...); New reads it (trimmed) and fails when it is
	// missing or empty. Without it the registry API is disabled.
	AdminTokenFile string
}

func (c *Config) setDefaults() {
	if c.MaxPayload <= 0 {
		c.MaxPayload = 512 << 10
	}
	if c.MaxItems <= 0 {
		c.MaxItems = enos.DefaultLimits.MaxItems
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 10000
	}
	if c.ConnRatePerIP == 0 {
		c.ConnRatePerIP = 20
	}
	if c.ConnBurstPerIP <= 0 {
		c.ConnBurstPerIP = 100
	}
	if c.LoginMaxSkew == 0 {
		c.LoginMaxSkew = time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TopologyFile == "" && c.DataDir != "" {
		c.TopologyFile = filepath.Join(c.DataDir, "topology.json")
	}
	if c.ModelsDir == "" && c.DataDir != "" {
		c.ModelsDir = filepath.Join(c.DataDir, "models")
	}
}

// Server is the ingest service. Build it with New, run it once with Run.
type Server struct {
	cfg      Config
	log      *slog.Logger
	tls      *tls.Config
	reg      *Registry
	regToken []byte // the registry API's bearer token; nil: the API is disabled
	metrics  *metrics
	gatherer prometheus.Gatherer // nil: /metrics is not served
	limits   enos.Limits
	topo     *Topology
	sess     sessions
	// senders: the newest sender epoch each connection posted with, so
	// commands go to the active node of an HA pair (the standby, logged in
	// with the same identity, posts nothing)
	senders sync.Map // *mqtt.Client → uint64
	cmds    commandWaiters
	// models: the thing models; nil on a scale-out worker (requests for
	// them are answered 501).
	models *ModelStore

	// scaleOut: a worker behind an external broker (see Worker): no
	// connections of its own, so no sub-device sessions.
	scaleOut bool
	// publish sends a reply: through the embedded broker, or a worker's
	// client of the external one.
	publish func(topic string, payload []byte) error

	store    Store
	broker   *mqtt.Server
	brokerUp atomic.Bool
	started  atomic.Bool
	ready    chan struct{}
	mqttAddr net.Addr
	httpAddr net.Addr
}

// New checks the config and reads its files (certificates, registry); it
// opens no socket and no store. Metrics are registered with reg (a nil reg
// gets a registry of the server's own); /metrics serves cfg.Gatherer.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.MQTTListen == "" || cfg.HTTPListen == "":
		return nil, errors.New("ingest: MQTTListen and HTTPListen are required")
	case cfg.DataDir == "" && cfg.Store == nil:
		return nil, errors.New("ingest: DataDir is required")
	case cfg.CertFile == "" || cfg.KeyFile == "" || cfg.ClientCAFile == "":
		return nil, errors.New("ingest: CertFile, KeyFile and ClientCAFile are required (mutual TLS)")
	case cfg.RegistryFile == "":
		return nil, errors.New("ingest: RegistryFile is required")
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("ingest: server certificate: %w", err)
	}
	caPEM, err := os.ReadFile(cfg.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("ingest: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("ingest: client CA %s: no PEM certificate", cfg.ClientCAFile)
	}
	registry, err := LoadRegistry(cfg.RegistryFile)
	if err != nil {
		return nil, err
	}
	admin, err := readAdminToken(cfg.AdminTokenFile)
	if err != nil {
		return nil, err
	}
	topo, err := OpenTopology(cfg.TopologyFile)
	if err != nil {
		return nil, err
	}
	models, err := OpenModelStore(cfg.ModelsDir)
	if err != nil {
		return nil, err
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("ingest: metrics: %w", err)
	}
	g := cfg.Gatherer
	if g == nil {
		g, _ = reg.(prometheus.Gatherer)
	}
	return &Server{
		cfg: cfg,
		log: log,
		tls: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
		},
		reg:      registry,
		regToken: admin,
		topo:     topo,
		models:   models,
		metrics:  m,
		gatherer: g,
		limits:   enos.Limits{MaxItems: cfg.MaxItems},
		ready:    make(chan struct{}),
	}, nil
}

// Ready is closed once Run has bound its listeners and serves.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// MQTTAddr is the bound MQTT address; nil before Ready.
func (s *Server) MQTTAddr() net.Addr {
	select {
	case <-s.ready:
		return s.mqttAddr
	default:
		return nil
	}
}

// HTTPAddr is the bound HTTP address; nil before Ready.
func (s *Server) HTTPAddr() net.Addr {
	select {
	case <-s.ready:
		return s.httpAddr
	default:
		return nil
	}
}

// Run opens the store, binds both listeners and serves until ctx ends;
// then it stops the broker (waiting for posts being stored), the HTTP
// server and the store, and returns nil. A failure to start is returned at
// once. Run may be called once.
func (s *Server) Run(ctx context.Context) (err error) {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("ingest: Run called twice")
	}
	if s.cfg.Store != nil {
		s.store = s.cfg.Store
	} else {
		if err := os.MkdirAll(s.cfg.DataDir, 0o750); err != nil {
			return fmt.Errorf("ingest: data dir: %w", err)
		}
		store, err := OpenBoltStore(filepath.Join(s.cfg.DataDir, "ingest.db"))
		if err != nil {
			return err
		}
		s.store = store
		defer func() {
			if cerr := store.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("ingest: close store: %w", cerr)
			}
		}()
	}

	mln, err := net.Listen("tcp", s.cfg.MQTTListen)
	if err != nil {
		return fmt.Errorf("ingest: mqtt listen: %w", err)
	}
	hln, err := net.Listen("tcp", s.cfg.HTTPListen)
	if err != nil {
		mln.Close()
		return fmt.Errorf("ingest: http listen: %w", err)
	}
	s.mqttAddr, s.httpAddr = mln.Addr(), hln.Addr()

	caps := mqtt.NewDefaultServerCapabilities()
	// The hard limit of a packet: twice the payload limit plus room for
	// the topic and headers. Between MaxPayload and this, a post gets a 413.
	caps.MaximumPacketSize = uint32(min(2*s.cfg.MaxPayload+64<<10, math.MaxInt32))
	s.broker = mqtt.New(&mqtt.Options{
		InlineClient: true, // replies are published by the server itself
		Capabilities: caps,
		Logger:       s.log.With("component", "mqtt"),
	})
	if err := s.broker.AddHook(&hook{s: s}, nil); err != nil {
		mln.Close()
		hln.Close()
		return err
	}
	quiet := newLogOnce(10 * time.Second) // a flood is counted in full, logged once per reason per 10 s
	tl := newTLSListener("enos-tls", mln, s.tls, func(reason string, err error) {
		s.metrics.connRefused.WithLabelValues(reason).Inc()
		if ok, held := quiet.allow(reason, time.Now()); ok {
			s.log.Warn("connection refused before login", "reason", reason, "error", err, "similar_refusals_not_logged", held)
		}
	})
	tl.guard = newConnGuard(s.cfg.MaxConns, s.cfg.ConnRatePerIP, s.cfg.ConnBurstPerIP)
	if err := s.broker.AddListener(tl); err != nil {
		mln.Close()
		hln.Close()
		return err
	}
	if err := s.broker.Serve(); err != nil {
		s.broker.Close()
		hln.Close()
		return fmt.Errorf("ingest: mqtt: %w", err)
	}
	s.publish = func(topic string, payload []byte) error { return s.broker.Publish(topic, payload, false, 1) }
	s.brokerUp.Store(true)

	hs := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Serve(hln) }()
	s.log.Info("ingest serving", "mqtt", s.mqttAddr.String(), "http", s.httpAddr.String(), "devices", s.reg.Len())
	close(s.ready)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-httpDone:
		serveErr = fmt.Errorf("ingest: http: %w", serveErr)
	}
	// Stop the broker first: Close waits for every client's goroutine, so
	// no post is half-processed when the store closes.
	s.brokerUp.Store(false)
	s.broker.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if serveErr == nil {
		<-httpDone
	}
	s.log.Info("ingest stopped")
	return serveErr
}

// hook connects the broker to the server: login, topic ACL, posts.
type hook struct {
	mqtt.HookBase
	s *Server
}

func (h *hook) ID() string { return "enos" }

func (h *hook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnPublish || b == mqtt.OnDisconnect
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	dev, reason := h.s.authenticate(cl, pk)
	if reason != "" {
		h.s.metrics.connRefused.WithLabelValues(reason).Inc()
		h.s.log.Warn("login refused", "reason", reason, "username", string(pk.Connect.Username),
			"client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote)
		return false
	}
	// Sessions are per device: the broker keys them by client id, so the
	// id is namespaced with the device's identity, and one device cannot
	// take over another's session by choosing the same client id.
	cl.ID = dev.ProductKey + "/" + dev.DeviceKey + "/" + cl.ID
	h.s.metrics.connAccepted.Inc()
	h.s.log.Debug("login", "product_key", dev.ProductKey, "device_key", dev.DeviceKey, "remote", cl.Net.Remote)
	return true
}

func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	ok := h.s.allowed(cl, topic, write)
	if !ok {
		action := "subscribe"
		if write {
			action = "publish"
		}
		h.s.metrics.aclDenied.WithLabelValues(action).Inc()
		h.s.log.Warn("topic not allowed", "action", action, "topic", topic, "username", cl.Properties.Username)
	}
	return ok
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // our own replies
	}
	return pk, h.s.processPublish(cl, pk)
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	h.s.sess.end(cl) // its sub-devices' logins end with the connection
	h.s.senders.Delete(cl)
	if errors.Is(err, packets.ErrPacketTooLarge) {
		h.s.metrics.rejected.WithLabelValues(rejectedPacketLarge).Inc()
		h.s.log.Warn("packet over the hard limit: connection closed", "username", cl.Properties.Username, "limit", 2*h.s.cfg.MaxPayload)
	}
}

// authenticate checks a CONNECT: the username names a registered device;
// with a password it is an EnOS secret login, without one a certificate
// login. reason is "" when the login is good.
func (s *Server) authenticate(cl *mqtt.Client, pk packets.Packet) (*RegistryDevice, string) {
	dk, pkey, err := enos.ParseUsername(string(pk.Connect.Username))
	if err != nil {
		return nil, refusedBadUsername
	}
	dev, ok := s.reg.Device(pkey, dk)
	if !ok {
		return nil, refusedUnknownDevice
	}
	if dev.Disabled {
		return nil, refusedDisabled
	}
	var cert *x509.Certificate
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			cert = certs[0]
		}
	}
	// A certificate bound to a device logs in as that device only.
	bound, isBound := (*RegistryDevice)(nil), false
	if cert != nil {
		bound, isBound = s.reg.CertBinding(cert)
		if isBound && (bound.ProductKey != dev.ProductKey || bound.DeviceKey != dev.DeviceKey) {
			return nil, refusedCertBoundElsewhere
		}
	}
	if len(pk.Connect.Password) > 0 {
		if reason := CheckSecretLogin(dev, pk.Connect.ClientIdentifier, string(pk.Connect.Password), s.cfg.Now(), s.cfg.LoginMaxSkew); reason != "" {
			return nil, reason
		}
		return dev, ""
	}
	if !dev.CertLogin {
		return nil, refusedNoCertLogin
	}
	switch {
	case cert == nil:
		return nil, refusedCertMismatch
	case dev.CertSHA256 != "" || dev.CertSerial != "":
		if !isBound { // bound != dev was refused above
			return nil, refusedCertMismatch
		}
	case cert.Subject.CommonName != dk:
		return nil, refusedCertMismatch
	}
	return dev, ""
}

// CheckSecretLogin checks an EnOS secret login of dev (the device its
// username names, enabled): the client id's options (securemode=2, a
// supported sign method, a timestamp within maxSkew of now; negative
// maxSkew disables that check) and the signature over the sorted pairs of
// the client id's first part, device key, product key and timestamp,
// followed by the secret. It returns "" when the login is good, else the
// refusal reason counted in ingest_connections_refused_total. It is shared
// with the Mosquitto plugin of the scale-out setup (cmd/mosquitto-enos-auth).
func CheckSecretLogin(dev *RegistryDevice, clientID, password string, now time.Time, maxSkew time.Duration) string {
	if dev.Secret == "" {
		return refusedNoSecret
	}
	cid, opts, err := enos.ParseClientID(clientID)
	if err != nil || opts["securemode"] != enos.SecureModeSecret || !enos.SignMethodSupported(opts["signmethod"]) || opts["timestamp"] == "" {
		return refusedBadClientID
	}
	if reason := checkTimestamp(opts["timestamp"], now, maxSkew); reason != "" {
		return reason
	}
	if !enos.VerifySign(opts["signmethod"], enos.LoginParams(cid, dev.ProductKey, dev.DeviceKey, opts["timestamp"]), dev.Secret, password) {
		return refusedBadSignature
	}
	return ""
}

// checkTimestamp checks a login timestamp (unix ms, maybe with a fraction).
func checkTimestamp(ts string, now time.Time, maxSkew time.Duration) string {
	ms, err := strconv.ParseFloat(ts, 64)
	if err != nil || math.IsNaN(ms) || math.IsInf(ms, 0) {
		return refusedBadClientID
	}
	if maxSkew < 0 {
		return ""
	}
	skew := time.Duration(math.Abs(float64(now.UnixMilli())-ms)) * time.Millisecond
	if skew > maxSkew || skew < 0 { // < 0: overflowed
		return refusedStaleTimestamp
	}
	return ""
}

// identity is the device a connection logged in as.
func (s *Server) identity(cl *mqtt.Client) (*RegistryDevice, bool) {
	dk, pk, err := enos.ParseUsername(string(cl.Properties.Username))
	if err != nil {
		return nil, false
	}
	d, ok := s.reg.Device(pk, dk)
	return d, ok && !d.Disabled // a device disabled since its login acts no more
}

// allowed is the topic ACL. A device may publish on its own
// /sys/{pk}/{dk}/... and /ext/session/{pk}/{dk}/... topics, and subscribe
// to the "_reply" topics among them and to its own commands
// (/sys/{pk}/{dk}/thing/service/..., wildcards allowed after "service/").
// A gateway may also publish and subscribe on the /sys/ topics of the
// sub-devices in its topology (posting there also needs the sub-device to
// be logged in: processPublish answers that with a reply code).
func (s *Server) allowed(cl *mqtt.Client, topic string, write bool) bool {
	dev, ok := s.identity(cl)
	if !ok {
		return false
	}
	if pk, dk, suffix, ok := enos.ParseTopic(topic); ok {
		if (pk != dev.ProductKey || dk != dev.DeviceKey) && !s.inTopology(dev, pk, dk) {
			return false
		}
		return write && !strings.ContainsAny(suffix, "+#") || !write && subscribable(suffix)
	}
	if pk, dk, suffix, ok := enos.ParseSessionTopic(topic); ok {
		if pk != dev.ProductKey || dk != dev.DeviceKey {
			return false
		}
		return write && !strings.ContainsAny(suffix, "+#") || !write && strings.HasSuffix(suffix, enos.ReplySuffix) && !strings.ContainsAny(suffix, "+#")
	}
	return false
}

func subscribable(suffix string) bool {
	if strings.HasPrefix(suffix, enos.SuffixServicePrefix) {
		return true // commands to the device; wildcards only below service/
	}
	return strings.HasSuffix(suffix, enos.ReplySuffix) && !strings.ContainsAny(suffix, "+#")
}

// processPublish handles one PUBLISH from a device.
//
// mochi (v2.7.9, server.go processPublish) calls the OnPublish hooks inline,
// in the client's read goroutine, and writes the PUBACK only after they
// return — and not at all when a hook returns packets.ErrRejectPacket. So
// the store's commit (fsync'd) happens before the PUBACK can be sent:
// PUBACK ⇒ durably stored (or refused for good, with a 4xx reply). On a
// store failure we return ErrRejectPacket: no PUBACK, the gateway sends
// again. Handled requests return packets.CodeSuccessIgnore, which still
// acknowledges but keeps the broker from forwarding the post to
// subscribers or retaining it.
func (s *Server) processPublish(cl *mqtt.Client, pk packets.Packet) error {
	dev, ok := s.identity(cl)
	if !ok { // cannot happen after login; refuse rather than guess
		return packets.ErrRejectPacket
	}
	return s.handle(cl, dev, pk.TopicName, pk.Payload)
}

// handle processes one request of device dev (the identity it logged in
// as) that came on connection cl. It returns packets.ErrRejectPacket when
// the request must not be acknowledged (the store failed: the device sends
// again), packets.CodeSuccessIgnore when it was handled for good.
func (s *Server) handle(cl conn, dev *RegistryDevice, topic string, payload []byte) error {
	if tpk, tdk, suffix, ok := enos.ParseTopic(topic); ok {
		self := tpk == dev.ProductKey && tdk == dev.DeviceKey
		if suffix == enos.SuffixTSLTemplateGet {
			// A model is the product's, and reading it changes nothing: a
			// gateway asks for a sub-device's (in its topology: the ACL
			// checked) without logging it in, as it posts for it with
			// allowOfflineSubDevice.
			return s.tslTemplateGet(topic, tpk, payload)
		}
		if strings.HasSuffix(suffix, enos.ReplySuffix) {
			if strings.HasPrefix(suffix, enos.SuffixServicePrefix) {
				s.commandReply(tpk, tdk, topic, payload) // a device answering a command
			}
			return packets.CodeSuccessIgnore // never forwarded
		}
		// A gateway acts on a sub-device's topic only while it is logged in.
		if !self && !s.sess.online(cl, devKey{tpk, tdk}) {
			id, _ := enos.PeekID(payload)
			s.reject(topic, id, rejectedOffline, enos.CodeForbidden,
				fmt.Sprintf("sub-device %s/%s is not logged in: send combine.login first", tpk, tdk))
			return packets.CodeSuccessIgnore
		}
		switch {
		case suffix == enos.SuffixPost, suffix == enos.SuffixResume, suffix == enos.SuffixPostBatch, suffix == enos.SuffixResumeBatch:
			return s.post(cl, dev, topic, tpk, tdk, suffix, payload)
		case !s.checkSize(topic, payload):
			return packets.CodeSuccessIgnore
		case suffix == enos.SuffixAttributeUpdate:
			return s.attributeUpdate(topic, tpk, tdk, payload)
		case strings.HasPrefix(suffix, "thing/event/") && strings.HasSuffix(suffix, "/post") && len(suffix) > len("thing/event//post"):
			return s.eventPost(topic, tpk, tdk, strings.TrimSuffix(strings.TrimPrefix(suffix, "thing/event/"), "/post"), payload)
		case s.scaleOut && (suffix == enos.SuffixTopoAdd || suffix == enos.SuffixTopoDelete):
			id, _ := enos.PeekID(payload)
			s.reject(topic, id, rejectedUnsupported, enos.CodeNotImplemented,
				"thing/topo/add|delete are not available from ingestd workers behind an external broker (each worker would keep its own topology): declare sub-devices in the registry")
			return packets.CodeSuccessIgnore
		case self && suffix == enos.SuffixTopoAdd:
			s.topoAdd(cl, dev, topic, payload)
			return packets.CodeSuccessIgnore
		case self && suffix == enos.SuffixTopoDelete:
			s.topoDelete(dev, topic, payload)
			return packets.CodeSuccessIgnore
		case self && suffix == enos.SuffixTopoGet:
			s.topoGet(dev, topic, payload)
			return packets.CodeSuccessIgnore
		}
	} else if spk, sdk, suffix, ok := enos.ParseSessionTopic(topic); ok && spk == dev.ProductKey && sdk == dev.DeviceKey {
		if !s.checkSize(topic, payload) {
			return packets.CodeSuccessIgnore
		}
		if s.scaleOut {
			id, _ := enos.PeekID(payload)
			s.reject(topic, id, rejectedUnsupported, enos.CodeNotImplemented,
				"sub-device sessions (combine.*) need the connection they last for: not available from ingestd workers behind an external broker; declare sub-devices in the registry and post with allowOfflineSubDevice")
			return packets.CodeSuccessIgnore
		}
		switch suffix {
		case enos.SuffixCombineLogin:
			s.combineLogin(cl, dev, topic, payload)
			return packets.CodeSuccessIgnore
		case enos.SuffixCombineLoginBatch:
			s.combineLoginBatch(cl, dev, topic, payload)
			return packets.CodeSuccessIgnore
		case enos.SuffixCombineLogout:
			s.combineLogout(cl, dev, topic, payload)
			return packets.CodeSuccessIgnore
		}
	}
	id, _ := enos.PeekID(payload)
	s.reject(topic, id, rejectedUnsupported, enos.CodeNotImplemented, "not handled by this ingest: "+topic)
	return packets.CodeSuccessIgnore
}

// checkSize refuses a request over MaxPayload with a 413 reply.
func (s *Server) checkSize(topic string, payload []byte) bool {
	if len(payload) <= s.cfg.MaxPayload {
		return true
	}
	id, _ := enos.PeekID(payload)
	s.reject(topic, id, rejectedTooLarge, enos.CodeTooLarge,
		fmt.Sprintf("payload of %d bytes is over the limit of %d", len(payload), s.cfg.MaxPayload))
	return false
}

// inTopology reports whether gateway gw may act for pk/dk: declared in the
// registry or added with thing/topo/add.
func (s *Server) inTopology(gw *RegistryDevice, pk, dk string) bool {
	return gw.Gateway && (gw.Declares(pk, dk) || s.topo.Has(devKey{gw.ProductKey, gw.DeviceKey}, pk, dk))
}

// post stores a measure point post and replies.
func (s *Server) post(cl conn, dev *RegistryDevice, topic, tpk, tdk, suffix string, payload []byte) error {
	if len(payload) > s.cfg.MaxPayload {
		id, _ := enos.PeekID(payload)
		s.reject(topic, id, rejectedTooLarge, enos.CodeTooLarge,
			fmt.Sprintf("payload of %d bytes is over the limit of %d: split it", len(payload), s.cfg.MaxPayload))
		return packets.CodeSuccessIgnore
	}
	var (
		b            Batch
		id           string
		method       string
		err          error
		allowOffline bool
		wantBatch    = suffix == enos.SuffixPostBatch || suffix == enos.SuffixResumeBatch
	)
	if wantBatch {
		var pb *enos.PostBatch
		if pb, err = s.limits.ParsePostBatch(payload); err == nil {
			id, method, b.Items, allowOffline = pb.ID, pb.Method, pb.Items, pb.AllowOfflineSubDevice
			if pb.Sender != nil {
				b.Gateway, b.Epoch = pb.Sender.Gateway, pb.Sender.Epoch
			}
		}
	} else {
		var p *enos.Post
		if p, err = s.limits.ParsePost(payload); err == nil {
			id, method, b.Items = p.ID, p.Method, []enos.Item{p.Item}
			if p.Sender != nil {
				b.Gateway, b.Epoch = p.Sender.Gateway, p.Sender.Epoch
			}
		}
	}
	if err != nil {
		id, _ := enos.PeekID(payload)
		if errors.Is(err, enos.ErrLimit) {
			s.reject(topic, id, rejectedLimit, enos.CodeTooLarge, err.Error())
		} else {
			s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, err.Error())
		}
		return packets.CodeSuccessIgnore
	}
	resume := suffix == enos.SuffixResume || suffix == enos.SuffixResumeBatch
	if method != "" && strings.Contains(method, ".resume") != resume {
		s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, fmt.Sprintf("method %s does not belong on topic %s", method, topic))
		return packets.CodeSuccessIgnore
	}
	now := s.cfg.Now().UnixMilli()
	for i := range b.Items {
		it := &b.Items[i]
		if it.ProductKey == "" {
			it.ProductKey, it.DeviceKey = tpk, tdk
		} else if !enos.ValidKey(it.ProductKey) || !enos.ValidKey(it.DeviceKey) {
			s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, fmt.Sprintf("params[%d]: invalid productKey or deviceKey", i))
			return packets.CodeSuccessIgnore
		}
		// A gateway posts for the sub-devices in its topology: logged in
		// (combine.login), or offline when the batch allows it
		// (allowOfflineSubDevice, as edged sends); any other device posts
		// only for itself.
		if it.ProductKey != dev.ProductKey || it.DeviceKey != dev.DeviceKey {
			switch {
			case !dev.Gateway:
				s.reject(topic, id, rejectedForbidden, enos.CodeForbidden,
					fmt.Sprintf("params[%d]: %s/%s is not a gateway and may not post for %s/%s", i, dev.ProductKey, dev.DeviceKey, it.ProductKey, it.DeviceKey))
				return packets.CodeSuccessIgnore
			case !s.inTopology(dev, it.ProductKey, it.DeviceKey):
				s.reject(topic, id, rejectedTopology, enos.CodeForbidden,
					fmt.Sprintf("params[%d]: %s/%s is not in the topology of gateway %s/%s: add it (thing/topo/add) or declare it in the registry", i, it.ProductKey, it.DeviceKey, dev.ProductKey, dev.DeviceKey))
				return packets.CodeSuccessIgnore
			case !allowOffline && !s.sess.online(cl, devKey{it.ProductKey, it.DeviceKey}) && (it.ProductKey != tpk || it.DeviceKey != tdk):
				s.reject(topic, id, rejectedOffline, enos.CodeForbidden,
					fmt.Sprintf("params[%d]: sub-device %s/%s is not logged in (combine.login) and the post does not set allowOfflineSubDevice", i, it.ProductKey, it.DeviceKey))
				return packets.CodeSuccessIgnore
			}
		}
		for j := range it.Points {
			if strings.IndexByte(it.Points[j].ID, 0) >= 0 {
				s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, fmt.Sprintf("params[%d]: measure point id with NUL", i))
				return packets.CodeSuccessIgnore
			}
		}
		if it.Time == 0 {
			it.Time = now
		}
	}
	if strings.IndexByte(b.Gateway, 0) >= 0 {
		s.reject(topic, id, rejectedMalformed, enos.CodeMalformed, "edged.gateway with NUL")
		return packets.CodeSuccessIgnore
	}

	start := time.Now()
	// Background: a post being stored is finished even during shutdown
	// (the broker waits for it before the store closes).
	res, err := s.store.Append(context.Background(), &b)
	s.metrics.appendTime.Observe(time.Since(start).Seconds())
	var fe *FencedError
	switch {
	case errors.As(err, &fe):
		s.reject(topic, id, rejectedFenced, enos.CodeForbidden, "fenced: "+fe.Error())
		return packets.CodeSuccessIgnore
	case err != nil:
		s.log.Error("store failed: post not acknowledged", "topic", topic, "id", id, "error", err)
		s.reject(topic, id, rejectedStore, enos.CodeInternal, "store failed, send again")
		return packets.ErrRejectPacket
	}
	s.metrics.posts.Inc()
	if mc, ok := cl.(*mqtt.Client); ok && b.Epoch != 0 {
		if e, seen := s.senders.Load(mc); !seen || e.(uint64) < b.Epoch {
			s.senders.Store(mc, b.Epoch)
		}
	}
	if res.Duplicates == 0 { // a re-delivery's age says nothing of the pipeline's latency
		storedAt := time.Now().UnixMilli()
		for i := range b.Items {
			if b.Items[i].Origin != nil {
				s.metrics.latency.Observe(float64(storedAt-b.Items[i].Time) / 1000)
			}
		}
	}
	s.metrics.items.Add(float64(res.Stored))
	s.metrics.duplicates.Add(float64(res.Duplicates))
	s.metrics.points.Add(float64(res.Points))
	s.reply(topic, enos.Reply{ID: id, Code: enos.CodeOK})
	return packets.CodeSuccessIgnore
}

// reject counts a refused request and answers it when its id is known.
func (s *Server) reject(topic, id, reason string, code int, msg string) {
	s.metrics.rejected.WithLabelValues(reason).Inc()
	s.log.Warn("request rejected", "topic", topic, "id", id, "reason", reason, "code", code, "message", msg)
	if id != "" {
		s.reply(topic, enos.Reply{ID: id, Code: code, Message: msg})
	}
}

// reply publishes r on topic + "_reply" through the broker's inline client.
// It never blocks on a slow subscriber: mochi queues the message on each
// subscriber's outbound channel and drops it if that queue is full.
func (s *Server) reply(topic string, r enos.Reply) {
	payload := enos.AppendReply(make([]byte, 0, 64+len(r.Message)), r)
	if err := s.publish(topic+enos.ReplySuffix, payload); err != nil {
		s.log.Warn("reply not published", "topic", topic, "error", err)
	}
}
