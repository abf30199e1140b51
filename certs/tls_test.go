package certs

import (
	"crypto/tls"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// exchange is one connection's outcome, seen from both ends.
type exchange struct {
	server, client       tls.ConnectionState
	serverErr, clientErr error
}

func (x exchange) err() error { return errors.Join(x.serverErr, x.clientErr) }

// serverSerial is the serial of the certificate the server presented.
func (x exchange) serverSerial() *big.Int {
	if len(x.client.PeerCertificates) == 0 {
		return nil
	}
	return x.client.PeerCertificates[0].SerialNumber
}

// connect runs one real TLS connection over 127.0.0.1: a handshake, then
// the server sends one byte that the client reads (in TLS 1.3 a refused
// client certificate reaches the client only on its first read). It is safe
// to call from several goroutines.
func connect(scfg, ccfg *tls.Config) (x exchange) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		x.serverErr = err
		return x
	}
	defer ln.Close()
	deadline := time.Now().Add(5 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			x.serverErr = err
			return
		}
		defer conn.Close()
		conn.SetDeadline(deadline)
		tc := tls.Server(conn, scfg)
		if err := tc.Handshake(); err != nil {
			x.serverErr = err
			return
		}
		x.server = tc.ConnectionState()
		if _, err := tc.Write([]byte{'k'}); err != nil {
			x.serverErr = err
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		x.clientErr = err
		ln.Close()
		<-done
		return x
	}
	conn.SetDeadline(deadline)
	tc := tls.Client(conn, ccfg)
	err = tc.Handshake()
	if err == nil {
		var b [1]byte
		_, err = io.ReadFull(tc, b[:])
		x.client = tc.ConnectionState()
	}
	x.clientErr = err
	tc.Close()
	<-done
	return x
}

// fakeClock drives a Reloader's CheckInterval without sleeping.
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.off.Add(int64(d)) }

func withClock(r *Reloader) *fakeClock {
	c := new(fakeClock)
	r.now = c.now
	return c
}

