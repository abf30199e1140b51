package certs

import (
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

const testGateway = "gw-0001"

func mustDev(t *testing.T, dir string, opts DevOptions) DevFiles {
	t.Helper()
	if opts.GatewayCN == "" {
		opts.GatewayCN = testGateway
	}
	files, err := MakeDev(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// fingerprints returns the fingerprint of every certificate MakeDev manages.
func fingerprints(t *testing.T, f DevFiles) map[string]string {
	t.Helper()
	fps := map[string]string{}
	for _, p := range []string{f.CACert, f.ServerCert, f.ClientCert} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if fps[filepath.Base(p)], err = Fingerprint(data); err != nil {
			t.Fatal(err)
		}
	}
	return fps
}

// checkDev verifies that the files form a consistent dev PKI.
func checkDev(t *testing.T, f DevFiles, gatewayCN string, hosts ...string) {
	t.Helper()
	ca, err := LoadCA(f.CACert, f.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	if !keep(f.ServerCert, f.ServerKey, poolOf(ca), x509.ExtKeyUsageServerAuth, append(slices.Clone(devServerHosts), hosts...), "", time.Now(), time.Hour) {
		t.Error("server certificate is not good")
	}
	if !keep(f.ClientCert, f.ClientKey, poolOf(ca), x509.ExtKeyUsageClientAuth, nil, gatewayCN, time.Now(), time.Hour) {
		t.Error("client certificate is not good")
	}
	for _, k := range []string{f.CAKey, f.ServerKey, f.ClientKey} {
		checkMode(t, k, 0o600)
	}
}

func poolOf(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Certificate())
	return p
}

func TestMakeDevIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	first := mustDev(t, dir, DevOptions{})
	if len(first.Written) != 6 {
		t.Errorf("first run wrote %v, want all six files", first.Written)
	}
	checkDev(t, first, testGateway)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v %v", fi.Mode(), err)
	}
	before := fingerprints(t, first)

	second := mustDev(t, dir, DevOptions{})
	if len(second.Written) != 0 {
		t.Errorf("second run wrote %v, want nothing", second.Written)
	}
	if after := fingerprints(t, second); !mapsEqual(before, after) {
		t.Errorf("second run changed certificates: %v -> %v", before, after)
	}
	first.Written, second.Written = nil, nil
	if !reflect.DeepEqual(first, second) {
		t.Errorf("paths differ: %+v vs %+v", first, second)
	}

	if _, err := MakeDev(dir, DevOptions{}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("MakeDev without GatewayCN = %v, want ErrInvalidRequest", err)
	}
}

