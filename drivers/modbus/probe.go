package modbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/edged/edged/config"
	"github.com/edged/edged/telemetry"
)

// Interpretation is one reading of a block of registers: the value of one
// type, in one byte order, starting at one address. Every value comes from
// the Codec the gateway builds for a configured point (PointCodec), so what
// the probe shows for a type and order is what a point of that type and
// order reads in the gateway.
type Interpretation struct {
	Address   int             // zero-based address of its first register
	Type      string          // a config point type: int16, float32, ...
	Order     string          // a config byte order; "" for 16-bit types
	Registers int             // how many registers it spans
	Value     telemetry.Value // as Codec.Decode returns it
	// Implausible says why the value is unlikely to be a reading (NaN,
	// infinite, denormal, absurdly large or small, unprintable text); it
	// is "" for a plausible value.
	Implausible string
}

// layout is a type and the byte orders the probe tries it in.
type layout struct {
	typ    string
	orders []string
}

var (
	orders16 = []string{""} // 16-bit numbers: big-endian, as devices send them
	orders32 = []string{"ABCD", "DCBA", "BADC", "CDAB"}
	orders64 = []string{"ABCDEFGH", "HGFEDCBA", "BADCFEHG", "GHEFCDAB"}
	// probeLayouts are tried in this order. A type the codec does not
	// accept is left out without a word.
	probeLayouts = []layout{
		{"int16", orders16}, {"uint16", orders16}, {"bcd16", orders16}, {"string", []string{"AB", "BA"}},
		{"int32", orders32}, {"uint32", orders32}, {"float32", orders32}, {"bcd32", orders32},
		{"int64", orders64}, {"uint64", orders64}, {"float64", orders64},
	}
)

// Interpret decodes regs, read from address start, in every type and byte
// order the codec knows, at every register offset where the type fits:
// int16, uint16, bcd16 and text (two characters to a register, AB and BA);
// int32, uint32, float32, bcd32 in ABCD, DCBA, BADC, CDAB; int64, uint64,
// float64 in ABCDEFGH, HGFEDCBA, BADCFEHG, GHEFCDAB. Registers a type cannot
// decode (a BCD nibble above 9) give no interpretation of it. The result is
// ordered by width, then address, then order, then type.
func Interpret(start int, regs []uint16) []Interpretation {
	var out []Interpretation
	for _, width := range []int{1, 2, 4} {
		for off := 0; off+width <= len(regs); off++ {
			for _, ord := range []int{0, 1, 2, 3} {
				for _, l := range probeLayouts {
					if ord >= len(l.orders) {
						continue
					}
					c, err := probeCodec(l.typ, l.orders[ord])
					if err != nil || c.Registers() != width {
						continue
					}
					v, err := c.Decode(regs[off : off+width])
					if err != nil {
						continue
					}
					out = append(out, Interpretation{
						Address:     start + off,
						Type:        l.typ,
						Order:       l.orders[ord],
						Registers:   width,
						Value:       v,
						Implausible: implausible(l.typ, v),
					})
				}
			}
		}
	}
	return out
}

// probeCodec is the codec of a point of type typ in order: the gateway's own
// (PointCodec). Text is shown two characters (one register) at a time.
func probeCodec(typ, order string) (Codec, error) {
	p := config.Point{Type: typ, Order: order}
	if typ == "string" {
		p.Length = 1
	}
	return PointCodec(p)
}

// Plausibility limits: a reading beyond them is far more likely to be the
// wrong type or byte order than a measurement.
const (
	absurdlyLarge = 1e12
	absurdlySmall = 1e-6
)

func implausible(typ string, v telemetry.Value) string {
	switch v.Kind {
	case telemetry.KindFloat:
		f, a := v.F, math.Abs(v.F)
		minNormal := 0x1p-1022
		if typ == "float32" {
			minNormal = 0x1p-126
		}
		switch {
		case math.IsNaN(f):
			return "NaN"
		case math.IsInf(f, 0):
			return "infinite"
		case a != 0 && a < minNormal:
			return "denormal"
		case a > absurdlyLarge:
			return "absurdly large"
		case a != 0 && a < absurdlySmall:
			return "absurdly small"
		}
	case telemetry.KindString:
		for _, r := range v.S {
			if r < 0x20 || r > 0x7e {
				return "not printable text"
			}
		}
	}
	return ""
}

