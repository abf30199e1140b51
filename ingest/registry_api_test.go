package ingest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged/edged/cloudlink/enos"
)

const testAdminToken = "s3cret-admin-token"

// startAdminEnv starts a server with the registry API enabled.
func startAdminEnv(t *testing.T) *env {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	writeFile(t, tokenFile, "  "+testAdminToken+"\n")
	return startEnv(t, func(c *Config) { c.AdminTokenFile = tokenFile })
}

// api sends a registry API request with token ("" for none) and returns
// the status, the response and its body.
func (e *env) api(method, path, token, body string) (int, *http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.srv.HTTPAddr().String()+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNoContent && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		e.t.Errorf("%s %s: content type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, resp, string(b)
}

// admin is api with the right token; it fails the test unless the status
// is want.
func (e *env) admin(method, path, body string, want int) string {
	e.t.Helper()
	code, _, b := e.api(method, path, testAdminToken, body)
	if code != want {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	return b
}

func TestRegistryAPIDisabled(t *testing.T) {
	e := startEnv(t, nil)
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		for _, p := range []string{"/api/v1/registry/devices", "/api/v1/registry/devices/gwPK/gwDK"} {
			code, _, body := e.api(m, p, testAdminToken, `{"secret":"x"}`)
			if code != http.StatusForbidden || !strings.Contains(body, "registry API disabled: start ingestd with -admin-token-file") {
				t.Errorf("%s %s: %d %s", m, p, code, body)
			}
		}
	}
}

func TestRegistryAPIAuth(t *testing.T) {
	e := startAdminEnv(t)
	for _, tt := range []struct{ name, header string }{
		{"no token", ""},
		{"wrong token", "Bearer nope"},
		{"token prefix", "Bearer " + testAdminToken[:5]},
		{"basic", "Basic " + testAdminToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := e.metric("ingest_admin_auth_failures_total", "")
			req, _ := http.NewRequest("GET", "http://"+e.srv.HTTPAddr().String()+"/api/v1/registry/devices", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
			}
			if strings.Contains(string(body), testAdminToken) || strings.Contains(string(body), "secret") {
				t.Errorf("body %s", body)
			}
			if got := e.metric("ingest_admin_auth_failures_total", ""); got != before+1 {
				t.Errorf("failures %v, want %v", got, before+1)
			}
		})
	}
	var list struct{ Devices []map[string]any }
	if err := json.Unmarshal([]byte(e.admin("GET", "/api/v1/registry/devices", "", 200)), &list); err != nil || len(list.Devices) != 6 {
		t.Fatalf("list: %v %v", err, list)
	}
	if d := list.Devices[0]; d["product_key"] != "certPK" || d["has_secret"] != false || d["cert_login"] != true {
		t.Errorf("first device %v", d)
	}
	for _, d := range list.Devices {
		if _, ok := d["secret"]; ok {
			t.Errorf("secret shown: %v", d)
		}
	}

	// New refuses a missing or empty token file.
	for _, content := range []string{"", " \n\t"} {
		cfg := e.cfg
		cfg.AdminTokenFile = filepath.Join(t.TempDir(), "empty")
		if content != "" {
			writeFile(t, cfg.AdminTokenFile, content)
		}
		if _, err := New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "admin token") {
			t.Errorf("token file %q: %v", content, err)
		}
	}
}

// connClosed waits until the broker has closed c's connection.
func connClosed(t *testing.T, c paho.Client) {
	t.Helper()
	eventually(t, "connection closed", func() bool { return !c.IsConnectionOpen() })
}

func TestRegistryAPIPutLoginDelete(t *testing.T) {
	e := startAdminEnv(t)
	const dev = "/api/v1/registry/devices/newPK/new-1"
	e.admin("GET", dev, "", 404)
	b := e.admin("PUT", dev, `{"secret":"newSecret"}`, 201)
	if strings.Contains(b, "newSecret") || !strings.Contains(b, `"has_secret":true`) {
		t.Errorf("PUT answered %s", b)
	}
	c := e.login("newPK", "new-1", "newSecret")
	if b := e.admin("GET", dev, "", 200); strings.Contains(b, "newSecret") || !strings.Contains(b, `"device_key":"new-1"`) {
		t.Errorf("GET %s", b)
	}

	// A new secret: the connection made with the old one is closed.
	e.admin("PUT", dev, `{"product_key":"newPK","device_key":"new-1","secret":"other"}`, 200)
	connClosed(t, c)
	c = e.login("newPK", "new-1", "other")
	// keep_secret keeps it, and a change that is not of credentials keeps
	// the connection.
	e.admin("PUT", dev, `{"keep_secret":true,"cert_login":true}`, 200)
	time.Sleep(50 * time.Millisecond)
	if !c.IsConnectionOpen() {
		t.Error("connection closed by a change that keeps the credentials")
	}

	e.admin("DELETE", dev, "", 204)
	connClosed(t, c)
	before := e.metric("ingest_connections_refused_total", refusedUnknownDevice)
	cid, user, pass, _ := enos.MQTTLogin("new-1", "newPK", "new-1", "other", "sha256", strconv.FormatInt(time.Now().UnixMilli(), 10))
	if _, err := e.dial(e.clientTLS(e.ca, "new-1"), cid, user, pass); err == nil {
		t.Fatal("a deleted device logged in")
	}
	if got := e.metric("ingest_connections_refused_total", refusedUnknownDevice); got != before+1 {
		t.Errorf("unknown_device refusals %v, want %v", got, before+1)
	}
	e.admin("DELETE", dev, "", 404)
	e.admin("POST", dev, "", 404)
}

