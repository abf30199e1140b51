package ingest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

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
	// Disabled refuses the device's logins (reason "disabled") while
	// keeping its entry, secret and certificate binding.
	Disabled bool `yaml:"disabled"`

	// Line is the device's line in the file it was loaded from; 0 for a
	// device put while ingestd runs.
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
//	  - {product_key: pvPK, device_key: pv-9, secret: x, disabled: true}   # login refused
//
// It changes while ingestd runs (Put, Delete, SetEnabled) and is safe for
// concurrent use. Readers (Device, CertBinding, Len, Devices) take no lock:
// they read an immutable snapshot that each change replaces whole. A
// *RegistryDevice handed out is never modified: a change puts a new value in
// its place, and devices a change does not touch keep their pointer.
// Changes are serialised; each is validated as a whole registry, exactly as
// ParseRegistry validates a file, and written to the registry's file (if it
// has one) before it becomes visible.
type Registry struct {
	path string     // rewritten by every change; "": changes stay in memory
	mu   sync.Mutex // serialises changes
	cur  atomic.Pointer[registrySnapshot]
}

// registrySnapshot is one immutable state of the registry.
type registrySnapshot struct {
	list     []*RegistryDevice // in file order
	devices  map[devKey]*RegistryDevice
	bySHA256 map[string]*RegistryDevice // normalised fingerprint → device
	bySerial map[string]*RegistryDevice // normalised serial → device
}

var emptySnapshot = &registrySnapshot{}

func (r *Registry) snapshot() *registrySnapshot {
	if s := r.cur.Load(); s != nil {
		return s
	}
	return emptySnapshot
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
	snap := r.snapshot()
	sum := sha256.Sum256(cert.Raw)
	if d, ok := snap.bySHA256[hex.EncodeToString(sum[:])]; ok {
		return d, true
	}
	if s, ok := normHex(cert.SerialNumber.Text(16), true); ok {
		if d, ok := snap.bySerial[s]; ok {
			return d, true
		}
	}
	return nil, false
}

type devKey struct{ pk, dk string }

// Device returns the registered device productKey/deviceKey.
func (r *Registry) Device(productKey, deviceKey string) (*RegistryDevice, bool) {
	d, ok := r.snapshot().devices[devKey{productKey, deviceKey}]
	return d, ok
}

// Len is the number of devices.
func (r *Registry) Len() int { return len(r.snapshot().devices) }

// Devices returns a copy of every device, sorted by product key and device
// key.
func (r *Registry) Devices() []RegistryDevice {
	list := r.snapshot().list
	out := make([]RegistryDevice, len(list))
	for i, d := range list {
		out[i] = *d
		out[i].SubDevices = nil
		if len(d.SubDevices) > 0 {
			out[i].SubDevices = slices.Clone(d.SubDevices)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].ProductKey < out[j].ProductKey || out[i].ProductKey == out[j].ProductKey && out[i].DeviceKey < out[j].DeviceKey
	})
	return out
}

// ErrInvalid matches (errors.Is) the errors of Put, Delete and SetEnabled
// that refuse a change because the registry would not be valid: the
// message names the device and the field.
var ErrInvalid = errors.New("invalid registry change")

type invalidError struct{ msgs []string }

func (e *invalidError) Error() string        { return strings.Join(e.msgs, "; ") }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// Put creates or replaces the device d.ProductKey/d.DeviceKey (d is
// copied; its Line is ignored). The registry with the change is validated
// like a registry file: an error matching ErrInvalid names the field. The
// change is written to the registry file before it becomes visible; an
// error before the file is replaced leaves the registry as it was. Put
// blocks while another change is being written.
func (r *Registry) Put(d RegistryDevice) (created bool, err error) {
	c, err := r.put(d, false)
	return c.applied && c.old == nil, err
}

