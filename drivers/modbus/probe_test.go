package modbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// find returns the interpretation of typ in order at address.
func find(ins []Interpretation, addr int, typ, order string) (Interpretation, bool) {
	for _, in := range ins {
		if in.Address == addr && in.Type == typ && in.Order == order {
			return in, true
		}
	}
	return Interpretation{}, false
}

// TestInterpretCodecVectors: every reference vector (encoded by Python's
// struct module) shows up among the interpretations of its registers, as
// its type in its order, with its value.
func TestInterpretCodecVectors(t *testing.T) {
	n := 0
	for _, v := range loadVectors(t) {
		order := v.Order
		if len(v.Registers) == 1 {
			if order != "" && order != "AB" {
				continue // the probe shows 16-bit numbers big-endian only
			}
			order = ""
		}
		ins := Interpret(100, v.Registers)
		in, ok := find(ins, 100, v.Type, order)
		if !ok {
			t.Errorf("%s %s % X: no interpretation", v.Type, v.Order, v.Registers)
			continue
		}
		want := v.value(t)
		if v.Type == "float32" { // the vectors hold the float32 widened; Decode gives its shortest decimal
			if float32(in.Value.F) != float32(want.F) {
				t.Errorf("%s %s % X: %s, want %s", v.Type, v.Order, v.Registers, in.Value, want)
			}
		} else if !in.Value.Equal(want) {
			t.Errorf("%s %s % X: %s, want %s", v.Type, v.Order, v.Registers, in.Value, want)
		}
		n++
	}
	if n < 50 {
		t.Fatalf("only %d vectors checked", n)
	}
}

// TestInterpretLayout: every offset where a width fits, every order, and
// nothing beyond the registers.
func TestInterpretLayout(t *testing.T) {
	regs := []uint16{1, 2, 3, 4, 5}
	ins := Interpret(40, regs)
	count := map[string]int{}
	for _, in := range ins {
		count[in.Type]++
		if in.Address < 40 || in.Address+in.Registers > 45 {
			t.Errorf("%+v reaches beyond the registers", in)
		}
		c, err := probeCodec(in.Type, in.Order)
		if err != nil {
			t.Fatalf("%+v: %v", in, err)
		}
		if c.Registers() != in.Registers {
			t.Errorf("%+v: the codec spans %d registers", in, c.Registers())
		}
	}
	for typ, want := range map[string]int{
		"int16": 5, "uint16": 5, "bcd16": 5, "string": 5 * 2,
		"int32": 4 * 4, "uint32": 4 * 4, "float32": 4 * 4, "bcd32": 4 * 4,
		"int64": 2 * 4, "uint64": 2 * 4, "float64": 2 * 4,
	} {
		if count[typ] != want {
			t.Errorf("%d %s interpretations, want %d", count[typ], typ, want)
		}
	}
	if got := Interpret(0, nil); len(got) != 0 {
		t.Errorf("no registers: %d interpretations", len(got))
	}
	// one register: 16-bit only
	for _, in := range Interpret(0, []uint16{0x4142}) {
		if in.Registers != 1 {
			t.Errorf("one register gave %+v", in)
		}
	}
}

// TestInterpretTextAndBCD: text two characters to a register in both
// orders (trailing NULs and blanks trimmed, as a string point reads them);
// BCD only where every nibble is a digit.
func TestInterpretTextAndBCD(t *testing.T) {
	ins := Interpret(0, []uint16{0x4142, 0x1234, 0x12AB, 0x4100, 0x0000, 0x0000})
	for _, c := range []struct {
		addr        int
		order, want string
	}{{0, "AB", "AB"}, {0, "BA", "BA"}, {3, "AB", "A"}, {3, "BA", "\x00A"}, {4, "AB", ""}} {
		if in, ok := find(ins, c.addr, "string", c.order); !ok || in.Value.S != c.want {
			t.Errorf("text %s at %d: %+v, want %q", c.order, c.addr, in, c.want)
		}
	}
	if in, ok := find(ins, 1, "bcd16", ""); !ok || in.Value.String() != "1234" {
		t.Errorf("bcd16 of 0x1234: %+v", in)
	}
	if in, ok := find(ins, 2, "bcd16", ""); ok {
		t.Errorf("0x12AB is no BCD, yet: %+v", in)
	}
	for _, o := range orders32 {
		if in, ok := find(ins, 1, "bcd32", o); ok {
			t.Errorf("0x1234 0x12AB is no BCD, yet: %+v", in)
		}
	}
	if in, ok := find(ins, 4, "bcd32", "ABCD"); !ok || in.Value.String() != "0" {
		t.Errorf("bcd32 of 0x0000 0x0000: %+v", in)
	}
	if in, _ := find(ins, 3, "string", "BA"); in.Implausible != "not printable text" {
		t.Errorf("NUL in text: %+v", in)
	}
}