// Match is an interpretation that, times a power of ten, is within tolerance
// of the value the engineer expects (read off the device's display).
type Match struct {
	Interpretation
	Scale     float64 // 1, or the power of ten that turns the raw value into the expected one
	Scaled    float64 // Value * Scale
	Deviation float64 // |Scaled - expected| / |expected|
}

// Scales FindMatches tries, beyond 1: a register holding 2301 for 230.1 V
// has scale 0.1.
var matchScales = []float64{1, 0.1, 0.01, 0.001, 0.0001, 10, 100, 1000, 10000}

// FindMatches returns the numeric interpretations whose value, or value
// times a power of ten from 1e-4 to 1e4, lies within tolerance (a fraction:
// 0.01 is 1%) of expect; when expect is 0, those that are exactly 0.
// Unscaled matches come first, then by deviation. An interpretation matches
// at most once, with the first scale that fits (1, then 0.1, 0.01, ...).
func FindMatches(ins []Interpretation, expect, tolerance float64) []Match {
	var out []Match
	for _, in := range ins {
		if in.Value.Kind == telemetry.KindBool {
			continue
		}
		v, ok := in.Value.Float64()
		if !ok {
			continue
		}
		for _, s := range matchScales {
			scaled := v * s
			dev := math.Abs(scaled-expect) / math.Abs(expect)
			if expect == 0 && scaled == 0 {
				dev = 0
			}
			if dev <= tolerance { // false for NaN
				out = append(out, Match{Interpretation: in, Scale: s, Scaled: scaled, Deviation: dev})
				break
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Match) int {
		if (a.Scale == 1) != (b.Scale == 1) {
			if a.Scale == 1 {
				return -1
			}
			return 1
		}
		switch {
		case a.Deviation < b.Deviation:
			return -1
		case a.Deviation > b.Deviation:
			return 1
		}
		return 0
	})
	return out
}

// ConfigLine is the match as a profile point, ready to paste under a
// profile's points: table, address, type, order (unless the 16-bit
// default) and scale (unless 1). The name is a placeholder to rename.
func (m Match) ConfigLine(tableName string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- {name: %s, table: %s, address: %d, type: %s", pointName(tableName, m.Address), tableName, m.Address, m.Type)
	if m.Order != "" {
		fmt.Fprintf(&b, ", order: %s", m.Order)
	}
	if m.Scale != 1 {
		fmt.Fprintf(&b, ", scale: %s", strconv.FormatFloat(m.Scale, 'g', -1, 64))
	}
	b.WriteString("}")
	return b.String()
}

func pointName(tableName string, addr int) string {
	if n, ok := registerNumber(tableName, addr); ok {
		return "reg_" + strconv.Itoa(n)
	}
	return fmt.Sprintf("%s_%d", tableName, addr)
}

// registerNumber is the conventional one-based register number of a
// zero-based address, the inverse of config.ParseRegister: holding_register
// 0 is 40001, 10000 is 410001. Coils above 9998 have no number that
// config.ParseRegister reads back.
func registerNumber(tableName string, addr int) (int, bool) {
	t, ok := parseTable(tableName)
	if !ok || addr < 0 || addr > 65535 {
		return 0, false
	}
	var five, six int
	switch t {
	case coils:
		five = 1
	case discreteInputs:
		five, six = 10001, 100001
	case inputRegisters:
		five, six = 30001, 300001
	case holdingRegisters:
		five, six = 40001, 400001
	}
	switch {
	case addr <= 9998:
		return five + addr, true
	case six != 0:
		return six + addr, true
	}
	return 0, false
}

// ProbeTolerance is how close to -expect a value must be to match: 1%.
const ProbeTolerance = 0.01

// Probe is what one probe read: a block of registers or bits from one table,
// and, for registers, every interpretation of them.
type Probe struct {
	Link    string // "127.0.0.1:502"
	Unit    byte
	Table   string // canonical: holding_register, ...
	Address int    // the first zero-based address read

	Registers []uint16 // what a register table returned
	Bits      []bool   // what a coil or discrete_input table returned

	Interpretations []Interpretation
	Expect          *float64 // the value the engineer expects, if given
	Matches         []Match  // the interpretations near Expect
}

// NewProbe interprets registers (or takes bits) read from table at address,
// and with expect finds the interpretations near it.
func NewProbe(link string, unit byte, tableName string, address int, regs []uint16, bits []bool, expect *float64) *Probe {
	p := &Probe{Link: link, Unit: unit, Table: tableName, Address: address, Registers: regs, Bits: bits, Expect: expect}
	if t, ok := parseTable(tableName); ok {
		p.Table = t.String()
	}
	if regs != nil {
		p.Interpretations = Interpret(address, regs)
		if expect != nil {
			p.Matches = FindMatches(p.Interpretations, *expect, ProbeTolerance)
		}
	}
	return p
}

// span describes what was read: "holding_register 10-17 (40011-40018)".
func (p *Probe) span() string {
	n := len(p.Registers) + len(p.Bits)
	return describeCells(p.Table, p.Address, n)
}

// describeCells names count cells of a table from addr with their
// conventional register numbers: "holding_register 10-11 (40011-40012)".
func describeCells(tableName string, addr, count int) string {
	s := fmt.Sprintf("%s %d", tableName, addr)
	if count > 1 {
		s += fmt.Sprintf("-%d", addr+count-1)
	}
	first, ok1 := registerNumber(tableName, addr)
	last, ok2 := registerNumber(tableName, addr+count-1)
	switch {
	case ok1 && count == 1:
		s += fmt.Sprintf(" (%s)", regNumString(tableName, first))
	case ok1 && ok2:
		s += fmt.Sprintf(" (%s-%s)", regNumString(tableName, first), regNumString(tableName, last))
	}
	return s
}

// regNumString writes coil numbers with five digits (00001), as manuals do.
func regNumString(tableName string, n int) string {
	if t, _ := parseTable(tableName); t == coils {
		return fmt.Sprintf("%05d", n)
	}
	return strconv.Itoa(n)
}

// notShown stands in the text table for an implausible value.
const notShown = "-"

// WriteText writes the probe as aligned text tables: bits eight to a row;
// registers as 16-, 32- and 64-bit interpretations side by side, one row per
// address (and byte order), implausible values shown as "-", and with Expect
// the matches and the profile line for each.
func (p *Probe) WriteText(w io.Writer) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s, unit %d at %s\n", p.span(), p.Unit, p.Link)
	if p.Bits != nil {
		p.writeBits(tw)
	} else {
		p.writeRegisters(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// a row's empty last cells leave blanks behind
	for line := range bytes.Lines(buf.Bytes()) {
		if _, err := fmt.Fprintf(w, "%s\n", bytes.TrimRight(line, " \n")); err != nil {
			return err
		}
	}
	return nil
}

func (p *Probe) writeRegisters(tw io.Writer) {
	matched := map[matchKey]string{}
	for _, m := range p.Matches {
		k := matchKey{m.Address, m.Registers, m.Order}
		label := m.Type
		if m.Scale != 1 {
			label += "*" + strconv.FormatFloat(m.Scale, 'g', -1, 64)
		}
		if matched[k] != "" {
			label = matched[k] + " " + label
		}
		matched[k] = label
	}
	hidden := false
	for _, width := range []int{1, 2, 4} {
		if p.writeSection(tw, width, matched) {
			hidden = true
		}
	}
	fmt.Fprintf(tw, "\n%s: implausible as a reading (NaN, infinite, denormal, beyond 1e12 or nearer 0 than 1e-6, either sign); -json shows every value\n", notShown)
	if hidden {
		fmt.Fprintln(tw, "32- and 64-bit rows of registers that are all zero are left out")
	}
	if p.Expect != nil {
		p.writeMatches(tw)
	}
}

type matchKey struct {
	address, registers int
	order              string
}

func (p *Probe) writeBits(tw *tabwriter.Writer) {
	on := []string{}
	for i, b := range p.Bits {
		if b {
			on = append(on, strconv.Itoa(p.Address+i))
		}
	}
	fmt.Fprintf(tw, "%d of %d on", len(on), len(p.Bits))
	if len(on) > 0 {
		fmt.Fprintf(tw, ": %s", strings.Join(on, ", "))
	}
	fmt.Fprint(tw, "\n\n")
	row(tw, "address", "number", "+0", "+1", "+2", "+3", "+4", "+5", "+6", "+7")
	for at := 0; at < len(p.Bits); at += 8 {
		num := "-"
		if n, ok := registerNumber(p.Table, p.Address+at); ok {
			num = regNumString(p.Table, n)
		}
		cells := []string{strconv.Itoa(p.Address + at), num}
		for _, b := range p.Bits[at:min(at+8, len(p.Bits))] {
			cells = append(cells, map[bool]string{false: "0", true: "1"}[b])
		}
		row(tw, cells...)
	}
}

// row writes one line of tab-separated cells.
func row(tw io.Writer, cells ...string) {
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// writeSection writes the interpretations of one width; it reports whether
// it left out rows of all-zero registers.
func (p *Probe) writeSection(tw io.Writer, width int, matched map[matchKey]string) bool {
	// the columns: the types with an interpretation of this width, in the
	// order of probeLayouts
	present := map[string]bool{}
	for _, in := range p.Interpretations {
		if in.Registers == width {
			present[column(in.Type, in.Order)] = true
		}
	}
	var cols []string
	for _, l := range probeLayouts {
		for _, o := range l.orders {
			if c := column(l.typ, o); present[c] && !slices.Contains(cols, c) {
				cols = append(cols, c)
			}
		}
	}
	if len(cols) == 0 {
		return false
	}
	head := []string{"address", "register", "order"}
	if width == 1 {
		head[2] = "hex"
	}
	head = append(head, cols...)
	if len(matched) > 0 {
		head = append(head, "matches")
	}
	var rows [][]string
	hidden := false
	for i := 0; i < len(p.Interpretations); {
		first := p.Interpretations[i]
		// one row: every interpretation at this address, width and order
		j := i
		for j < len(p.Interpretations) && sameRow(p.Interpretations[j], first) {
			j++
		}
		same := p.Interpretations[i:j]
		i = j
		if first.Registers != width {
			continue
		}
		off := first.Address - p.Address
		regs := p.Registers[off : off+width]
		if width > 1 && !slices.ContainsFunc(regs, func(r uint16) bool { return r != 0 }) {
			hidden = true
			continue
		}
		num := "-"
		if n, ok := registerNumber(p.Table, first.Address); ok {
			num = strconv.Itoa(n)
		}
		cells := []string{strconv.Itoa(first.Address), num, first.Order}
		if width == 1 {
			cells[2] = hexRegs(regs)
		}
		for _, col := range cols {
			cell := ""
			for _, in := range same {
				if column(in.Type, in.Order) == col {
					cell = formatValue(in.Value)
					if in.Implausible != "" {
						cell = notShown
					}
				}
			}
			cells = append(cells, cell)
		}
		if len(matched) > 0 {
			cells = append(cells, matched[matchKey{first.Address, width, numericOrder(first)}])
		}
		rows = append(rows, cells)
	}
	if len(rows) == 0 {
		return hidden
	}
	fmt.Fprintf(tw, "\n%d-bit\n", 16*width)
	row(tw, head...)
	for _, cells := range rows {
		row(tw, cells...)
	}
	return hidden
}

// column is the heading of an interpretation's column: its type, and for
// text its order (the two text orders stand side by side in a 16-bit row).
func column(typ, order string) string {
	if typ == "string" {
		return "ascii " + order
	}
	return typ
}

// sameRow reports whether two interpretations share a table row: the same
// address and width and, for 32 and 64 bits, order. In the 16-bit rows the
// two text orders stand beside the numbers.
func sameRow(a, b Interpretation) bool {
	if a.Address != b.Address || a.Registers != b.Registers {
		return false
	}
	return a.Registers == 1 || a.Order == b.Order
}

func numericOrder(in Interpretation) string {
	if in.Registers == 1 {
		return ""
	}
	return in.Order
}

func (p *Probe) writeMatches(w io.Writer) {
	exp := strconv.FormatFloat(*p.Expect, 'g', -1, 64)
	if len(p.Matches) == 0 {
		fmt.Fprintf(w, "\n-expect %s: no interpretation within %g%% (scales 1e-4 to 1e4 tried). Check the unit, the address and the table, or read more registers.\n", exp, ProbeTolerance*100)
		return
	}
	noun := "interpretations"
	if len(p.Matches) == 1 {
		noun = "interpretation"
	}
	fmt.Fprintf(w, "\n-expect %s: %d %s within %g%%; the profile point for each:\n", exp, len(p.Matches), noun, ProbeTolerance*100)
	for _, m := range p.Matches {
		what := m.Type
		if m.Order != "" {
			what += " " + m.Order
		}
		val := formatValue(m.Value)
		if m.Scale != 1 {
			val += fmt.Sprintf(" * %s = %s", strconv.FormatFloat(m.Scale, 'g', -1, 64), strconv.FormatFloat(m.Scaled, 'g', 6, 64))
		}
		fmt.Fprintf(w, "  %s at %s = %s\n      %s\n", what, describeCells(p.Table, m.Address, m.Registers), val, m.ConfigLine(p.Table))
	}
}

// formatValue writes a value for the text table: floats in plain decimals
// unless they are very large or small (1234567.5, not 1.2345675e+06; but
// 6.883063e+11, not a float32's 688306300000).
func formatValue(v telemetry.Value) string {
	if v.Kind == telemetry.KindFloat {
		if a := math.Abs(v.F); a == 0 || (a >= 1e-4 && a < 1e9) {
			return strconv.FormatFloat(v.F, 'f', -1, 64)
		}
	}
	return v.String()
}

// MarshalJSON writes the probe for scripts: link, unit, table, address, the
// registers or bits, every interpretation (implausible ones too, with the
// reason), and with expect the matches and their profile lines. A value is
// a JSON number, string or bool; NaN and infinities are the strings "NaN",
// "+Inf" and "-Inf".
func (p *Probe) MarshalJSON() ([]byte, error) {
	type interp struct {
		Address     int             `json:"address"`
		Register    int             `json:"register,omitempty"`
		Type        string          `json:"type"`
		Order       string          `json:"order,omitempty"`
		Registers   int             `json:"width"` // in registers
		Value       json.RawMessage `json:"value"`
		Implausible string          `json:"implausible,omitempty"`
	}
	type match struct {
		interp
		Scale     float64 `json:"scale"`
		Scaled    float64 `json:"scaled"`
		Deviation float64 `json:"deviation"`
		Config    string  `json:"config"`
	}
	conv := func(in Interpretation) interp {
		n, _ := registerNumber(p.Table, in.Address)
		return interp{in.Address, n, in.Type, in.Order, in.Registers, jsonValue(in.Value), in.Implausible}
	}
	doc := struct {
		Link            string   `json:"link"`
		Unit            byte     `json:"unit"`
		Table           string   `json:"table"`
		Address         int      `json:"address"`
		Registers       []uint16 `json:"registers,omitempty"`
		Bits            []bool   `json:"bits,omitempty"`
		Interpretations []interp `json:"interpretations,omitempty"`
		Expect          *float64 `json:"expect,omitempty"`
		Matches         *[]match `json:"matches,omitempty"` // with expect, even if empty
	}{Link: p.Link, Unit: p.Unit, Table: p.Table, Address: p.Address, Registers: p.Registers, Bits: p.Bits, Expect: p.Expect}
	for _, in := range p.Interpretations {
		doc.Interpretations = append(doc.Interpretations, conv(in))
	}
	if p.Expect != nil {
		ms := []match{}
		for _, m := range p.Matches {
			ms = append(ms, match{conv(m.Interpretation), m.Scale, m.Scaled, m.Deviation, m.ConfigLine(p.Table)})
		}
		doc.Matches = &ms
	}
	return json.Marshal(doc)
}

// jsonValue is a value as JSON: a number, a string or a bool.
func jsonValue(v telemetry.Value) json.RawMessage {
	switch v.Kind {
	case telemetry.KindBool:
		return json.RawMessage(strconv.FormatBool(v.B))
	case telemetry.KindInt, telemetry.KindUint:
		return json.RawMessage(v.String())
	case telemetry.KindFloat:
		if math.IsNaN(v.F) || math.IsInf(v.F, 0) {
			b, _ := json.Marshal(v.String()) // "NaN", "+Inf", "-Inf"
			return b
		}
		return json.RawMessage(v.String())
	case telemetry.KindString:
		b, _ := json.Marshal(v.S)
		return b
	}
	return json.RawMessage("null")
}

// ProbeRead reads count registers (or bits) of table from addr through c and
// interprets them; with expect it finds the interpretations near it.
// Blocking and errors are those of RawClient.ReadRegisters and ReadBits.
func ProbeRead(ctx context.Context, c *RawClient, unit byte, tableName string, addr, count int, expect *float64) (*Probe, error) {
	t, err := checkRange(tableName, addr, count)
	if err != nil {
		return nil, fmt.Errorf("modbus: %w", err)
	}
	if t.isBits() {
		bits, err := c.ReadBits(ctx, unit, tableName, addr, count)
		if err != nil {
			return nil, err
		}
		return NewProbe(c.link.String(), unit, t.String(), addr, nil, bits, nil), nil
	}
	regs, err := c.ReadRegisters(ctx, unit, tableName, addr, count)
	if err != nil {
		return nil, err
	}
	return NewProbe(c.link.String(), unit, t.String(), addr, regs, nil, expect), nil
}

// WriteRequest is one value to write as a profile point would: checked and
// encoded by the point type's Codec before any I/O.
type WriteRequest struct {
	table   table
	address int
	typ     string // "bool" for a coil
	order   string // as given, "" for the default
	codec   Codec
	value   telemetry.Value
	regs    []uint16 // encoded; a coil's is 0 or 1
}

// NewWriteRequest parses value (text, as typed by the engineer) for a point
// of type typ and byte order order at addr of table, and encodes it. A coil
// takes true, false, 1, 0, on or off, and no type or order (or type bool);
// a holding register needs a type; numbers are integers where they are one
// (decimal, or hex with 0x), else floats, and must fit the type (70000 is
// not an int16). Discrete inputs and input registers are read-only.
func NewWriteRequest(tableName string, addr int, typ, order, value string) (*WriteRequest, error) {
	t, err := checkRange(tableName, addr, 1)
	if err != nil {
		return nil, err
	}
	r := &WriteRequest{table: t, address: addr, typ: typ, order: order}
	switch t {
	case discreteInputs, inputRegisters:
		return nil, fmt.Errorf("%s is read-only (write a coil or a holding_register)", t)
	case coils:
		if (typ != "" && typ != "bool") || order != "" {
			return nil, errors.New("a coil takes no type or order: its value is true or false")
		}
		r.typ = "bool"
		switch strings.ToLower(value) {
		case "true", "1", "on":
			r.value = telemetry.Bool(true)
		case "false", "0", "off":
			r.value = telemetry.Bool(false)
		default:
			return nil, errors.New("a coil takes true or false (or 1, 0, on, off)")
		}
	default:
		if typ == "" {
			return nil, errors.New("a register value needs a type: how the device stores it, e.g. float32 (and the order if not big-endian)")
		}
		if typ == "bool" {
			return nil, errors.New("type bool is for coils; to set bits of a register, write the whole register as uint16")
		}
		if typ != "string" {
			if r.value, err = parseValue(value); err != nil {
				return nil, err
			}
		}
	}
	p := config.Point{Type: r.typ, Order: order}
	if r.typ == "string" {
		// as many registers as the text needs, NUL-padded
		p.Length = max(1, (len(value)+1)/2)
		r.value = telemetry.String(value)
	}
	if r.codec, err = PointCodec(p); err != nil {
		return nil, err
	}
	if r.regs, err = r.codec.Encode(r.value); err != nil {
		return nil, err // it names the value and the type
	}
	if _, err := checkRange(tableName, addr, len(r.regs)); err != nil {
		return nil, err
	}
	return r, nil
}

// parseValue reads a number: an integer if it is one (decimal, or hex with
// 0x), else a float.
func parseValue(s string) (telemetry.Value, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return telemetry.Int(i), nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return telemetry.Uint(u), nil
	}
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		if u, err := strconv.ParseUint(h, 16, 64); err == nil {
			return telemetry.Uint(u), nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return telemetry.Float(f), nil
	}
	return telemetry.Value{}, errors.New("not a number")
}

// Written is a value written by ProbeWrite and what the device held after.
type Written struct {
	Link     string
	Unit     byte
	Table    string
	Address  int
	Type     string          // bool for a coil
	Order    string          // as given; "" for the default
	Value    telemetry.Value // what was written
	Function string          // FC5, FC6 or FC16
	Wrote    []uint16        // the registers written (a coil: 0 or 1)
	ReadBack []uint16        // the same registers read after the write
	Now      telemetry.Value // ReadBack decoded with the same codec
}

// Kept reports whether the device holds what was written.
func (w *Written) Kept() bool { return slices.Equal(w.Wrote, w.ReadBack) }

// ProbeWrite writes r through c (FC5 for a coil, FC6 for one register, FC16
// for more), then reads the same registers back and decodes them with the
// same codec. Blocking and errors are those of RawClient; an error after the
// write succeeded says so.
func ProbeWrite(ctx context.Context, c *RawClient, unit byte, r *WriteRequest) (*Written, error) {
	w := &Written{Link: c.link.String(), Unit: unit, Table: r.table.String(), Address: r.address,
		Type: r.typ, Order: r.order, Value: r.value, Wrote: r.regs}
	var err error
	switch {
	case r.table == coils:
		w.Function = "FC5"
		if err := c.WriteCoil(ctx, unit, r.address, r.regs[0] != 0); err != nil {
			return nil, err
		}
		var bits []bool
		if bits, err = c.ReadBits(ctx, unit, r.table.String(), r.address, 1); err == nil {
			w.ReadBack = []uint16{0}
			if bits[0] {
				w.ReadBack[0] = 1
			}
		}
	default:
		w.Function = "FC16"
		if len(r.regs) == 1 {
			w.Function = "FC6"
		}
		if err := c.WriteRegisters(ctx, unit, r.address, r.regs); err != nil {
			return nil, err
		}
		w.ReadBack, err = c.ReadRegisters(ctx, unit, r.table.String(), r.address, len(r.regs))
	}
	if err != nil {
		return nil, fmt.Errorf("written, but reading it back failed: %w", err)
	}
	if w.Now, err = r.codec.Decode(w.ReadBack); err != nil {
		return nil, fmt.Errorf("written, but the registers read back, %s, are no %s: %w", hexRegs(w.ReadBack), r.typ, err)
	}
	return w, nil
}

func hexRegs(regs []uint16) string {
	s := make([]string, len(regs))
	for i, r := range regs {
		s[i] = fmt.Sprintf("0x%04X", r)
	}
	return strings.Join(s, " ")
}

// WriteText writes what was written and what the device holds now.
func (w *Written) WriteText(out io.Writer) error {
	as := ""
	if w.Table != coils.String() {
		as = " as " + w.Type
		if w.Order != "" {
			as += " " + w.Order
		}
	}
	where := describeCells(w.Table, w.Address, len(w.Wrote))
	if _, err := fmt.Fprintf(out, "wrote %s%s to %s, unit %d at %s (%s): %s\n", formatValue(w.Value), as, where, w.Unit, w.Link, w.Function, hexRegs(w.Wrote)); err != nil {
		return err
	}
	kept := "the device kept it"
	if !w.Kept() {
		kept = "NOT what was written: a read-only, write-only or clamped register?"
	}
	_, err := fmt.Fprintf(out, "read back: %s = %s (%s)\n", hexRegs(w.ReadBack), formatValue(w.Now), kept)
	return err
}

// MarshalJSON writes the write and its read-back for scripts; values are as
// in Probe's JSON.
func (w *Written) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Link     string          `json:"link"`
		Unit     byte            `json:"unit"`
		Table    string          `json:"table"`
		Address  int             `json:"address"`
		Type     string          `json:"type"`
		Order    string          `json:"order,omitempty"`
		Value    json.RawMessage `json:"value"`
		Function string          `json:"function"`
		Wrote    []uint16        `json:"wrote"`
		ReadBack []uint16        `json:"read_back"`
		Now      json.RawMessage `json:"read_value"`
		Kept     bool            `json:"kept"`
	}{w.Link, w.Unit, w.Table, w.Address, w.Type, w.Order, jsonValue(w.Value), w.Function, w.Wrote, w.ReadBack, jsonValue(w.Now), w.Kept()})
}
