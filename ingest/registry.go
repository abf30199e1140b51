package ingest

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/config"
	"github.com/edged/edged/internal/yamlpos"
)

// RegistryDevice is one device allowed to connect.
type RegistryDevice struct {
	ProductKey string `yaml:"product_key"`
	DeviceKey  string `yaml:"device_key"`
	// Secret enables EnOS secret login (and verifies a sub-device's
	// combine.login).
	Secret string `yaml:"secret"`
	// CertLogin allows login by client certificate alone: the certificate
	// must be the one bound below, or, with no binding, its CommonName must
	// equal DeviceKey.
	CertLogin bool `yaml:"cert_login"`
	// CertSHA256 and CertSerial bind a client certificate to this device:
	// its SHA-256 fingerprint (hex, colons allowed) or its serial number
	// (hex, colons allowed; unique per issuing CA). A bound certificate
	// can log in as this device only, whatever the login method.
	CertSHA256 string `yaml:"cert_sha256"`
	CertSerial string `yaml:"cert_serial"`
	// Gateway allows the device to post for its sub-devices: those in its
	// topology, which is SubDevices plus what it added with thing/topo/add.
	Gateway bool `yaml:"gateway"`
	// SubDevices declares a gateway's sub-devices up front (as an operator
	// does in the EnOS console). DeviceKey "*" stands for every device of
	// the product: the usual choice for an edged gateway, whose devices
	// are defined in its own YAML. A declared sub-device need not be
	// registered itself unless it logs in (combine.login needs its secret).
	SubDevices []SubDeviceRef `yaml:"sub_devices"`

	Line int `yaml:"-"`
}

// SubDeviceRef names a sub-device in the registry.
type SubDeviceRef struct {
	ProductKey string `yaml:"product_key" json:"productKey"`
	DeviceKey  string `yaml:"device_key" json:"deviceKey"` // "*": every device of the product
}

// Declares reports whether gateway gw declares pk/dk as its sub-device.
func (gw *RegistryDevice) Declares(pk, dk string) bool {
	for _, s := range gw.SubDevices {
		if s.ProductKey == pk && (s.DeviceKey == dk || s.DeviceKey == "*") {
			return true
		}
	}
	return false
}

// Registry is the set of known devices, loaded from YAML:
//
//	devices:
//	  - product_key: gwPK
//	    device_key: gwDK
//	    secret: s3cret      # enables secret login
//	    cert_login: true    # allows login by client certificate (CN = device_key)
//	    gateway: true       # may post for its sub-devices:
//	    sub_devices:        # declared ones, and those it adds by thing/topo/add
//	      - {product_key: meterPK, device_key: meter-1}
//	      - {product_key: pvPK, device_key: "*"}   # every device of pvPK
//
// It is read-only once loaded, so safe for concurrent use.
type Registry struct {
	devices  map[devKey]*RegistryDevice
	bySHA256 map[string]*RegistryDevice // normalised fingerprint → device
	bySerial map[string]*RegistryDevice // normalised serial → device
}

// normHex lowercases a hex string and drops colons and leading zeros of a
// serial (so "0A:1b" and "a1b" match).
func normHex(s string, serial bool) (string, bool) {
	s = strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if serial {
		s = strings.TrimLeft(s, "0")
		if s == "" {
			s = "0"
		}
	}
	if _, err := hex.DecodeString(s + strings.Repeat("0", len(s)%2)); err != nil || s == "" {
		return "", false
	}
	return s, true
}

// CertBinding returns the device a client certificate is bound to, if any.
func (r *Registry) CertBinding(cert *x509.Certificate) (*RegistryDevice, bool) {
	sum := sha256.Sum256(cert.Raw)
	if d, ok := r.bySHA256[hex.EncodeToString(sum[:])]; ok {
		return d, true
	}
	if s, ok := normHex(cert.SerialNumber.Text(16), true); ok {
		if d, ok := r.bySerial[s]; ok {
			return d, true
		}
	}
	return nil, false
}

type devKey struct{ pk, dk string }

// Device returns the registered device productKey/deviceKey.
func (r *Registry) Device(productKey, deviceKey string) (*RegistryDevice, bool) {
	d, ok := r.devices[devKey{productKey, deviceKey}]
	return d, ok
}

// Len is the number of devices.
func (r *Registry) Len() int { return len(r.devices) }

