package ingest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/cloudlink/enos"
)

// testCA is a certificate authority made for one test (crypto/x509 only:
// the project's certs package is not a dependency of these tests).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial int64 = 100

// issue makes a leaf certificate for cn: a server certificate for 127.0.0.1,
// or a client certificate.
func (ca *testCA) issue(t testing.TB, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t testing.TB, dir string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

const testRegistry = `devices:
  - product_key: gwPK
    device_key: gwDK
    secret: gwSecret
    cert_login: true
    gateway: true
    sub_devices:
      - {product_key: subPK, device_key: subDK}
      - {product_key: meterPK, device_key: "*"}
  - {product_key: subPK, device_key: subDK, secret: subSecret}
  - {product_key: subPK, device_key: sub2, secret: sub2Secret}
  - {product_key: otherPK, device_key: stranger, secret: strangerSecret}
  - {product_key: meterPK, device_key: plain, secret: plainSecret}
  - {product_key: certPK, device_key: certOnly, cert_login: true}
`

// env is one running Server with its PKI.
type env struct {
	t       testing.TB
	ca      *testCA
	cfg     Config
	srv     *Server
	promReg *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
}

// startEnv starts a server on 127.0.0.1:0 ports; mod adjusts its config.
func startEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, "test client CA")
	certFile, keyFile := writePEM(t, dir, ca.issue(t, "ingest", true))
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, string(ca.pem))
	regFile := filepath.Join(dir, "registry.yaml")
	writeFile(t, regFile, testRegistry)
	cfg := Config{
		MQTTListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		DataDir:  filepath.Join(dir, "data"),
		CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile,
		RegistryFile: regFile,
	}
	if mod != nil {
		mod(&cfg)
	}
	e := &env{t: t, ca: ca, cfg: cfg}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *env) start() {
	t := e.t
	t.Helper()
	e.promReg = prometheus.NewRegistry()
	srv, err := New(e.cfg, testLogger(t), e.promReg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.srv, e.cancel, e.done = srv, cancel, make(chan error, 1)
	go func() { e.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-e.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready")
	}
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Error("Run did not return after cancel")
	}
	e.cancel = nil
}

// testLogger discards the server's logs unless INGEST_TEST_LOG is set.
func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("INGEST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// clientTLS is a client configuration with a certificate for cn from ca.
func (e *env) clientTLS(ca *testCA, cn string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.pem)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if ca != nil {
		// Sent whatever CAs the server asks for: Go's client would otherwise
		// send no certificate at all when it is from another CA.
		cert := ca.issue(e.t, cn, false)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg
}

// dial connects a paho client; err is the CONNECT's outcome.
func (e *env) dial(tlsCfg *tls.Config, clientID, username, password string) (paho.Client, error) {
	opts := paho.NewClientOptions().
		AddBroker("tls://" + e.srv.MQTTAddr().String()).
		SetClientID(clientID).SetUsername(username).SetPassword(password).
		SetTLSConfig(tlsCfg).
		SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).
		SetOrderMatters(false).SetCleanSession(true)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	e.t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

// login connects by secret login as pk/dk, the SDK's way (hmacsha256 label,
// timestamp with a fraction).
func (e *env) login(pk, dk, secret string) paho.Client {
	e.t.Helper()
	ts := fmt.Sprintf("%d.5", time.Now().UnixMilli())
	cid, user, pass, err := enos.MQTTLogin(dk, pk, dk, secret, "hmacsha256", ts)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.dial(e.clientTLS(e.ca, dk), cid, user, pass)
	if err != nil {
		e.t.Fatalf("login %s/%s: %v", pk, dk, err)
	}
	return c
}

// subscribe collects the replies published on topic.
func subscribe(t testing.TB, c paho.Client, topic string) <-chan enos.Reply {
	t.Helper()
	ch := make(chan enos.Reply, 100)
	tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		r, err := enos.ParseReply(m.Payload())
		if err != nil {
			t.Errorf("reply on %s: %v: %s", m.Topic(), err, m.Payload())
			return
		}
		select {
		case ch <- r:
		default:
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	return ch
}

// publish sends a QoS 1 message and reports whether the PUBACK came.
func publish(c paho.Client, topic string, payload []byte, wait time.Duration) bool {
	tok := c.Publish(topic, 1, false, payload)
	return tok.WaitTimeout(wait) && tok.Error() == nil
}

func nextReply(t testing.TB, ch <-chan enos.Reply) enos.Reply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
		return enos.Reply{}
	}
}

// metric reads a counter (with a reason or action label, or none).
func (e *env) metric(name, label string) float64 {
	mfs, err := e.promReg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == label
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// eventually retries f until it succeeds or 5 s pass.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// get fetches an API path and decodes the JSON body into v (if not nil).
func (e *env) get(path string, v any) int {
	e.t.Helper()
	resp, err := http.Get("http://" + e.srv.HTTPAddr().String() + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && !strings.HasPrefix(path, "/metrics") {
		e.t.Errorf("%s: content type %q", path, resp.Header.Get("Content-Type"))
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			e.t.Fatalf("%s: %v: %s", path, err, body)
		}
	}
	return resp.StatusCode
}
