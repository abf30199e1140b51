// Package config loads edged's YAML configuration: strictly (an unknown key is
// an error), with every error naming the file, the line and the link, profile,
// device or point concerned.
//
// Device profiles (a reusable point table for one kind of device) are separate
// from device instances (where the device is, how often to poll it). Load does
// no network I/O.
package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/edged/edged/internal/yamlpos"
	"github.com/edged/edged/modelsync/formula"
	"github.com/edged/edged/telemetry"
)

// Config is one gateway's whole configuration.
type Config struct {
	Gateway  Gateway   `yaml:"gateway"`
	Cloud    Cloud     `yaml:"cloud"`
	Bus      Bus       `yaml:"bus"`
	Cache    Cache     `yaml:"cache"`
	Metrics  Metrics   `yaml:"metrics"`
	Models   Models    `yaml:"models"`
	HA       HA        `yaml:"ha"`
	Links    []Link    `yaml:"links"`
	Profiles []Profile `yaml:"profiles"`
	Devices  []Device  `yaml:"devices"`

	// File is the path the config was loaded from; relative paths inside it
	// are resolved against its directory.
	File string `yaml:"-"`
}

// Gateway is this node's identity.
type Gateway struct {
	ID      string `yaml:"id"`       // unique gateway id, carried by every record
	DataDir string `yaml:"data_dir"` // durable queue, epoch, sequence; default "data" beside the config
	// GCPercent is the Go garbage collector's target (GOGC): lower trades
	// CPU for memory. Default 50, which suits small gateways (the Go default
	// is 100); the GOGC environment variable overrides it.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimit is a soft limit on the process's memory in bytes (Go's
	// GOMEMLIMIT); 0 = none. The GOMEMLIMIT environment variable overrides it.
	MemoryLimit int64 `yaml:"memory_limit"`
}

// Cloud is the MQTT uplink to the ingest service.
type Cloud struct {
	Broker     string `yaml:"broker"`      // tls://host:port (MQTT over TLS)
	ServerName string `yaml:"server_name"` // TLS server name, default the broker's host
	CAFile     string `yaml:"ca"`          // CA that signed the ingest's server certificate
	CertFile   string `yaml:"cert"`        // gateway client certificate (mutual TLS)
	KeyFile    string `yaml:"key"`
	ProductKey string `yaml:"product_key"` // the gateway's own EnOS identity
	DeviceKey  string `yaml:"device_key"`
	// Secret enables EnOS secret login. Without it the gateway logs in by its
	// client certificate alone.
	Secret     string        `yaml:"secret"`
	SignMethod string        `yaml:"sign_method"` // sha256 (default), sha1, md5
	Batch      int           `yaml:"batch"`       // max records per post, default 500
	MaxPayload int           `yaml:"max_payload"` // largest post in bytes, default 256 KiB (ingestd accepts 512 KiB); larger batches are split
	Linger     time.Duration `yaml:"linger"`      // how long a post waits to fill, default 100ms
	InFlight   int           `yaml:"in_flight"`   // posts awaiting PUBACK at once, default 8
	AckTimeout time.Duration `yaml:"ack_timeout"` // PUBACK deadline before reconnecting, default 10s
	// ResumeAfter: records older than this, and everything queued before
	// the cloud session began (an outage, a restart), are history, posted
	// on resume/batch while real-time data keeps flowing on post/batch;
	// default 120m (as EnOS).
	ResumeAfter time.Duration `yaml:"resume_after"`
	// ResumeRate bounds the drain of history in measure points per second,
	// default 50000; keep it several times the gateway's live rate.
	ResumeRate int `yaml:"resume_rate"`
	// ReconnectMax caps the jittered backoff between connection attempts
	// while the cloud is unreachable, so the link is back within about
	// this long after the cloud returns; default 10s.
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// Confirm is what lets a record go from the queue: "puback" (default:
	// ingestd's own broker acknowledges a post once it is stored) or
	// "reply" (the post's reply with code 200: needed behind an external
	// broker such as Mosquitto with ingestd workers, whose PUBACK only
	// means received).
	Confirm string `yaml:"confirm"`
}

// Bus selects the message engine.
type Bus struct {
	Kind string `yaml:"kind"` // "embedded" (default) or "activemq"
	// MaxBytes bounds the queue (with activemq: the local outbox and the
	// broker backlog together); when it is full the poll loop is told
	// (records are refused, counted and reported, not dropped silently).
	MaxBytes int64 `yaml:"max_bytes"` // default 1 GiB
	// WhenFull is the policy when the queue reaches max_bytes: drop_oldest
	// (the default with kind embedded: the oldest history is dropped to
	// make room, counted in edged_bus_dropped_records_total and logged, and
	// polling goes on) or block (polls pause until the cloud takes data;
	// the only policy with kind activemq).
	WhenFull string   `yaml:"when_full"`
	ActiveMQ ActiveMQ `yaml:"activemq"`
}

// ActiveMQ is the production message engine's broker (kind: activemq).
type ActiveMQ struct {
	Address    string        `yaml:"address"`     // STOMP host:port, e.g. 127.0.0.1:61613
	CAFile     string        `yaml:"ca"`          // with cert and key: stomp+ssl with a client certificate
	CertFile   string        `yaml:"cert"`        //
	KeyFile    string        `yaml:"key"`         //
	ServerName string        `yaml:"server_name"` // TLS server name, default the address's host
	Login      string        `yaml:"login"`
	Passcode   string        `yaml:"passcode"`
	Prefix     string        `yaml:"prefix"`     // destination prefix, default "edged."
	Prefetch   int           `yaml:"prefetch"`   // unacked messages the broker pushes, default 16
	HeartBeat  time.Duration `yaml:"heartbeat"`  // STOMP heart-beat both ways, default 5s
	LiveTopic  string        `yaml:"live_topic"` // JSON copy of every batch for local subscribers; default "telemetry.live", "off" disables
}

// Cache selects the snapshot cache.
type Cache struct {
	Kind  string `yaml:"kind"` // "memory" (default) or "redis"
	Redis Redis  `yaml:"redis"`
}

// Redis is the production snapshot cache (kind: redis).
type Redis struct {
	Address  string        `yaml:"address"` // host:port, e.g. 127.0.0.1:6379
	Password string        `yaml:"password"`
	DB       int           `yaml:"db"`
	Prefix   string        `yaml:"prefix"` // key prefix, default "edged:snapshot:"
	TTL      time.Duration `yaml:"ttl"`    // expire a device's hash when it stops reporting; 0 = never
}

// Metrics is the HTTP listener for /metrics and /healthz.
type Metrics struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:9100; "off" disables
}

// HA is active/standby operation: two (or more) gateways of one group,
// one active at a time, elected on an etcd lease.
type HA struct {
	// Kind: off (default: single node, always active) or etcd.
	Kind string `yaml:"kind"`
	// Endpoints are the etcd client URLs (every member).
	Endpoints []string `yaml:"endpoints"`
	// Group names the gateway group (the election); default gateway.id.
	Group string `yaml:"group"`
	// Node is this node's name; default the host name.
	Node string `yaml:"node"`
	// LeaseTTL: whole seconds, at least 1s; default 2s. The active stands
	// down within it when it cannot confirm its lease.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// CAFile, CertFile, KeyFile: TLS to etcd (https:// endpoints).
	CAFile   string `yaml:"ca"`
	CertFile string `yaml:"cert"`
	KeyFile  string `yaml:"key"`
}

