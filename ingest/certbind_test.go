package ingest

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/cloudlink/enos"
)

// TestCertificateBinding: a certificate bound to a device in the registry
// (by fingerprint or serial) logs in as that device, whatever its
// CommonName, and as no other device, not even with that device's secret;
// a device with a binding refuses any other certificate.
func TestCertificateBinding(t *testing.T) {
	e := startEnv(t, nil)
	tlsWith := func(cert tls.Certificate) *tls.Config {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(e.ca.pem)
		return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	}
	byFP := e.ca.issue(t, "field-unit-7", false)
	bySerial := e.ca.issue(t, "field-unit-8", false)
	fpLeaf, _ := x509.ParseCertificate(byFP.Certificate[0])
	serialLeaf, _ := x509.ParseCertificate(bySerial.Certificate[0])
	sum := sha256.Sum256(fpLeaf.Raw)
	var colons []string
	for _, b := range sum {
		colons = append(colons, fmt.Sprintf("%02X", b))
	}
	e.stop()
	writeFile(t, e.cfg.RegistryFile, testRegistry+fmt.Sprintf(
		"  - {product_key: certPK, device_key: boundFP, cert_login: true, cert_sha256: %q}\n"+
			"  - {product_key: certPK, device_key: boundSerial, secret: serialSecret, cert_login: true, cert_serial: \"00:%s\"}\n",
		strings.Join(colons, ":"), serialLeaf.SerialNumber.Text(16)))
	e.start()

	ts := fmt.Sprintf("%d", time.Now().UnixMilli())
	secretLogin := func(pk, dk, secret string) (string, string, string) {
		cid, user, pass, err := enos.MQTTLogin(dk, pk, dk, secret, "sha256", ts)
		if err != nil {
			t.Fatal(err)
		}
		return cid, user, pass
	}
	for _, tt := range []struct {
		name            string
		tls             *tls.Config
		cid, user, pass string
		ok              bool
		reason          string
	}{
		{"bound by fingerprint, certificate login", tlsWith(byFP), "c1", "boundFP&certPK", "", true, ""},
		{"bound by serial, certificate login", tlsWith(bySerial), "c2", "boundSerial&certPK", "", true, ""},
		{"bound certificate as another device by secret", tlsWith(byFP), "", "", "", false, refusedCertBoundElsewhere},
		{"bound certificate as another bound device", tlsWith(bySerial), "c3", "boundFP&certPK", "", false, refusedCertBoundElsewhere},
		{"unbound certificate for a bound device", e.clientTLS(e.ca, "boundFP"), "c4", "boundFP&certPK", "", false, refusedCertMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cid, user, pass := tt.cid, tt.user, tt.pass
			if user == "" {
				cid, user, pass = secretLogin("gwPK", "gwDK", "gwSecret")
			}
			before := e.metric("ingest_connections_refused_total", tt.reason)
			c, err := e.dial(tt.tls, cid, user, pass)
			if tt.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				c.Disconnect(50)
				return
			}
			if err == nil {
				c.Disconnect(50)
				t.Fatal("accepted")
			}
			if got := e.metric("ingest_connections_refused_total", tt.reason); got != before+1 {
				t.Errorf("%s refusals %v, want %v", tt.reason, got, before+1)
			}
		})
	}
	// A bound device with a secret still logs in by secret with its own certificate.
	cid, user, pass := secretLogin("certPK", "boundSerial", "serialSecret")
	if c, err := e.dial(tlsWith(bySerial), cid, user, pass); err != nil {
		t.Errorf("secret login with the bound certificate: %v", err)
	} else {
		c.Disconnect(50)
	}
}