func ipsOf(hosts []string) []net.IP {
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		}
	}
	return ips
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestMakeDevRepairs damages a good dev PKI and checks that MakeDev rewrites
// exactly what must be rewritten.
func TestMakeDevRepairs(t *testing.T) {
	ca := []string{DevCACert, DevCAKey}
	server := []string{DevServerCert, DevServerKey}
	client := []string{DevClientCert, DevClientKey}
	all := slices.Concat(ca, server, client)

	issueInto := func(t *testing.T, f DevFiles, certFile, keyFile string, req Request) {
		t.Helper()
		c, err := LoadCA(f.CACert, f.CAKey)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := c.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := WritePair(certFile, keyFile, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, f DevFiles)
		opts   DevOptions
		want   []string
	}{
		{name: "client key missing",
			damage: func(t *testing.T, f DevFiles) { os.Remove(f.ClientKey) },
			want:   client},
		{name: "server cert corrupt",
			damage: func(t *testing.T, f DevFiles) { os.WriteFile(f.ServerCert, []byte("junk"), 0o644) },
			want:   server},
		{name: "server key of another pair",
			damage: func(t *testing.T, f DevFiles) {
				data, _ := os.ReadFile(f.ClientKey)
				os.WriteFile(f.ServerKey, data, 0o600)
			},
			want: server},
		{name: "gateway renamed",
			opts: DevOptions{GatewayCN: "gw-0002"},
			want: client},
		{name: "extra server host",
			opts: DevOptions{ServerHosts: []string{"ingest.plant.local", "10.0.0.7"}},
			want: server},
		{name: "CA corrupt",
			damage: func(t *testing.T, f DevFiles) { os.WriteFile(f.CACert, []byte("junk"), 0o644) },
			want:   all},
		{name: "CA expiring",
			opts: DevOptions{RenewBefore: 20 * 365 * 24 * time.Hour},
			want: all},
		{name: "client expired",
			damage: func(t *testing.T, f DevFiles) {
				issueInto(t, f, f.ClientCert, f.ClientKey, Request{CommonName: testGateway, Usage: Client,
					Start: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour})
			},
			want: client},
		{name: "server close to expiry",
			damage: func(t *testing.T, f DevFiles) {
				issueInto(t, f, f.ServerCert, f.ServerKey, Request{CommonName: DevServerName, Usage: Server,
					DNSNames: []string{"localhost"}, IPAddresses: ipsOf(devServerHosts), Validity: time.Hour})
			},
			opts: DevOptions{RenewBefore: 2 * time.Hour},
			want: server},
		{name: "client from a foreign CA",
			damage: func(t *testing.T, f DevFiles) {
				if _, _, err := IssueForeignClient(f.Dir, "gateway", testGateway); err != nil {
					t.Fatal(err)
				}
			},
			want: client},
		{name: "server cert used for the client",
			damage: func(t *testing.T, f DevFiles) {
				issueInto(t, f, f.ClientCert, f.ClientKey, Request{CommonName: testGateway, Usage: Server, DNSNames: []string{"x"}})
			},
			want: client},
		{name: "nothing wrong", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := mustDev(t, dir, DevOptions{})
			if tt.damage != nil {
				tt.damage(t, f)
			}
			opts := tt.opts
			if opts.GatewayCN == "" {
				opts.GatewayCN = testGateway
			}
			got := mustDev(t, dir, opts)
			var names []string
			for _, p := range got.Written {
				names = append(names, filepath.Base(p))
			}
			if !slices.Equal(sorted(names), sorted(tt.want)) {
				t.Errorf("rewrote %v, want %v", names, tt.want)
			}
			checkDev(t, got, opts.GatewayCN, opts.ServerHosts...)
			// And now it is stable.
			opts.RenewBefore = 0
			if again := mustDev(t, dir, opts); len(again.Written) != 0 {
				t.Errorf("third run rewrote %v", again.Written)
			}
		})
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestIssueClient(t *testing.T) {
	dir := t.TempDir()
	f := mustDev(t, dir, DevOptions{})
	ca, err := LoadCA(f.CACert, f.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(certFile, keyFile, cn string) error {
		p, err := loadPair(certFile, keyFile)
		if err != nil {
			return err
		}
		if p.Leaf.Subject.CommonName != cn {
			t.Errorf("CN %q, want %q", p.Leaf.Subject.CommonName, cn)
		}
		_, err = p.Leaf.Verify(x509.VerifyOptions{Roots: poolOf(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err
	}

	cf, kf, err := IssueClient(dir, "gw-0002", "gw-0002")
	if err != nil {
		t.Fatal(err)
	}
	if cf != filepath.Join(dir, "gw-0002.pem") || kf != filepath.Join(dir, "gw-0002-key.pem") {
		t.Errorf("paths %s %s", cf, kf)
	}
	checkMode(t, kf, 0o600)
	if err := verify(cf, kf, "gw-0002"); err != nil {
		t.Errorf("IssueClient: %v", err)
	}

	cf, kf, err = IssueForeignClient(dir, "rogue", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	var unknown x509.UnknownAuthorityError
	if err := verify(cf, kf, testGateway); !errors.As(err, &unknown) {
		t.Errorf("foreign client verified against the dev CA: %v", err)
	}

	for _, name := range []string{"", ".", "..", "ca", "ca-key", "gw-key", "../x", "a/b", `a\b`} {
		if _, _, err := IssueClient(dir, name, "x"); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("IssueClient(name %q) = %v, want ErrInvalidRequest", name, err)
		}
		if _, _, err := IssueForeignClient(dir, name, "x"); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("IssueForeignClient(name %q) = %v, want ErrInvalidRequest", name, err)
		}
	}
	if _, _, err := IssueClient(t.TempDir(), "gw", "gw"); err == nil {
		t.Error("IssueClient without a CA succeeded")
	}
}