// Models is the sync of the devices' thing models from the cloud.
type Models struct {
	// CheckInterval: how often edged asks the cloud for new model
	// versions, besides at every (re)connect and when told (POST
	// /api/v1/models/sync); default 10m.
	CheckInterval time.Duration `yaml:"check_interval"`
}

// Link is one physical connection: a TCP connection to a device or gateway,
// later a serial line.
//
// A link is one connection, owned by one goroutine: the devices on it take
// turns. Several unit ids behind one Modbus TCP gateway share one link (one
// connection); a device that must have its own connection gets its own link.
type Link struct {
	Name string `yaml:"name"`
	// Protocol: modbus-tcp; modbus-rtu (a serial port); modbus-rtu-tcp (RTU
	// frames over TCP, for serial device servers).
	Protocol string        `yaml:"protocol"`
	Address  string        `yaml:"address"` // host:port (modbus-tcp, modbus-rtu-tcp)
	Timeout  time.Duration `yaml:"timeout"` // per request, default 1s

	// Serial line (modbus-rtu).
	Device   string `yaml:"device"`    // e.g. /dev/ttyUSB0
	Baud     int    `yaml:"baud"`      // default 9600
	DataBits int    `yaml:"data_bits"` // 7 or 8, default 8
	Parity   string `yaml:"parity"`    // none, even, odd; default even (the Modbus standard)
	StopBits int    `yaml:"stop_bits"` // 1 or 2, default 1

	// InterRequestDelay is a pause between two requests on the link, for
	// devices that need time between frames (beyond RTU's 3.5-character
	// silence, which is always kept).
	InterRequestDelay time.Duration `yaml:"inter_request_delay"`

	Line int `yaml:"-"`
}

// Profile is a reusable point table for one kind of device.
type Profile struct {
	Name       string  `yaml:"name"`
	ProductKey string  `yaml:"product_key"` // cloud product of devices with this profile
	Points     []Point `yaml:"points"`
	// Measures are computed measure points: an expression over the raw
	// points (their values after their own scale and offset).
	Measures []Measure `yaml:"measures"`
	// Report is the default reporting policy of the profile's measure
	// points (default every_poll).
	Report *Report `yaml:"report"`
	// PointsCSV is a point table kept as CSV (a spreadsheet export), added
	// after Points. Columns, by header name: name, table, address, type,
	// order, scale, offset, unit, access, and optionally measure, register,
	// bit, length.
	PointsCSV string `yaml:"points_csv"`

	// Request planning for devices of this kind (a device may override).
	MaxRegisters int `yaml:"max_registers"` // registers per read request, default 125
	MaxBits      int `yaml:"max_bits"`      // coils/discrete inputs per read request, default 2000
	// MaxGap is how many unused registers (or bits) a read may span to
	// merge two requests into one; default 0 (only adjacent points merge).
	MaxGap int `yaml:"max_gap"`
	// NoRead lists address ranges the device refuses to be read (they make
	// it answer with an exception); no request ever covers them.
	NoRead []AddressRange `yaml:"no_read"`

	Line int `yaml:"-"`
}

// AddressRange is an inclusive range of zero-based addresses in a table.
type AddressRange struct {
	Table string `yaml:"table"`
	From  int    `yaml:"from"`
	To    int    `yaml:"to"`
}

// Point is one raw point of a profile and the measure point it becomes.
type Point struct {
	Name string `yaml:"name"`
	// Measure is the model's measure point id; default Name.
	Measure string `yaml:"measure"`

	// Modbus addressing: table is coil, discrete_input, input_register or
	// holding_register; address is the zero-based protocol address (the
	// number on the wire, not the 4xxxx register number).
	Table   string `yaml:"table"`
	Address *int   `yaml:"address"`
	// Register is the alternative, conventional notation: a one-based
	// register number whose leading digit names the table, as field
	// engineers and device manuals write it: 00001-09999 coils, 10001-19999
	// discrete inputs, 30001-39999 input registers, 40001-49999 holding
	// registers (and the six-digit forms 100001-165536, 300001-365536,
	// 400001-465536). It replaces table and address:
	// register 40001 is holding_register address 0.
	Register *int `yaml:"register"`
	// Bit reads one bit (0 = least significant) of a register as a bool.
	Bit *int `yaml:"bit"`
	// Length is a string's size in registers (two characters each).
	Length int `yaml:"length"`
	// Access: read (default), write or readwrite.
	Access string `yaml:"access"`
	// Type: bool, int16, uint16, int32, uint32, int64, uint64, float32,
	// float64, string (Length registers), bcd16 (4 digits in a register),
	// bcd32 (8 digits in two). Order names where the value's big-endian bytes (A = most
	// significant) stand on the wire: AB/BA for 16 bits; ABCD, DCBA, BADC,
	// CDAB for 32; ABCDEFGH, HGFEDCBA, BADCFEHG, GHEFCDAB for 64. Default:
	// big-endian.
	Type  string `yaml:"type"`
	Order string `yaml:"order"`

	// value = raw * scale + offset
	Scale  *float64 `yaml:"scale"`
	Offset float64  `yaml:"offset"`
	Unit   string   `yaml:"unit"`
	// File is set for points read from a CSV table (Line is then its line).
	File string `yaml:"-"`
	// StaleAfter marks a value stale when its source time is older than
	// this; default 3 poll intervals.
	StaleAfter time.Duration `yaml:"stale_after"`
	// Publish: false reads the point only to feed the profile's measures'
	// expressions; it is then no measure point (not sent, not writable).
	Publish *bool `yaml:"publish"`
	// Report is when the measure point is sent (default the profile's).
	Report *Report `yaml:"report"`

	Line int `yaml:"-"`
}

// Published reports whether the point is a measure point of its own.
func (p Point) Published() bool { return p.Publish == nil || *p.Publish }

// ValueKind is the kind of the point's value after scale and offset: what
// the model conversion and the profile's expressions see.
func (p Point) ValueKind() telemetry.Kind {
	switch p.Type {
	case "bool":
		return telemetry.KindBool
	case "string":
		return telemetry.KindString
	case "float32", "float64":
		return telemetry.KindFloat
	}
	if p.Scale != nil && *p.Scale != 1 || p.Offset != 0 {
		return telemetry.KindFloat
	}
	switch p.Type {
	case "int16", "int32", "int64":
		return telemetry.KindInt
	}
	return telemetry.KindUint
}

// Measure is a computed measure point of a profile.
type Measure struct {
	ID string `yaml:"id"` // the model's measure point id
	// Expr is an expr-lang expression over the profile's raw points by
	// name, e.g. "p_a + p_b + p_c", "bit(status, 3)",
	// "xor(alarm_a, alarm_b)", "p / s" (a division by zero gives a bad
	// value, "division by zero").
	Expr string `yaml:"expr"`
	Unit string `yaml:"unit"`
	// Enum maps the expression's integer result to a label ("0": "off");
	// the measure point is then the label (or, when the model's data type
	// is enum, the model's code for that label).
	Enum   map[int64]string `yaml:"enum"`
	Report *Report          `yaml:"report"`

	Line int `yaml:"-"`
}