func TestRegistryAPIDisable(t *testing.T) {
	e := startAdminEnv(t)
	c := e.login("subPK", "sub2", "sub2Secret")
	b := e.admin("PUT", "/api/v1/registry/devices/subPK/sub2", `{"keep_secret":true,"disabled":true}`, 200)
	if !strings.Contains(b, `"disabled":true`) || !strings.Contains(b, `"has_secret":true`) {
		t.Errorf("PUT answered %s", b)
	}
	connClosed(t, c)
	if d, ok := e.srv.reg.Device("subPK", "sub2"); !ok || !d.Disabled || d.Secret != "sub2Secret" {
		t.Errorf("registry: %+v", d)
	}
	// The login refusal itself (reason "disabled") is authenticate's:
	// see TestRegistryDisabledLogin.
}

// TestRegistryDisabledLogin: a disabled device is refused at login with
// its own reason, and logs in again once enabled.
func TestRegistryDisabledLogin(t *testing.T) {
	e := startAdminEnv(t)
	e.admin("PUT", "/api/v1/registry/devices/subPK/sub2", `{"keep_secret":true,"disabled":true}`, 200)
	cid, user, pass, _ := enos.MQTTLogin("sub2", "subPK", "sub2", "sub2Secret", "sha256", strconv.FormatInt(time.Now().UnixMilli(), 10))
	if _, err := e.dial(e.clientTLS(e.ca, "sub2"), cid, user, pass); err == nil {
		t.Fatal("a disabled device logged in")
	}
	if got := e.metric("ingest_connections_refused_total", refusedDisabled); got != 1 {
		t.Errorf("disabled refusals %v", got)
	}
	e.admin("PUT", "/api/v1/registry/devices/subPK/sub2", `{"keep_secret":true}`, 200)
	e.login("subPK", "sub2", "sub2Secret")
}

// TestRegistryAPICertBinding: binding a certificate to a device closes the
// connection another device made with it.
func TestRegistryAPICertBinding(t *testing.T) {
	e := startAdminEnv(t)
	cert := e.ca.issue(t, "certOnly", false)
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.pem)
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	c, err := e.dial(tlsCfg, "c1", "certOnly&certPK", "")
	if err != nil {
		t.Fatal(err)
	}
	e.admin("PUT", "/api/v1/registry/devices/certPK/bound", `{"cert_login":true,"cert_serial":"`+leaf.SerialNumber.Text(16)+`"}`, 201)
	connClosed(t, c)
	if _, err := e.dial(tlsCfg, "c2", "certOnly&certPK", ""); err == nil {
		t.Error("a certificate bound to another device logged in")
	}
	if c, err := e.dial(tlsCfg, "c3", "bound&certPK", ""); err != nil {
		t.Errorf("bound device: %v", err)
	} else {
		c.Disconnect(50)
	}
}

