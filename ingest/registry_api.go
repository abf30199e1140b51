package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/edged/edged/cloudlink/enos"
)

// maxRegistryBody bounds a PUT body of the registry API.
const maxRegistryBody = 64 << 10

// errRegistryAPIOff answers every registry API request without a token file.
const errRegistryAPIOff = "registry API disabled: start ingestd with -admin-token-file"

// readAdminToken reads the registry API's bearer token (trimmed); "" path:
// nil, the API is disabled.
func readAdminToken(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ingest: admin token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return nil, fmt.Errorf("ingest: admin token: %s is empty", path)
	}
	return []byte(tok), nil
}

// registryRoutes is the registry API, for operators:
//
//	GET    /api/v1/registry/devices            {"devices":[device...]}, sorted
//	GET    /api/v1/registry/devices/{pk}/{dk}  device
//	PUT    /api/v1/registry/devices/{pk}/{dk}  create (201) or replace (200) it; body: device fields, with
//	                                           "secret" (or "keep_secret": true) instead of "has_secret"
//	DELETE /api/v1/registry/devices/{pk}/{dk}  204; 404 when not registered
//
// A device is {"product_key","device_key","has_secret","cert_login",
// "cert_sha256","cert_serial","gateway","sub_devices":[{"product_key",
// "device_key"}],"disabled"}: the registry file's fields, the secret never
// shown. Every request needs "Authorization: Bearer <token>" (401
// otherwise); without Config.AdminTokenFile every request gets a 403.
// Errors are {"error":"..."}: 400 names the field, 409 refuses deleting the
// last device, 500 is a failed write of the registry file (the change is
// not made).
func (s *Server) registryRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/registry/devices", s.admin(s.handleRegistryList))
	mux.HandleFunc("GET /api/v1/registry/devices/{pk}/{dk}", s.admin(s.handleRegistryGet))
	mux.HandleFunc("PUT /api/v1/registry/devices/{pk}/{dk}", s.admin(s.handleRegistryPut))
	mux.HandleFunc("DELETE /api/v1/registry/devices/{pk}/{dk}", s.admin(s.handleRegistryDelete))
	mux.HandleFunc("/api/v1/registry/", s.admin(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	}))
}