// Report is a reporting policy: when a measure point is sent.
//
//	report: every_poll                    # every value (the default)
//	report: on_change                     # when the value or quality changes
//	report: {deadband: 0.5}               # when it moves by more than 0.5 since the last sent value
//	report: {deadband_percent: 1}         # ... by more than 1% of the last sent value
//	report: {on_change: true, max_silence: 5m} # and at least every 5 minutes
//
// A change of quality (good, bad, stale) or of the reason of a bad value
// is always sent.
type Report struct {
	Mode       string        // every_poll, on_change, deadband, deadband_percent
	Deadband   float64       // with deadband: the absolute change; with deadband_percent: the percentage
	MaxSilence time.Duration // > 0: send anyway when nothing was sent for this long
	problems   []reportProblem
}

type reportProblem struct{ key, msg string }

// the mapping form of report
type reportMap struct {
	OnChange        *bool         `yaml:"on_change"`
	Deadband        *float64      `yaml:"deadband"`
	DeadbandPercent *float64      `yaml:"deadband_percent"`
	MaxSilence      time.Duration `yaml:"max_silence"`
}

// UnmarshalYAML takes the scalar form (every_poll, on_change) or the
// mapping form ({deadband: 0.5, max_silence: 5m}); validation reports
// what does not make sense, with the line.
func (r *Report) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		r.Mode = s
		switch s {
		case "every_poll", "on_change":
		default:
			r.problems = append(r.problems, reportProblem{"", fmt.Sprintf("report %q: use every_poll, on_change, or a mapping {on_change: true, deadband: 0.5, deadband_percent: 1, max_silence: 5m}", s)})
		}
		return nil
	}
	var m reportMap
	if err := unmarshal(&m); err != nil {
		return err
	}
	r.Mode = "on_change"
	r.MaxSilence = m.MaxSilence
	if m.OnChange != nil && !*m.OnChange {
		r.problems = append(r.problems, reportProblem{"on_change", "on_change: false makes no sense here; for every value use report: every_poll"})
	}
	if m.Deadband != nil && m.DeadbandPercent != nil {
		r.problems = append(r.problems, reportProblem{"deadband_percent", "give deadband (absolute) or deadband_percent, not both"})
	}
	switch {
	case m.Deadband != nil:
		r.Mode, r.Deadband = "deadband", *m.Deadband
		if r.Deadband <= 0 || math.IsNaN(r.Deadband) || math.IsInf(r.Deadband, 0) {
			r.problems = append(r.problems, reportProblem{"deadband", fmt.Sprintf("deadband %g: give a positive change, in the measure point's unit", r.Deadband)})
		}
	case m.DeadbandPercent != nil:
		r.Mode, r.Deadband = "deadband_percent", *m.DeadbandPercent
		if r.Deadband <= 0 || r.Deadband > 100 || math.IsNaN(r.Deadband) {
			r.problems = append(r.problems, reportProblem{"deadband_percent", fmt.Sprintf("deadband_percent %g: 0 < percent <= 100 (of the last sent value)", r.Deadband)})
		}
	}
	if m.MaxSilence < 0 {
		r.problems = append(r.problems, reportProblem{"max_silence", "max_silence must be positive"})
	}
	return nil
}

// Device is one field device on a link.
type Device struct {
	Name    string        `yaml:"name"`
	Link    string        `yaml:"link"`
	Profile string        `yaml:"profile"`
	UnitID  *int          `yaml:"unit_id"` // Modbus unit (slave) id, 0-247, or 255 for TCP
	Poll    time.Duration `yaml:"poll"`    // default 1s
	// Timeout overrides the link's per-request timeout for this device.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how many times a request that timed out is sent again
	// before the poll fails; default 0.
	Retries int `yaml:"retries"`
	// MaxRegisters, MaxBits and MaxGap override the profile's.
	MaxRegisters int    `yaml:"max_registers"`
	MaxBits      int    `yaml:"max_bits"`
	MaxGap       *int   `yaml:"max_gap"`
	ProductKey   string `yaml:"product_key"`
	DeviceKey    string `yaml:"device_key"` // default the device name

	Line int `yaml:"-"`
}

// ScaleOrOne returns the point's scale, 1 when unset.
func (p Point) ScaleOrOne() float64 {
	if p.Scale == nil {
		return 1
	}
	return *p.Scale
}

// MeasureID returns the measure point id.
func (p Point) MeasureID() string {
	if p.Measure != "" {
		return p.Measure
	}
	return p.Name
}

// Profile returns the named profile.
func (c *Config) Profile(name string) (*Profile, bool) {
	for i := range c.Profiles {
		if c.Profiles[i].Name == name {
			return &c.Profiles[i], true
		}
	}
	return nil, false
}

// DevicesOn returns the devices on link, in config order.
func (c *Config) DevicesOn(link string) []Device {
	var out []Device
	for _, d := range c.Devices {
		if d.Link == link {
			out = append(out, d)
		}
	}
	return out
}

// Path resolves a path from the config against the config file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// Error is one configuration mistake.
type Error struct {
	File  string
	Line  int    // 0 when the mistake has no single line (a missing section)
	Where string // `device "meter-1" point "voltage"` or a YAML path
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Where != "" {
		b.WriteString(e.Where)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every mistake found in one file, in line order.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads, decodes and validates a config file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates config text; path is used in messages and to
// resolve relative paths.
func Parse(path string, data []byte) (*Config, error) {
	var file *ast.File
	if err := GuardYAML(func() (err error) { file, err = parser.ParseBytes(data, 0); return err }); err != nil {
		return nil, Errors{yamlError(path, nil, err)}
	}
	idx := indexFile(file)
	var c Config
	if err := GuardYAML(func() error { return yaml.UnmarshalWithOptions(data, &c, yaml.Strict()) }); err != nil {
		return nil, Errors{yamlError(path, idx, err)}
	}
	c.File = path
	idx.stampLines(&c)
	v := &validator{file: path, idx: idx}
	v.validate(&c)
	if len(v.errs) > 0 {
		sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].Line < v.errs[j].Line })
		return nil, v.errs
	}
	return &c, nil
}

// GuardYAML runs f, turning a panic into an error: goccy/go-yaml v1.18.0
// panics on some malformed input (e.g. "devices: ! "); a bad YAML file must
// give a message, never crash the program. Every YAML loader of ours wraps
// its goccy calls in it.
func GuardYAML(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML is malformed (the parser failed: %v)", r)
		}
	}()
	return f()
}

// yamlError turns a decoder error into an Error with the line and, where the
// line falls inside a link, profile, point or device, its name.
func yamlError(file string, idx *index, err error) *Error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: file, Msg: ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line = tk.Position.Line
			if idx != nil {
				e.Where = idx.describeLine(e.Line)
			}
		}
		return e
	}
	return &Error{File: file, Msg: err.Error()}
}

// index maps YAML paths to lines and lines to the named items around them.
type index struct {
	*yamlpos.Lines
	items []item // every list item of links, profiles, points, devices, by start line
	names map[string]string
}

type item struct {
	line  int
	path  string // "$.profiles[0].points[2]"
	depth int
}

