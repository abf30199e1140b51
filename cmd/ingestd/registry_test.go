package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/certs"
	"github.com/edged/edged/ingest"
)

func TestParseRegistryArgs(t *testing.T) {
	for _, tt := range []struct {
		name string
		args string
		want *registryCmd // nil: a usage error containing err
		err  string
	}{
		{"list", "list -token-file T", &registryCmd{verb: "list", http: "127.0.0.1:8080", tokenFile: "T"}, ""},
		{"get, flags after", "get gwPK/gwDK -http 127.0.0.1:9 -token-file T", &registryCmd{verb: "get", pk: "gwPK", dk: "gwDK", http: "127.0.0.1:9", tokenFile: "T"}, ""},
		{"delete, flags before", "delete -token-file T p/d", &registryCmd{verb: "delete", pk: "p", dk: "d", http: "127.0.0.1:8080", tokenFile: "T"}, ""},
		{"put, everything", "put gwPK/gwDK -token-file T -secret-file S -cert-login -gateway -sub meterPK/* -sub subPK/sub-1 -cert-sha256 AB -cert-serial 0a -disabled",
			&registryCmd{verb: "put", pk: "gwPK", dk: "gwDK", http: "127.0.0.1:8080", tokenFile: "T", secretFile: "S",
				device: registryDeviceIn{CertLogin: true, Gateway: true, CertSHA256: "AB", CertSerial: "0a", Disabled: true,
					SubDevices: []registrySubRef{{"meterPK", "*"}, {"subPK", "sub-1"}}}}, ""},
		{"put, keep secret", "put -keep-secret p/d -token-file T", &registryCmd{verb: "put", pk: "p", dk: "d", http: "127.0.0.1:8080", tokenFile: "T", device: registryDeviceIn{KeepSecret: true}}, ""},
		{"no command", "", nil, "give a command"},
		{"unknown command", "rm p/d -token-file T", nil, `unknown command "rm"`},
		{"no token", "list", nil, "give -token-file"},
		{"list with a device", "list p/d -token-file T", nil, "list takes no device"},
		{"get without a device", "get -token-file T", nil, "get takes one PK/DK"},
		{"two devices", "delete p/d p/e -token-file T", nil, "delete takes one PK/DK"},
		{"not PK/DK", "get pd -token-file T", nil, `"pd": want PRODUCT_KEY/DEVICE_KEY`},
		{"empty DK", "get p/ -token-file T", nil, "want PRODUCT_KEY/DEVICE_KEY"},
		{"bad sub", "put p/d -token-file T -gateway -sub q", nil, `-sub "q"`},
		{"put flag on get", "get p/d -token-file T -gateway", nil, "flag provided but not defined: -gateway"},
		{"secret and keep", "put p/d -token-file T -secret-file S -keep-secret", nil, "give one of them"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRegistryArgs(strings.Fields(tt.args))
			if tt.want == nil {
				if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want a usage error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestRegistryExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"registry", "list"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "give -token-file") || !strings.Contains(errb.String(), "usage: ingestd registry") {
		t.Errorf("usage: %d %s", code, errb.String())
	}
	out.Reset()
	if code := dispatch([]string{"registry", "-h"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "-secret-file F") {
		t.Errorf("help: %d %s", code, out.String())
	}
	errb.Reset()
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t\n"), 0o600)
	// Nothing listens on port 1 of the loopback.
	if code := dispatch([]string{"registry", "list", "-http", "127.0.0.1:1", "-token-file", tok}, &out, &errb); code != 1 || !strings.HasPrefix(errb.String(), "ingestd registry: ") {
		t.Errorf("no server: %d %s", code, errb.String())
	}
}

// TestRegistryCLI runs the commands against an ingestd in this process.
func TestRegistryCLI(t *testing.T) {
	dir := t.TempDir()
	pki, err := certs.MakeDev(filepath.Join(dir, "pki"), certs.DevOptions{GatewayCN: "gwDK"})
	if err != nil {
		t.Fatal(err)
	}
	regFile := filepath.Join(dir, "registry.yaml")
	tokFile := filepath.Join(dir, "admin.token")
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(regFile, []byte("devices:\n  - {product_key: gwPK, device_key: gwDK, secret: gwSecret}\n"), 0o600)
	os.WriteFile(tokFile, []byte("the-token\n"), 0o600)
	os.WriteFile(secretFile, []byte("meterSecret\n"), 0o600)
	srv, err := ingest.New(ingest.Config{
		MQTTListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", DataDir: filepath.Join(dir, "data"),
		CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CACert,
		RegistryFile: regFile, AdminTokenFile: tokFile,
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		t.Fatal("not ready")
	}
	run := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		args = append(append([]string{"registry"}, args...), "-http", srv.HTTPAddr().String(), "-token-file", tokFile)
		if code := dispatch(args, &out, &errb); code != want {
			t.Fatalf("%v: exit %d, want %d\n%s%s", args, code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}

	if out := run(0, "put", "meterPK/meter-1", "-secret-file", secretFile); out != "created meterPK/meter-1\n" {
		t.Errorf("put: %q", out)
	}
	if out := run(0, "put", "gwPK/gwDK", "-keep-secret", "-gateway", "-sub", "meterPK/*", "-cert-login", "-cert-serial", "0A:1B"); out != "replaced gwPK/gwDK\n" {
		t.Errorf("put: %q", out)
	}
	out := run(0, "list")
	for _, want := range []string{
		"PRODUCT  DEVICE   SECRET  CERT LOGIN  BINDING       GATEWAY  SUB-DEVICES  DISABLED",
		"gwPK     gwDK     yes     yes         serial:0A:1B  yes      meterPK/*    no",
		"meterPK  meter-1  yes     no          -             no       -            no",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if out := run(0, "get", "gwPK/gwDK"); !strings.Contains(out, `"has_secret": true`) || strings.Contains(out, "gwSecret") {
		t.Errorf("get: %s", out)
	}
	if out := run(1, "put", "meterPK/meter-2"); !strings.Contains(out, "give a secret or cert_login") || !strings.Contains(out, "HTTP 400") {
		t.Errorf("invalid put: %s", out)
	}
	if out := run(1, "get", "meterPK/nope"); !strings.Contains(out, "HTTP 404") {
		t.Errorf("get unknown: %s", out)
	}
	run(0, "delete", "meterPK/meter-1")
	run(1, "delete", "meterPK/meter-1")

	reg, err := ingest.LoadRegistry(regFile)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := reg.Device("gwPK", "gwDK")
	if reg.Len() != 1 || !ok || d.Secret != "gwSecret" || !d.Gateway || !d.Declares("meterPK", "meter-9") || d.CertSerial != "0A:1B" {
		t.Errorf("registry file: %d devices, gwDK %+v", reg.Len(), d)
	}

	var o, e bytes.Buffer
	os.WriteFile(tokFile+".bad", []byte("wrong"), 0o600)
	if code := dispatch([]string{"registry", "list", "-http", srv.HTTPAddr().String(), "-token-file", tokFile + ".bad"}, &o, &e); code != 1 || !strings.Contains(e.String(), "HTTP 401") {
		t.Errorf("wrong token: %d %s", code, e.String())
	}
}