func TestPlausibility(t *testing.T) {
	cases := []struct {
		regs []uint16 // float32 ABCD
		why  string
	}{
		{[]uint16{0x4366, 0x199A}, ""},               // 230.1
		{[]uint16{0x0000, 0x0000}, ""},               // 0
		{[]uint16{0xC2C8, 0x0000}, ""},               // -100
		{[]uint16{0x7FC0, 0x0000}, "NaN"},            // NaN
		{[]uint16{0x7F80, 0x0000}, "infinite"},       // +Inf
		{[]uint16{0xFF80, 0x0000}, "infinite"},       // -Inf
		{[]uint16{0x0000, 0x0001}, "denormal"},       // 1.4e-45
		{[]uint16{0x8040, 0x0000}, "denormal"},       // -5.9e-39
		{[]uint16{0x5E00, 0x0000}, "absurdly large"}, // 2.3e18
		{[]uint16{0x3380, 0x0000}, "absurdly small"}, // 6e-8
		{[]uint16{0x3586, 0x37BD}, ""},               // 1e-6
	}
	for _, c := range cases {
		in, ok := find(Interpret(0, c.regs), 0, "float32", "ABCD")
		if !ok || in.Implausible != c.why {
			t.Errorf("float32 % X = %s: implausible %q, want %q", c.regs, in.Value, in.Implausible, c.why)
		}
	}
	// float64: denormal by float64's limit, not float32's
	in, _ := find(Interpret(0, []uint16{0x0010, 0, 0, 0}), 0, "float64", "ABCDEFGH") // 2.2e-308
	if in.Implausible != "absurdly small" {
		t.Errorf("float64 2.2e-308: %q", in.Implausible)
	}
	in, _ = find(Interpret(0, []uint16{0x0000, 0, 0, 1}), 0, "float64", "ABCDEFGH")
	if in.Implausible != "denormal" {
		t.Errorf("float64 5e-324: %q", in.Implausible)
	}
	// integers are never implausible
	for _, in := range Interpret(0, []uint16{0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}) {
		if (in.Value.Kind == telemetry.KindInt || in.Value.Kind == telemetry.KindUint) && in.Implausible != "" {
			t.Errorf("%+v", in)
		}
	}
}

// registers for the matching tests: float32 230.1 CDAB at 10, uint16 2301
// at 12, int32 -123456 ABCD at 13.
var meterRegs = []uint16{0x199A, 0x4366, 2301, 0xFFFE, 0x1DC0, 0, 0, 0}

