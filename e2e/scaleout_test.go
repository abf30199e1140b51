package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/certs"
	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/internal/testsvc"
)

// TestScaleOut: edged and a plain EnOS device talk to Mosquitto (mutual
// TLS, the project's ACL); two ingestd workers share the requests through
// a shared subscription and store into one PostgreSQL. One worker is
// killed with SIGKILL and restarted mid-stream, the other stopped and
// restarted: every sequence edged assigned is stored exactly once, and
// both workers did part of the work.
func TestScaleOut(t *testing.T) {
	testsvc.Integration(t)
	s := newStack(t)
	pg := testsvc.StartPostgres(t)
	reg := filepath.Join(s.dir, "registry.yaml")
	writeFile(t, reg, `devices:
  - {product_key: gwPK, device_key: gwDK, secret: gwSecret, cert_login: true, gateway: true,
     sub_devices: [{product_key: constPK, device_key: "*"}]}
  - {product_key: meterPK, device_key: plainDK, cert_login: true}
  - {product_key: meterPK, device_key: sdkDK, secret: sdkSecret}
`)
	mq := testsvc.StartMosquitto(t, testsvc.MosquittoTLS{CAFile: s.certs.CACert, CertFile: s.certs.ServerCert, KeyFile: s.certs.ServerKey, SecretRegistry: reg})
	wCert, wKey, err := certs.IssueClient(s.certs.Dir, "worker", "ingest-worker")
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscanf(mq.Addr(), "127.0.0.1:%d", &port)
	s.mqttPort = port // edged's cloud is the broker
	httpPorts := []int{testsvc.FreePort(t), testsvc.FreePort(t)}
	s.httpPort = httpPorts[0] // queries go to worker 1
	worker := func(i int) *proc {
		p := start(t, fmt.Sprintf("worker%d", i+1), filepath.Join(binDir, "ingestd"), "worker",
			"-broker", "tls://"+mq.Addr(), "-ca", s.certs.CACert, "-cert", wCert, "-key", wKey,
			"-client-id", fmt.Sprintf("worker-%d", i+1), "-http", fmt.Sprintf("127.0.0.1:%d", httpPorts[i]),
			"-registry", reg, "-postgres", pg.DSN())
		eventually(t, 20*time.Second, fmt.Sprintf("worker %d healthy", i+1), func() error {
			if p.exited() {
				return fmt.Errorf("exited: %s", p.log.String())
			}
			var h map[string]any
			return getJSON(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPorts[i]), &h)
		})
		return p
	}
	workers := []*proc{worker(0), worker(1)}

	// A plain EnOS device (certificate login, as an SDK would connect).
	dCert, dKey, err := certs.IssueClient(s.certs.Dir, "plain", "plainDK")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, _, err := certs.ClientConfig(s.certs.CACert, dCert, dKey, "")
	if err != nil {
		t.Fatal(err)
	}
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tls://" + mq.Addr()).SetTLSConfig(tlsCfg).
		SetClientID("plainDK").SetUsername("plainDK&meterPK").SetAutoReconnect(false).SetWriteTimeout(5 * time.Second))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("plain device connect: %v\n%s", tok.Error(), mq.Log())
	}
	defer dev.Disconnect(100)
	postTopic := enos.Topic("meterPK", "plainDK", enos.SuffixPost)
	replies := make(chan enos.Reply, 10)
	if tok := dev.Subscribe(postTopic+enos.ReplySuffix, 1, func(_ paho.Client, m paho.Message) {
		if r, err := enos.ParseReply(m.Payload()); err == nil {
			replies <- r
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	now := time.Now().UnixMilli()
	dev.Publish(postTopic, 1, false, fmt.Sprintf(`{"id":"41","version":"1.0","method":"thing.measurepoint.post","params":{"measurepoints":{"temp":21.5},"time":%d}}`, now))
	select {
	case r := <-replies:
		if r.ID != "41" || r.Code != 200 {
			t.Fatalf("plain device post: reply %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("plain device post: no reply\n%s\n%s", workers[0].log.String(), workers[1].log.String())
	}
	if pts, err := s.latest("meterPK", "plainDK"); err != nil || pts["temp"].Value != 21.5 || pts["temp"].Time != now {
		t.Errorf("plain device's post stored: %+v %v", pts, err)
	}
	// A plain device with the EnOS SDK's default login (secret, signed
	// password, server-only TLS) on the secret-login listener, checked by
	// the project's Mosquitto plugin against the same registry.
	sdkLogin := func(secret string) (paho.Client, error) {
		cid, user, pass, err := enos.MQTTLogin("sdkDK", "meterPK", "sdkDK", secret, "hmacsha256", fmt.Sprintf("%d.5", time.Now().UnixMilli()))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		ca, _ := os.ReadFile(s.certs.CACert)
		pool.AppendCertsFromPEM(ca)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tls://" + mq.SecretAddr()).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}).
			SetClientID(cid).SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetWriteTimeout(5 * time.Second))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, fmt.Errorf("no CONNACK")
		}
		return c, tok.Error()
	}
	if _, err := sdkLogin("not-the-secret"); err == nil {
		t.Fatalf("a wrong signature was accepted by the broker\n%s", mq.Log())
	}
	sdk, err := sdkLogin("sdkSecret")
	if err != nil {
		t.Fatalf("secret login through the plugin: %v\n%s", err, mq.Log())
	}
	defer sdk.Disconnect(100)
	sdkTopic := enos.Topic("meterPK", "sdkDK", enos.SuffixPost)
	sdkReplies := make(chan enos.Reply, 10)
	if tok := sdk.Subscribe(sdkTopic+enos.ReplySuffix, 1, func(_ paho.Client, m paho.Message) {
		if r, err := enos.ParseReply(m.Payload()); err == nil {
			sdkReplies <- r
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	sdk.Publish(sdkTopic, 1, false, fmt.Sprintf(`{"id":"7","version":"1.0","method":"thing.measurepoint.post","params":{"measurepoints":{"temp":19.5},"time":%d}}`, now))
	select {
	case r := <-sdkReplies:
		if r.ID != "7" || r.Code != 200 {
			t.Fatalf("secret-login device post: reply %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("secret-login device post: no reply\n%s", mq.Log())
	}
	if pts, err := s.latest("meterPK", "sdkDK"); err != nil || pts["temp"].Value != 19.5 {
		t.Errorf("secret-login device's post stored: %+v %v", pts, err)
	}
	if !strings.Contains(mq.Log(), "enos-auth: login refused: bad_signature") {
		t.Errorf("the refused login is not in the broker's log:\n%s", mq.Log())
	}

	// The broker's ACL: a device cannot publish as another; nothing of it is stored.
	dev.Publish(enos.Topic("gwPK", "gwDK", enos.SuffixPost), 1, false, `{"id":"42","params":{"measurepoints":{"x":1}}}`).WaitTimeout(2 * time.Second)

	// edged, confirming by reply.
	s.cloudExtra = "  confirm: reply\n  ack_timeout: 3s\n"
	simAddr, simProc := s.startSim("sim", constSim)
	var devs strings.Builder
	for i := range 20 {
		fmt.Fprintf(&devs, "  - {name: dev-%02d, link: sim, profile: consts, unit_id: 1, poll: 50ms}\n", i)
	}
	s.writeEdgedConfig(fmt.Sprintf("links:\n  - {name: sim, protocol: modbus-tcp, address: %q, timeout: 500ms}\n%sdevices:\n%s", simAddr, constProfile, devs.String()))
	s.startEdged()
	waitStored := func(n int) {
		eventually(t, 60*time.Second, fmt.Sprintf("at least %d records stored", n), func() error {
			seen, _, err := s.stored()
			if err != nil {
				return err
			}
			if len(seen) < n {
				return fmt.Errorf("%d stored", len(seen))
			}
			return nil
		})
	}
	waitStored(400)
	workers[0].stop(t, syscall.SIGKILL)
	s.httpPort = httpPorts[1]
	waitStored(1200)
	workers[0] = worker(0)
	s.httpPort = httpPorts[0]
	waitStored(2000)
	workers[1].stop(t, syscall.SIGTERM)
	waitStored(2800)
	workers[1] = worker(1)
	waitStored(3400)
	// the restarted worker takes its share again (the shared subscription
	// hands it messages while edged keeps posting)
	eventually(t, 30*time.Second, "the restarted worker 2 stores posts", func() error {
		v, err := promValue(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPorts[1]), "ingest_posts_accepted_total")
		if err == nil && v == 0 {
			err = fmt.Errorf("no post accepted since its restart\n%s", mq.Log())
		}
		return err
	})

	simProc.stop(t, syscall.SIGTERM)
	var final edgedHealth
	eventually(t, 90*time.Second, "edged's queue drained", func() error {
		if err := getJSON(s.edgedURL("/healthz"), &final); err != nil {
			return err
		}
		if final.Bus.Depth != 0 {
			return fmt.Errorf("queue depth %d", final.Bus.Depth)
		}
		return nil
	})
	seen, doc, err := s.stored()
	if err != nil {
		t.Fatal(err)
	}
	last := final.Bus.NextSeq - 1
	missing := 0
	for q := uint64(1); q <= last; q++ {
		if !seen[q] {
			missing++
		}
	}
	if missing > 0 || len(seen) != int(last) {
		t.Fatalf("the store holds %d sequences, edged assigned %d, %d missing", len(seen), last, missing)
	}
	// Both workers stored posts; the refused cross-device post was not stored.
	var posts [2]float64
	for i, p := range httpPorts {
		v, err := promValue(fmt.Sprintf("http://127.0.0.1:%d/metrics", p), "ingest_posts_accepted_total")
		if err != nil {
			t.Fatal(err)
		}
		posts[i] = v
	}
	if posts[0] == 0 || posts[1] == 0 {
		t.Errorf("posts accepted per worker since their last start: %v: both should share the load", posts)
	}
	if pts, _ := s.latest("gwPK", "gwDK"); len(pts) != 0 {
		t.Errorf("a device posted on another device's topic and it was stored: %+v", pts)
	}
	t.Logf("%d records stored exactly once through Mosquitto and two workers (one killed, one restarted); %d duplicates discarded; posts per worker since restart %v", last, doc.Duplicates, posts)
}

// promValue reads one unlabelled sample from a Prometheus text endpoint.
func promValue(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			return f, err
		}
	}
	return 0, fmt.Errorf("metric %s not found at %s", name, url)
}
