// Package certs issues the X.509 certificates that edged and ingestd use for
// MQTT over mutual TLS, and builds the tls.Config values that present them.
//
// A CA (NewCA, LoadCA) issues ECDSA P-256 leaf certificates for a server, a
// client or both (CA.Issue). MakeDev lays out a complete development PKI in a
// directory: a CA, the ingest service's server certificate and the gateway's
// client certificate, keeping files that are still good.
//
// ServerConfig and ClientConfig build TLS 1.2+ configurations whose
// certificate (and, on the server, whose client-CA pool) is re-read from disk
// when the files change, so a certificate is rotated by replacing its files:
// no restart, no goroutine. See Reloader.
//
// The package imports nothing of ours.
package certs

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Sentinel errors, wrapped with %w and the file concerned.
var (
	// ErrNoCertificate: the PEM data holds no (parsable) CERTIFICATE block.
	ErrNoCertificate = errors.New("no certificate")
	// ErrNoKey: the PEM data holds no parsable private key.
	ErrNoKey = errors.New("no private key")
	// ErrKeyMismatch: the private key does not belong to the certificate.
	ErrKeyMismatch = errors.New("private key does not match certificate")
	// ErrNotCA: the certificate may not sign other certificates.
	ErrNotCA = errors.New("not a CA certificate")
	// ErrInvalidRequest: an issuing request (or a dev option) is unusable.
	ErrInvalidRequest = errors.New("invalid certificate request")
)

const (
	// ClockSkew is how far NotBefore is backdated, so that a peer whose clock
	// runs a little behind still accepts a certificate issued just now.
	ClockSkew = 5 * time.Minute
	// DefaultCAValidity is used by NewCA and MakeDev when no validity is given.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultLeafValidity is used by Issue when Request.Validity is zero.
	DefaultLeafValidity = 365 * 24 * time.Hour
)

// Usage says what a leaf certificate authenticates: Server, Client or
// Server|Client. It becomes the certificate's extended key usage.
type Usage uint8

const (
	Server Usage = 1 << iota // TLS server authentication (serverAuth)
	Client                   // TLS client authentication (clientAuth)
)

func (u Usage) String() string {
	switch u {
	case Server:
		return "server"
	case Client:
		return "client"
	case Server | Client:
		return "server+client"
	}
	return fmt.Sprintf("usage(%d)", uint8(u))
}

// Request describes one leaf certificate to issue.
type Request struct {
	// CommonName is the subject CN. For a gateway's client certificate it is
	// the device key; ingestd binds the certificate to the device by it.
	CommonName  string
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []*url.URL
	// Usage is Server, Client or Server|Client; it must not be zero. A
	// Server certificate needs at least one DNS name or IP address: TLS
	// clients ignore the CommonName.
	Usage Usage
	// Validity is how long the certificate is valid from Start; zero means
	// DefaultLeafValidity. NotAfter never exceeds the CA's own NotAfter.
	Validity time.Duration
	// Start is when validity is counted from; zero means now. NotBefore is
	// ClockSkew earlier. Tests set it in the past to get an expired
	// certificate.
	Start time.Time
}

// CA is a certificate authority that can issue leaf certificates. It is safe
// for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	now     func() time.Time
}

// NewCA creates a self-signed CA with a fresh ECDSA P-256 key, valid from
// ClockSkew ago for validity (zero means DefaultCAValidity). It does no file
// I/O; see Save.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, fmt.Errorf("%w: CA common name is empty", ErrInvalidRequest)
	}
	if validity < 0 {
		return nil, fmt.Errorf("%w: CA validity %v is negative", ErrInvalidRequest, validity)
	}
	if validity == 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0, // signs leaves only
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{cert: cert, certPEM: encodeCert(der), key: key, now: time.Now}, nil
}

// LoadCA reads a CA certificate and its private key (PKCS#8, SEC 1 or
// PKCS#1 PEM). It fails with ErrNotCA if the certificate may not sign
// certificates and with ErrKeyMismatch if the key is not its key.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	ders, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certFile, err)
	}
	cert, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certFile, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA ||
		(cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0) {
		return nil, fmt.Errorf("CA certificate %s (%s): %w", certFile, cert.Subject, ErrNotCA)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	if !publicKeyEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("CA key %s for %s: %w", keyFile, certFile, ErrKeyMismatch)
	}
	return &CA{cert: cert, certPEM: encodeCert(ders[0]), key: key, now: time.Now}, nil
}