func indexFile(f *ast.File) *index {
	idx := &index{names: map[string]string{}}
	idx.Lines = yamlpos.Index(f, func(path, key string, v ast.Node, _ int) {
		if key == "name" {
			idx.names[strings.TrimSuffix(path, ".name")] = strings.Trim(v.String(), `"'`)
		}
		if key == "id" && strings.Contains(path, ".measures[") { // a measure is named by its id
			idx.names[strings.TrimSuffix(path, ".id")] = strings.Trim(v.String(), `"'`)
		}
	})
	idx.Each(func(p string, l int) {
		if strings.HasSuffix(p, "]") {
			idx.items = append(idx.items, item{line: l, path: p, depth: strings.Count(p, "[")})
		}
	})
	sort.Slice(idx.items, func(i, j int) bool {
		if idx.items[i].line != idx.items[j].line {
			return idx.items[i].line < idx.items[j].line
		}
		return idx.items[i].depth < idx.items[j].depth
	})
	return idx
}

// describeLine names the innermost link, profile, point or device whose list
// item contains line.
func (x *index) describeLine(line int) string {
	best := ""
	bestDepth := -1
	// the innermost item at or above line; a later, shallower item closes
	// deeper ones (a new profile ends the previous profile's points)
	open := map[int]string{}
	for _, it := range x.items {
		if it.line > line {
			break
		}
		for d := range open {
			if d >= it.depth {
				delete(open, d)
			}
		}
		open[it.depth] = it.path
	}
	for d, p := range open {
		if d > bestDepth {
			best, bestDepth = p, d
		}
	}
	if best == "" {
		return ""
	}
	return x.describe(best)
}

// describe turns "$.profiles[0].points[2]" into `profile "meter" point "voltage"`.
func (x *index) describe(path string) string {
	var parts []string
	rest := path
	for {
		i := strings.Index(rest, "[")
		if i < 0 {
			break
		}
		j := strings.Index(rest[i:], "]")
		if j < 0 {
			break
		}
		prefix := path[:len(path)-len(rest)+i+j+1]
		key := rest[:i]
		key = key[strings.LastIndex(key, ".")+1:]
		kind := strings.TrimSuffix(key, "s")
		if name := x.names[prefix]; name != "" {
			parts = append(parts, fmt.Sprintf("%s %q", kind, name))
		} else {
			parts = append(parts, fmt.Sprintf("%s #%s", kind, rest[i+1:i+j]))
		}
		rest = rest[i+j+1:]
	}
	return strings.Join(parts, " ")
}

func (x *index) stampLines(c *Config) {
	for i := range c.Links {
		c.Links[i].Line = x.Line(fmt.Sprintf("$.links[%d]", i))
	}
	for i := range c.Profiles {
		c.Profiles[i].Line = x.Line(fmt.Sprintf("$.profiles[%d]", i))
		for j := range c.Profiles[i].Points {
			c.Profiles[i].Points[j].Line = x.Line(fmt.Sprintf("$.profiles[%d].points[%d]", i, j))
		}
		for j := range c.Profiles[i].Measures {
			c.Profiles[i].Measures[j].Line = x.Line(fmt.Sprintf("$.profiles[%d].measures[%d]", i, j))
		}
	}
	for i := range c.Devices {
		c.Devices[i].Line = x.Line(fmt.Sprintf("$.devices[%d]", i))
	}
}

// validator collects every mistake rather than stopping at the first.
type validator struct {
	file string
	idx  *index
	errs Errors
}

// errf records a mistake at a YAML path (for its line) about a named thing.
func (v *validator) errf(path, where, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: v.idx.Line(path), Where: where, Msg: fmt.Sprintf(format, args...)})
}

// Tables, with their canonical names.
var tables = map[string]string{
	"coil": "coil", "coils": "coil",
	"discrete_input": "discrete_input", "discrete": "discrete_input",
	"input_register": "input_register", "input": "input_register",
	"holding_register": "holding_register", "holding": "holding_register",
}

// Orders for each width: the canonical notation (see Point.Order).
var orders = map[int][]string{
	1: {"AB", "BA"},
	2: {"ABCD", "DCBA", "BADC", "CDAB"},
	4: {"ABCDEFGH", "HGFEDCBA", "BADCFEHG", "GHEFCDAB"},
}

var protocols = []string{"modbus-tcp", "modbus-rtu", "modbus-rtu-tcp"}

