package config

import (
	"os"
	"path/filepath"
	"slices"
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
		}, []string{`c.yaml:19: profile "meter" point "v": address 400010 out of range: 0-65535; it looks like a 4xxxxx register number, whose zero-based address is 9 (or write register: 400010)`}},
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
			[]string{`c.yaml:20: profile "meter" point "v": a bool in a register table needs bit (0-15): which bit of the register`}},
		{"bad table", func(s string) string { return strings.Replace(s, "holding_register", "holding_registers", 1) },
			[]string{`c.yaml:18: profile "meter" point "v": table "holding_registers": use coil, discrete_input, input_register or holding_register`}},
		{"plain tcp uplink", func(s string) string { return strings.Replace(s, "tls://", "tcp://", 1) },
			[]string{`c.yaml:4: cloud: broker "tcp://127.0.0.1:8883": must be tls://host:port (the uplink is always TLS)`}},
		{"reconnect_max too short", func(s string) string {
			return strings.Replace(s, "  secret: s\n", "  secret: s\n  reconnect_max: 100ms\n", 1)
		},
			[]string{`c.yaml:7: cloud: reconnect_max 100ms: at least 1s`}},
		{"ha without endpoints", func(s string) string { return strings.Replace(s, "links:\n", "ha: {kind: etcd, node: a}\nlinks:\n", 1) },
			[]string{`c.yaml:9: ha: kind etcd needs endpoints (the etcd client URLs, e.g. http://10.0.0.5:2379)`}},
		{"no login", func(s string) string { return strings.Replace(s, "  secret: s\n", "", 1) },
			[]string{`c.yaml:3: cloud: give a client certificate (cert, key) or a secret to log in with`}},
		{"overlapping points", func(s string) string {
			return strings.Replace(s, "devices:", "      - {name: w, table: holding_register, address: 1, type: uint16}\ndevices:", 1)
		}, []string{`c.yaml:21: profile "meter" point "w": overlaps point "v" in holding_register (addresses 0-1 and 1-1)`}},
		{"point in a no_read range", func(s string) string {
			return strings.Replace(s, "    points:\n", "    no_read: [{table: holding_register, from: 1, to: 9}]\n    points:\n", 1)
		}, []string{`c.yaml:18: profile "meter" point "v": address 0-1 is inside no_read 1-9 of holding_register`}},
		{"register and address both", func(s string) string {
			return strings.Replace(s, "address: 0\n", "address: 0\n        register: 40001\n", 1)
		},
			[]string{`c.yaml:20: profile "meter" point "v": give register (e.g. 40001) or table and address, not both`}},
		{"not a register number", func(s string) string {
			return strings.Replace(strings.Replace(s, "        table: holding_register\n", "", 1), "address: 0\n", "register: 29999\n", 1)
		}, []string{`c.yaml:18: profile "meter" point "v": register 29999: not a register number (1-9999 coils, 10001-19999 discrete inputs, 30001-39999 input registers, 40001-49999 holding registers, or the six-digit 1xxxxx, 3xxxxx, 4xxxxx forms; one-based)`}},
		{"bit out of range", func(s string) string { return strings.Replace(s, "type: float32", "type: bool\n        bit: 16", 1) },
			[]string{`c.yaml:21: profile "meter" point "v": bit 16: 0 (least significant) to 15`}},
		{"string without length", func(s string) string { return strings.Replace(s, "type: float32", "type: string", 1) },
			[]string{`c.yaml:17: profile "meter" point "v": a string needs length: its size in registers (1-123, two characters each)`}},
		{"serial link without device", func(s string) string {
			return strings.Replace(s, "    protocol: modbus-tcp\n    address: 127.0.0.1:5020\n", "    protocol: modbus-rtu\n    baud: 9601\n", 1)
		}, []string{
			`c.yaml:10: link "l1": device is required for modbus-rtu (the serial port, e.g. /dev/ttyUSB0)`,
			`c.yaml:12: link "l1": baud 9601: use 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 or 230400`,
		}},
		{"activemq without an address", func(s string) string {
			return strings.Replace(s, "links:\n", "bus:\n  kind: activemq\n  activemq: {prefetch: 0, ca: ca.pem}\nlinks:\n", 1)
		}, []string{
			`c.yaml:9: bus: kind activemq needs activemq.address (the broker's STOMP host:port, e.g. 127.0.0.1:61613)`,
			`c.yaml:11: bus: activemq: stomp+ssl needs all of ca, cert and key`,
		}},
		{"drop_oldest with activemq", func(s string) string {
			return strings.Replace(s, "links:\n", "bus:\n  kind: activemq\n  when_full: drop_oldest\n  activemq: {address: 127.0.0.1:61613}\nlinks:\n", 1)
		}, []string{
			`c.yaml:11: bus: when_full drop_oldest: not available with kind activemq (the broker's queue cannot drop its oldest); use block`,
		}},
		{"unknown when_full, confirm", func(s string) string {
			s = strings.Replace(s, "links:\n", "bus:\n  when_full: overwrite\nlinks:\n", 1)
			return s
		}, []string{
			`c.yaml:10: bus: when_full "overwrite": use drop_oldest or block`,
		}},
		{"redis address without a port, negative ttl", func(s string) string {
			return strings.Replace(s, "links:\n", "cache:\n  kind: redis\n  redis:\n    address: localhost\n    ttl: -1s\nlinks:\n", 1)
		}, []string{
			`c.yaml:12: cache: redis.address "localhost": address localhost: missing port in address`,
			`c.yaml:13: cache: redis.ttl -1s: give a positive duration, or 0 for none`,
		}},
		{"expression naming an unknown point", func(s string) string {
			return strings.Replace(s, "devices:", "    measures:\n      - {id: p, expr: \"v * x\"}\ndevices:", 1)
		}, []string{`c.yaml:22: profile "meter" measure "p": expr "v * x": unknown name x: not a point of the profile nor a function (column 5)`}},
		{"expression that does not compile", func(s string) string {
			return strings.Replace(s, "devices:", "    measures:\n      - id: p\n        expr: \"bit(v, 1)\"\ndevices:", 1)
		}, []string{`c.yaml:23: profile "meter" measure "p": expr "bit(v, 1)": cannot use float64 as argument (type int) to call bit  (column 5)`}},
		{"measure id taken by a point", func(s string) string {
			return strings.Replace(s, "devices:", "    measures:\n      - {id: v, expr: \"v * 2\"}\ndevices:", 1)
		}, []string{`c.yaml:22: profile "meter" measure "v": measure point "v" is already fed by point #1`}},
		{"enum on a float", func(s string) string {
			return strings.Replace(s, "devices:", "    measures:\n      - {id: m, expr: \"v\", enum: {0: off}}\ndevices:", 1)
		}, []string{`c.yaml:22: profile "meter" measure "m": enum maps integers to labels, but expr "v" gives a float`}},
		{"report mistakes", func(s string) string {
			s = strings.Replace(s, "        type: float32\n", "        type: float32\n        report: {deadband: 1, deadband_percent: 2}\n", 1)
			return strings.Replace(s, "    product_key: meterPK\n", "    product_key: meterPK\n    report: always\n", 1)
		}, []string{
			`c.yaml:16: profile "meter": report "always": use every_poll, on_change, or a mapping {on_change: true, deadband: 0.5, deadband_percent: 1, max_silence: 5m}`,
			`c.yaml:22: profile "meter" point "v": give deadband (absolute) or deadband_percent, not both`,
		}},
		{"unknown report key", func(s string) string {
			return strings.Replace(s, "        type: float32\n", "        type: float32\n        report: {dead_band: 1}\n", 1)
		}, []string{`c.yaml:21: profile "meter" point "v": unknown field "dead_band"`}},
		{"publish false with a measure", func(s string) string {
			return strings.Replace(s, "        type: float32\n", "        type: float32\n        measure: volts\n        publish: false\n", 1)
		}, []string{`c.yaml:22: profile "meter" point "v": publish: false feeds the profile's measures only; measure and report are for published points`}},
		{"several mistakes at once, in line order", func(s string) string {
			s = strings.Replace(s, "unit_id: 1", "unit_id: 300", 1)
			return strings.Replace(s, "    protocol: modbus-tcp\n", "    protocol: modbus-ascii\n", 1)
		}, []string{
			`c.yaml:11: link "l1": protocol "modbus-ascii": use one of modbus-tcp, modbus-rtu, modbus-rtu-tcp`,
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

func TestRegisterNotation(t *testing.T) {
	for _, c := range []struct {
		n     int
		table string
		addr  int
	}{
		{1, "coil", 0}, {9999, "coil", 9998}, {10001, "discrete_input", 0}, {30001, "input_register", 0},
		{40001, "holding_register", 0}, {49999, "holding_register", 9998}, {100001, "discrete_input", 0},
		{365536, "input_register", 65535}, {400001, "holding_register", 0}, {465536, "holding_register", 65535},
	} {
		table, addr, err := ParseRegister(c.n)
		if err != nil || table != c.table || addr != c.addr {
			t.Errorf("ParseRegister(%d) = %s %d %v, want %s %d", c.n, table, addr, err, c.table, c.addr)
		}
	}
	for _, bad := range []int{0, 10000, 20001, 29999, 50000, 99999, 165537, 200001, 465537} {
		if _, _, err := ParseRegister(bad); err == nil {
			t.Errorf("ParseRegister(%d) accepted", bad)
		}
	}
}

func TestCSVPoints(t *testing.T) {
	dir := t.TempDir()
	csvText := "\ufeffname,register,type,order,scale,unit,access,bit,length\n" +
		"# a comment line\n" +
		"voltage,30001,float32,CDAB,,V,read,,\n" +
		"alarm,40010,bool,,,,readwrite,3,\n" +
		"serial,40020,string,,,,,,8\n" +
		"energy,30003,uint32,,0.001,kWh,,,\n"
	os.WriteFile(filepath.Join(dir, "meter.csv"), []byte(csvText), 0o600)
	conf := strings.Replace(base, "    points:\n      - name: v\n        table: holding_register\n        address: 0\n        type: float32\n", "    points_csv: meter.csv\n", 1)
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte(conf), 0o600)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pts := c.Profiles[0].Points
	if len(pts) != 4 {
		t.Fatalf("points = %+v", pts)
	}
	if p := pts[0]; p.Table != "input_register" || *p.Address != 0 || p.Order != "CDAB" || p.Unit != "V" || p.Line != 3 {
		t.Errorf("voltage = %+v", p)
	}
	if p := pts[1]; p.Table != "holding_register" || *p.Address != 9 || *p.Bit != 3 || p.Access != "readwrite" {
		t.Errorf("alarm = %+v", p)
	}
	if p := pts[2]; p.Width() != 8 || p.Order != "AB" {
		t.Errorf("serial = %+v", p)
	}
	if p := pts[3]; p.ScaleOrOne() != 0.001 || *p.Address != 2 {
		t.Errorf("energy = %+v", p)
	}

	// mistakes name the CSV file and line
	os.WriteFile(filepath.Join(dir, "meter.csv"), []byte("name,register,type\nok,30001,uint16\nbad,30002,float33\nnum,3000x,uint16\n"), 0o600)
	_, err = Load(path)
	want := []string{
		filepath.Join(dir, "meter.csv") + `:3: profile "meter" point "bad": type "float33": use one of ` + typeList,
		filepath.Join(dir, "meter.csv") + `:4: profile "meter": point "num": register "3000x" is not a whole number`,
	}
	if err == nil {
		t.Fatal("broken CSV accepted")
	}
	got := strings.Split(err.Error(), "\n")
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing error %q in:\n%s", w, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "meter.csv"), []byte("name,adress\n"), 0o600)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), `meter.csv:1: profile "meter": column "adress": use name,`) {
		t.Errorf("unknown column: %v", err)
	}
}