func TestFindMatches(t *testing.T) {
	ms := FindMatches(Interpret(10, meterRegs), 230.1, ProbeTolerance)
	var lines []string
	for _, m := range ms {
		lines = append(lines, m.ConfigLine("holding_register"))
	}
	want := []string{
		"- {name: reg_40011, table: holding_register, address: 10, type: float32, order: CDAB}",
		// 230.035: within 1% too, an overlapping reading; it ranks below
		"- {name: reg_40012, table: holding_register, address: 11, type: float32, order: ABCD}",
		"- {name: reg_40013, table: holding_register, address: 12, type: int16, scale: 0.1}",
		"- {name: reg_40013, table: holding_register, address: 12, type: uint16, scale: 0.1}",
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("matches:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if ms[0].Deviation != 0 || ms[0].Scale != 1 || ms[0].Scaled != 230.1 {
		t.Errorf("best match %+v", ms[0])
	}
	ms = FindMatches(Interpret(10, meterRegs), -123456, ProbeTolerance)
	if len(ms) != 1 || ms[0].ConfigLine("input_register") != "- {name: reg_30014, table: input_register, address: 13, type: int32, order: ABCD}" {
		t.Errorf("-123456: %+v", ms)
	}
	// a scale that is not 1 is found: 2301 is 23.01 with 0.01, 23010 with 10
	for _, c := range []struct {
		expect float64
		scale  float64
	}{{23.01, 0.01}, {23010, 10}, {2.301, 0.001}, {0.2301, 0.0001}} {
		ms := FindMatches(Interpret(12, []uint16{2301}), c.expect, ProbeTolerance)
		if len(ms) != 2 || ms[0].Scale != c.scale {
			t.Errorf("expect %g: %+v, want scale %g", c.expect, ms, c.scale)
		}
	}
	if ms := FindMatches(Interpret(0, []uint16{2301}), 2400, ProbeTolerance); len(ms) != 0 {
		t.Errorf("2301 for 2400 (4%% off): %+v", ms)
	}
	if ms := FindMatches(Interpret(0, []uint16{0x7FC0, 0}), 1, ProbeTolerance); len(ms) != 0 {
		t.Errorf("NaN matched: %+v", ms)
	}
}

func TestRegisterNumberInvertsParseRegister(t *testing.T) {
	for _, table := range []string{"coil", "discrete_input", "input_register", "holding_register"} {
		for _, addr := range []int{0, 1, 9998, 9999, 10000, 65535} {
			n, ok := registerNumber(table, addr)
			if !ok {
				if table == "coil" && addr > 9998 {
					continue // six-digit coil numbers do not exist for config
				}
				t.Errorf("%s %d: no register number", table, addr)
				continue
			}
			gotTable, gotAddr, err := config.ParseRegister(n)
			if err != nil || gotTable != table || gotAddr != addr {
				t.Errorf("%s %d -> %d -> %s %d %v", table, addr, n, gotTable, gotAddr, err)
			}
		}
	}
}

// squeeze collapses each line's runs of blanks, so content can be checked
// apart from column widths.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func TestProbeText(t *testing.T) {
	expect := 230.1
	p := NewProbe("10.0.0.7:502", 3, "holding", 10, meterRegs, nil, &expect)
	var b bytes.Buffer
	if err := p.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"holding_register 10-17 (40011-40018), unit 3 at 10.0.0.7:502\n",
		"\n16-bit\naddress register hex int16 uint16 bcd16 ascii AB ascii BA matches\n",
		"\n11 40012 0x4366 17254 17254 4366 \"Cf\" \"fC\"\n",
		"\n12 40013 0x08FD 2301 2301 - - int16*0.1 uint16*0.1\n",
		"\n13 40014 0xFFFE -2 65534 - -\n",
		"\n15 40016 0x0000 0 0 0 \"\" \"\"\n",
		"\n32-bit\naddress register order int32 uint32 float32 bcd32 matches\n",
		"\n10 40011 CDAB 1130764698 1130764698 230.1 float32\n",
		"\n10 40011 DCBA 1715706393 1715706393 -\n",
		"\n13 40014 ABCD -123456 4294843840 -\n",
		"\n64-bit\naddress register order int64 uint64 float64 matches\n",
		"\n11 40012 HGFEDCBA -4603242868687477181 13843501205022074435 -7.499023393285429\n",
		"\n-expect 230.1: 4 interpretations within 1%; the profile point for each:\n",
		"\nfloat32 CDAB at holding_register 10-11 (40011-40012) = 230.1\n- {name: reg_40011, table: holding_register, address: 10, type: float32, order: CDAB}\n",
		"\nuint16 at holding_register 12 (40013) = 2301 * 0.1 = 230.1\n",
		"\n32- and 64-bit rows of registers that are all zero are left out\n",
	} {
		if !strings.Contains(squeeze(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, " \n") {
		t.Errorf("trailing blanks:\n%q", out)
	}
	// all-zero 32-bit rows are left out: 15-16 is zero, 14-15 is not
	if strings.Contains(squeeze(out), "\n15 40016 ABCD") || !strings.Contains(squeeze(out), "\n14 40015 ABCD") {
		t.Errorf("zero rows:\n%s", out)
	}
	// aligned: in each section, every row's third column starts where its
	// heading does
	col := -1
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "address"):
			col = strings.Index(line, "register") + len("register")
			col += len(line[col:]) - len(strings.TrimLeft(line[col:], " "))
		case line == "" || strings.HasSuffix(line, "-bit"):
		case col > 0 && line[0] >= '0' && line[0] <= '9':
			if line[col-1] != ' ' || line[col] == ' ' {
				t.Errorf("misaligned at column %d: %q", col, line)
			}
		default:
			col = -1
		}
	}

	none := 99.0
	b.Reset()
	NewProbe("h:502", 1, "input_register", 0, []uint16{0, 0, 0, 0}, nil, &none).WriteText(&b)
	if !strings.Contains(b.String(), "-expect 99: no interpretation within 1%") {
		t.Errorf("no match:\n%s", b.String())
	}
	// a section whose rows are all left out is not shown at all
	if !strings.Contains(b.String(), "\n16-bit\n") || strings.Contains(b.String(), "\n32-bit\n") || strings.Contains(b.String(), "\n64-bit\n") {
		t.Errorf("sections:\n%s", b.String())
	}
}