// LoadRegistry reads and validates a registry file. Errors are
// config.Errors naming file:line and the device.
func LoadRegistry(path string) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ingest: registry: %w", err)
	}
	return ParseRegistry(path, data)
}

// ParseRegistry decodes registry YAML strictly (unknown keys are errors);
// path is used in messages.
func ParseRegistry(path string, data []byte) (*Registry, error) {
	var file *ast.File
	if err := config.GuardYAML(func() (err error) { file, err = parser.ParseBytes(data, 0); return err }); err != nil {
		return nil, config.Errors{yamlError(path, err)}
	}
	var doc struct {
		Devices []RegistryDevice `yaml:"devices"`
	}
	if err := config.GuardYAML(func() error { return yaml.UnmarshalWithOptions(data, &doc, yaml.Strict()) }); err != nil {
		return nil, config.Errors{yamlError(path, err)}
	}
	lines := yamlpos.Index(file, nil)
	var errs config.Errors
	errf := func(line int, where, format string, args ...any) {
		errs = append(errs, &config.Error{File: path, Line: line, Where: where, Msg: fmt.Sprintf(format, args...)})
	}
	reg := &Registry{devices: make(map[devKey]*RegistryDevice, len(doc.Devices)), bySHA256: map[string]*RegistryDevice{}, bySerial: map[string]*RegistryDevice{}}
	for i := range doc.Devices {
		d := &doc.Devices[i]
		d.Line = lines.Line(fmt.Sprintf("$.devices[%d]", i))
		where := fmt.Sprintf("device %q", d.ProductKey+"/"+d.DeviceKey)
		if !enos.ValidKey(d.ProductKey) {
			errf(d.Line, where, "product_key %q: required, without '&', '/', '+', '#', '|' or control characters", d.ProductKey)
		}
		if !enos.ValidKey(d.DeviceKey) {
			errf(d.Line, where, "device_key %q: required, without '&', '/', '+', '#', '|' or control characters", d.DeviceKey)
		}
		if d.Secret == "" && !d.CertLogin {
			errf(d.Line, where, "give a secret or cert_login: true, or the device can never log in")
		}
		if len(d.SubDevices) > 0 && !d.Gateway {
			errf(d.Line, where, "sub_devices: only a gateway (gateway: true) has sub-devices")
		}
		for j, sd := range d.SubDevices {
			line := lines.Line(fmt.Sprintf("$.devices[%d].sub_devices[%d]", i, j))
			if !enos.ValidKey(sd.ProductKey) || (sd.DeviceKey != "*" && !enos.ValidKey(sd.DeviceKey)) {
				errf(line, where, "sub_devices[%d]: product_key and device_key (or \"*\") are required, without '&', '/', '+', '#', '|' or control characters", j)
			}
			if sd.ProductKey == d.ProductKey && sd.DeviceKey == d.DeviceKey {
				errf(line, where, "sub_devices[%d]: a gateway is not its own sub-device", j)
			}
		}
		bind := func(field, value string, serial bool, m map[string]*RegistryDevice) {
			if value == "" {
				return
			}
			n, ok := normHex(value, serial)
			if !ok || !serial && len(n) != 64 {
				errf(d.Line, where, "%s %q: want hex (colons allowed)%s", field, value, map[bool]string{false: ", 32 bytes", true: ""}[serial])
				return
			}
			if other, dup := m[n]; dup {
				errf(d.Line, where, "%s: the certificate is already bound to %s/%s (line %d)", field, other.ProductKey, other.DeviceKey, other.Line)
				return
			}
			m[n] = d
		}
		bind("cert_sha256", d.CertSHA256, false, reg.bySHA256)
		bind("cert_serial", d.CertSerial, true, reg.bySerial)
		k := devKey{d.ProductKey, d.DeviceKey}
		if first, dup := reg.devices[k]; dup {
			errf(d.Line, where, "registered twice (first on line %d)", first.Line)
			continue
		}
		reg.devices[k] = d
	}
	if len(doc.Devices) == 0 {
		errf(0, "", "no devices are registered")
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	return reg, nil
}

func yamlError(file string, err error) *config.Error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &config.Error{File: file, Msg: ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line = tk.Position.Line
		}
		return e
	}
	return &config.Error{File: file, Msg: err.Error()}
}
