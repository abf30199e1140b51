package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"
)

// Fingerprint returns the lowercase hex SHA-256 of the DER of the first
// certificate in certPEM (what `openssl x509 -fingerprint -sha256` prints,
// without the colons). It fails with ErrNoCertificate if there is none.
func Fingerprint(certPEM []byte) (string, error) {
	ders, err := parseCertsPEM(certPEM)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(ders[0])
	return hex.EncodeToString(sum[:]), nil
}

// Summary identifies a certificate in logs. It is a slog.LogValuer (a group
// of subject, serial and not_after) and a fmt.Stringer.
type Summary struct {
	Subject  string    // e.g. "CN=gw-0001"
	Serial   string    // lowercase hex
	NotAfter time.Time // UTC
}

// Describe summarises cert for logs. A nil cert gives the zero Summary.
func Describe(cert *x509.Certificate) Summary {
	if cert == nil {
		return Summary{}
	}
	return Summary{
		Subject:  cert.Subject.String(),
		Serial:   cert.SerialNumber.Text(16),
		NotAfter: cert.NotAfter.UTC(),
	}
}

func (s Summary) String() string {
	return fmt.Sprintf("subject=%q serial=%s not_after=%s", s.Subject, s.Serial, s.NotAfter.Format(time.RFC3339))
}

// LogValue implements slog.LogValuer.
func (s Summary) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("subject", s.Subject),
		slog.String("serial", s.Serial),
		slog.Time("not_after", s.NotAfter),
	)
}