func TestProbeBitsText(t *testing.T) {
	bits := []bool{true, false, false, false, false, true, false, false, false, true}
	var b bytes.Buffer
	if err := NewProbe("h:502", 1, "coil", 0, nil, bits, nil).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `coil 0-9 (00001-00010), unit 1 at h:502
3 of 10 on: 0, 5, 9

address  number  +0  +1  +2  +3  +4  +5  +6  +7
0        00001   1   0   0   0   0   1   0   0
8        00009   0   1
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestProbeJSON(t *testing.T) {
	expect := 230.1
	p := NewProbe("h:502", 1, "holding_register", 10, []uint16{0x199A, 0x4366, 0x7FC0, 0}, nil, &expect)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Table           string   `json:"table"`
		Registers       []uint16 `json:"registers"`
		Interpretations []struct {
			Address     int    `json:"address"`
			Register    int    `json:"register"`
			Type        string `json:"type"`
			Order       string `json:"order"`
			Width       int    `json:"width"`
			Value       any    `json:"value"`
			Implausible string `json:"implausible"`
		} `json:"interpretations"`
		Matches []struct {
			Type   string  `json:"type"`
			Order  string  `json:"order"`
			Value  float64 `json:"value"`
			Scale  float64 `json:"scale"`
			Config string  `json:"config"`
		} `json:"matches"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	// 230.1 CDAB at 10, and 230.5 ABCD at 11 (within 1%)
	if doc.Table != "holding_register" || len(doc.Registers) != 4 || len(doc.Matches) != 2 {
		t.Fatalf("%s", b)
	}
	m := doc.Matches[0]
	if m.Type != "float32" || m.Order != "CDAB" || m.Value != 230.1 || m.Scale != 1 ||
		m.Config != "- {name: reg_40011, table: holding_register, address: 10, type: float32, order: CDAB}" {
		t.Errorf("match %+v", m)
	}
	sawNaN := false
	for _, in := range doc.Interpretations {
		if in.Address == 12 && in.Type == "float32" && in.Order == "ABCD" {
			sawNaN = in.Value == "NaN" && in.Implausible == "NaN" && in.Register == 40013 && in.Width == 2
		}
	}
	if !sawNaN {
		t.Errorf("NaN is not a string with its reason:\n%s", b)
	}
	// without expect there is no matches key
	b, _ = json.Marshal(NewProbe("h:502", 1, "coil", 0, nil, []bool{true}, nil))
	if bytes.Contains(b, []byte("matches")) || !bytes.Contains(b, []byte(`"bits":[true]`)) {
		t.Errorf("%s", b)
	}
}