func TestRegistryAPIInvalid(t *testing.T) {
	e := startAdminEnv(t)
	before, err := os.ReadFile(e.cfg.RegistryFile)
	if err != nil {
		t.Fatal(err)
	}
	fp := strings.Repeat("ab", 32)
	e.admin("PUT", "/api/v1/registry/devices/p/fp", `{"cert_login":true,"cert_sha256":"`+fp+`"}`, 201)
	for _, tt := range []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"device key with /", "p/a%2Fb", `{"secret":"s"}`, 400, `device_key "a/b": required, without '&', '/'`},
		{"product key with &", "p%26q/d", `{"secret":"s"}`, 400, `product_key "p&q"`},
		{"no secret and no cert_login", "p/d", `{"gateway":true}`, 400, "give a secret or cert_login"},
		{"sub-devices of a plain device", "p/d", `{"secret":"s","sub_devices":[{"product_key":"q","device_key":"*"}]}`, 400, "sub_devices: only a gateway"},
		{"bad sub-device", "p/d", `{"secret":"s","gateway":true,"sub_devices":[{"product_key":"q"}]}`, 400, "sub_devices[0]: product_key and device_key"},
		{"certificate bound twice", "p/d", `{"cert_login":true,"cert_sha256":"` + strings.ToUpper(fp) + `"}`, 400, `device "p/d": cert_sha256: the certificate is already bound to p/fp`},
		{"bad fingerprint", "p/d", `{"cert_login":true,"cert_sha256":"zz"}`, 400, `cert_sha256 "zz": want hex`},
		{"wrong type", "p/d", `{"secret":"s","gateway":"yes"}`, 400, "gateway"},
		{"unknown field", "p/d", `{"secret":"s","gatway":true}`, 400, `unknown field "gatway"`},
		{"has_secret is not an input", "p/d", `{"has_secret":true}`, 400, `unknown field "has_secret"`},
		{"not JSON", "p/d", `secret: s`, 400, "body:"},
		{"two values", "p/d", `{"secret":"s"} {}`, 400, "more than one JSON value"},
		{"another device in the body", "p/d", `{"device_key":"e","secret":"s"}`, 400, "product_key and device_key"},
		{"secret and keep_secret", "p/d", `{"secret":"s","keep_secret":true}`, 400, "give one of them"},
		{"keep_secret of a new device", "p/d", `{"keep_secret":true}`, 400, "keep_secret: device p/d is not registered"},
		{"too large", "p/d", `{"secret":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "body over 65536 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := e.api("PUT", "/api/v1/registry/devices/"+tt.path, testAdminToken, tt.body)
			var msg struct{ Error string }
			if err := json.Unmarshal([]byte(body), &msg); err != nil || code != tt.code || !strings.Contains(msg.Error, tt.want) {
				t.Errorf("%d %s, want %d and %q", code, body, tt.code, tt.want)
			}
		})
	}
	e.admin("DELETE", "/api/v1/registry/devices/p/fp", "", 204)
	after, _ := os.ReadFile(e.cfg.RegistryFile)
	reg, err := ParseRegistry("before", before)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := devicesOf(t, e.cfg.RegistryFile), withoutLines(reg.Devices()); !reflect.DeepEqual(got, want) {
		t.Errorf("registry after refused changes:\n%s", after)
	}
	if e.srv.reg.Len() != 6 {
		t.Errorf("%d devices", e.srv.reg.Len())
	}
}

// devicesOf loads a registry file's devices, without their lines.
func devicesOf(t *testing.T, path string) []RegistryDevice {
	t.Helper()
	reg, err := LoadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	return withoutLines(reg.Devices())
}

func withoutLines(devs []RegistryDevice) []RegistryDevice {
	for i := range devs {
		devs[i].Line = 0
	}
	return devs
}

// TestRegistryAPIPersists: API changes rewrite the registry file, which
// loads back as the same devices, and survive a restart.
func TestRegistryAPIPersists(t *testing.T) {
	e := startAdminEnv(t)
	e.admin("PUT", "/api/v1/registry/devices/newGW/gw-2", `{"secret":"a \"quoted\" #secret: *","gateway":true,"sub_devices":[{"product_key":"meterPK","device_key":"*"},{"product_key":"subPK","device_key":"subDK"}],"cert_serial":"0A:1b"}`, 201)
	e.admin("PUT", "/api/v1/registry/devices/subPK/sub2", `{"keep_secret":true,"disabled":true}`, 200)
	e.admin("DELETE", "/api/v1/registry/devices/otherPK/stranger", "", 204)
	data, err := os.ReadFile(e.cfg.RegistryFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "# ingestd device registry") || !strings.Contains(string(data), "comments") {
		t.Errorf("no header:\n%s", data)
	}
	if got, want := devicesOf(t, e.cfg.RegistryFile), withoutLines(e.srv.reg.Devices()); !reflect.DeepEqual(got, want) {
		t.Errorf("file:\n%+v\nmemory:\n%+v", got, want)
	}
	entries, _ := os.ReadDir(filepath.Dir(e.cfg.RegistryFile))
	for _, en := range entries {
		if strings.Contains(en.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", en.Name())
		}
	}

	e.stop()
	e.start()
	var d apiDevice
	if err := json.Unmarshal([]byte(e.admin("GET", "/api/v1/registry/devices/newGW/gw-2", "", 200)), &d); err != nil {
		t.Fatal(err)
	}
	if !d.Gateway || !d.HasSecret || d.CertSerial != "0A:1b" || len(d.SubDevices) != 2 || d.SubDevices[1] != (apiSubDevice{"subPK", "subDK"}) {
		t.Errorf("after restart: %+v", d)
	}
	e.admin("GET", "/api/v1/registry/devices/otherPK/stranger", "", 404)
	if b := e.admin("GET", "/api/v1/registry/devices/subPK/sub2", "", 200); !strings.Contains(b, `"disabled":true`) {
		t.Errorf("sub2 after restart: %s", b)
	}
	e.login("newGW", "gw-2", `a "quoted" #secret: *`).Disconnect(50)
}