// put is Put; keepSecret keeps the secret of the device it replaces (an
// error wrapping ErrNotFound when there is none).
func (r *Registry) put(d RegistryDevice, keepSecret bool) (registryChange, error) {
	d.Line = 0
	d.SubDevices = slices.Clone(d.SubDevices)
	if len(d.SubDevices) == 0 {
		d.SubDevices = nil
	}
	return r.change(d.ProductKey, d.DeviceKey, func(old *RegistryDevice) (*RegistryDevice, error) {
		if keepSecret {
			if old == nil {
				return nil, fmt.Errorf("keep_secret: device %s/%s is not registered: %w", d.ProductKey, d.DeviceKey, ErrNotFound)
			}
			d.Secret = old.Secret
		}
		return &d, nil
	})
}

// Delete removes device pk/dk: an error wrapping ErrNotFound if it is not
// registered, ErrInvalid for the last device (a registry file without
// devices does not load). Persisted like Put.
func (r *Registry) Delete(pk, dk string) error {
	_, err := r.delete(pk, dk)
	return err
}

func (r *Registry) delete(pk, dk string) (registryChange, error) {
	return r.change(pk, dk, func(old *RegistryDevice) (*RegistryDevice, error) {
		if old == nil {
			return nil, fmt.Errorf("device %s/%s is not registered: %w", pk, dk, ErrNotFound)
		}
		return nil, nil
	})
}

// SetEnabled enables or disables device pk/dk (RegistryDevice.Disabled):
// an error wrapping ErrNotFound if it is not registered. Persisted like
// Put.
func (r *Registry) SetEnabled(pk, dk string, enabled bool) error {
	_, err := r.change(pk, dk, func(old *RegistryDevice) (*RegistryDevice, error) {
		if old == nil {
			return nil, fmt.Errorf("device %s/%s is not registered: %w", pk, dk, ErrNotFound)
		}
		d := *old
		d.Disabled, d.Line = !enabled, 0
		return &d, nil
	})
	return err
}

// registryChange is what one change did: device old (nil: absent) became
// nu (nil: deleted); applied reports whether the change was published.
type registryChange struct {
	old, nu *RegistryDevice
	applied bool
}

// change makes one change under the write lock: fn gets device pk/dk (nil
// when absent) and returns its new value (nil: delete it). The whole
// result is validated, written to the file, then published. Once the file
// has been renamed into place the change is published even if syncing the
// directory fails (that error is still returned): memory never disagrees
// with the file.
func (r *Registry) change(pk, dk string, fn func(old *RegistryDevice) (*RegistryDevice, error)) (registryChange, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snapshot()
	old := cur.devices[devKey{pk, dk}]
	nu, err := fn(old)
	if err != nil {
		return registryChange{old: old}, err
	}
	if nu != nil && (nu.ProductKey != pk || nu.DeviceKey != dk) {
		return registryChange{old: old}, fmt.Errorf("ingest: registry: change of %s/%s names %s/%s", pk, dk, nu.ProductKey, nu.DeviceKey)
	}
	// list keeps the file order; check validates the changed device last,
	// so that a conflict (a certificate bound twice) is reported on it.
	list := make([]*RegistryDevice, 0, len(cur.list)+1)
	check := make([]*RegistryDevice, 0, len(cur.list)+1)
	for _, d := range cur.list {
		if d == old {
			if nu != nil {
				list = append(list, nu)
			}
			continue
		}
		list = append(list, d)
		check = append(check, d)
	}
	if nu != nil {
		if old == nil {
			list = append(list, nu)
		}
		check = append(check, nu)
	}
	snap, problems := buildSnapshot(check, false)
	if len(problems) > 0 {
		e := &invalidError{}
		for _, p := range problems {
			if p.dev < 0 {
				e.msgs = append(e.msgs, "the registry would have no devices: a registry needs one to load")
				continue
			}
			e.msgs = append(e.msgs, fmt.Sprintf("device %q: %s", check[p.dev].ProductKey+"/"+check[p.dev].DeviceKey, p.msg))
		}
		return registryChange{old: old}, e
	}
	snap.list = list
	if r.path != "" {
		if renamed, err := writeRegistryFile(r.path, list); !renamed {
			return registryChange{old: old}, err
		} else if err != nil {
			r.cur.Store(snap)
			return registryChange{old, nu, true}, err
		}
	}
	r.cur.Store(snap)
	return registryChange{old, nu, true}, nil
}

