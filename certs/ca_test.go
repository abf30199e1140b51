package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T, validity time.Duration) *CA {
	t.Helper()
	ca, err := NewCA("test CA", validity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	ders, err := parseCertsPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(ders[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func near(a, b time.Time) bool { return a.Sub(b).Abs() < 10*time.Second }

func TestNewCA(t *testing.T) {
	ca := mustCA(t, 0)
	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA constraints: IsCA=%v max path zero=%v key usage=%v", c.IsCA, c.MaxPathLenZero, c.KeyUsage)
	}
	if len(c.SubjectKeyId) != 20 {
		t.Errorf("SubjectKeyId length %d, want 20", len(c.SubjectKeyId))
	}
	now := time.Now()
	if !near(c.NotBefore, now.Add(-ClockSkew)) || !near(c.NotAfter, now.Add(DefaultCAValidity)) {
		t.Errorf("CA validity %v .. %v", c.NotBefore, c.NotAfter)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	for _, bad := range []struct {
		cn string
		v  time.Duration
	}{{"", time.Hour}, {"x", -time.Hour}} {
		if _, err := NewCA(bad.cn, bad.v); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("NewCA(%q, %v) = %v, want ErrInvalidRequest", bad.cn, bad.v, err)
		}
	}
}

func TestIssue(t *testing.T) {
	ca := mustCA(t, 0)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	appURI, _ := url.Parse("urn:edged:gw-0001")
	tests := []struct {
		name     string
		req      Request
		wantErr  error
		wantEKU  []x509.ExtKeyUsage
		validity time.Duration
	}{
		{name: "server",
			req:     Request{CommonName: "ingestd", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, Usage: Server, Validity: time.Hour},
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, validity: time.Hour},
		{name: "client",
			req:     Request{CommonName: "gw-0001", Usage: Client},
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, validity: DefaultLeafValidity},
		{name: "both with URI",
			req:     Request{CommonName: "gw-0001", DNSNames: []string{"gw.local"}, URIs: []*url.URL{appURI}, Usage: Server | Client, Validity: 48 * time.Hour},
			wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, validity: 48 * time.Hour},
		{name: "no usage", req: Request{CommonName: "x"}, wantErr: ErrInvalidRequest},
		{name: "unknown usage", req: Request{CommonName: "x", Usage: 4}, wantErr: ErrInvalidRequest},
		{name: "server without SAN", req: Request{CommonName: "ingestd", Usage: Server}, wantErr: ErrInvalidRequest},
		{name: "negative validity", req: Request{CommonName: "x", Usage: Client, Validity: -time.Second}, wantErr: ErrInvalidRequest},
		{name: "no name at all", req: Request{Usage: Client}, wantErr: ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.Issue(tt.req)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Issue = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := parseCert(t, certPEM)
			if c.Subject.CommonName != tt.req.CommonName || !slices.Equal(c.DNSNames, tt.req.DNSNames) ||
				len(c.IPAddresses) != len(tt.req.IPAddresses) || len(c.URIs) != len(tt.req.URIs) {
				t.Errorf("names: CN=%q DNS=%v IP=%v URI=%v", c.Subject.CommonName, c.DNSNames, c.IPAddresses, c.URIs)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.wantEKU) {
				t.Errorf("ExtKeyUsage %v, want %v", c.ExtKeyUsage, tt.wantEKU)
			}
			if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA=%v KeyUsage=%v", c.IsCA, c.KeyUsage)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %x: want positive, at most 128 bits", c.SerialNumber)
			}
			if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
			}
			skid, _ := subjectKeyID(c.PublicKey)
			if !bytes.Equal(c.SubjectKeyId, skid) || !bytes.Equal(c.AuthorityKeyId, ca.Certificate().SubjectKeyId) {
				t.Errorf("SKID %x (want %x), AKID %x (want %x)", c.SubjectKeyId, skid, c.AuthorityKeyId, ca.Certificate().SubjectKeyId)
			}
			now := time.Now()
			if !near(c.NotBefore, now.Add(-ClockSkew)) || !near(c.NotAfter, now.Add(tt.validity)) {
				t.Errorf("validity %v .. %v, want ~%v .. ~%v", c.NotBefore, c.NotAfter, now.Add(-ClockSkew), now.Add(tt.validity))
			}
			for _, eku := range tt.wantEKU {
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
					t.Errorf("verify for %v: %v", eku, err)
				}
			}
			if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "PRIVATE KEY" {
				t.Errorf("key PEM is not PKCS#8")
			}
			if _, err := loadPairPEM(certPEM, keyPEM); err != nil {
				t.Errorf("pair: %v", err)
			}
		})
	}
}

