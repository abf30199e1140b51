package certs

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names MakeDev uses inside its directory.
const (
	DevCACert     = "ca.pem"
	DevCAKey      = "ca-key.pem"
	DevServerCert = "ingestd.pem"
	DevServerKey  = "ingestd-key.pem"
	DevClientCert = "gateway.pem"
	DevClientKey  = "gateway-key.pem"
)

// DevServerName is the CommonName of the dev ingest certificate.
const DevServerName = "ingestd"

// devServerHosts are the hosts every dev ingest certificate is valid for.
var devServerHosts = []string{"127.0.0.1", "::1", "localhost"}

// DevOptions tunes MakeDev. Only GatewayCN is required.
type DevOptions struct {
	// GatewayCN is the CommonName of the gateway's client certificate: its
	// device key.
	GatewayCN string
	// ServerHosts are DNS names or IP addresses the ingest certificate must
	// also be valid for, besides 127.0.0.1, ::1 and localhost.
	ServerHosts []string
	// CAValidity defaults to DefaultCAValidity, LeafValidity to
	// DefaultLeafValidity.
	CAValidity, LeafValidity time.Duration
	// RenewBefore: a certificate that expires within RenewBefore is
	// replaced. Zero means a third of the certificate's own lifetime, at
	// most 30 days. Keep it shorter than the validities, or every call
	// replaces everything.
	RenewBefore time.Duration
}

// DevFiles are the paths MakeDev manages.
type DevFiles struct {
	Dir                   string
	CACert, CAKey         string
	ServerCert, ServerKey string // ingestd
	ClientCert, ClientKey string // the gateway
	// Written lists the files this call (re)wrote; empty when every file
	// was kept.
	Written []string
}

// MakeDev makes dir a development PKI for edged and ingestd: a CA
// (ca.pem, ca-key.pem), the ingest server certificate for 127.0.0.1, ::1 and
// localhost (ingestd.pem, ingestd-key.pem) and the gateway's client
// certificate with CommonName opts.GatewayCN (gateway.pem, gateway-key.pem).
// Key files are mode 0600; dir is created (0700) if missing.
//
// It is idempotent: a file set that is still good (parses, the key matches,
// chains to the CA, has the right names and usage, and is not within
// RenewBefore of expiry) is kept. A bad or expiring leaf is reissued from
// the existing CA; a bad or expiring CA is replaced, and both leaves with
// it. It is not meant for two processes at once on the same dir.
func MakeDev(dir string, opts DevOptions) (DevFiles, error) {
	files := DevFiles{
		Dir:        dir,
		CACert:     filepath.Join(dir, DevCACert),
		CAKey:      filepath.Join(dir, DevCAKey),
		ServerCert: filepath.Join(dir, DevServerCert),
		ServerKey:  filepath.Join(dir, DevServerKey),
		ClientCert: filepath.Join(dir, DevClientCert),
		ClientKey:  filepath.Join(dir, DevClientKey),
	}
	if opts.GatewayCN == "" {
		return files, fmt.Errorf("%w: dev PKI: the gateway's common name (device key) is required", ErrInvalidRequest)
	}
	if opts.CAValidity < 0 || opts.LeafValidity < 0 || opts.RenewBefore < 0 {
		return files, fmt.Errorf("%w: dev PKI: negative duration", ErrInvalidRequest)
	}
	hosts := append(append([]string(nil), devServerHosts...), opts.ServerHosts...)
	server := Request{CommonName: DevServerName, Usage: Server, Validity: opts.LeafValidity}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else if h != "" {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	client := Request{CommonName: opts.GatewayCN, Usage: Client, Validity: opts.LeafValidity}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return files, err
	}
	now := time.Now()

	ca, err := LoadCA(files.CACert, files.CAKey)
	if err != nil || !fresh(ca.cert, now, opts.RenewBefore) {
		if ca, err = NewCA("edged dev CA", opts.CAValidity); err != nil {
			return files, err
		}
		if err := ca.Save(files.CACert, files.CAKey); err != nil {
			return files, err
		}
		files.Written = append(files.Written, files.CACert, files.CAKey)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	leaves := []struct {
		req            Request
		certFile, key  string
		usage          x509.ExtKeyUsage
		hosts          []string
		wantCommonName string
	}{
		{server, files.ServerCert, files.ServerKey, x509.ExtKeyUsageServerAuth, hosts, ""},
		{client, files.ClientCert, files.ClientKey, x509.ExtKeyUsageClientAuth, nil, opts.GatewayCN},
	}
	for _, l := range leaves {
		if keep(l.certFile, l.key, roots, l.usage, l.hosts, l.wantCommonName, now, opts.RenewBefore) {
			continue
		}
		certPEM, keyPEM, err := ca.Issue(l.req)
		if err != nil {
			return files, err
		}
		if err := WritePair(l.certFile, l.key, certPEM, keyPEM); err != nil {
			return files, err
		}
		files.Written = append(files.Written, l.certFile, l.key)
	}
	return files, nil
}

// keep reports whether a leaf pair on disk is still good.
func keep(certFile, keyFile string, roots *x509.CertPool, usage x509.ExtKeyUsage,
	hosts []string, commonName string, now time.Time, renewBefore time.Duration) bool {
	pair, err := loadPair(certFile, keyFile)
	if err != nil {
		return false
	}
	leaf := pair.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}); err != nil {
		return false
	}
	for _, h := range hosts {
		if h != "" && leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	if commonName != "" && leaf.Subject.CommonName != commonName {
		return false
	}
	return fresh(leaf, now, renewBefore)
}

// fresh reports whether cert is valid at now and stays valid for longer
// than renewBefore (or the default margin).
func fresh(cert *x509.Certificate, now time.Time, renewBefore time.Duration) bool {
	if renewBefore == 0 {
		renewBefore = min(cert.NotAfter.Sub(cert.NotBefore)/3, 30*24*time.Hour)
	}
	return !now.Before(cert.NotBefore) && cert.NotAfter.Sub(now) > renewBefore
}

// IssueClient issues a fresh client certificate with CommonName cn, signed
// by the dev CA in dir (made by MakeDev), into dir/<name>.pem and
// dir/<name>-key.pem, replacing any files of that name. name is a plain file
// stem: no path separator, not "ca", not ending in "-key".
func IssueClient(dir, name, cn string) (certFile, keyFile string, err error) {
	if err := checkStem(name); err != nil {
		return "", "", err
	}
	ca, err := LoadCA(filepath.Join(dir, DevCACert), filepath.Join(dir, DevCAKey))
	if err != nil {
		return "", "", err
	}
	return issueClientFiles(ca, dir, name, cn)
}

// IssueForeignClient is IssueClient with a throwaway CA instead of the dev
// CA: a well-formed client certificate that a server trusting only the dev
// CA must refuse. The throwaway CA is not kept.
func IssueForeignClient(dir, name, cn string) (certFile, keyFile string, err error) {
	if err := checkStem(name); err != nil {
		return "", "", err
	}
	ca, err := NewCA("foreign CA", 24*time.Hour)
	if err != nil {
		return "", "", err
	}
	return issueClientFiles(ca, dir, name, cn)
}

func issueClientFiles(ca *CA, dir, name, cn string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := ca.Issue(Request{CommonName: cn, Usage: Client})
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	if err := WritePair(certFile, keyFile, certPEM, keyPEM); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func checkStem(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
	case strings.ContainsAny(name, `/\`) || filepath.Base(name) != name:
	case name == "ca" || strings.HasSuffix(name, "-key"):
	default:
		return nil
	}
	return fmt.Errorf("%w: certificate file name %q", ErrInvalidRequest, name)
}