// LoadRegistry reads and validates a registry file. Errors are
// config.Errors naming file:line and the device. The registry remembers
// path: every change rewrites the file.
func LoadRegistry(path string) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ingest: registry: %w", err)
	}
	reg, err := ParseRegistry(path, data)
	if err != nil {
		return nil, err
	}
	reg.path = path
	return reg, nil
}

// ParseRegistry decodes registry YAML strictly (unknown keys are errors);
// path is used in messages only: the registry it returns keeps its changes
// in memory.
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
	list := make([]*RegistryDevice, len(doc.Devices))
	for i := range doc.Devices {
		list[i] = &doc.Devices[i]
		list[i].Line = lines.Line(fmt.Sprintf("$.devices[%d]", i))
	}
	snap, problems := buildSnapshot(list, true)
	if len(problems) > 0 {
		var errs config.Errors
		for _, p := range problems {
			e := &config.Error{File: path, Msg: p.msg}
			if p.dev >= 0 {
				d := list[p.dev]
				e.Line, e.Where = d.Line, fmt.Sprintf("device %q", d.ProductKey+"/"+d.DeviceKey)
				if p.sub >= 0 {
					e.Line = lines.Line(fmt.Sprintf("$.devices[%d].sub_devices[%d]", p.dev, p.sub))
				}
			}
			errs = append(errs, e)
		}
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	snap.list = list
	reg := &Registry{}
	reg.cur.Store(snap)
	return reg, nil
}

// registryProblem is one mistake buildSnapshot found: in device list[dev]
// (-1: the registry as a whole), in its sub_devices[sub] when sub >= 0.
// msg names the field.
type registryProblem struct {
	dev, sub int
	msg      string
}

// buildSnapshot validates a whole set of devices and indexes it: the one
// validation of a registry file and of every change. lineRefs names the
// line of the device a duplicate conflicts with (devices read from a file).
// The snapshot's list is left to the caller.
func buildSnapshot(list []*RegistryDevice, lineRefs bool) (*registrySnapshot, []registryProblem) {
	var problems []registryProblem
	errf := func(dev, sub int, format string, args ...any) {
		problems = append(problems, registryProblem{dev, sub, fmt.Sprintf(format, args...)})
	}
	at := func(format string, d *RegistryDevice) string {
		if !lineRefs || d.Line == 0 {
			return ""
		}
		return fmt.Sprintf(format, d.Line)
	}
	snap := &registrySnapshot{devices: make(map[devKey]*RegistryDevice, len(list)), bySHA256: map[string]*RegistryDevice{}, bySerial: map[string]*RegistryDevice{}}
	for i, d := range list {
		if !enos.ValidKey(d.ProductKey) {
			errf(i, -1, "product_key %q: required, without '&', '/', '+', '#', '|' or control characters", d.ProductKey)
		}
		if !enos.ValidKey(d.DeviceKey) {
			errf(i, -1, "device_key %q: required, without '&', '/', '+', '#', '|' or control characters", d.DeviceKey)
		}
		if d.Secret == "" && !d.CertLogin {
			errf(i, -1, "give a secret or cert_login: true, or the device can never log in")
		}
		if len(d.SubDevices) > 0 && !d.Gateway {
			errf(i, -1, "sub_devices: only a gateway (gateway: true) has sub-devices")
		}
		for j, sd := range d.SubDevices {
			if !enos.ValidKey(sd.ProductKey) || (sd.DeviceKey != "*" && !enos.ValidKey(sd.DeviceKey)) {
				errf(i, j, "sub_devices[%d]: product_key and device_key (or \"*\") are required, without '&', '/', '+', '#', '|' or control characters", j)
			}
			if sd.ProductKey == d.ProductKey && sd.DeviceKey == d.DeviceKey {
				errf(i, j, "sub_devices[%d]: a gateway is not its own sub-device", j)
			}
		}
		bind := func(field, value string, serial bool, m map[string]*RegistryDevice) {
			if value == "" {
				return
			}
			n, ok := normHex(value, serial)
			if !ok || !serial && len(n) != 64 {
				errf(i, -1, "%s %q: want hex (colons allowed)%s", field, value, map[bool]string{false: ", 32 bytes", true: ""}[serial])
				return
			}
			if other, dup := m[n]; dup {
				errf(i, -1, "%s: the certificate is already bound to %s/%s%s", field, other.ProductKey, other.DeviceKey, at(" (line %d)", other))
				return
			}
			m[n] = d
		}
		bind("cert_sha256", d.CertSHA256, false, snap.bySHA256)
		bind("cert_serial", d.CertSerial, true, snap.bySerial)
		k := devKey{d.ProductKey, d.DeviceKey}
		if first, dup := snap.devices[k]; dup {
			errf(i, -1, "registered twice%s", at(" (first on line %d)", first))
			continue
		}
		snap.devices[k] = d
	}
	if len(list) == 0 {
		errf(-1, -1, "no devices are registered")
	}
	return snap, problems
}