func TestNewWriteRequest(t *testing.T) {
	for _, c := range []struct {
		table, typ, order, value string
		regs                     []uint16
		err                      string
	}{
		{"holding_register", "float32", "CDAB", "50.5", []uint16{0x0000, 0x424A}, ""},
		{"holding_register", "float32", "", "230.1", []uint16{0x4366, 0x199A}, ""},
		{"holding_register", "int16", "", "-2", []uint16{0xFFFE}, ""},
		{"holding_register", "uint16", "", "0xBEEF", []uint16{0xBEEF}, ""},
		{"holding_register", "uint64", "GHEFCDAB", "18446744073709551615", []uint16{0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}, ""},
		{"holding_register", "int32", "CDAB", "-123456", []uint16{0x1DC0, 0xFFFE}, ""},
		{"holding_register", "bcd16", "", "1234", []uint16{0x1234}, ""},
		{"holding_register", "bcd32", "CDAB", "12345678", []uint16{0x5678, 0x1234}, ""},
		{"holding_register", "string", "", "abc", []uint16{0x6162, 0x6300}, ""},
		{"holding_register", "string", "BA", "PM5560", []uint16{0x4D50, 0x3535, 0x3036}, ""},
		{"holding_register", "bcd16", "", "12345", nil, "12345"},
		{"coil", "", "", "on", []uint16{1}, ""},
		{"coil", "bool", "", "false", []uint16{0}, ""},
		{"holding_register", "int16", "", "70000", nil, "70000 out of range for int16 (-32768 to 32767)"},
		{"holding_register", "uint16", "", "-1", nil, "-1 out of range for uint16"},
		{"holding_register", "int32", "", "1.5", nil, "1.5 is not an integer"},
		{"holding_register", "float32", "", "1e39", nil, "out of range for float32"},
		{"holding_register", "float32", "", "abc", nil, "not a number"},
		{"holding_register", "float32", "ABC", "1", nil, `order "ABC" does not fit float32`},
		{"holding_register", "real", "", "1", nil, `type "real"`},
		{"holding_register", "", "", "1", nil, "needs a type"},
		{"holding_register", "bool", "", "1", nil, "type bool is for coils"},
		{"input_register", "uint16", "", "1", nil, "input_register is read-only"},
		{"discrete_input", "", "", "true", nil, "discrete_input is read-only"},
		{"coil", "", "", "yes", nil, "a coil takes true or false"},
		{"coil", "uint16", "", "1", nil, "a coil takes no type or order"},
	} {
		r, err := NewWriteRequest(c.table, 100, c.typ, c.order, c.value)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %s %s %q: err = %v, want %q", c.table, c.typ, c.order, c.value, err, c.err)
			}
		case err != nil:
			t.Errorf("%s %s %s %q: %v", c.table, c.typ, c.order, c.value, err)
		case !slices.Equal(r.regs, c.regs):
			t.Errorf("%s %s %s %q: % X, want % X", c.table, c.typ, c.order, c.value, r.regs, c.regs)
		}
	}
	if _, err := NewWriteRequest("holding_register", 65535, "float32", "", "1"); err == nil {
		t.Error("a float32 at 65535 was accepted")
	}
}

// The integration tests below run against pymodbus (see integration_test.go):
// values placed by Python's struct module, found by the probe.