func (v *validator) validate(c *Config) {
	// gateway
	if c.Gateway.ID == "" {
		v.errf("$.gateway", "gateway", "id is required")
	} else if !validID(c.Gateway.ID) {
		v.errf("$.gateway.id", "gateway", "id %q: use letters, digits, '-', '_' and '.' only", c.Gateway.ID)
	}
	if c.Gateway.DataDir == "" {
		c.Gateway.DataDir = "data"
	}
	defInt(&c.Gateway.GCPercent, 50)
	if c.Gateway.GCPercent < 10 {
		v.errf("$.gateway.gc_percent", "gateway", "gc_percent %d: at least 10 (lower spends most of the CPU collecting garbage)", c.Gateway.GCPercent)
	}
	if c.Gateway.MemoryLimit != 0 && c.Gateway.MemoryLimit < 16<<20 {
		v.errf("$.gateway.memory_limit", "gateway", "memory_limit %d: at least 16777216 (16 MiB), or 0 for none", c.Gateway.MemoryLimit)
	}

	// cloud
	cl := &c.Cloud
	switch {
	case cl.Broker == "":
		v.errf("$.cloud", "cloud", "broker is required (tls://host:port)")
	default:
		scheme, hostport, ok := strings.Cut(cl.Broker, "://")
		if !ok || (scheme != "tls" && scheme != "ssl" && scheme != "mqtts") {
			v.errf("$.cloud.broker", "cloud", "broker %q: must be tls://host:port (the uplink is always TLS)", cl.Broker)
		} else if _, _, err := net.SplitHostPort(hostport); err != nil {
			v.errf("$.cloud.broker", "cloud", "broker %q: %v", cl.Broker, err)
		}
	}
	if cl.CAFile == "" {
		v.errf("$.cloud", "cloud", "ca is required: the CA file that signed the ingest's certificate")
	}
	if (cl.CertFile == "") != (cl.KeyFile == "") {
		v.errf("$.cloud", "cloud", "cert and key go together")
	}
	if cl.CertFile == "" && cl.Secret == "" {
		v.errf("$.cloud", "cloud", "give a client certificate (cert, key) or a secret to log in with")
	}
	if cl.ProductKey == "" || cl.DeviceKey == "" {
		v.errf("$.cloud", "cloud", "product_key and device_key (the gateway's cloud identity) are required")
	}
	switch strings.ToLower(cl.SignMethod) {
	case "":
		cl.SignMethod = "sha256"
	case "sha256", "sha1", "md5", "hmacsha256", "hmacsha1", "hmacmd5":
	default:
		v.errf("$.cloud.sign_method", "cloud", "sign_method %q: use sha256, sha1 or md5", cl.SignMethod)
	}
	defInt(&cl.Batch, 500)
	defInt(&cl.MaxPayload, 256<<10)
	if cl.MaxPayload < 4096 {
		v.errf("$.cloud.max_payload", "cloud", "max_payload %d: at least 4096 bytes", cl.MaxPayload)
	}
	defDur(&cl.Linger, 100*time.Millisecond)
	defInt(&cl.InFlight, 8)
	defDur(&cl.AckTimeout, 10*time.Second)
	v.positive("$.cloud.batch", "cloud", "batch", cl.Batch)
	v.positive("$.cloud.in_flight", "cloud", "in_flight", cl.InFlight)
	switch cl.Confirm {
	case "":
		cl.Confirm = "puback"
	case "puback", "reply":
	default:
		v.errf("$.cloud.confirm", "cloud", "confirm %q: use puback (ingestd's own broker) or reply (an external broker with ingestd workers)", cl.Confirm)
	}
	defDur(&cl.ResumeAfter, 120*time.Minute)
	defInt(&cl.ResumeRate, 50000)
	defDur(&cl.ReconnectMax, 10*time.Second)
	if cl.ReconnectMax < time.Second {
		v.errf("$.cloud.reconnect_max", "cloud", "reconnect_max %s: at least 1s", cl.ReconnectMax)
	}
	v.positive("$.cloud.resume_rate", "cloud", "resume_rate", cl.ResumeRate)

	switch c.Bus.Kind {
	case "":
		c.Bus.Kind = "embedded"
	case "embedded":
	case "activemq":
		if c.Bus.ActiveMQ.Address == "" {
			v.errf("$.bus", "bus", "kind activemq needs activemq.address (the broker's STOMP host:port, e.g. 127.0.0.1:61613)")
		}
	default:
		v.errf("$.bus.kind", "bus", "kind %q: use \"embedded\" or \"activemq\"", c.Bus.Kind)
	}
	switch c.Bus.WhenFull {
	case "":
		c.Bus.WhenFull = "drop_oldest"
		if c.Bus.Kind == "activemq" {
			c.Bus.WhenFull = "block"
		}
	case "block":
	case "drop_oldest":
		if c.Bus.Kind == "activemq" {
			v.errf("$.bus.when_full", "bus", "when_full drop_oldest: not available with kind activemq (the broker's queue cannot drop its oldest); use block")
		}
	default:
		v.errf("$.bus.when_full", "bus", "when_full %q: use drop_oldest or block", c.Bus.WhenFull)
	}
	// the activemq section is read with kind embedded too: after a switch
	// from activemq, edged drains the broker's queues into the embedded bus
	if a := &c.Bus.ActiveMQ; c.Bus.Kind == "activemq" || a.Address != "" {
		if a.Address != "" {
			if _, _, err := net.SplitHostPort(a.Address); err != nil {
				v.errf("$.bus.activemq.address", "bus", "activemq.address %q: %v", a.Address, err)
			}
		}
		if (a.CAFile != "" || a.CertFile != "" || a.KeyFile != "") && (a.CAFile == "" || a.CertFile == "" || a.KeyFile == "") {
			v.errf("$.bus.activemq", "bus", "activemq: stomp+ssl needs all of ca, cert and key")
		}
		defInt(&a.Prefetch, 16)
		v.positive("$.bus.activemq.prefetch", "bus", "activemq.prefetch", a.Prefetch)
		defDur(&a.HeartBeat, 5*time.Second)
		if a.Prefix == "" {
			a.Prefix = "edged."
		}
		if a.LiveTopic == "" {
			a.LiveTopic = "telemetry.live"
		}
	}
	if c.Bus.MaxBytes == 0 {
		c.Bus.MaxBytes = 1 << 30
	}
	if c.Bus.MaxBytes < 1<<20 {
		v.errf("$.bus.max_bytes", "bus", "max_bytes %d: at least 1048576", c.Bus.MaxBytes)
	}
	switch c.Cache.Kind {
	case "":
		c.Cache.Kind = "memory"
	case "memory":
	case "redis":
		r := &c.Cache.Redis
		if r.Address == "" {
			v.errf("$.cache", "cache", "kind redis needs redis.address (host:port, e.g. 127.0.0.1:6379)")
		} else if _, _, err := net.SplitHostPort(r.Address); err != nil {
			v.errf("$.cache.redis.address", "cache", "redis.address %q: %v", r.Address, err)
		}
		if r.TTL < 0 {
			v.errf("$.cache.redis.ttl", "cache", "redis.ttl %s: give a positive duration, or 0 for none", r.TTL)
		}
	default:
		v.errf("$.cache.kind", "cache", "kind %q: use \"memory\" or \"redis\"", c.Cache.Kind)
	}
	switch c.HA.Kind {
	case "", "off":
		c.HA.Kind = "off"
	case "etcd":
		if len(c.HA.Endpoints) == 0 {
			v.errf("$.ha", "ha", "kind etcd needs endpoints (the etcd client URLs, e.g. http://10.0.0.5:2379)")
		}
		for i, ep := range c.HA.Endpoints {
			if u, err := url.Parse(ep); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.errf(fmt.Sprintf("$.ha.endpoints[%d]", i), "ha", "endpoint %q: give http://host:port or https://host:port", ep)
			}
		}
		if c.HA.Group == "" {
			c.HA.Group = c.Gateway.ID
		}
		if c.HA.Node == "" {
			if h, err := os.Hostname(); err == nil {
				c.HA.Node = h
			}
		}
		if c.HA.Node == "" || strings.ContainsAny(c.HA.Node, "|/+#& \t") {
			v.errf("$.ha.node", "ha", "node %q: give this node a name without spaces or any of | / + # &", c.HA.Node)
		}
		switch {
		case c.HA.LeaseTTL == 0:
			c.HA.LeaseTTL = 2 * time.Second
		case c.HA.LeaseTTL < time.Second || c.HA.LeaseTTL%time.Second != 0:
			v.errf("$.ha.lease_ttl", "ha", "lease_ttl %s: whole seconds, at least 1s", c.HA.LeaseTTL)
		}
		if (c.HA.CertFile == "") != (c.HA.KeyFile == "") {
			v.errf("$.ha", "ha", "cert and key go together")
		}
	default:
		v.errf("$.ha.kind", "ha", "kind %q: use \"off\" or \"etcd\"", c.HA.Kind)
	}
	switch {
	case c.Models.CheckInterval == 0:
		c.Models.CheckInterval = 10 * time.Minute
	case c.Models.CheckInterval < time.Second:
		v.errf("$.models.check_interval", "models", "check_interval %s is too short: at least 1s", c.Models.CheckInterval)
	}
	if c.Metrics.Listen == "" {
		c.Metrics.Listen = "127.0.0.1:9100"
	} else if c.Metrics.Listen != "off" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			v.errf("$.metrics.listen", "metrics", "listen %q: %v", c.Metrics.Listen, err)
		}
	}

	// links
	links := map[string]int{}
	for i := range c.Links {
		l := &c.Links[i]
		p := fmt.Sprintf("$.links[%d]", i)
		where := fmt.Sprintf("link %q", l.Name)
		if l.Name == "" {
			where = fmt.Sprintf("link #%d", i+1)
			v.errf(p, where, "name is required")
		} else if first, dup := links[l.Name]; dup {
			v.errf(p+".name", where, "duplicate link name (first defined on line %d)", c.Links[first].Line)
		} else {
			links[l.Name] = i
		}
		if !contains(protocols, l.Protocol) {
			v.errf(p+".protocol", where, "protocol %q: use one of %s", l.Protocol, strings.Join(protocols, ", "))
		}
		if l.Protocol == "modbus-rtu" {
			v.serial(p, where, l)
		} else if l.Address == "" {
			v.errf(p, where, "address is required (host:port)")
		} else if _, port, err := net.SplitHostPort(l.Address); err != nil {
			v.errf(p+".address", where, "address %q: %v", l.Address, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			v.errf(p+".address", where, "address %q: port must be 1-65535", l.Address)
		}
		if l.Protocol != "modbus-rtu" && (l.Device != "" || l.Baud != 0 || l.DataBits != 0 || l.Parity != "" || l.StopBits != 0) {
			v.errf(p, where, "device, baud, data_bits, parity and stop_bits are for protocol modbus-rtu (a serial port)")
		}
		defDur(&l.Timeout, time.Second)
		if l.Timeout < 0 {
			v.errf(p+".timeout", where, "timeout must be positive")
		}
		if l.InterRequestDelay < 0 {
			v.errf(p+".inter_request_delay", where, "inter_request_delay must not be negative")
		}
	}

	// profiles
	profiles := map[string]int{}
	for i := range c.Profiles {
		pr := &c.Profiles[i]
		p := fmt.Sprintf("$.profiles[%d]", i)
		where := fmt.Sprintf("profile %q", pr.Name)
		if pr.Name == "" {
			where = fmt.Sprintf("profile #%d", i+1)
			v.errf(p, where, "name is required")
		} else if first, dup := profiles[pr.Name]; dup {
			v.errf(p+".name", where, "duplicate profile name (first defined on line %d)", c.Profiles[first].Line)
		} else {
			profiles[pr.Name] = i
		}
		if pr.PointsCSV != "" {
			v.loadCSV(c, p, where, pr)
		}
		if len(pr.Points) == 0 {
			v.errf(p, where, "a profile needs at least one point")
		}
		names := map[string]int{}
		measures := map[string]int{}
		for j := range pr.Points {
			v.point(c, fmt.Sprintf("%s.points[%d]", p, j), where, &pr.Points[j], j, names, measures)
		}
		v.report(p+".report", where, pr.Report)
		v.measures(p, where, pr, names, measures)
		defInt(&pr.MaxRegisters, 125)
		defInt(&pr.MaxBits, 2000)
		if pr.MaxRegisters < 1 || pr.MaxRegisters > 125 {
			v.errf(p+".max_registers", where, "max_registers %d: 1-125 (the Modbus limit)", pr.MaxRegisters)
		}
		if pr.MaxBits < 1 || pr.MaxBits > 2000 {
			v.errf(p+".max_bits", where, "max_bits %d: 1-2000 (the Modbus limit)", pr.MaxBits)
		}
		if pr.MaxGap < 0 {
			v.errf(p+".max_gap", where, "max_gap must not be negative")
		}
		for k := range pr.NoRead {
			r := &pr.NoRead[k]
			rp := fmt.Sprintf("%s.no_read[%d]", p, k)
			if t, ok := tables[r.Table]; ok {
				r.Table = t
			} else {
				v.errf(rp+".table", where, "no_read table %q: use coil, discrete_input, input_register or holding_register", r.Table)
			}
			if r.From < 0 || r.To > 65535 || r.From > r.To {
				v.errf(rp, where, "no_read %d-%d: from and to are zero-based addresses, 0 <= from <= to <= 65535", r.From, r.To)
			}
		}
		v.overlaps(p, where, pr)
	}

	// devices
	devices := map[string]int{}
	keys := map[string]int{}
	for i := range c.Devices {
		d := &c.Devices[i]
		p := fmt.Sprintf("$.devices[%d]", i)
		where := fmt.Sprintf("device %q", d.Name)
		if d.Name == "" {
			where = fmt.Sprintf("device #%d", i+1)
			v.errf(p, where, "name is required")
		} else if !validID(d.Name) {
			v.errf(p+".name", where, "name: use letters, digits, '-', '_' and '.' only")
		} else if first, dup := devices[d.Name]; dup {
			v.errf(p+".name", where, "duplicate device name (first defined on line %d)", c.Devices[first].Line)
		} else {
			devices[d.Name] = i
		}
		if d.Link == "" {
			v.errf(p, where, "link is required")
		} else if _, ok := links[d.Link]; !ok {
			v.errf(p+".link", where, "link %q is not defined under links", d.Link)
		}
		var prof *Profile
		if d.Profile == "" {
			v.errf(p, where, "profile is required")
		} else if k, ok := profiles[d.Profile]; !ok {
			v.errf(p+".profile", where, "profile %q is not defined under profiles", d.Profile)
		} else {
			prof = &c.Profiles[k]
		}
		if d.UnitID == nil {
			v.errf(p, where, "unit_id is required (the Modbus slave id, 1-247)")
		} else if u := *d.UnitID; u < 0 || (u > 247 && u != 255) {
			v.errf(p+".unit_id", where, "unit_id %d out of range: 0-247, or 255 for a TCP device", u)
		} else if k, ok := links[d.Link]; ok && c.Links[k].Protocol != "modbus-tcp" && (u == 0 || u == 255) {
			v.errf(p+".unit_id", where, "unit_id %d on a serial line: 1-247 (0 is broadcast, which no device answers)", u)
		}
		defDur(&d.Poll, time.Second)
		if k, ok := links[d.Link]; ok {
			defDur(&d.Timeout, c.Links[k].Timeout)
		}
		if d.Timeout < 0 {
			v.errf(p+".timeout", where, "timeout must be positive")
		}
		if d.Retries < 0 || d.Retries > 10 {
			v.errf(p+".retries", where, "retries %d: 0-10", d.Retries)
		}
		if prof != nil {
			defInt(&d.MaxRegisters, prof.MaxRegisters)
			defInt(&d.MaxBits, prof.MaxBits)
			if d.MaxGap == nil {
				g := prof.MaxGap
				d.MaxGap = &g
			}
		}
		if d.MaxRegisters < 0 || d.MaxRegisters > 125 {
			v.errf(p+".max_registers", where, "max_registers %d: 1-125 (the Modbus limit)", d.MaxRegisters)
		}
		if d.MaxBits < 0 || d.MaxBits > 2000 {
			v.errf(p+".max_bits", where, "max_bits %d: 1-2000 (the Modbus limit)", d.MaxBits)
		}
		if d.MaxGap != nil && *d.MaxGap < 0 {
			v.errf(p+".max_gap", where, "max_gap must not be negative")
		}
		if prof != nil {
			for _, pt := range prof.Points {
				if pt.Table == "coil" || pt.Table == "discrete_input" {
					continue
				}
				if w := pt.Width(); w > d.MaxRegisters && d.MaxRegisters > 0 {
					v.errf(p+".max_registers", where, "point %q spans %d registers, more than max_registers %d", pt.Name, w, d.MaxRegisters)
				}
			}
		}
		if d.Poll < 10*time.Millisecond {
			v.errf(p+".poll", where, "poll %s is too short: at least 10ms", d.Poll)
		}
		if d.DeviceKey == "" {
			d.DeviceKey = d.Name
		}
		if d.ProductKey == "" && prof != nil {
			d.ProductKey = prof.ProductKey
		}
		if d.ProductKey == "" && (prof != nil || d.Profile == "") {
			v.errf(p, where, "product_key is required here or on its profile (the device's cloud product)")
		}
		k := d.ProductKey + "/" + d.DeviceKey
		if first, dup := keys[k]; dup && c.Devices[first].Name != d.Name {
			v.errf(p+".device_key", where, "device_key %q of product %q is already used by device %q", d.DeviceKey, d.ProductKey, c.Devices[first].Name)
		} else {
			keys[k] = i
		}
	}
	if len(c.Devices) == 0 {
		v.errf("$", "", "no devices are configured")
	}
	// stale limits default to three poll intervals of the slowest device using the profile
	for i := range c.Profiles {
		var slowest time.Duration
		for _, d := range c.Devices {
			if d.Profile == c.Profiles[i].Name && d.Poll > slowest {
				slowest = d.Poll
			}
		}
		for j := range c.Profiles[i].Points {
			defDur(&c.Profiles[i].Points[j].StaleAfter, 3*slowest)
		}
	}
}