// Certificate returns the CA certificate. Do not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate, PEM encoded: what peers put in their
// trust pool.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Save writes the CA certificate (mode 0644) and its key (PKCS#8, mode 0600)
// with WritePair.
func (ca *CA) Save(certFile, keyFile string) error {
	keyPEM, err := encodeKey(ca.key)
	if err != nil {
		return err
	}
	return WritePair(certFile, keyFile, ca.certPEM, keyPEM)
}

// Issue creates a fresh ECDSA P-256 key and a certificate for it signed by
// the CA, with a random 128-bit serial, SubjectKeyId and AuthorityKeyId.
// It returns both PEM encoded (the key as PKCS#8). It fails with
// ErrInvalidRequest if req is unusable.
func (ca *CA) Issue(req Request) (certPEM, keyPEM []byte, err error) {
	if err := req.validate(); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, nil, err
	}
	akid := ca.cert.SubjectKeyId
	if len(akid) == 0 {
		if akid, err = subjectKeyID(ca.cert.PublicKey); err != nil {
			return nil, nil, err
		}
	}
	start := req.Start
	if start.IsZero() {
		start = ca.now()
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultLeafValidity
	}
	notAfter := start.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	var eku []x509.ExtKeyUsage
	if req.Usage&Server != 0 {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if req.Usage&Client != 0 {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.CommonName},
		NotBefore:             start.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPAddresses,
		URIs:                  req.URIs,
		SubjectKeyId:          skid,
		AuthorityKeyId:        akid, // used by x509 only if the CA has no SubjectKeyId
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %q: %w", req.CommonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

func (req *Request) validate() error {
	switch {
	case req.Usage == 0 || req.Usage&^(Server|Client) != 0:
		return fmt.Errorf("%w: usage %v: want Server, Client or both", ErrInvalidRequest, req.Usage)
	case req.Validity < 0:
		return fmt.Errorf("%w: validity %v is negative", ErrInvalidRequest, req.Validity)
	case req.CommonName == "" && len(req.DNSNames) == 0 && len(req.IPAddresses) == 0 && len(req.URIs) == 0:
		return fmt.Errorf("%w: no common name and no subject alternative name", ErrInvalidRequest)
	case req.Usage&Server != 0 && len(req.DNSNames) == 0 && len(req.IPAddresses) == 0:
		return fmt.Errorf("%w: server certificate %q needs a DNS name or an IP address", ErrInvalidRequest, req.CommonName)
	}
	return nil
}

// WritePair writes a certificate (mode 0644) and its key (mode 0600), each
// atomically (a temporary file in the same directory, renamed into place),
// the key first. If certFile and keyFile are the same path, both PEM blocks
// go into that one file (mode 0600): a reader then never sees a certificate
// with the previous key, which makes it the safest layout for rotation.
func WritePair(certFile, keyFile string, certPEM, keyPEM []byte) error {
	if filepath.Clean(certFile) == filepath.Clean(keyFile) {
		both := append(append([]byte(nil), certPEM...), keyPEM...)
		return writeFileAtomic(certFile, both, 0o600)
	}
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, certPEM, 0o644)
}

// writeFileAtomic replaces path with data so that a concurrent reader sees
// either the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// randomSerial returns a uniformly random positive serial below 2^128.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID is the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bit string (RFC 7093, section 2, method 1).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCertsPEM returns the DER of every CERTIFICATE block, in order, and
// fails if there is none or if one does not parse. Other block types (a
// private key in a combined file) are skipped.
func parseCertsPEM(data []byte) ([][]byte, error) {
	var ders [][]byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("%w: block %d: %w", ErrNoCertificate, len(ders)+1, err)
		}
		ders = append(ders, block.Bytes)
	}
	if len(ders) == 0 {
		return nil, ErrNoCertificate
	}
	return ders, nil
}

// parseKeyPEM returns the first private key in data: PKCS#8 ("PRIVATE
// KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, ErrNoKey
		}
		if block.Type != "PRIVATE KEY" && !strings.HasSuffix(block.Type, " PRIVATE KEY") {
			continue
		}
		var key any
		var err error
		switch block.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrNoKey, block.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		case *ecdh.PrivateKey:
			return nil, fmt.Errorf("%w: an X25519 key cannot sign", ErrNoKey)
		default:
			return nil, fmt.Errorf("%w: unsupported key type %T", ErrNoKey, key)
		}
	}
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