func dialPeer(t *testing.T, p *peer) *RawClient {
	t.Helper()
	c, err := DialTCP(context.Background(), p.addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestIntegrationProbeFindsValue: the probe finds a float32 CDAB and a
// scaled uint16 by -expect, and the profile lines it suggests, loaded by
// config and read by the gateway's own driver, give the expected value.
func TestIntegrationProbeFindsValue(t *testing.T) {
	integration(t)
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": {
		Size: map[string]int{"hr": 300, "ir": 100},
		HR: []typed{
			{Address: 200, Type: "float32", Order: "CDAB", Value: 230.1},
			{Address: 202, Type: "uint16", Value: 2301},
		},
		IR: []typed{{Address: 50, Type: "float64", Order: "GHEFCDAB", Value: 49.95}},
	}}}, 0)
	c := dialPeer(t, p)
	ctx := context.Background()
	expect := 230.1
	pr, err := ProbeRead(ctx, c, 1, "holding_register", 198, 8, &expect)
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Matches) < 2 {
		t.Fatalf("matches: %+v", pr.Matches)
	}
	best := pr.Matches[0]
	line := best.ConfigLine(pr.Table)
	if line != "- {name: reg_40201, table: holding_register, address: 200, type: float32, order: CDAB}" {
		t.Errorf("best match: %s", line)
	}
	var scaled string
	for _, m := range pr.Matches {
		if m.Type == "uint16" {
			scaled = m.ConfigLine(pr.Table)
		}
	}
	if scaled != "- {name: reg_40203, table: holding_register, address: 202, type: uint16, scale: 0.1}" {
		t.Errorf("scaled match: %q", scaled)
	}
	expect = 49.95
	pr, err = ProbeRead(ctx, c, 1, "input_register", 48, 8, &expect)
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Matches) == 0 {
		t.Fatalf("49.95 not found in %04X", pr.Registers)
	}
	in64 := pr.Matches[0].ConfigLine(pr.Table)
	if in64 != "- {name: reg_30051, table: input_register, address: 50, type: float64, order: GHEFCDAB}" {
		t.Errorf("float64 match: %s", in64)
	}

	// the lines, pasted into a profile, read the values in the gateway
	yaml := `gateway:
  id: gw-01
cloud:
  broker: tls://127.0.0.1:8883
  ca: ca.pem
  secret: s
  product_key: gwPK
  device_key: gwDK
links:
  - name: l1
    protocol: modbus-tcp
    address: ` + p.addr() + `
profiles:
  - name: meter
    product_key: meterPK
    points:
      ` + line + `
      ` + scaled + `
      ` + in64 + `
devices:
  - name: m1
    link: l1
    profile: meter
    unit_id: 1
`
	cfg, err := config.Parse("probe.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("the suggested lines do not load:\n%v\n%s", err, yaml)
	}
	d, err := New(cfg.Links[0], cfg.Devices, cfg.Profile, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	samples, err := d.Poll(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	prof, _ := cfg.Profile("meter")
	want := []float64{230.1, 230.1, 49.95}
	for i, s := range samples {
		f, _ := s.Value.Float64()
		got := f * prof.Points[i].ScaleOrOne()
		if s.Quality != telemetry.Good || math.Abs(got-want[i]) > 1e-9*want[i] {
			t.Errorf("point %s: %s × %g = %g, want %g", prof.Points[i].Name, s.Value, prof.Points[i].ScaleOrOne(), got, want[i])
		}
	}
}

func TestIntegrationProbeCoils(t *testing.T) {
	integration(t)
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": {
		CO: [][2]any{{0, true}, {5, true}, {9, true}},
		DI: [][2]any{{2, true}},
	}}}, 0)
	c := dialPeer(t, p)
	pr, err := ProbeRead(context.Background(), c, 1, "coil", 0, 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, false, false, false, false, true, false, false, false, true, false, false}
	if !slices.Equal(pr.Bits, want) || pr.Registers != nil {
		t.Errorf("coils %v, want %v", pr.Bits, want)
	}
	pr, err = ProbeRead(context.Background(), c, 1, "discrete_input", 1, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pr.Bits, []bool{false, true, false}) {
		t.Errorf("discrete inputs %v", pr.Bits)
	}
}

