package modbussim

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/edged/edged/config"
	"github.com/edged/edged/internal/yamlpos"
)

// Config is one simulated Modbus TCP endpoint: the unit ids it answers and
// each unit's register map. It is a plain Go value (tests build it directly)
// and is also decoded strictly from YAML by LoadConfig; see README.md.
type Config struct {
	// UnknownUnit is what a request to a unit id not listed in Units gets:
	// "silent" (default: no reply, like a device behind a gateway that times
	// out) or "exception" (exception 0x0B, gateway target failed to respond).
	UnknownUnit string `yaml:"unknown_unit"`
	// MaxConnections limits simultaneous client connections (0 = no limit);
	// a connection over the limit is accepted and closed at once, as many
	// small devices do.
	MaxConnections int `yaml:"max_connections"`
	// IdleTimeout closes a connection that sends nothing for this long
	// (0 = never).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ResponseDelay delays every reply, to simulate a slow device.
	ResponseDelay time.Duration `yaml:"response_delay"`

	// Profiles are named register maps that units can share.
	Profiles map[string]Tables `yaml:"profiles"`
	Units    []Unit            `yaml:"units"`
}

// Unit is one Modbus unit (slave) id and its register map: the signals of its
// profile, if any, plus its own. Every unit keeps its own state (written
// values, random walks), even when units share a profile.
type Unit struct {
	ID      int    `yaml:"id"` // 0-255, required
	Name    string `yaml:"name"`
	Profile string `yaml:"profile"`
	Tables  `yaml:",inline"`
}

// Tables are the four Modbus tables. Coils and holding registers can be
// written by clients (FC 5, 6, 15, 16); a write freezes the written signal at
// the written value until the server is restarted.
type Tables struct {
	Coils            []Signal `yaml:"coils"`
	DiscreteInputs   []Signal `yaml:"discrete_inputs"`
	InputRegisters   []Signal `yaml:"input_registers"`
	HoldingRegisters []Signal `yaml:"holding_registers"`
}

// Signal is one value in a table (or, with Count, many consecutive values)
// and the generator that produces it. Exactly one generator must be set.
type Signal struct {
	Name string `yaml:"name"`
	// Address is the zero-based protocol address (the number on the wire,
	// not the 4xxxx register number). Required.
	Address int `yaml:"address"`
	// Type: bool (the only type, and the default, in coils and discrete
	// inputs), int16, uint16 (default in registers), int32, uint32, int64,
	// uint64, float32, float64.
	Type string `yaml:"type"`
	// Order names where the value's big-endian bytes (A = most significant)
	// stand on the wire: AB, BA; ABCD, DCBA, BADC, CDAB; ABCDEFGH, HGFEDCBA,
	// BADCFEHG, GHEFCDAB. Default big-endian.
	Order string `yaml:"order"`
	// Scale and Offset mirror a gateway point's: value = raw*scale + offset,
	// so the register holds raw = (value-offset)/scale. Scale 0 means 1.
	Scale  float64 `yaml:"scale"`
	Offset float64 `yaml:"offset"`
	Unit   string  `yaml:"unit"` // documentation only

	// Count > 1 makes Count consecutive signals ("bulk"), Stride registers
	// (or bits) apart (default: the type's width). Sine, square and toggle
	// phases are spread evenly over one period; every random walk differs.
	Count  int `yaml:"count"`
	Stride int `yaml:"stride"`

	Generator `yaml:",inline"`
}

// Generator chooses how a signal's value changes with the time elapsed since
// the server was created. Exactly one field is set. Integer registers are
// rounded; a counter wraps around at the type's range like a real energy
// register, every other generator must stay inside it.
type Generator struct {
	Const      *Const      `yaml:"const"`
	Counter    *Counter    `yaml:"counter"`
	Sine       *Sine       `yaml:"sine"`
	RandomWalk *RandomWalk `yaml:"random_walk"`
	Square     *Square     `yaml:"square"`
	Toggle     *Toggle     `yaml:"toggle"`
}