// overlaps refuses points that share an address (bits of one register
// aside) and points inside a no_read range.
func (v *validator) overlaps(p, where string, pr *Profile) {
	type span struct {
		first, last int
		bit         int // -1: the whole register
		j           int
	}
	byTable := map[string][]span{}
	for j, pt := range pr.Points {
		if pt.Address == nil || tables[pt.Table] == "" || pt.Width() < 1 {
			continue // already reported
		}
		sp := span{first: *pt.Address, last: *pt.Address + pt.Width() - 1, bit: -1, j: j}
		if pt.Bit != nil {
			sp.bit = *pt.Bit
		}
		byTable[pt.Table] = append(byTable[pt.Table], sp)
		for _, r := range pr.NoRead {
			if r.Table == pt.Table && sp.first <= r.To && r.From <= sp.last {
				v.pointErr(p, j, where, &pr.Points[j], "address %d-%d is inside no_read %d-%d of %s", sp.first, sp.last, r.From, r.To, r.Table)
			}
		}
	}
	for table, spans := range byTable {
		sort.Slice(spans, func(a, b int) bool { return spans[a].first < spans[b].first })
		for a := 0; a < len(spans); a++ {
			for b := a + 1; b < len(spans) && spans[b].first <= spans[a].last; b++ {
				x, y := spans[a], spans[b]
				if x.bit >= 0 && y.bit >= 0 && x.first == y.first && x.last == y.last && x.bit != y.bit {
					continue // two bits of one register
				}
				first, second := min(x.j, y.j), max(x.j, y.j)
				v.pointErr(p, second, where, &pr.Points[second], "overlaps point %q in %s (addresses %d-%d and %d-%d)",
					pr.Points[first].Name, table, spans[a].first, spans[a].last, spans[b].first, spans[b].last)
			}
		}
	}
}