// loadPairPEM runs loadPair on data written to a temporary directory.
func loadPairPEM(certPEM, keyPEM []byte) (*x509.Certificate, error) {
	dir, err := os.MkdirTemp("", "pair")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := WritePair(cf, kf, certPEM, keyPEM); err != nil {
		return nil, err
	}
	p, err := loadPair(cf, kf)
	if err != nil {
		return nil, err
	}
	return p.Leaf, nil
}

func TestIssueValidityWindow(t *testing.T) {
	ca := mustCA(t, time.Hour)
	// A leaf never outlives its CA.
	certPEM, _, err := ca.Issue(Request{CommonName: "gw", Usage: Client, Validity: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if c := parseCert(t, certPEM); !c.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("NotAfter %v, want clamped to the CA's %v", c.NotAfter, ca.Certificate().NotAfter)
	}
	// Start in the past gives an expired certificate.
	start := time.Now().Add(-48 * time.Hour)
	certPEM, _, err = ca.Issue(Request{CommonName: "gw", Usage: Client, Validity: 24 * time.Hour, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	if !c.NotAfter.Equal(start.Add(24*time.Hour).Truncate(time.Second)) || !c.NotBefore.Equal(start.Add(-ClockSkew).Truncate(time.Second)) {
		t.Errorf("validity %v .. %v for start %v", c.NotBefore, c.NotAfter, start)
	}
	// Two certificates never share a serial.
	other, _, _ := ca.Issue(Request{CommonName: "gw", Usage: Client})
	if parseCert(t, other).SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates with the same serial")
	}
}

func TestSaveLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, 0)
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.Save(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	checkMode(t, keyFile, 0o600)
	checkMode(t, certFile, 0o644)

	loaded, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) || !bytes.Equal(loaded.CertPEM(), ca.CertPEM()) {
		t.Fatal("loaded CA differs from the saved one")
	}
	certPEM, _, err := loaded.Issue(Request{CommonName: "gw", Usage: Client})
	if err != nil {
		t.Fatal(err)
	}
	if err := parseCert(t, certPEM).CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Errorf("issued by the loaded CA, not verified by the original: %v", err)
	}

	// Bad inputs.
	leafPEM, leafKey, _ := ca.Issue(Request{CommonName: "gw", Usage: Client})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sec1 := func() []byte { // the CA key as "EC PRIVATE KEY"
		der, err := x509.MarshalECPrivateKey(ca.key.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}()
	tests := []struct {
		name      string
		cert, key string
		want      error // nil: loads
	}{
		{"SEC 1 key", certFile, write("sec1.pem", sec1), nil},
		{"combined file", write("both.pem", append(ca.CertPEM(), sec1...)), filepath.Join(dir, "both.pem"), nil},
		{"missing cert", filepath.Join(dir, "nope.pem"), keyFile, fs.ErrNotExist},
		{"missing key", certFile, filepath.Join(dir, "nope.pem"), fs.ErrNotExist},
		{"leaf is not a CA", write("leaf.pem", leafPEM), write("leaf-key.pem", leafKey), ErrNotCA},
		{"wrong key", certFile, filepath.Join(dir, "leaf-key.pem"), ErrKeyMismatch},
		{"garbage cert", write("garbage.pem", []byte("not a certificate")), keyFile, ErrNoCertificate},
		{"broken cert block", write("broken.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})), keyFile, ErrNoCertificate},
		{"garbage key", certFile, filepath.Join(dir, "garbage.pem"), ErrNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCA(tt.cert, tt.key)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("LoadCA = %v, want %v", err, tt.want)
			}
		})
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", filepath.Base(path), got, want)
	}
}

func TestFingerprintDescribe(t *testing.T) {
	ca := mustCA(t, 0)
	certPEM, _, err := ca.Issue(Request{CommonName: "gw-0001", Usage: Client})
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	sum := sha256.Sum256(c.Raw)
	fp, err := Fingerprint(certPEM)
	if err != nil || fp != hex.EncodeToString(sum[:]) {
		t.Errorf("Fingerprint = %q, %v; want %x", fp, err, sum)
	}
	if _, err := Fingerprint([]byte("junk")); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("Fingerprint(junk) = %v, want ErrNoCertificate", err)
	}

	s := Describe(c)
	if s.Subject != "CN=gw-0001" || s.Serial != c.SerialNumber.Text(16) || !s.NotAfter.Equal(c.NotAfter) {
		t.Errorf("Describe = %+v", s)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("cert", "cert", s)
	if want := "cert.serial=" + s.Serial; !strings.Contains(buf.String(), want) {
		t.Errorf("log line %q lacks %q", buf.String(), want)
	}
	if !strings.Contains(s.String(), s.Serial) {
		t.Errorf("String() = %q", s.String())
	}
	if Describe(nil) != (Summary{}) {
		t.Error("Describe(nil) is not the zero Summary")
	}
}