// Const is a fixed value.
type Const struct {
	Value Number `yaml:"value"`
}

// Counter is start + step*floor(elapsed/per).
type Counter struct {
	Start float64       `yaml:"start"`
	Step  float64       `yaml:"step"` // default 1
	Per   time.Duration `yaml:"per"`  // default 1s
}

// Sine is offset + amplitude*sin(2π(elapsed+phase)/period).
type Sine struct {
	Amplitude float64       `yaml:"amplitude"`
	Offset    float64       `yaml:"offset"`
	Period    time.Duration `yaml:"period"` // required
	Phase     time.Duration `yaml:"phase"`
}

// RandomWalk starts at Start and every Every moves by a uniform random amount
// in [-Step, +Step], clamped to [Min, Max]. Seed makes runs reproducible; the
// walk also depends on the unit id and address, so units sharing a profile
// and bulk signals walk differently.
type RandomWalk struct {
	Start float64       `yaml:"start"`
	Step  float64       `yaml:"step"` // required, > 0
	Min   float64       `yaml:"min"`
	Max   float64       `yaml:"max"`   // > Min
	Every time.Duration `yaml:"every"` // default 1s
	Seed  int64         `yaml:"seed"`
}

// Square is High for the first Duty fraction of each Period, then Low.
// Defaults: Duty 0.5, Low 0, High 1 (true for a bool).
type Square struct {
	Period time.Duration `yaml:"period"` // required
	Duty   float64       `yaml:"duty"`
	Low    float64       `yaml:"low"`
	High   float64       `yaml:"high"`
	Phase  time.Duration `yaml:"phase"`
}

// Toggle is 0 (false) for one Period, then 1 (true) for one Period, and so on.
type Toggle struct {
	Period time.Duration `yaml:"period"` // required
	Phase  time.Duration `yaml:"phase"`
}

// Number is a constant: in YAML a number (decimal, 0x hex) or true/false
// (1/0).
type Number float64

// UnmarshalYAML decodes a number or a bool.
func (n *Number) UnmarshalYAML(b []byte) error {
	s := strings.TrimSpace(string(b))
	switch s {
	case "true":
		*n = 1
		return nil
	case "false":
		*n = 0
		return nil
	}
	// 0x, 0o, 0b prefixes as in YAML 1.2; a leading zero alone is decimal
	base := 10
	if digits := strings.TrimLeft(s, "+-"); len(digits) > 1 && digits[0] == '0' && strings.ContainsRune("xXoObB", rune(digits[1])) {
		base = 0
	}
	if i, err := strconv.ParseInt(s, base, 64); err == nil {
		*n = Number(i)
		return nil
	}
	if u, err := strconv.ParseUint(s, base, 64); err == nil {
		*n = Number(u)
		return nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		*n = Number(f)
		return nil
	}
	return &numberError{text: s}
}

// numberError lacks a position (goccy does not add one to errors of custom
// unmarshalers); LoadConfig finds it.
type numberError struct{ text string }

func (e *numberError) Error() string {
	return fmt.Sprintf("value %q is neither a number nor true/false", e.text)
}

