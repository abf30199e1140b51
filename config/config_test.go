package config

import (
	"strings"
	"testing"
	"time"
)

func TestSampleLoads(t *testing.T) {
	c, err := Parse("sample.yaml", Sample)
	if err != nil {
		t.Fatalf("the annotated sample does not load:\n%v", err)
	}
	if len(c.Devices) != 2 || len(c.Links) != 1 || c.Devices[0].ProductKey != "meterPK" {
		t.Fatalf("sample = %+v", c)
	}
	p, _ := c.Profile("meter")
	if p.Points[3].MeasureID() != "energy" || p.Points[3].ScaleOrOne() != 0.001 {
		t.Fatalf("energy point = %+v", p.Points[3])
	}
	// defaults
	if c.Bus.Kind != "embedded" || c.Cache.Kind != "memory" || c.Cloud.Batch != 500 || c.Links[0].Timeout != time.Second {
		t.Fatalf("defaults not applied: %+v %+v %+v", c.Bus, c.Cache, c.Cloud)
	}
	if p.Points[0].StaleAfter != 3*time.Second || p.Points[4].StaleAfter != 10*time.Second {
		t.Fatalf("stale_after = %v, %v", p.Points[0].StaleAfter, p.Points[4].StaleAfter)
	}
	if p.Points[1].Order != "ABCD" || p.Points[4].Order != "AB" {
		t.Fatalf("default orders = %q %q", p.Points[1].Order, p.Points[4].Order)
	}
}

const base = `gateway:
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
    address: 127.0.0.1:5020
profiles:
  - name: meter
    product_key: meterPK
    points:
      - name: v
        table: holding_register
        address: 0
        type: float32
devices:
  - name: m1
    link: l1
    profile: meter
    unit_id: 1
`

// TestBrokenConfigs: every mistake gives exactly this message, with the
// file, the line and the thing concerned.
func TestBrokenConfigs(t *testing.T) {
	cases := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"unknown key", func(s string) string {
			return strings.Replace(s, "    unit_id: 1\n", "    unit_id: 1\n    polling: 1s\n", 1)
		},
			[]string{`c.yaml:26: device "m1": unknown field "polling"`}},
		{"typo in a point key", func(s string) string {
			return strings.Replace(s, "        type: float32\n", "        typ: float32\n", 1)
		},
			[]string{`c.yaml:20: profile "meter" point "v": unknown field "typ"`}},
		{"malformed YAML", func(s string) string { return strings.Replace(s, "  id: gw-01", "  id: [gw-01", 1) },
			[]string{"c.yaml:3: ',' or ']' must be specified"}},
		{"parser panic", func(s string) string { return "devices: ! \n" },
			[]string{"c.yaml: the YAML is malformed (the parser failed: "}},
		{"wrong type", func(s string) string { return strings.Replace(s, "unit_id: 1", "unit_id: one", 1) },
			[]string{`c.yaml:25: device "m1": `}},
		{"duplicate device", func(s string) string {
			return s + "  - name: m1\n    link: l1\n    profile: meter\n    unit_id: 2\n    device_key: other\n"
		},
			[]string{`c.yaml:26: device "m1": duplicate device name (first defined on line 22)`}},
		{"address out of range", func(s string) string { return strings.Replace(s, "address: 0\n", "address: 65535\n", 1) },
			[]string{`c.yaml:19: profile "meter" point "v": address 65535 out of range: a float32 spans 2 registers, so 0-65534`}},
		{"4xxxx register number", func(s string) string {
			return strings.Replace(strings.Replace(s, "address: 0\n", "address: 400010\n", 1), "float32", "uint16", 1)
		}, []string{`c.yaml:19: profile "meter" point "v": address 400010 out of range: 0-65535; it looks like a 4xxxxx register number, whose zero-based address is 9`}},
		{"unit id", func(s string) string { return strings.Replace(s, "unit_id: 1", "unit_id: 248", 1) },
			[]string{`c.yaml:25: device "m1": unit_id 248 out of range: 0-247, or 255 for a TCP device`}},
		{"unknown link", func(s string) string { return strings.Replace(s, "    link: l1\n", "    link: l2\n", 1) },
			[]string{`c.yaml:23: device "m1": link "l2" is not defined under links`}},
		{"unknown profile", func(s string) string { return strings.Replace(s, "    profile: meter\n", "    profile: inverter\n", 1) },
			[]string{`c.yaml:24: device "m1": profile "inverter" is not defined under profiles`}},
		{"order does not fit type", func(s string) string {
			return strings.Replace(s, "type: float32\n", "type: float32\n        order: AB\n", 1)
		},
			[]string{`c.yaml:21: profile "meter" point "v": order "AB" does not fit float32: use one of ABCD, DCBA, BADC, CDAB`}},
		{"bool in a register", func(s string) string { return strings.Replace(s, "type: float32", "type: bool", 1) },
			[]string{`c.yaml:20: profile "meter" point "v": type bool reads a coil or discrete_input; a bit inside a register is not supported yet`}},
		{"bad table", func(s string) string { return strings.Replace(s, "holding_register", "holding_registers", 1) },
			[]string{`c.yaml:18: profile "meter" point "v": table "holding_registers": use coil, discrete_input, input_register or holding_register`}},
		{"plain tcp uplink", func(s string) string { return strings.Replace(s, "tls://", "tcp://", 1) },
			[]string{`c.yaml:4: cloud: broker "tcp://127.0.0.1:8883": must be tls://host:port (the uplink is always TLS)`}},
		{"no login", func(s string) string { return strings.Replace(s, "  secret: s\n", "", 1) },
			[]string{`c.yaml:3: cloud: give a client certificate (cert, key) or a secret to log in with`}},
		{"several mistakes at once, in line order", func(s string) string {
			s = strings.Replace(s, "unit_id: 1", "unit_id: 300", 1)
			return strings.Replace(s, "    protocol: modbus-tcp\n", "    protocol: modbus-rtu\n", 1)
		}, []string{
			`c.yaml:11: link "l1": protocol "modbus-rtu": use one of modbus-tcp`,
			`c.yaml:25: device "m1": unit_id 300 out of range: 0-247, or 255 for a TCP device`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(c.edit(base)))
			if err == nil {
				t.Fatal("broken config accepted")
			}
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(c.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(c.want), err)
			}
			for i, w := range c.want {
				if !strings.HasPrefix(got[i], w) || (!strings.HasSuffix(w, ": ") && got[i] != w) {
					t.Fatalf("error %d:\n got  %s\n want %s", i, got[i], w)
				}
			}
		})
	}
	if _, err := Parse("c.yaml", []byte(base)); err != nil {
		t.Fatalf("the base config is broken: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(base))
	f.Add(Sample)
	f.Add([]byte("devices: ! "))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("f.yaml", b)
		if err == nil && (c.Gateway.ID == "" || len(c.Devices) == 0) {
			t.Fatal("a config without gateway id or devices was accepted")
		}
	})
}