// registryHeader opens every registry file ingestd writes.
const registryHeader = `# ingestd device registry. ingestd rewrites this file on every change made
# through its registry API (ingestd registry put|delete): comments and the
# layout of a hand-written file are not kept. ingestd reads it only at
# start, so edit it by hand only while ingestd is stopped.
`

// marshalRegistry writes devices in the schema ParseRegistry reads, every
// string double-quoted (JSON escapes are YAML escapes), so that any secret
// or key reads back as itself.
func marshalRegistry(list []*RegistryDevice) ([]byte, error) {
	var b bytes.Buffer
	var err error
	q := func(s string) string {
		if !utf8.ValidString(s) {
			err = fmt.Errorf("a key or secret is not valid UTF-8")
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		return strings.TrimSuffix(buf.String(), "\n")
	}
	b.WriteString(registryHeader)
	b.WriteString("devices:\n")
	for _, d := range list {
		fmt.Fprintf(&b, "  - product_key: %s\n    device_key: %s\n", q(d.ProductKey), q(d.DeviceKey))
		if d.Secret != "" {
			fmt.Fprintf(&b, "    secret: %s\n", q(d.Secret))
		}
		if d.CertLogin {
			b.WriteString("    cert_login: true\n")
		}
		if d.CertSHA256 != "" {
			fmt.Fprintf(&b, "    cert_sha256: %s\n", q(d.CertSHA256))
		}
		if d.CertSerial != "" {
			fmt.Fprintf(&b, "    cert_serial: %s\n", q(d.CertSerial))
		}
		if d.Gateway {
			b.WriteString("    gateway: true\n")
		}
		if len(d.SubDevices) > 0 {
			b.WriteString("    sub_devices:\n")
			for _, sd := range d.SubDevices {
				fmt.Fprintf(&b, "      - {product_key: %s, device_key: %s}\n", q(sd.ProductKey), q(sd.DeviceKey))
			}
		}
		if d.Disabled {
			b.WriteString("    disabled: true\n")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ingest: registry: %w", err)
	}
	return b.Bytes(), nil
}

// writeRegistryFile replaces the registry file atomically: a temporary
// file in the same directory (the file's mode, 0600 for a new one), synced,
// renamed over it (through a symbolic link to its target), and the
// directory synced. renamed reports whether the new file is in place; err
// may still be set then (the directory sync failed).
func writeRegistryFile(path string, list []*RegistryDevice) (renamed bool, err error) {
	data, err := marshalRegistry(list)
	if err != nil {
		return false, err
	}
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	mode := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return false, fmt.Errorf("ingest: registry: write: %w", err)
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("ingest: registry: write %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err == nil {
		err = d.Sync()
		if cerr := d.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return true, fmt.Errorf("ingest: registry: %s replaced, but syncing its directory failed: %w", path, err)
	}
	return true, nil
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
