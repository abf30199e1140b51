package ingest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// loadTestRegistry writes testRegistry to a file and loads it.
func loadTestRegistry(t *testing.T) (*Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, path, "# a comment that is not kept\n"+testRegistry)
	reg, err := LoadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	return reg, path
}

func TestRegistryPutValidation(t *testing.T) {
	reg, path := loadTestRegistry(t)
	before, _ := os.ReadFile(path)
	gw, _ := reg.Device("gwPK", "gwDK")
	fp := strings.Repeat("0f", 32)
	if _, err := reg.Put(RegistryDevice{ProductKey: "p", DeviceKey: "bound", CertLogin: true, CertSHA256: fp, CertSerial: "0a"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		d    RegistryDevice
		want string
	}{
		{"bad product key", RegistryDevice{ProductKey: "", DeviceKey: "d", Secret: "s"}, `device "/d": product_key "": required`},
		{"bad device key", RegistryDevice{ProductKey: "p", DeviceKey: "a/b", Secret: "s"}, `device "p/a/b": device_key "a/b": required`},
		{"no login", RegistryDevice{ProductKey: "p", DeviceKey: "d"}, `device "p/d": give a secret or cert_login`},
		{"sub-devices of a plain device", RegistryDevice{ProductKey: "p", DeviceKey: "d", Secret: "s", SubDevices: []SubDeviceRef{{"q", "*"}}}, "sub_devices: only a gateway"},
		{"bad sub-device", RegistryDevice{ProductKey: "p", DeviceKey: "d", Secret: "s", Gateway: true, SubDevices: []SubDeviceRef{{"q", "a+b"}}}, "sub_devices[0]: product_key and device_key"},
		{"itself", RegistryDevice{ProductKey: "p", DeviceKey: "d", Secret: "s", Gateway: true, SubDevices: []SubDeviceRef{{"q", "*"}, {"p", "d"}}}, "sub_devices[1]: a gateway is not its own sub-device"},
		{"bad fingerprint", RegistryDevice{ProductKey: "p", DeviceKey: "d", CertLogin: true, CertSHA256: "abc"}, `cert_sha256 "abc": want hex (colons allowed), 32 bytes`},
		{"bad serial", RegistryDevice{ProductKey: "p", DeviceKey: "d", CertLogin: true, CertSerial: "xyz"}, `cert_serial "xyz": want hex`},
		{"fingerprint bound twice", RegistryDevice{ProductKey: "p", DeviceKey: "d", CertLogin: true, CertSHA256: strings.ToUpper(fp)}, `device "p/d": cert_sha256: the certificate is already bound to p/bound`},
		// The conflict is reported on the device put, even when it comes
		// first in the file.
		{"serial bound twice, replacing", RegistryDevice{ProductKey: "gwPK", DeviceKey: "gwDK", Secret: "s", CertSerial: "00:0A"}, `device "gwPK/gwDK": cert_serial: the certificate is already bound to p/bound`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			created, err := reg.Put(tt.d)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) || created {
				t.Errorf("Put: %v %v, want ErrInvalid naming %q", created, err, tt.want)
			}
			if strings.Contains(err.Error(), "line") {
				t.Errorf("API message names a line: %v", err)
			}
		})
	}
	if reg.Len() != 7 {
		t.Errorf("%d devices", reg.Len())
	}
	if d, _ := reg.Device("gwPK", "gwDK"); d != gw || d.CertSerial != "" || d.Line != 3 {
		t.Errorf("gwDK changed: %+v", d)
	}
	if err := reg.Delete("p", "bound"); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(path)
	if !reflect.DeepEqual(devicesOf(t, path), withoutLines(reg.Devices())) || reflect.DeepEqual(before, after) {
		t.Errorf("file after refused changes:\n%s", after)
	}
}