// pointErr reports a mistake about point j of a profile at its YAML or CSV line.
func (v *validator) pointErr(p string, j int, profWhere string, pt *Point, format string, args ...any) {
	where := fmt.Sprintf("%s point %q", profWhere, pt.Name)
	if pt.File != "" {
		v.errs = append(v.errs, &Error{File: pt.File, Line: pt.Line, Where: where, Msg: fmt.Sprintf(format, args...)})
		return
	}
	v.errf(fmt.Sprintf("%s.points[%d]", p, j), where, format, args...)
}

// serial checks and completes a serial link.
func (v *validator) serial(p, where string, l *Link) {
	if l.Device == "" {
		v.errf(p, where, "device is required for modbus-rtu (the serial port, e.g. /dev/ttyUSB0)")
	}
	if l.Address != "" {
		v.errf(p+".address", where, "address is for TCP links; a modbus-rtu link has a device")
	}
	defInt(&l.Baud, 9600)
	defInt(&l.DataBits, 8)
	defInt(&l.StopBits, 1)
	if l.Parity == "" {
		l.Parity = "even"
	}
	switch l.Baud {
	case 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400:
	default:
		v.errf(p+".baud", where, "baud %d: use 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 or 230400", l.Baud)
	}
	if l.DataBits != 7 && l.DataBits != 8 {
		v.errf(p+".data_bits", where, "data_bits %d: 7 or 8", l.DataBits)
	}
	if l.StopBits != 1 && l.StopBits != 2 {
		v.errf(p+".stop_bits", where, "stop_bits %d: 1 or 2", l.StopBits)
	}
	if l.Parity != "none" && l.Parity != "even" && l.Parity != "odd" {
		v.errf(p+".parity", where, "parity %q: none, even or odd", l.Parity)
	}
}

// regTypes are the types a point in a register table may have, with their
// width in registers (string: Length registers).
var regTypes = map[string]int{
	"int16": 1, "uint16": 1, "bcd16": 1, "int32": 2, "uint32": 2, "float32": 2, "bcd32": 2,
	"int64": 4, "uint64": 4, "float64": 4, "string": 0, "bool": 1, // bool: with bit
}

const typeList = "bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string, bcd16, bcd32"

// Width returns how many registers (or bits) the point spans once validated.
func (p Point) Width() int {
	switch {
	case p.Table == "coil" || p.Table == "discrete_input" || p.Type == "bool":
		return 1
	case p.Type == "string":
		return p.Length
	}
	return regTypes[p.Type]
}

// ParseRegister turns a conventional register number (40001, 300001, ...)
// into a table and a zero-based address.
func ParseRegister(n int) (table string, address int, err error) {
	type conv struct {
		lo, hi int
		table  string
	}
	for _, c := range []conv{
		{1, 9999, "coil"}, {10001, 19999, "discrete_input"}, {30001, 39999, "input_register"}, {40001, 49999, "holding_register"},
		{100001, 165536, "discrete_input"}, {300001, 365536, "input_register"}, {400001, 465536, "holding_register"},
	} {
		if n >= c.lo && n <= c.hi {
			return c.table, n - c.lo, nil
		}
	}
	// six-digit coil numbers (000001-065536) lose their leading zeros in a
	// YAML number and cannot be told from the others: use table and address
	return "", 0, fmt.Errorf("register %d: not a register number (1-9999 coils, 10001-19999 discrete inputs, 30001-39999 input registers, 40001-49999 holding registers, or the six-digit 1xxxxx, 3xxxxx, 4xxxxx forms; one-based)", n)
}

