package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CheckInterval is the least time between two looks at the files on the
// handshake path.
const CheckInterval = time.Second

// Reloader holds a certificate and its key (and, for a server, the pool of
// client CAs) read from files, and re-reads them when they change.
//
// There is no goroutine and no file watcher. On a handshake (GetCertificate,
// GetClientCertificate, or the server's GetConfigForClient) the Reloader
// stats its files, at most once per CheckInterval; if a file's modification
// time, size or identity changed since the last attempt, it reads them all
// again. Reload does the same at once, whatever the files look like.
//
// A load that fails (unreadable file, bad PEM, a key that does not match the
// certificate, an empty CA file) keeps the previous good material in use,
// counts a failure and is reported by LastError until a later load succeeds.
// Each distinct state of the files is tried once: a broken file is not
// re-read every second, only once it changes again.
//
// To rotate, replace the files, best by rename (WritePair does). Between the
// two renames of a separate key and certificate, a handshake may see a
// certificate with the old key: that load fails, the old pair stays in use,
// and the next change completes the rotation. A single file holding both
// the certificate and the key (certFile == keyFile) avoids that window.
//
// A Reloader is safe for concurrent use. A handshake never waits for
// another one's file I/O: if a check is under way, it uses what is loaded.
type Reloader struct {
	certFile, keyFile, caFile string // caFile "" means no CA pool

	interval time.Duration
	now      func() time.Time // wall clock with monotonic reading; tests replace it
	base     time.Time

	cur       atomic.Pointer[material]
	lastCheck atomic.Int64 // now().Sub(base) at the last look at the files

	mu   sync.Mutex // serialises loads; guards seen
	seen stamps     // the file state of the last load attempt

	reloads  atomic.Uint64
	failures atomic.Uint64
	errMu    sync.Mutex
	lastErr  error
}

// material is one consistent load.
type material struct {
	cert *tls.Certificate // Leaf is set
	pool *x509.CertPool   // nil without caFile
}

// newReloader loads the files once; a failure here is returned, not kept.
func newReloader(certFile, keyFile, caFile string) (*Reloader, error) {
	now := time.Now()
	r := &Reloader{
		certFile: certFile,
		keyFile:  keyFile,
		caFile:   caFile,
		interval: CheckInterval,
		now:      time.Now,
		base:     now,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = r.stat()
	m, err := r.read()
	if err != nil {
		return nil, err
	}
	r.cur.Store(m)
	return r, nil
}

// GetCertificate serves the current certificate; it is a
// tls.Config.GetCertificate. It never fails once the Reloader exists.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeCheck()
	return r.cur.Load().cert, nil
}

// GetClientCertificate serves the current certificate; it is a
// tls.Config.GetClientCertificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.maybeCheck()
	return r.cur.Load().cert, nil
}

// Certificate returns the leaf certificate in use (for logs and expiry
// metrics; see Describe). Do not modify it.
func (r *Reloader) Certificate() *x509.Certificate { return r.cur.Load().cert.Leaf }

// Reload reads the files now. On failure the previous material stays in use
// and the error is returned (and kept for LastError). It blocks for the file
// I/O, and while another load is running.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastCheck.Store(int64(r.now().Sub(r.base)))
	return r.load(r.stat())
}

// LastError is the error of the last load attempt, nil if it succeeded.
func (r *Reloader) LastError() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.lastErr
}

// Reloads counts the successful loads after the first one.
func (r *Reloader) Reloads() uint64 { return r.reloads.Load() }

// Failures counts the failed loads; each kept the previous material.
func (r *Reloader) Failures() uint64 { return r.failures.Load() }

// clientCAs returns the current client-CA pool.
func (r *Reloader) clientCAs() *x509.CertPool { return r.cur.Load().pool }

// maybeCheck looks at the files if CheckInterval has passed since the last
// look and nobody else is looking, and loads them if they changed.
func (r *Reloader) maybeCheck() {
	elapsed := int64(r.now().Sub(r.base))
	if elapsed-r.lastCheck.Load() < int64(r.interval) {
		return
	}
	if !r.mu.TryLock() {
		return // a check or Reload is under way; use what is loaded
	}
	defer r.mu.Unlock()
	if elapsed-r.lastCheck.Load() < int64(r.interval) {
		return // someone looked while we waited for the lock
	}
	r.lastCheck.Store(elapsed)
	if st := r.stat(); !st.equal(r.seen) {
		_ = r.load(st) // recorded in LastError and Failures
	}
}

// load reads the files described by st and installs them or records the
// failure. r.mu is held.
func (r *Reloader) load(st stamps) error {
	r.seen = st
	m, err := r.read()
	r.errMu.Lock()
	r.lastErr = err
	r.errMu.Unlock()
	if err != nil {
		r.failures.Add(1)
		return err
	}
	r.cur.Store(m)
	r.reloads.Add(1)
	return nil
}

func (r *Reloader) read() (*material, error) {
	cert, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, err
	}
	m := &material{cert: cert}
	if r.caFile != "" {
		if m.pool, err = loadPool(r.caFile); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// loadPair reads a certificate chain and its private key. The two may be in
// one file.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	ders, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", keyFile, err)
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		return nil, fmt.Errorf("key %s for certificate %s: %w", keyFile, certFile, ErrKeyMismatch)
	}
	return &tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf}, nil
}

// loadPool reads a file of one or more CA certificates. Every CERTIFICATE
// block must parse, and there must be at least one.
func loadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	ders, err := parseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	for _, der := range ders {
		c, _ := x509.ParseCertificate(der) // parseCertsPEM parsed it
		pool.AddCert(c)
	}
	return pool, nil
}

// stamp is what a stat says about one file; two equal stamps mean the file
// very probably did not change.
type stamp struct {
	info os.FileInfo // nil if stat failed
	err  string
}

type stamps [3]stamp // cert, key, CA

func (r *Reloader) stat() stamps {
	var st stamps
	for i, name := range [3]string{r.certFile, r.keyFile, r.caFile} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			st[i].err = err.Error()
			continue
		}
		st[i].info = fi
	}
	return st
}

func (a stamps) equal(b stamps) bool {
	for i := range a {
		x, y := a[i], b[i]
		if x.err != y.err || (x.info == nil) != (y.info == nil) {
			return false
		}
		if x.info == nil {
			continue
		}
		if !x.info.ModTime().Equal(y.info.ModTime()) || x.info.Size() != y.info.Size() ||
			!os.SameFile(x.info, y.info) {
			return false
		}
	}
	return true
}