// pki is a dev PKI plus the odd certificates the tests need.
type pki struct {
	DevFiles
	ca                        *CA
	foreignClient, foreignKey string // client cert from another CA
	expiredClient, expiredKey string
	serverAsClient, sacKey    string // a server-only certificate used by a client
	foreignCA                 string // another CA's certificate
	foreignServer, fsKey      string // server cert from that CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{DevFiles: mustDev(t, dir, DevOptions{})}
	var err error
	if p.ca, err = LoadCA(p.CACert, p.CAKey); err != nil {
		t.Fatal(err)
	}
	if p.foreignClient, p.foreignKey, err = IssueForeignClient(dir, "foreign", testGateway); err != nil {
		t.Fatal(err)
	}
	p.expiredClient, p.expiredKey = p.issue(t, "expired", Request{CommonName: testGateway, Usage: Client,
		Start: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour})
	p.serverAsClient, p.sacKey = p.issue(t, "server-as-client", Request{CommonName: testGateway, Usage: Server, DNSNames: []string{"localhost"}})

	other, err := NewCA("other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p.foreignCA = filepath.Join(dir, "other-ca.pem")
	if err := os.WriteFile(p.foreignCA, other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	p.foreignServer, p.fsKey = issueWith(t, other, dir, "other-server", Request{CommonName: "ingestd", Usage: Server,
		IPAddresses: ipsOf(devServerHosts), DNSNames: []string{"localhost"}})
	return p
}

func (p *pki) issue(t *testing.T, name string, req Request) (certFile, keyFile string) {
	t.Helper()
	return issueWith(t, p.ca, p.Dir, name, req)
}

func issueWith(t *testing.T, ca *CA, dir, name string, req Request) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := WritePair(certFile, keyFile, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func mustServer(t *testing.T, certFile, keyFile, clientCA string, require bool) (*tls.Config, *Reloader) {
	t.Helper()
	cfg, r, err := ServerConfig(certFile, keyFile, clientCA, require)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, r
}

func mustClient(t *testing.T, caFile, certFile, keyFile, serverName string) (*tls.Config, *Reloader) {
	t.Helper()
	cfg, r, err := ClientConfig(caFile, certFile, keyFile, serverName)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, r
}

func TestHandshake(t *testing.T) {
	p := newPKI(t)
	type side struct{ ca, cert, key string }
	tests := []struct {
		name       string
		server     side // ca is the client-CA file
		optional   bool // client certificate not required
		client     side // ca is the server-CA file
		serverName string
		versions   [2]uint16 // client min, max; zero: defaults
		wantErr    string    // "" means the connection works
	}{
		{name: "client with the right CA",
			client: side{p.CACert, p.ClientCert, p.ClientKey}},
		{name: "client over TLS 1.2",
			client: side{p.CACert, p.ClientCert, p.ClientKey}, versions: [2]uint16{tls.VersionTLS12, tls.VersionTLS12}},
		{name: "localhost by name",
			client: side{p.CACert, p.ClientCert, p.ClientKey}, serverName: "localhost"},
		{name: "::1 by address",
			client: side{p.CACert, p.ClientCert, p.ClientKey}, serverName: "::1"},
		{name: "client cert from another CA",
			client:  side{p.CACert, p.foreignClient, p.foreignKey},
			wantErr: "certificate signed by unknown authority"},
		{name: "client cert from another CA, optional",
			optional: true, client: side{p.CACert, p.foreignClient, p.foreignKey},
			wantErr: "certificate signed by unknown authority"},
		{name: "no client cert when required",
			client:  side{ca: p.CACert},
			wantErr: "client didn't provide a certificate"},
		{name: "no client cert, optional",
			optional: true, client: side{ca: p.CACert}},
		{name: "expired client cert",
			client:  side{p.CACert, p.expiredClient, p.expiredKey},
			wantErr: "certificate has expired"},
		{name: "server-only cert as client cert",
			client:  side{p.CACert, p.serverAsClient, p.sacKey},
			wantErr: "incompatible key usage"},
		{name: "server cert from another CA",
			server:  side{p.CACert, p.foreignServer, p.fsKey},
			client:  side{p.CACert, p.ClientCert, p.ClientKey},
			wantErr: "certificate signed by unknown authority"},
		{name: "client trusts another CA",
			client:  side{p.foreignCA, p.ClientCert, p.ClientKey},
			wantErr: "certificate signed by unknown authority"},
		{name: "wrong server name",
			client: side{p.CACert, p.ClientCert, p.ClientKey}, serverName: "ingest.example.com",
			wantErr: "not ingest.example.com"},
		{name: "TLS 1.1 refused",
			client: side{p.CACert, p.ClientCert, p.ClientKey}, versions: [2]uint16{tls.VersionTLS10, tls.VersionTLS11},
			wantErr: "protocol version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.server
			if srv.cert == "" {
				srv = side{p.CACert, p.ServerCert, p.ServerKey}
			}
			scfg, _ := mustServer(t, srv.cert, srv.key, srv.ca, !tt.optional)
			name := tt.serverName
			if name == "" {
				name = "127.0.0.1"
			}
			ccfg, _ := mustClient(t, tt.client.ca, tt.client.cert, tt.client.key, name)
			if tt.versions[0] != 0 {
				ccfg.MinVersion, ccfg.MaxVersion = tt.versions[0], tt.versions[1]
			}
			x := connect(scfg, ccfg)
			if tt.wantErr != "" {
				if err := x.err(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("connection error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err := x.err(); err != nil {
				t.Fatal(err)
			}
			if tt.versions[1] != 0 && x.client.Version != tt.versions[1] {
				t.Errorf("version %x, want %x", x.client.Version, tt.versions[1])
			}
			if tt.client.cert == "" {
				if len(x.server.PeerCertificates) != 0 {
					t.Error("server saw a client certificate")
				}
				return
			}
			if len(x.server.VerifiedChains) == 0 || x.server.PeerCertificates[0].Subject.CommonName != testGateway {
				t.Errorf("server saw peer %v with %d verified chains", x.server.PeerCertificates, len(x.server.VerifiedChains))
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	p := newPKI(t)
	junk := filepath.Join(p.Dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(p.Dir, "missing.pem")
	server := func(cert, key, ca string, req bool) func() error {
		return func() error { _, _, err := ServerConfig(cert, key, ca, req); return err }
	}
	client := func(ca, cert, key string) func() error {
		return func() error { _, _, err := ClientConfig(ca, cert, key, "localhost"); return err }
	}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"server requires clients without a CA", server(p.ServerCert, p.ServerKey, "", true), ErrInvalidRequest},
		{"server without client auth", server(p.ServerCert, p.ServerKey, "", false), nil},
		{"server cert missing", server(missing, p.ServerKey, p.CACert, true), fs.ErrNotExist},
		{"server key of another cert", server(p.ServerCert, p.ClientKey, p.CACert, true), ErrKeyMismatch},
		{"server cert junk", server(junk, p.ServerKey, p.CACert, true), ErrNoCertificate},
		{"client CA junk", server(p.ServerCert, p.ServerKey, junk, true), ErrNoCertificate},
		{"client CA is a key", server(p.ServerCert, p.ServerKey, p.CAKey, true), ErrNoCertificate},
		{"client cert without key", client(p.CACert, p.ClientCert, ""), ErrInvalidRequest},
		{"client CA missing", client(missing, p.ClientCert, p.ClientKey), fs.ErrNotExist},
		{"client key junk", client(p.CACert, p.ClientCert, junk), ErrNoKey},
		{"client without cert", client(p.CACert, "", ""), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}

	scfg, _ := mustServer(t, p.ServerCert, p.ServerKey, p.CACert, true)
	ccfg, r := mustClient(t, p.CACert, "", "", "")
	if scfg.MinVersion != tls.VersionTLS12 || ccfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion server %x client %x, want TLS 1.2", scfg.MinVersion, ccfg.MinVersion)
	}
	if r != nil || ccfg.GetClientCertificate != nil {
		t.Error("client without a certificate got a Reloader")
	}
}

// TestServerRotation replaces the server's files on disk and checks what the
// next handshakes present.
func TestServerRotation(t *testing.T) {
	p := newPKI(t)
	scfg, r := mustServer(t, p.ServerCert, p.ServerKey, p.CACert, true)
	clock := withClock(r)
	ccfg, _ := mustClient(t, p.CACert, p.ClientCert, p.ClientKey, "localhost")

	serial := func(t *testing.T) *big.Int {
		t.Helper()
		x := connect(scfg, ccfg)
		if err := x.err(); err != nil {
			t.Fatal(err)
		}
		return x.serverSerial()
	}
	rotate := func(t *testing.T) *big.Int {
		t.Helper()
		certPEM, keyPEM, err := p.ca.Issue(Request{CommonName: DevServerName, Usage: Server, DNSNames: []string{"localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := WritePair(p.ServerCert, p.ServerKey, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		return parseCert(t, certPEM).SerialNumber
	}

	first := serial(t)
	if first.Cmp(r.Certificate().SerialNumber) != 0 {
		t.Fatalf("presented %x, Reloader holds %x", first, r.Certificate().SerialNumber)
	}
	second := rotate(t)
	if got := serial(t); got.Cmp(first) != 0 {
		t.Fatalf("within CheckInterval the server presented %x, want the old %x", got, first)
	}
	clock.advance(CheckInterval)
	if got := serial(t); got.Cmp(second) != 0 {
		t.Fatalf("after rotation the server presented %x, want the new %x", got, second)
	}
	if r.Reloads() != 1 || r.Failures() != 0 || r.LastError() != nil {
		t.Fatalf("reloads %d failures %d last error %v", r.Reloads(), r.Failures(), r.LastError())
	}

	// Bad replacements of a good pair: each keeps the pair in use and is
	// reported once.
	bad := []struct {
		name   string
		damage func(t *testing.T)
		want   error
	}{
		{"junk certificate", func(t *testing.T) { writeFile(t, p.ServerCert, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n")) }, ErrNoCertificate},
		{"empty key", func(t *testing.T) { writeFile(t, p.ServerKey, nil) }, ErrNoKey},
		{"key missing", func(t *testing.T) { os.Remove(p.ServerKey) }, fs.ErrNotExist},
		{"new certificate, old key", func(t *testing.T) {
			certPEM, _, _ := p.ca.Issue(Request{CommonName: DevServerName, Usage: Server, DNSNames: []string{"localhost"}})
			writeFile(t, p.ServerCert, certPEM) // the key file stays
		}, ErrKeyMismatch},
		{"truncated certificate", func(t *testing.T) {
			data, _ := os.ReadFile(p.ServerCert)
			writeFile(t, p.ServerCert, data[:len(data)/2])
		}, ErrNoCertificate},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			good := rotate(t)
			clock.advance(CheckInterval)
			if got := serial(t); got.Cmp(good) != 0 {
				t.Fatalf("server presented %x, want %x", got, good)
			}
			wantFailures := r.Failures()
			b.damage(t)
			clock.advance(CheckInterval)
			if got := serial(t); got.Cmp(good) != 0 {
				t.Fatalf("server presented %x after a bad replacement, want the good %x", got, good)
			}
			wantFailures++
			if err := r.LastError(); !errors.Is(err, b.want) || r.Failures() != wantFailures {
				t.Fatalf("LastError %v (want %v), failures %d (want %d)", err, b.want, r.Failures(), wantFailures)
			}
			// The same broken files are not tried again...
			clock.advance(CheckInterval)
			serial(t)
			if r.Failures() != wantFailures {
				t.Fatalf("the same bad files were retried: failures %d", r.Failures())
			}
			// ...unless asked to.
			if err := r.Reload(); !errors.Is(err, b.want) {
				t.Fatalf("Reload = %v, want %v", err, b.want)
			}
			if got := serial(t); got.Cmp(good) != 0 || r.Failures() != wantFailures+1 {
				t.Fatalf("after a failed Reload: presented %x (want %x), failures %d", got, good, r.Failures())
			}
		})
	}

	third := rotate(t)
	clock.advance(CheckInterval)
	if got := serial(t); got.Cmp(third) != 0 {
		t.Fatalf("after repair the server presented %x, want %x", got, third)
	}
	if r.LastError() != nil {
		t.Fatalf("LastError after repair: %v", r.LastError())
	}
	// Reload takes effect without waiting for CheckInterval.
	fourth := rotate(t)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serial(t); got.Cmp(fourth) != 0 {
		t.Fatalf("after Reload the server presented %x, want %x", got, fourth)
	}
}

// writeFile overwrites in place (not by rename), as a careless operator would.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCombinedFileRotation rotates a server whose certificate and key share
// one file.
func TestCombinedFileRotation(t *testing.T) {
	p := newPKI(t)
	both := filepath.Join(p.Dir, "ingestd-both.pem")
	write := func() *big.Int {
		certPEM, keyPEM, err := p.ca.Issue(Request{CommonName: DevServerName, Usage: Server, IPAddresses: ipsOf(devServerHosts)})
		if err != nil {
			t.Fatal(err)
		}
		if err := WritePair(both, both, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		return parseCert(t, certPEM).SerialNumber
	}
	write()
	checkMode(t, both, 0o600)
	scfg, r := mustServer(t, both, both, p.CACert, true)
	clock := withClock(r)
	ccfg, _ := mustClient(t, p.CACert, p.ClientCert, p.ClientKey, "127.0.0.1")
	want := write()
	clock.advance(CheckInterval)
	if x := connect(scfg, ccfg); x.err() != nil || x.serverSerial().Cmp(want) != 0 {
		t.Fatalf("presented %x (%v), want %x", x.serverSerial(), x.err(), want)
	}
}

// TestClientRotation replaces the gateway's files; the server sees the new
// certificate on the next connection.
func TestClientRotation(t *testing.T) {
	p := newPKI(t)
	scfg, _ := mustServer(t, p.ServerCert, p.ServerKey, p.CACert, true)
	ccfg, r := mustClient(t, p.CACert, p.ClientCert, p.ClientKey, "127.0.0.1")
	clock := withClock(r)
	before := connect(scfg, ccfg)
	if before.err() != nil {
		t.Fatal(before.err())
	}
	if _, _, err := IssueClient(p.Dir, "gateway", testGateway); err != nil {
		t.Fatal(err)
	}
	clock.advance(CheckInterval)
	after := connect(scfg, ccfg)
	if after.err() != nil {
		t.Fatal(after.err())
	}
	old, cur := before.server.PeerCertificates[0].SerialNumber, after.server.PeerCertificates[0].SerialNumber
	if old.Cmp(cur) == 0 || cur.Cmp(r.Certificate().SerialNumber) != 0 {
		t.Fatalf("server saw %x then %x; the Reloader holds %x", old, cur, r.Certificate().SerialNumber)
	}
}

// TestClientCARotation replaces the server's client-CA file: clients of the
// new CA get in, clients of the old one (even with a session to resume) do
// not.
func TestClientCARotation(t *testing.T) {
	p := newPKI(t)
	caFile := filepath.Join(p.Dir, "client-ca.pem")
	copyFile(t, p.CACert, caFile)
	scfg, r := mustServer(t, p.ServerCert, p.ServerKey, caFile, true)
	clock := withClock(r)

	oldClient, _ := mustClient(t, p.CACert, p.ClientCert, p.ClientKey, "127.0.0.1")
	oldClient.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	newCA, err := NewCA("new client CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nc, nk := issueWith(t, newCA, p.Dir, "new-gw", Request{CommonName: testGateway, Usage: Client})
	newClient, _ := mustClient(t, p.CACert, nc, nk, "127.0.0.1")

	if x := connect(scfg, oldClient); x.err() != nil {
		t.Fatal(x.err())
	}
	if x := connect(scfg, oldClient); x.err() != nil || !x.client.DidResume {
		t.Fatalf("second connection: resumed %v, error %v", x.client.DidResume, x.err())
	}
	if x := connect(scfg, newClient); x.err() == nil {
		t.Fatal("client of the new CA accepted before the CA file changed")
	}

	if err := os.WriteFile(caFile, newCA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	clock.advance(CheckInterval)
	if x := connect(scfg, newClient); x.err() != nil {
		t.Fatalf("client of the new CA refused after the CA file changed: %v", x.err())
	}
	if x := connect(scfg, oldClient); x.err() == nil || !strings.Contains(x.err().Error(), "unknown authority") {
		t.Fatalf("client of the old CA (with a session to resume): %v, want refused", x.err())
	}
	if r.Reloads() != 1 {
		t.Errorf("reloads %d, want 1", r.Reloads())
	}

	// A broken CA file keeps the pool in use.
	writeFile(t, caFile, []byte("junk"))
	clock.advance(CheckInterval)
	if x := connect(scfg, newClient); x.err() != nil {
		t.Fatalf("broken CA file: %v", x.err())
	}
	if !errors.Is(r.LastError(), ErrNoCertificate) {
		t.Errorf("LastError %v, want ErrNoCertificate", r.LastError())
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, data)
}

// TestConcurrentRotation runs handshakes from several goroutines while the
// files are replaced and CheckInterval elapses (for the race detector):
// every connection must succeed.
func TestConcurrentRotation(t *testing.T) {
	p := newPKI(t)
	scfg, r := mustServer(t, p.ServerCert, p.ServerKey, p.CACert, true)
	clock := withClock(r)
	r.interval = 0 // look on every handshake
	ccfg, _ := mustClient(t, p.CACert, p.ClientCert, p.ClientKey, "127.0.0.1")

	const workers, rounds = 4, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for range workers {
		wg.Go(func() {
			for range rounds {
				if err := connect(scfg, ccfg).err(); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range rounds {
		certPEM, keyPEM, err := p.ca.Issue(Request{CommonName: DevServerName, Usage: Server, IPAddresses: ipsOf(devServerHosts)})
		if err != nil {
			t.Fatal(err)
		}
		if err := WritePair(p.ServerCert, p.ServerKey, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			r.Reload()
		}
		clock.advance(CheckInterval)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("reloads %d failures %d", r.Reloads(), r.Failures())
}