func (v *validator) point(c *Config, p, profWhere string, pt *Point, j int, names, measures map[string]int) {
	where := fmt.Sprintf("%s point %q", profWhere, pt.Name)
	// errf for this point: a YAML path, or the point's CSV line
	errf := func(path, format string, args ...any) {
		if pt.File != "" {
			v.errs = append(v.errs, &Error{File: pt.File, Line: pt.Line, Where: where, Msg: fmt.Sprintf(format, args...)})
			return
		}
		v.errf(path, where, format, args...)
	}
	if pt.Name == "" {
		where = fmt.Sprintf("%s point #%d", profWhere, j+1)
		errf(p, "name is required")
	} else if first, dup := names[pt.Name]; dup {
		errf(p+".name", "duplicate point name (point #%d has it)", first+1)
	} else {
		names[pt.Name] = j
	}
	if !pt.Published() && (pt.Measure != "" || pt.Report != nil) {
		errf(p+".publish", "publish: false feeds the profile's measures only; measure and report are for published points")
	}
	if pt.Report != nil {
		v.report(p+".report", where, pt.Report)
	}
	if m := pt.MeasureID(); m != "" && pt.Published() {
		if first, dup := measures[m]; dup {
			errf(p, "measure point %q is already fed by point #%d", m, first+1)
		} else {
			measures[m] = j
		}
	}
	// where: register, or table and address
	if pt.Register != nil {
		if pt.Table != "" || pt.Address != nil {
			errf(p+".register", "give register (e.g. 40001) or table and address, not both")
		}
		t, a, err := ParseRegister(*pt.Register)
		if err != nil {
			errf(p+".register", "%v", err)
		} else {
			pt.Table, pt.Address = t, &a
		}
	}
	table, tableOK := tables[pt.Table]
	switch {
	case pt.Register != nil && pt.Address == nil:
	case !tableOK:
		errf(p+".table", "table %q: use coil, discrete_input, input_register or holding_register", pt.Table)
	default:
		pt.Table = table
	}
	bits := table == "coil" || table == "discrete_input"
	width, typeOK := regTypes[pt.Type]
	switch {
	case pt.Type == "":
		errf(p, "type is required")
	case !typeOK:
		errf(p+".type", "type %q: use one of %s", pt.Type, typeList)
	case bits && pt.Type != "bool":
		errf(p+".type", "type %s needs a register table (input_register or holding_register), not %s", pt.Type, table)
	case tableOK && !bits && pt.Type == "bool" && pt.Bit == nil:
		errf(p+".type", "a bool in a register table needs bit (0-15): which bit of the register")
	}
	if pt.Bit != nil {
		switch {
		case pt.Type != "bool":
			errf(p+".bit", "bit reads one bit as a bool: give type bool")
		case bits:
			errf(p+".bit", "bit is for register tables; a %s is already one bit", table)
		case *pt.Bit < 0 || *pt.Bit > 15:
			errf(p+".bit", "bit %d: 0 (least significant) to 15", *pt.Bit)
		}
	}
	if pt.Type == "string" {
		if pt.Length < 1 || pt.Length > 123 {
			errf(p+".length", "a string needs length: its size in registers (1-123, two characters each)")
		}
		width = pt.Length
	} else if pt.Length != 0 {
		errf(p+".length", "length is for type string")
	}
	// byte order
	switch {
	case !typeOK || bits || pt.Type == "bool":
		if pt.Order != "" && typeOK {
			errf(p+".order", "order makes no sense for a bool")
		}
	case pt.Type == "string":
		if pt.Order == "" {
			pt.Order = "AB"
		} else if pt.Order != "AB" && pt.Order != "BA" {
			errf(p+".order", "order %q: a string's characters stand AB (first character in the high byte) or BA in each register", pt.Order)
		}
	default:
		if pt.Order == "" {
			pt.Order = orders[width][0]
		} else if !contains(orders[width], pt.Order) {
			errf(p+".order", "order %q does not fit %s: use one of %s", pt.Order, pt.Type, strings.Join(orders[width], ", "))
		}
	}
	switch pt.Access {
	case "":
		pt.Access = "read"
	case "read", "write", "readwrite":
		if pt.Access != "read" && (table == "discrete_input" || table == "input_register") {
			errf(p+".access", "access %s: a %s cannot be written", pt.Access, table)
		}
	default:
		errf(p+".access", "access %q: read, write or readwrite", pt.Access)
	}
	if pt.Address == nil {
		if pt.Register == nil {
			errf(p, "address is required (zero-based protocol address 0-65535), or register (e.g. 40001)")
		}
	} else if width >= 1 || bits {
		a := *pt.Address
		last := a + max(width, 1) - 1
		if a < 0 || last > 65535 {
			if width > 1 {
				errf(p+".address", "address %d out of range: a %s spans %d registers, so 0-%d", a, pt.Type, width, 65536-width)
			} else if a >= 400001 && a <= 465536 {
				errf(p+".address", "address %d out of range: 0-65535; it looks like a 4xxxxx register number, whose zero-based address is %d (or write register: %d)", a, a-400001, a)
			} else if a >= 300001 && a <= 365536 {
				errf(p+".address", "address %d out of range: 0-65535; it looks like a 3xxxxx register number, whose zero-based address is %d (or write register: %d)", a, a-300001, a)
			} else {
				errf(p+".address", "address %d out of range: 0-65535 (zero-based protocol address)", a)
			}
		}
	}
	if pt.Scale != nil && *pt.Scale == 0 {
		errf(p+".scale", "scale 0 would zero every value")
	}
	if pt.StaleAfter < 0 {
		errf(p+".stale_after", "stale_after must be positive")
	}
	_ = c
}

// report checks a reporting policy (nil: the default).
func (v *validator) report(path, where string, r *Report) {
	if r == nil {
		return
	}
	for _, pb := range r.problems {
		p := path
		if pb.key != "" {
			p += "." + pb.key
		}
		v.errf(p, where, "%s", pb.msg)
	}
}

// measures checks a profile's computed measure points: ids unique among
// the profile's measure points, expressions that compile against its raw
// points (their names and the kinds of their values), enum mappings.
func (v *validator) measures(p, profWhere string, pr *Profile, names, measures map[string]int) {
	inputs := make(map[string]telemetry.Kind, len(pr.Points))
	for _, pt := range pr.Points {
		if pt.Name != "" {
			inputs[pt.Name] = pt.ValueKind()
		}
	}
	seen := map[string]int{}
	for k := range pr.Measures {
		m := &pr.Measures[k]
		mp := fmt.Sprintf("%s.measures[%d]", p, k)
		where := fmt.Sprintf("%s measure %q", profWhere, m.ID)
		switch {
		case m.ID == "":
			where = fmt.Sprintf("%s measure #%d", profWhere, k+1)
			v.errf(mp, where, "id is required (the model's measure point id)")
		case hasMeasure(measures, m.ID):
			v.errf(mp+".id", where, "measure point %q is already fed by point #%d", m.ID, measures[m.ID]+1)
		case seen[m.ID] > 0:
			v.errf(mp+".id", where, "duplicate measure id (measure #%d has it)", seen[m.ID])
		default:
			seen[m.ID] = k + 1
		}
		v.report(mp+".report", where, m.Report)
		if m.Expr == "" {
			v.errf(mp, where, "expr is required: an expression over the profile's points, e.g. \"p_a + p_b\"")
			continue
		}
		prog, err := formula.Compile(m.Expr, inputs)
		if err != nil {
			v.errf(mp+".expr", where, "expr %q: %v", m.Expr, err)
			continue
		}
		if len(m.Enum) > 0 {
			if prog.Out != telemetry.KindInt && prog.Out != telemetry.KindNone {
				v.errf(mp+".enum", where, "enum maps integers to labels, but expr %q gives a %s", m.Expr, prog.Out)
			}
			codes := make([]int64, 0, len(m.Enum))
			for code := range m.Enum {
				codes = append(codes, code)
			}
			sort.Slice(codes, func(a, b int) bool { return codes[a] < codes[b] })
			for _, code := range codes {
				if m.Enum[code] == "" {
					v.errf(mp+".enum", where, "enum %d: give a label", code)
				}
			}
		}
	}
}

func hasMeasure(measures map[string]int, id string) bool {
	_, ok := measures[id]
	return ok
}

func (v *validator) positive(path, where, field string, n int) {
	if n <= 0 {
		v.errf(path, where, "%s must be positive", field)
	}
}

func defInt(p *int, d int) {
	if *p == 0 {
		*p = d
	}
}

func defDur(p *time.Duration, d time.Duration) {
	if *p == 0 {
		*p = d
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}
