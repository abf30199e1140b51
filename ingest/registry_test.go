package ingest

import (
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	reg, err := ParseRegistry("registry.yaml", []byte(testRegistry))
	if err != nil {
		t.Fatal(err)
	}
	gw, ok := reg.Device("gwPK", "gwDK")
	if !ok || gw.Secret != "gwSecret" || !gw.CertLogin || !gw.Gateway || gw.Line != 2 {
		t.Errorf("gwDK: %+v", gw)
	}
	if !gw.Declares("subPK", "subDK") || !gw.Declares("meterPK", "anything") || gw.Declares("subPK", "sub2") || gw.Declares("otherPK", "subDK") {
		t.Errorf("gwDK declares %+v", gw.SubDevices)
	}
	if d, ok := reg.Device("certPK", "certOnly"); !ok || d.Secret != "" || !d.CertLogin || d.Gateway || d.Line != 14 {
		t.Errorf("certOnly: %+v", d)
	}
	if _, ok := reg.Device("gwDK", "gwPK"); ok {
		t.Error("keys swapped found")
	}
}

func TestRegistryErrors(t *testing.T) {
	for _, tt := range []struct{ name, yaml, want string }{
		{"unknown key", "devices:\n  - product_key: p\n    device_key: d\n    secret: s\n    gatway: true\n", "registry.yaml:5"},
		{"wrong type", "devices:\n  - product_key: p\n    device_key: d\n    cert_login: maybe\n", "registry.yaml:4"},
		{"missing key", "devices:\n  - product_key: p\n    secret: s\n", `registry.yaml:2: device "p/": device_key "": required`},
		{"bad key", "devices:\n  - {product_key: p, device_key: a/b, secret: s}\n", `registry.yaml:2: device "p/a/b": device_key "a/b"`},
		{"no login", "devices:\n  - {product_key: p, device_key: d}\n", "registry.yaml:2: device \"p/d\": give a secret or cert_login"},
		{"duplicate", "devices:\n  - {product_key: p, device_key: d, secret: s}\n  - {product_key: p, device_key: d, secret: t}\n", "registry.yaml:3: device \"p/d\": registered twice (first on line 2)"},
		{"empty", "devices: []\n", "no devices"},
		{"bad fingerprint", "devices:\n  - {product_key: p, device_key: d, cert_login: true, cert_sha256: \"zz\"}\n", `registry.yaml:2: device "p/d": cert_sha256 "zz": want hex (colons allowed), 32 bytes`},
		{"certificate bound twice", "devices:\n  - {product_key: p, device_key: d, cert_login: true, cert_serial: \"0a\"}\n  - {product_key: p, device_key: e, cert_login: true, cert_serial: \"A\"}\n", `registry.yaml:3: device "p/e": cert_serial: the certificate is already bound to p/d (line 2)`},
		{"sub-devices of a plain device", "devices:\n  - product_key: p\n    device_key: d\n    secret: s\n    sub_devices: [{product_key: q, device_key: \"*\"}]\n", `registry.yaml:2: device "p/d": sub_devices: only a gateway`},
		{"bad sub-device", "devices:\n  - product_key: p\n    device_key: d\n    secret: s\n    gateway: true\n    sub_devices:\n      - {product_key: q}\n", `registry.yaml:7: device "p/d": sub_devices[0]: product_key and device_key`},
		{"itself", "devices:\n  - product_key: p\n    device_key: d\n    secret: s\n    gateway: true\n    sub_devices:\n      - {product_key: q, device_key: \"*\"}\n      - {product_key: p, device_key: d}\n", `registry.yaml:8: device "p/d": sub_devices[1]: a gateway is not its own sub-device`},
		{"not yaml", "devices: [\n", "registry.yaml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRegistry("registry.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := LoadRegistry("/nonexistent/registry.yaml"); err == nil {
		t.Error("missing file")
	}
}

// FuzzParseRegistry: a registry file never crashes the service.
func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(testRegistry))
	f.Add([]byte("devices: ! "))
	f.Add([]byte("devices:\n  - {product_key: p, device_key: d}\n  - {product_key: p, device_key: d, secret: s}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		reg, err := ParseRegistry("f.yaml", data)
		if err == nil && reg.Len() == 0 {
			t.Fatal("an empty registry accepted")
		}
	})
}