func TestRegistryChanges(t *testing.T) {
	reg, path := loadTestRegistry(t)
	gw, _ := reg.Device("gwPK", "gwDK")
	sub, _ := reg.Device("subPK", "subDK")

	subs := []SubDeviceRef{{"meterPK", "*"}}
	created, err := reg.Put(RegistryDevice{ProductKey: "newPK", DeviceKey: "new", Secret: "s", Gateway: true, SubDevices: subs, Line: 99})
	if err != nil || !created {
		t.Fatalf("Put new: %v %v", created, err)
	}
	subs[0].DeviceKey = "changed by the caller"
	d, ok := reg.Device("newPK", "new")
	if !ok || d.SubDevices[0].DeviceKey != "*" || d.Line != 0 {
		t.Errorf("new device %+v", d)
	}
	created, err = reg.Put(RegistryDevice{ProductKey: "subPK", DeviceKey: "subDK", Secret: "other"})
	if err != nil || created {
		t.Fatalf("Put existing: %v %v", created, err)
	}
	// Values handed out are never modified; untouched devices keep their
	// pointer.
	if sub.Secret != "subSecret" {
		t.Errorf("old value modified: %+v", sub)
	}
	if d, _ := reg.Device("subPK", "subDK"); d == sub || d.Secret != "other" {
		t.Errorf("replaced: %+v", d)
	}
	if d, _ := reg.Device("gwPK", "gwDK"); d != gw {
		t.Error("an untouched device got a new pointer")
	}

	if err := reg.SetEnabled("subPK", "sub2", false); err != nil {
		t.Fatal(err)
	}
	if d, _ := reg.Device("subPK", "sub2"); !d.Disabled || d.Secret != "sub2Secret" {
		t.Errorf("disabled: %+v", d)
	}
	if err := reg.SetEnabled("nope", "nope", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetEnabled unknown: %v", err)
	}
	if err := reg.Delete("otherPK", "stranger"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Delete("otherPK", "stranger"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete twice: %v", err)
	}
	if _, ok := reg.Device("otherPK", "stranger"); ok || reg.Len() != 6 {
		t.Errorf("after Delete: %d devices", reg.Len())
	}

	// Devices is sorted and a copy.
	devs := reg.Devices()
	var keys []string
	for _, d := range devs {
		keys = append(keys, d.ProductKey+"/"+d.DeviceKey)
	}
	if want := "certPK/certOnly gwPK/gwDK meterPK/plain newPK/new subPK/sub2 subPK/subDK"; strings.Join(keys, " ") != want {
		t.Errorf("Devices: %s", keys)
	}
	devs[1].SubDevices[0].DeviceKey = "mutated"
	if d, _ := reg.Device("gwPK", "gwDK"); d.SubDevices[0].DeviceKey != "subDK" {
		t.Error("Devices shares its slices")
	}

	// The file: rewritten with the header, comments gone, in file order,
	// loading back as the same devices.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), registryHeader) || strings.Contains(string(data), "not kept\n") {
		t.Errorf("file:\n%s", data)
	}
	if i, j := strings.Index(string(data), `"gwDK"`), strings.Index(string(data), `"newPK"`); i < 0 || j < i {
		t.Errorf("file order not kept:\n%s", data)
	}
	if got := devicesOf(t, path); !reflect.DeepEqual(got, withoutLines(reg.Devices())) {
		t.Errorf("reloaded %+v\nwant %+v", got, reg.Devices())
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}

	// The last device cannot go: a registry file without devices does
	// not load.
	for _, d := range reg.Devices()[1:] {
		if err := reg.Delete(d.ProductKey, d.DeviceKey); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Delete("certPK", "certOnly"); !errors.Is(err, ErrInvalid) || reg.Len() != 1 {
		t.Errorf("deleting the last device: %v", err)
	}
	if got := devicesOf(t, path); len(got) != 1 {
		t.Errorf("file has %d devices", len(got))
	}
}

func TestRegistryInMemory(t *testing.T) {
	reg, err := ParseRegistry("registry.yaml", []byte(testRegistry))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Put(RegistryDevice{ProductKey: "p", DeviceKey: "d", Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("registry.yaml"); !os.IsNotExist(err) {
		t.Error("a registry parsed from bytes wrote a file")
	}
	var empty Registry
	if _, ok := empty.Device("p", "d"); ok || empty.Len() != 0 || len(empty.Devices()) != 0 {
		t.Error("zero Registry")
	}
	if _, err := empty.Put(RegistryDevice{ProductKey: "p", DeviceKey: "d", Secret: "s"}); err != nil || empty.Len() != 1 {
		t.Errorf("Put into the zero Registry: %v", err)
	}
}

// TestRegistryWriteFailure: a change that cannot be written is not made.
func TestRegistryWriteFailure(t *testing.T) {
	reg, path := loadTestRegistry(t)
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Put(RegistryDevice{ProductKey: "p", DeviceKey: "d", Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode not kept: %v", fi.Mode())
	}
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	gw, _ := reg.Device("gwPK", "gwDK")
	if _, err := reg.Put(RegistryDevice{ProductKey: "gwPK", DeviceKey: "gwDK", Secret: "new"}); err == nil || errors.Is(err, ErrInvalid) {
		t.Fatalf("Put with the directory gone: %v", err)
	}
	if err := reg.Delete("p", "d"); err == nil {
		t.Fatal("Delete with the directory gone")
	}
	if d, _ := reg.Device("gwPK", "gwDK"); d != gw || reg.Len() != 7 {
		t.Error("a failed write changed the registry")
	}
	// A secret that YAML cannot carry is refused before anything is written.
	os.MkdirAll(filepath.Dir(path), 0o700)
	if _, err := reg.Put(RegistryDevice{ProductKey: "p", DeviceKey: "d", Secret: "\xff"}); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if d, _ := reg.Device("p", "d"); d.Secret != "s" {
		t.Error("a refused secret was kept")
	}
}

// TestRegistryConcurrent: changes are serialised, readers see whole
// snapshots (run with -race).
func TestRegistryConcurrent(t *testing.T) {
	reg, path := loadTestRegistry(t)
	const writers, each = 4, 10
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d, ok := reg.Device("gwPK", "gwDK"); !ok || d.Secret == "" {
					t.Error("gwDK missing")
					return
				}
				if n, devs := reg.Len(), reg.Devices(); n < 6 || len(devs) < 6 {
					t.Errorf("%d devices", n)
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				dk := fmt.Sprintf("w%d-%d", w, i)
				if _, err := reg.Put(RegistryDevice{ProductKey: "load", DeviceKey: dk, Secret: dk, CertLogin: true, CertSerial: fmt.Sprintf("%x", 1000+w*each+i)}); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 1 {
					if err := reg.Delete("load", dk); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if want := 6 + writers*each/2; reg.Len() != want {
		t.Errorf("%d devices, want %d", reg.Len(), want)
	}
	if got := devicesOf(t, path); !reflect.DeepEqual(got, withoutLines(reg.Devices())) {
		t.Error("the file differs from memory")
	}
}

// FuzzRegistryRoundTrip: whatever registry loads, ingestd writes back so
// that it loads as the same devices.
func FuzzRegistryRoundTrip(f *testing.F) {
	f.Add([]byte(testRegistry))
	f.Add([]byte("devices:\n  - {product_key: p, device_key: d, secret: \"a\\tb\\\\ \\\" #c: *&x\", disabled: true}\n"))
	f.Add([]byte("devices:\n  - {product_key: \"yes\", device_key: \"123\", secret: .inf, cert_login: true, cert_serial: \"0A\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		reg, err := ParseRegistry("f.yaml", data)
		if err != nil {
			return
		}
		list := reg.snapshot().list
		out, err := marshalRegistry(list)
		if err != nil {
			return // not UTF-8: refused, never written
		}
		back, err := ParseRegistry("out.yaml", out)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if got, want := withoutLines(back.Devices()), withoutLines(reg.Devices()); !reflect.DeepEqual(got, want) {
			t.Fatalf("read back %+v\nwant %+v\n%s", got, want, out)
		}
	})
}