// ConfigError is one configuration mistake.
type ConfigError struct {
	File  string // "" for a Config built in Go
	Line  int    // 0 when unknown
	Where string // `unit 1 "meter-1" input_registers[0] "voltage"`
	Msg   string

	path string // YAML path of the offending key, for the line
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("modbussim: ")
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Where != "" {
		b.WriteString(e.Where)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ConfigErrors is every mistake found, in file order.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// LoadConfig reads and strictly decodes a YAML config file (an unknown key is
// an error) and validates it. Every error names the file and line; a
// validation failure returns ConfigErrors listing every mistake.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("modbussim: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig for config text; path is used in messages.
func ParseConfig(path string, data []byte) (Config, error) {
	var c Config
	var lines *lineIndex
	if err := config.GuardYAML(func() error {
		file, err := parser.ParseBytes(data, 0)
		if err != nil {
			return err
		}
		lines = indexLines(file)
		return yaml.UnmarshalWithOptions(data, &c, yaml.Strict())
	}); err != nil {
		return Config{}, ConfigErrors{yamlError(path, lines, err)}
	}
	errs := c.validate()
	errs = append(errs, requireKeys(&c, lines)...)
	if len(errs) == 0 {
		return c, nil
	}
	for _, e := range errs {
		e.File = path
		e.Line = lines.Line(e.path)
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return Config{}, errs
}

func yamlError(file string, lines *lineIndex, err error) *ConfigError {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &ConfigError{File: file, Msg: ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line = tk.Position.Line
		}
		return e
	}
	var ne *numberError
	if errors.As(err, &ne) && lines != nil {
		return &ConfigError{File: file, Line: lines.badValue[ne.text], Msg: ne.Error()}
	}
	return &ConfigError{File: file, Msg: err.Error()}
}

// lineIndex maps YAML paths ("$.units[0].coils[1].address") to lines.
type lineIndex struct {
	*yamlpos.Lines
	// badValue maps the text of a "value:" that is not a number or a bool
	// to its first line (see numberError).
	badValue map[string]int
}

func indexLines(f *ast.File) *lineIndex {
	x := &lineIndex{badValue: map[string]int{}}
	x.Lines = yamlpos.Index(f, func(_, key string, v ast.Node, line int) {
		if key != "value" {
			return
		}
		text := strings.TrimSpace(v.String())
		var num Number
		if _, seen := x.badValue[text]; !seen && num.UnmarshalYAML([]byte(text)) != nil {
			x.badValue[text] = line
		}
	})
	return x
}

// requireKeys reports unit ids and addresses missing from the file (in Go
// their zero value is valid, so only the file can tell).
func requireKeys(c *Config, x *lineIndex) ConfigErrors {
	var errs ConfigErrors
	check := func(base string, where string, t *Tables) {
		for _, tb := range t.list() {
			for i, s := range *tb.signals {
				p := fmt.Sprintf("%s.%s[%d]", base, tb.name, i)
				if !x.Has(p + ".address") {
					errs = append(errs, &ConfigError{path: p, Where: joinWhere(where, signalWhere(tb.name, i, &s)), Msg: "address is required"})
				}
			}
		}
	}
	for _, name := range sortedKeys(c.Profiles) {
		t := c.Profiles[name]
		check("$.profiles."+name, fmt.Sprintf("profile %q", name), &t)
	}
	for i := range c.Units {
		u := &c.Units[i]
		p := fmt.Sprintf("$.units[%d]", i)
		if !x.Has(p + ".id") {
			errs = append(errs, &ConfigError{path: p, Where: fmt.Sprintf("units[%d]", i), Msg: "id is required"})
		}
		check(p, unitWhere(u), &u.Tables)
	}
	return errs
}

// tableRef names one of a Tables' lists.
type tableRef struct {
	name    string
	kind    tableKind
	signals *[]Signal
}

func (t *Tables) list() [4]tableRef {
	return [4]tableRef{
		{"coils", tableCoils, &t.Coils},
		{"discrete_inputs", tableDiscrete, &t.DiscreteInputs},
		{"input_registers", tableInput, &t.InputRegisters},
		{"holding_registers", tableHolding, &t.HoldingRegisters},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func unitWhere(u *Unit) string {
	if u.Name != "" {
		return fmt.Sprintf("unit %d %q", u.ID, u.Name)
	}
	return fmt.Sprintf("unit %d", u.ID)
}

func signalWhere(table string, i int, s *Signal) string {
	if s.Name != "" {
		return fmt.Sprintf("%s[%d] %q", table, i, s.Name)
	}
	return fmt.Sprintf("%s[%d]", table, i)
}

func joinWhere(a, b string) string {
	if a == "" {
		return b
	}
	return a + " " + b
}

// Validate checks a Config built in Go; New calls it. It does no I/O.
func (c *Config) Validate() error {
	if errs := c.validate(); len(errs) > 0 {
		return errs
	}
	return nil
}

func (c *Config) validate() ConfigErrors {
	var v validator
	switch c.UnknownUnit {
	case "", "silent", "exception":
	default:
		v.errf("$.unknown_unit", "", "unknown_unit %q is not silent or exception", c.UnknownUnit)
	}
	if c.MaxConnections < 0 {
		v.errf("$.max_connections", "", "max_connections must be >= 0")
	}
	if c.IdleTimeout < 0 {
		v.errf("$.idle_timeout", "", "idle_timeout must be >= 0")
	}
	if c.ResponseDelay < 0 {
		v.errf("$.response_delay", "", "response_delay must be >= 0")
	}
	for _, name := range sortedKeys(c.Profiles) {
		t := c.Profiles[name]
		if _, err := compileTables(&t, nil, "", 0, "$.profiles."+name, fmt.Sprintf("profile %q", name)); err != nil {
			v.errs = append(v.errs, err...)
		}
	}
	if len(c.Units) == 0 {
		v.errf("$.units", "", "no units")
	}
	ids := map[int]int{}
	for i := range c.Units {
		u := &c.Units[i]
		p := fmt.Sprintf("$.units[%d]", i)
		where := unitWhere(u)
		if u.ID < 0 || u.ID > 255 {
			v.errf(p+".id", where, "id must be 0-255")
		}
		if first, dup := ids[u.ID]; dup {
			v.errf(p+".id", where, "duplicate unit id (units[%d] has it)", first)
		} else {
			ids[u.ID] = i
		}
		var prof *Tables
		if u.Profile != "" {
			if t, ok := c.Profiles[u.Profile]; ok {
				prof = &t
			} else {
				v.errf(p+".profile", where, "unknown profile %q", u.Profile)
			}
		}
		if _, err := compileTables(&u.Tables, prof, u.Profile, u.ID, p, where); err != nil {
			// profile mistakes are reported once, above
			for _, e := range err {
				if !strings.HasPrefix(e.path, "$.profiles.") {
					v.errs = append(v.errs, e)
				}
			}
		}
	}
	return v.errs
}

type validator struct{ errs ConfigErrors }

func (v *validator) errf(path, where, format string, args ...any) {
	v.errs = append(v.errs, &ConfigError{path: path, Where: where, Msg: fmt.Sprintf(format, args...)})
}

// compileTables builds a unit's tables from its profile's signals (prof may
// be nil, profName names it) and its own, reporting every mistake. unitID
// seeds random walks.
func compileTables(own, prof *Tables, profName string, unitID int, base, where string) ([4]*table, ConfigErrors) {
	var v validator
	var tables [4]*table
	for k, ref := range own.list() {
		t := &table{kind: ref.kind}
		tables[k] = t
		var srcs []source
		add := func(list []Signal, base, where string, fromProfile bool) {
			for i := range list {
				s := &list[i]
				src := source{
					path:        fmt.Sprintf("%s.%s[%d]", base, ref.name, i),
					where:       joinWhere(where, signalWhere(ref.name, i, s)),
					fromProfile: fromProfile,
				}
				srcs = append(srcs, src)
				v.signal(t, s, int32(len(srcs)-1), unitID, src.path, src.where)
			}
		}
		if prof != nil {
			add(*prof.list()[k].signals, "$.profiles."+profName, fmt.Sprintf("profile %q", profName), true)
		}
		add(*ref.signals, base, where, false)
		sort.SliceStable(t.slots, func(i, j int) bool { return t.slots[i].addr < t.slots[j].addr })
		for i := 1; i < len(t.slots); i++ {
			a, b := &t.slots[i-1], &t.slots[i]
			if a.addr+int32(a.width) <= b.addr {
				continue
			}
			sa, sb := srcs[a.src], srcs[b.src]
			if sb.fromProfile && !sa.fromProfile {
				sa, sb = sb, sa // report at the unit's own signal
			}
			v.errf(sb.path, sb.where, "%s address %d overlaps %s (addresses %d-%d)",
				ref.name, b.addr, sa.where, a.addr, a.addr+int32(a.width)-1)
		}
	}
	return tables, v.errs
}

// source is where a slot was configured.
type source struct {
	path, where string
	fromProfile bool
}

// signal validates one (bulk) signal and appends its slots to t.
func (v *validator) signal(t *table, s *Signal, src int32, unitID int, p, where string) {
	bits := t.kind == tableCoils || t.kind == tableDiscrete
	n0 := len(v.errs)

	typName := s.Type
	if typName == "" {
		typName = "uint16"
		if bits {
			typName = "bool"
		}
	}
	typ, ok := typeNames[typName]
	switch {
	case !ok:
		v.errf(p+".type", where, "unknown type %q", s.Type)
	case bits && typ != typeBool:
		v.errf(p+".type", where, "type %s in a bit table (only bool)", typName)
	case !bits && typ == typeBool:
		v.errf(p+".type", where, "type bool in a register table")
	}
	if len(v.errs) > n0 {
		return
	}
	if bits && (s.Scale != 0 || s.Offset != 0) {
		v.errf(p+".scale", where, "scale and offset do not apply to a bool")
	}
	pm, err := parseOrder(typ, s.Order)
	if err != nil {
		v.errf(p+".order", where, "%v", err)
	}
	scale := s.Scale
	if scale == 0 {
		scale = 1
	}
	if math.IsNaN(scale) || math.IsInf(scale, 0) || math.IsNaN(s.Offset) || math.IsInf(s.Offset, 0) {
		v.errf(p+".scale", where, "scale and offset must be finite")
	}
	width := typ.words()
	count, stride := s.Count, s.Stride
	if count == 0 {
		count = 1
	}
	if stride == 0 {
		stride = width
	}
	if count < 1 || count > 65536 {
		v.errf(p+".count", where, "count must be 1-65536")
	}
	if stride < width {
		v.errf(p+".stride", where, "stride %d is less than the width of a %s (%d)", stride, typName, width)
	}
	if s.Address < 0 || s.Address > 65535 {
		v.errf(p+".address", where, "address must be 0-65535")
	} else if last := s.Address + (count-1)*stride + width - 1; count >= 1 && last > 65535 {
		v.errf(p+".address", where, "signal ends at address %d, past 65535", last)
	}
	gens := v.generator(&s.Generator, typ, scale, s.Offset, p, where)
	if len(v.errs) > n0 {
		return
	}
	for k := 0; k < count; k++ {
		addr := s.Address + k*stride
		sl := slot{
			addr: int32(addr), width: uint8(width), typ: typ, perm: pm,
			scale: scale, offset: s.Offset, src: src,
		}
		sl.gen = gens(k, count, uint64(unitID)<<32|uint64(t.kind)<<16|uint64(addr))
		t.slots = append(t.slots, sl)
	}
}

// generator validates g and returns a constructor of the k-th of count
// generators of a bulk signal; key identifies the signal for random walks.
func (v *validator) generator(g *Generator, typ valueType, scale, offset float64, p, where string) func(k, count int, key uint64) generator {
	n, set := 0, ""
	for name, isSet := range map[string]bool{
		"const": g.Const != nil, "counter": g.Counter != nil, "sine": g.Sine != nil,
		"random_walk": g.RandomWalk != nil, "square": g.Square != nil, "toggle": g.Toggle != nil,
	} {
		if isSet {
			n++
			set = name
		}
	}
	if n != 1 {
		v.errf(p, where, "give exactly one generator of const, counter, sine, random_walk, square, toggle")
		return nil
	}
	p += "." + set
	if typ == typeBool && set != "const" && set != "square" && set != "toggle" {
		v.errf(p, where, "a bool takes const, square or toggle, not %s", set)
		return nil
	}
	positive := func(d time.Duration, key string) {
		if d <= 0 {
			v.errf(p+"."+key, where, "%s must be > 0", key)
		}
	}
	nonNegative := func(d time.Duration, key string) {
		if d < 0 {
			v.errf(p+"."+key, where, "%s must be >= 0", key)
		}
	}
	// fits checks that values in [lo, hi] fit the type after scaling.
	fits := func(lo, hi float64) {
		if typ == typeBool || !typ.isInt() {
			return
		}
		rlo, rhi := (lo-offset)/scale, (hi-offset)/scale
		if rlo > rhi {
			rlo, rhi = rhi, rlo
		}
		tlo, tend := typ.intRange()
		if math.Round(rlo) < tlo || math.Round(rhi) >= tend {
			v.errf(p, where, "raw values %g..%g do not fit %s", rlo, rhi, typ)
		}
	}
	spread := func(period, phase time.Duration, k, count int) time.Duration {
		return phase + time.Duration(int64(period)/int64(count)*int64(k))
	}
	switch {
	case g.Const != nil:
		c := float64(g.Const.Value)
		fits(c, c)
		return func(int, int, uint64) generator { return &constGen{v: c} }
	case g.Counter != nil:
		c := *g.Counter
		if c.Step == 0 {
			c.Step = 1
		}
		if c.Per == 0 {
			c.Per = time.Second
		}
		positive(c.Per, "per")
		return func(int, int, uint64) generator { return &counterGen{start: c.Start, step: c.Step, per: c.Per} }
	case g.Sine != nil:
		c := *g.Sine
		positive(c.Period, "period")
		nonNegative(c.Phase, "phase")
		fits(c.Offset-math.Abs(c.Amplitude), c.Offset+math.Abs(c.Amplitude))
		return func(k, count int, _ uint64) generator {
			return &sineGen{amplitude: c.Amplitude, offset: c.Offset, period: c.Period, phase: spread(c.Period, c.Phase, k, count)}
		}
	case g.RandomWalk != nil:
		c := *g.RandomWalk
		if c.Every == 0 {
			c.Every = time.Second
		}
		positive(c.Every, "every")
		if !(c.Step > 0) {
			v.errf(p+".step", where, "step must be > 0")
		}
		if !(c.Min < c.Max) {
			v.errf(p+".max", where, "max must be > min")
		} else if c.Start < c.Min || c.Start > c.Max {
			v.errf(p+".start", where, "start %g is outside min..max (%g..%g)", c.Start, c.Min, c.Max)
		}
		fits(c.Min, c.Max)
		return func(_, _ int, key uint64) generator {
			return &walkGen{cur: c.Start, step: c.Step, min: c.Min, max: c.Max, every: c.Every,
				seed: splitmix64(uint64(c.Seed)) ^ splitmix64(key)}
		}
	case g.Square != nil:
		c := *g.Square
		if c.Duty == 0 {
			c.Duty = 0.5
		}
		if c.Low == 0 && c.High == 0 {
			c.High = 1
		}
		positive(c.Period, "period")
		nonNegative(c.Phase, "phase")
		if !(c.Duty > 0 && c.Duty < 1) {
			v.errf(p+".duty", where, "duty must be between 0 and 1")
		}
		fits(math.Min(c.Low, c.High), math.Max(c.Low, c.High))
		return func(k, count int, _ uint64) generator {
			return &squareGen{low: c.Low, high: c.High, duty: c.Duty, period: c.Period, phase: spread(c.Period, c.Phase, k, count)}
		}
	default:
		c := *g.Toggle
		positive(c.Period, "period")
		nonNegative(c.Phase, "phase")
		fits(0, 1)
		return func(k, count int, _ uint64) generator {
			return &toggleGen{period: c.Period, phase: spread(2*c.Period, c.Phase, k, count)}
		}
	}
}
