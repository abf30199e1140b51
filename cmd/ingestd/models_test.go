package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/certs"
	"github.com/edged/edged/ingest"
)

func TestModelsCLI(t *testing.T) {
	dir := t.TempDir()
	pki, err := certs.MakeDev(filepath.Join(dir, "pki"), certs.DevOptions{GatewayCN: "gwDK"})
	if err != nil {
		t.Fatal(err)
	}
	regFile := filepath.Join(dir, "registry.yaml")
	tokFile := filepath.Join(dir, "admin.token")
	os.WriteFile(regFile, []byte("devices:\n  - {product_key: gwPK, device_key: gwDK, secret: gwSecret}\n"), 0o600)
	os.WriteFile(tokFile, []byte("the-token\n"), 0o600)
	good := filepath.Join(dir, "meter.json")
	os.WriteFile(good, []byte(`{"productKey":"meterPK","measurepoints":[{"identifier":"power","dataType":"float","unit":"kW","hasQuality":true}]}`), 0o600)
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"productKey":"meterPK","measurepoints":[{"identifier":"power","dataType":"flaot","hasQuality":true}]}`), 0o600)
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
		args = append(append([]string{"models"}, args...), "-http", srv.HTTPAddr().String(), "-token-file", tokFile)
		if code := dispatch(args, &out, &errb); code != want {
			t.Fatalf("%v: exit %d, want %d\n%s%s", args, code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	if out := run(0, "put", "meterPK", "-f", good); out != "stored meterPK version 1\n" {
		t.Errorf("put: %q", out)
	}
	if out := run(0, "put", "meterPK", "-f", good); out != "unchanged: the latest is meterPK version 1\n" {
		t.Errorf("put again: %q", out)
	}
	if out := run(1, "put", "meterPK", "-f", bad); !strings.Contains(out, `measurepoints[0].dataType: "flaot" is not a data type`) {
		t.Errorf("put bad: %q", out)
	}
	if out := run(1, "put", "otherPK", "-f", good); !strings.Contains(out, "is not the path's") || !strings.Contains(out, "HTTP 400") {
		t.Errorf("put to another product: %q", out)
	}
	if out := run(0, "list"); out != "PRODUCT  VERSION  VERSIONS\nmeterPK  1        1\n" {
		t.Errorf("list: %q", out)
	}
	if out := run(0, "get", "meterPK", "-version", "1"); !strings.Contains(out, `"identifier": "power"`) {
		t.Errorf("get: %q", out)
	}
	if out := run(1, "get", "nopePK"); !strings.Contains(out, "product nopePK has no thing model (HTTP 404)") {
		t.Errorf("get unknown: %q", out)
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"models", "check", "-f", good}, &out, &errb); code != 0 || !strings.Contains(out.String(), "a valid model of meterPK: 1 measure points") {
		t.Errorf("check: %d %s %s", code, out.String(), errb.String())
	}
	if code := dispatch([]string{"models", "list"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "give -token-file") {
		t.Errorf("usage: %d %s", code, errb.String())
	}
}