// admin guards a registry API handler with the bearer token.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	want := sha256.Sum256(s.regToken)
	return func(w http.ResponseWriter, r *http.Request) {
		if s.regToken == nil {
			writeError(w, http.StatusForbidden, errRegistryAPIOff)
			return
		}
		reason := ""
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		switch {
		case scheme == "":
			reason = "no bearer token"
		case !strings.EqualFold(scheme, "Bearer"):
			reason = "not a bearer token"
		default:
			// Hashes compared, so that the time taken says nothing of
			// the token's length either.
			got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				reason = "wrong token"
			}
		}
		if reason != "" {
			s.metrics.adminAuthFailures.Inc()
			s.log.Warn("registry API: request refused", "reason", reason, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="ingestd registry"`)
			writeError(w, http.StatusUnauthorized, "registry API: "+reason)
			return
		}
		h(w, r)
	}
}

// apiDevice is a registry device as the API shows it: without its secret.
type apiDevice struct {
	ProductKey string         `json:"product_key"`
	DeviceKey  string         `json:"device_key"`
	HasSecret  bool           `json:"has_secret"`
	CertLogin  bool           `json:"cert_login"`
	CertSHA256 string         `json:"cert_sha256,omitempty"`
	CertSerial string         `json:"cert_serial,omitempty"`
	Gateway    bool           `json:"gateway"`
	SubDevices []apiSubDevice `json:"sub_devices"`
	Disabled   bool           `json:"disabled"`
}

type apiSubDevice struct {
	ProductKey string `json:"product_key"`
	DeviceKey  string `json:"device_key"`
}

// apiDeviceIn is a PUT body. product_key and device_key are optional: the
// path names the device. keep_secret keeps the secret of the device it
// replaces.
type apiDeviceIn struct {
	ProductKey string         `json:"product_key"`
	DeviceKey  string         `json:"device_key"`
	Secret     string         `json:"secret"`
	KeepSecret bool           `json:"keep_secret"`
	CertLogin  bool           `json:"cert_login"`
	CertSHA256 string         `json:"cert_sha256"`
	CertSerial string         `json:"cert_serial"`
	Gateway    bool           `json:"gateway"`
	SubDevices []apiSubDevice `json:"sub_devices"`
	Disabled   bool           `json:"disabled"`
}

func toAPIDevice(d *RegistryDevice) apiDevice {
	out := apiDevice{ProductKey: d.ProductKey, DeviceKey: d.DeviceKey, HasSecret: d.Secret != "", CertLogin: d.CertLogin,
		CertSHA256: d.CertSHA256, CertSerial: d.CertSerial, Gateway: d.Gateway, SubDevices: []apiSubDevice{}, Disabled: d.Disabled}
	for _, sd := range d.SubDevices {
		out.SubDevices = append(out.SubDevices, apiSubDevice(sd))
	}
	return out
}

func (s *Server) handleRegistryList(w http.ResponseWriter, _ *http.Request) {
	devs := s.reg.Devices()
	out := make([]apiDevice, len(devs))
	for i := range devs {
		out[i] = toAPIDevice(&devs[i])
	}
	writeJSON(w, http.StatusOK, struct {
		Devices []apiDevice `json:"devices"`
	}{out})
}

func (s *Server) handleRegistryGet(w http.ResponseWriter, r *http.Request) {
	pk, dk := r.PathValue("pk"), r.PathValue("dk")
	d, ok := s.reg.Device(pk, dk)
	if !ok {
		writeError(w, http.StatusNotFound, "device "+pk+"/"+dk+" is not registered")
		return
	}
	writeJSON(w, http.StatusOK, toAPIDevice(d))
}

func (s *Server) handleRegistryPut(w http.ResponseWriter, r *http.Request) {
	pk, dk := r.PathValue("pk"), r.PathValue("dk")
	var in apiDeviceIn
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRegistryBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&in)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("more than one JSON value")
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxRegistryBody))
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "body: "+strings.TrimPrefix(err.Error(), "json: "))
		return
	case in.ProductKey != "" && in.ProductKey != pk || in.DeviceKey != "" && in.DeviceKey != dk:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("product_key and device_key: the body names %s/%s, the path %s/%s", in.ProductKey, in.DeviceKey, pk, dk))
		return
	case in.KeepSecret && in.Secret != "":
		writeError(w, http.StatusBadRequest, "secret and keep_secret: give one of them")
		return
	}
	d := RegistryDevice{ProductKey: pk, DeviceKey: dk, Secret: in.Secret, CertLogin: in.CertLogin, CertSHA256: in.CertSHA256,
		CertSerial: in.CertSerial, Gateway: in.Gateway, Disabled: in.Disabled}
	for _, sd := range in.SubDevices {
		d.SubDevices = append(d.SubDevices, SubDeviceRef(sd))
	}
	c, err := s.reg.put(d, in.KeepSecret)
	if c.applied {
		s.afterChange(c.old, c.nu)
	}
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrNotFound):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		s.log.Error("registry API: write failed", "product_key", pk, "device_key", dk, "error", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	code := http.StatusOK
	if c.old == nil {
		code = http.StatusCreated
	}
	s.log.Info("registry: device put", "product_key", pk, "device_key", dk, "created", c.old == nil, "disabled", c.nu.Disabled)
	writeJSON(w, code, toAPIDevice(c.nu))
}

func (s *Server) handleRegistryDelete(w http.ResponseWriter, r *http.Request) {
	pk, dk := r.PathValue("pk"), r.PathValue("dk")
	c, err := s.reg.delete(pk, dk)
	if c.applied {
		s.afterChange(c.old, nil)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		s.log.Error("registry API: write failed", "product_key", pk, "device_key", dk, "error", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		s.log.Info("registry: device deleted", "product_key", pk, "device_key", dk)
		w.WriteHeader(http.StatusNoContent)
	}
}

// afterChange closes the MQTT connections a registry change invalidates:
// the device's own when it was deleted or disabled or its credentials
// changed (secret, cert_login withdrawn, certificate binding), and any
// connection whose certificate is now bound to another device than the
// one it logged in as.
func (s *Server) afterChange(old, nu *RegistryDevice) {
	if old == nil && nu == nil {
		return
	}
	switch {
	case nu == nil:
		s.dropDevice(old.ProductKey, old.DeviceKey, "device deleted")
	case old == nil:
	case nu.Disabled && !old.Disabled:
		s.dropDevice(old.ProductKey, old.DeviceKey, "device disabled")
	case nu.Secret != old.Secret, old.CertLogin && !nu.CertLogin, nu.CertSHA256 != old.CertSHA256, nu.CertSerial != old.CertSerial:
		s.dropDevice(old.ProductKey, old.DeviceKey, "device credentials changed")
	}
	if nu != nil && (nu.CertSHA256 != "" || nu.CertSerial != "") {
		s.dropConnections("certificate bound to another device", func(pk, dk string, cert *x509.Certificate) bool {
			if cert == nil {
				return false
			}
			b, ok := s.reg.CertBinding(cert)
			return ok && (b.ProductKey != pk || b.DeviceKey != dk)
		})
	}
}

// errRegistryChanged is the stop cause of a connection closed by a
// registry change.
var errRegistryChanged = errors.New("ingest: registry changed: connection closed")

// dropDevice closes every MQTT connection logged in as device pk/dk.
func (s *Server) dropDevice(pk, dk, why string) {
	s.dropConnections(why, func(cpk, cdk string, _ *x509.Certificate) bool { return cpk == pk && cdk == dk })
}

// dropConnections closes the device connections match selects, given the
// device each logged in as and its client certificate. A connection is
// named by its username (deviceKey&productKey), not by the registry: the
// device may be gone from it.
func (s *Server) dropConnections(why string, match func(pk, dk string, cert *x509.Certificate) bool) int {
	if s.broker == nil {
		return 0
	}
	n := 0
	for _, cl := range s.broker.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		dk, pk, err := enos.ParseUsername(string(cl.Properties.Username))
		if err != nil || !match(pk, dk, peerCert(cl)) {
			continue
		}
		s.log.Info("registry: connection closed", "reason", why, "product_key", pk, "device_key", dk, "client", cl.ID, "remote", cl.Net.Remote)
		cl.Stop(errRegistryChanged)
		n++
	}
	return n
}

// peerCert is a connection's client certificate, nil if it has none.
func peerCert(cl *mqtt.Client) *x509.Certificate {
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			return certs[0]
		}
	}
	return nil
}