// TestIntegrationProbeWrite: values written as a profile point would are
// read back as written, by the probe and by the gateway's driver.
func TestIntegrationProbeWrite(t *testing.T) {
	integration(t)
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": {Size: map[string]int{"hr": 300}}}}, 0)
	c := dialPeer(t, p)
	ctx := context.Background()
	for _, w := range []struct {
		table, typ, order, value string
		addr                     int
		fc                       string
		want                     telemetry.Value
	}{
		{"holding_register", "float32", "CDAB", "50.5", 100, "FC16", telemetry.Float(50.5)},
		{"holding_register", "float32", "ABCD", "-0.125", 102, "FC16", telemetry.Float(-0.125)},
		{"holding_register", "int16", "", "-2", 104, "FC6", telemetry.Int(-2)},
		{"holding_register", "float64", "BADCFEHG", "1234.5678", 105, "FC16", telemetry.Float(1234.5678)},
		{"holding_register", "string", "BA", "PM5560", 110, "FC16", telemetry.String("PM5560")},
		{"holding_register", "bcd32", "", "12345678", 120, "FC16", telemetry.Uint(12345678)},
		{"coil", "", "", "true", 7, "FC5", telemetry.Bool(true)},
		{"coil", "", "", "off", 7, "FC5", telemetry.Bool(false)},
	} {
		r, err := NewWriteRequest(w.table, w.addr, w.typ, w.order, w.value)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ProbeWrite(ctx, c, 1, r)
		if err != nil {
			t.Fatalf("%s %s: %v", w.typ, w.value, err)
		}
		if !got.Kept() || !got.Now.Equal(w.want) || got.Function != w.fc {
			t.Errorf("%s %s %s: %+v", w.typ, w.order, w.value, got)
		}
	}
	// the driver, configured the same way, reads the float32 back
	d := rig(t, p.addr(), time.Second, []config.Point{
		{Name: "sp", Table: "holding_register", Address: intp(100), Type: "float32", Order: "CDAB"},
	}, 1)
	connect(t, d)
	if s := poll(t, d, 0); !s[0].Value.Equal(telemetry.Float(50.5)) {
		t.Errorf("driver reads %s", s[0].Value)
	}
}

func TestIntegrationProbeExceptions(t *testing.T) {
	integration(t)
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": {Size: map[string]int{"hr": 100}}}}, 0)
	c := dialPeer(t, p)
	ctx := context.Background()
	_, err := ProbeRead(ctx, c, 1, "holding_register", 98, 4, nil)
	var exc *ExceptionError
	if !errors.As(err, &exc) || exc.Code != 2 || !strings.Contains(err.Error(), "unit 1: read holding_register 98-101 (FC3): exception 2 (illegal data address)") {
		t.Fatalf("err = %v, want exception 2 by name", err)
	}
	r, err := NewWriteRequest("holding_register", 99, "float32", "", "1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ProbeWrite(ctx, c, 1, r)
	if !errors.Is(err, drivers.ErrDevice) || !strings.Contains(err.Error(), "write holding_register 99-100 (FC16): exception 2 (illegal data address)") {
		t.Fatalf("write err = %v", err)
	}
	// the connection survives exceptions
	if _, err := ProbeRead(ctx, c, 1, "holding_register", 0, 1, nil); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationProbeTimeouts: pymodbus does not answer a unit it does not
// serve (a timeout naming the unit); a late reply from a slow unit is never
// taken for the answer to the next request.
func TestIntegrationProbeTimeouts(t *testing.T) {
	integration(t)
	p := startPeer(t, spec{Units: map[string]unitSpec{
		"1": {HR: []typed{{Address: 0, Type: "uint16", Value: 111}}},
		"2": {HR: []typed{{Address: 0, Type: "uint16", Value: 222}}, Delay: 0.4},
	}}, 0)
	c, err := DialTCP(context.Background(), p.addr(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	_, err = c.ReadRegisters(ctx, 9, "holding_register", 0, 1)
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "unit 9: read holding_register 0 (FC3): timeout") {
		t.Fatalf("unknown unit: %v", err)
	}
	_, err = c.ReadRegisters(ctx, 2, "holding_register", 0, 1)
	if !errors.Is(err, drivers.ErrTimeout) {
		t.Fatalf("slow unit: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // the late reply has been sent by now
	regs, err := c.ReadRegisters(ctx, 1, "holding_register", 0, 1)
	if err != nil || regs[0] != 111 {
		t.Fatalf("after a late reply: %v, %v; want 111", regs, err)
	}
}
