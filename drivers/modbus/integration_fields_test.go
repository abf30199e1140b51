package modbus

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// Integration tests of the data and planning features against pymodbus:
// bits of registers, strings and BCD (put in the peer by Python, read and
// written by the driver), a max_gap merge, a no_read range the peer
// refuses, retries, and gateway exceptions.

// rigDevices is a driver on one link to addr with the given devices, all on
// profile prof (named "p").
func rigDevices(t *testing.T, addr string, timeout time.Duration, prof config.Profile, devs ...config.Device) *Driver {
	t.Helper()
	prof.Name = "p"
	for i := range devs {
		devs[i].Profile = "p"
	}
	d, err := New(config.Link{Name: "plc", Protocol: Protocol, Address: addr, Timeout: timeout}, devs, profileLookup(prof), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	connect(t, d)
	return d
}

func TestIntegrationBitsStringsBCD(t *testing.T) {
	integration(t)
	hr := func(a int, typ, order string, v any) field {
		return field{Table: "hr", Address: a, Type: typ, Order: order, Value: v}
	}
	str := func(table string, a, length int, order, v string) field {
		return field{Table: table, Address: a, Type: "string", Order: order, Length: length, Value: v}
	}
	unit := unitSpec{
		Size: map[string]int{"hr": 200, "ir": 50},
		HR: []typed{
			{Address: 0, Type: "uint16", Order: "AB", Value: uint64(0xa5a5)}, // bits 0, 2, 5, 7, 8, 10, 13, 15
			{Address: 1, Type: "uint16", Order: "AB", Value: uint64(0x12a4)}, // not BCD
		},
		IR: []typed{{Address: 0, Type: "uint16", Order: "AB", Value: uint64(0x8001)}},
		Fields: []field{
			str("hr", 10, 5, "AB", "Meter-1"),
			str("hr", 20, 5, "BA", "Meter-1"),
			str("hr", 30, 3, "AB", "2°C"),
			str("ir", 10, 8, "BA", "SN 0042-X"),
			hr(40, "bcd16", "AB", 1234),
			hr(41, "bcd16", "BA", 9876),
			hr(42, "bcd32", "ABCD", 12345678),
			hr(44, "bcd32", "CDAB", 87654321),
			hr(46, "bcd32", "DCBA", 10203),
			hr(48, "bcd32", "BADC", 99999999),
			// the same values again, for the driver to write elsewhere and
			// compare with what Python made of them
			str("hr", 100, 4, "BA", "héllo"),
			hr(110, "bcd32", "CDAB", 4321),
		},
	}
	points := []config.Point{
		{Name: "b0", Table: "holding_register", Address: intp(0), Type: "bool", Bit: intp(0)},
		{Name: "b1", Table: "holding_register", Address: intp(0), Type: "bool", Bit: intp(1)},
		{Name: "b13", Table: "holding_register", Address: intp(0), Type: "bool", Bit: intp(13)},
		{Name: "b15", Table: "holding_register", Address: intp(0), Type: "bool", Bit: intp(15)},
		{Name: "ir-b0", Table: "input_register", Address: intp(0), Type: "bool", Bit: intp(0)},
		{Name: "ir-b14", Table: "input_register", Address: intp(0), Type: "bool", Bit: intp(14)},
		{Name: "bad-bcd", Table: "holding_register", Address: intp(1), Type: "bcd16"},
		{Name: "s-ab", Table: "holding_register", Address: intp(10), Type: "string", Length: 5, Order: "AB"},
		{Name: "s-ba", Table: "holding_register", Address: intp(20), Type: "string", Length: 5, Order: "BA"},
		{Name: "s-utf8", Table: "holding_register", Address: intp(30), Type: "string", Length: 3},
		{Name: "s-ir", Table: "input_register", Address: intp(10), Type: "string", Length: 8, Order: "BA"},
		{Name: "bcd-ab", Table: "holding_register", Address: intp(40), Type: "bcd16", Order: "AB"},
		{Name: "bcd-ba", Table: "holding_register", Address: intp(41), Type: "bcd16", Order: "BA"},
		{Name: "bcd32-abcd", Table: "holding_register", Address: intp(42), Type: "bcd32", Order: "ABCD"},
		{Name: "bcd32-cdab", Table: "holding_register", Address: intp(44), Type: "bcd32", Order: "CDAB"},
		{Name: "bcd32-dcba", Table: "holding_register", Address: intp(46), Type: "bcd32", Order: "DCBA"},
		{Name: "bcd32-badc", Table: "holding_register", Address: intp(48), Type: "bcd32", Order: "BADC"},
		// written by the driver
		{Name: "w-bit3", Table: "holding_register", Address: intp(60), Type: "bool", Bit: intp(3), Access: "readwrite"},
		{Name: "w-bit12", Table: "holding_register", Address: intp(60), Type: "bool", Bit: intp(12), Access: "readwrite"},
		{Name: "w-str", Table: "holding_register", Address: intp(120), Type: "string", Length: 4, Order: "BA", Access: "readwrite"},
		{Name: "w-bcd", Table: "holding_register", Address: intp(130), Type: "bcd32", Order: "CDAB", Access: "write"},
	}
	want := map[string]telemetry.Value{
		"b0": telemetry.Bool(true), "b1": telemetry.Bool(false), "b13": telemetry.Bool(true), "b15": telemetry.Bool(true),
		"ir-b0": telemetry.Bool(true), "ir-b14": telemetry.Bool(false),
		"s-ab": telemetry.String("Meter-1"), "s-ba": telemetry.String("Meter-1"), "s-utf8": telemetry.String("2°C"), "s-ir": telemetry.String("SN 0042-X"),
		"bcd-ab": telemetry.Uint(1234), "bcd-ba": telemetry.Uint(9876),
		"bcd32-abcd": telemetry.Uint(12345678), "bcd32-cdab": telemetry.Uint(87654321), "bcd32-dcba": telemetry.Uint(10203), "bcd32-badc": telemetry.Uint(99999999),
		"w-bit3": telemetry.Bool(false), "w-bit12": telemetry.Bool(false), "w-str": telemetry.String(""),
	}
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": unit}}, 0)
	d := rig(t, p.addr(), 2*time.Second, points, 1)
	connect(t, d)
	check := func() {
		t.Helper()
		s := poll(t, d, 0)
		for i, pt := range points {
			switch w, ok := want[pt.Name]; {
			case pt.Name == "bad-bcd":
				if s[i].Quality != telemetry.Bad || s[i].Reason != "invalid BCD 0x12A4" {
					t.Errorf("%s: %+v, want bad, invalid BCD 0x12A4", pt.Name, s[i])
				}
			case pt.Name == "w-bcd":
				if s[i].Quality != telemetry.Bad || s[i].Reason != "write-only point" {
					t.Errorf("%s: %+v, want bad, write-only point", pt.Name, s[i])
				}
			case !ok:
				t.Fatalf("no expectation for %s", pt.Name)
			case s[i].Quality != telemetry.Good || !s[i].Value.Equal(w):
				t.Errorf("%s: %v %s %q, want %v", pt.Name, s[i].Value, s[i].Quality, s[i].Reason, w)
			}
		}
	}
	check()

	// writes: bits by read-modify-write, a string, a BCD value
	ctx := t.Context()
	ptIndex := func(name string) int {
		for i, pt := range points {
			if pt.Name == name {
				return i
			}
		}
		t.Fatalf("no point %s", name)
		return -1
	}
	for _, w := range []struct {
		name string
		v    telemetry.Value
	}{
		{"w-bit3", telemetry.Bool(true)}, {"w-bit12", telemetry.Bool(true)}, {"w-bit3", telemetry.Bool(false)}, {"w-bit3", telemetry.Bool(true)},
		{"w-str", telemetry.String("héllo")}, {"w-bcd", telemetry.Uint(4321)},
	} {
		if err := d.Write(ctx, 0, ptIndex(w.name), w.v); err != nil {
			t.Fatalf("Write %s = %v: %v", w.name, w.v, err)
		}
		want[w.name] = w.v
	}
	check()
	for _, w := range []struct {
		name string
		v    telemetry.Value
		text string
		is   error
	}{
		{"ir-b0", telemetry.Bool(false), "input_register is read-only", drivers.ErrUnsupported},
		{"b0", telemetry.Bool(false), "read-only (access: read)", drivers.ErrUnsupported},
		{"w-str", telemetry.String("much too long"), "longer than its field", nil},
		{"w-bcd", telemetry.Uint(100000000), "out of range for bcd32", nil},
	} {
		err := d.Write(ctx, 0, ptIndex(w.name), w.v)
		if err == nil || !strings.Contains(err.Error(), w.text) || (w.is != nil && !errors.Is(err, w.is)) {
			t.Errorf("Write %s = %v: %v, want %q", w.name, w.v, err, w.text)
		}
	}

	// the raw registers: what the driver wrote is what Python encodes for
	// the same values, and the bits kept their neighbours
	raw := rig(t, p.addr(), 2*time.Second, []config.Point{
		{Name: "r60", Table: "holding_register", Address: intp(60), Type: "uint16"},
		{Name: "w-str", Table: "holding_register", Address: intp(120), Type: "uint64"},
		{Name: "py-str", Table: "holding_register", Address: intp(100), Type: "uint64"},
		{Name: "w-bcd", Table: "holding_register", Address: intp(130), Type: "uint32"},
		{Name: "py-bcd", Table: "holding_register", Address: intp(110), Type: "uint32"},
	}, 1)
	connect(t, raw)
	s := poll(t, raw, 0)
	if !s[0].Value.Equal(telemetry.Uint(1<<3 | 1<<12)) {
		t.Errorf("register 60 after the bit writes: %v, want %#x", s[0].Value, 1<<3|1<<12)
	}
	if !s[1].Value.Equal(s[2].Value) || !s[3].Value.Equal(s[4].Value) {
		t.Errorf("the driver wrote string %#x and BCD %#x; Python encodes %#x and %#x", s[1].Value.U, s[3].Value.U, s[2].Value.U, s[4].Value.U)
	}
}

// TestIntegrationMaxGapAndNoRead: with max_gap the driver reads across
// unused registers in one request; the peer refuses a range (a hole in its
// map: exception 2), and the plan that knows it as no_read avoids it, so
// every point reads Good, while the same plan without no_read runs into it.
func TestIntegrationMaxGapAndNoRead(t *testing.T) {
	integration(t)
	unit := unitSpec{
		Size: map[string]int{"hr": 100, "co": 64},
		HR: []typed{
			{Address: 0, Type: "uint16", Order: "AB", Value: uint64(100)},
			{Address: 3, Type: "int32", Order: "CDAB", Value: int64(-300)},
			{Address: 9, Type: "uint16", Order: "AB", Value: uint64(900)},
			{Address: 30, Type: "uint16", Order: "AB", Value: uint64(3000)},
			{Address: 36, Type: "float32", Order: "ABCD", Value: 36.5},
		},
		CO:    [][2]any{{0, true}, {5, true}, {30, true}},
		Holes: map[string][][2]int{"hr": {{12, 27}}, "co": {{10, 20}}},
	}
	points := []config.Point{
		{Name: "a", Table: "holding_register", Address: intp(0), Type: "uint16"},
		{Name: "b", Table: "holding_register", Address: intp(3), Type: "int32", Order: "CDAB"},
		{Name: "c", Table: "holding_register", Address: intp(9), Type: "uint16"},
		{Name: "d", Table: "holding_register", Address: intp(30), Type: "uint16"},
		{Name: "e", Table: "holding_register", Address: intp(36), Type: "float32"},
		{Name: "k0", Table: "coil", Address: intp(0), Type: "bool"},
		{Name: "k5", Table: "coil", Address: intp(5), Type: "bool"},
		{Name: "k30", Table: "coil", Address: intp(30), Type: "bool"},
	}
	want := []telemetry.Value{telemetry.Uint(100), telemetry.Int(-300), telemetry.Uint(900), telemetry.Uint(3000), telemetry.Float(36.5), telemetry.Bool(true), telemetry.Bool(true), telemetry.Bool(true)}
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": unit}}, 0)
	noRead := []config.AddressRange{{Table: "holding_register", From: 12, To: 27}, {Table: "coil", From: 10, To: 20}}
	for _, tc := range []struct {
		name   string
		gap    int
		noRead []config.AddressRange
		reqs   []readRequest
		bad    map[string]bool // points that get exception 2
	}{
		{"max_gap 0", 0, nil,
			[]readRequest{{coils, 0, 1}, {coils, 5, 1}, {coils, 30, 1}, {holdingRegisters, 0, 1}, {holdingRegisters, 3, 2}, {holdingRegisters, 9, 1}, {holdingRegisters, 30, 1}, {holdingRegisters, 36, 2}}, nil},
		{"max_gap 5 reads across unused registers", 5, nil,
			[]readRequest{{coils, 0, 6}, {coils, 30, 1}, {holdingRegisters, 0, 10}, {holdingRegisters, 30, 8}}, nil},
		{"max_gap 64 with no_read avoids the hole", 64, noRead,
			[]readRequest{{coils, 0, 6}, {coils, 30, 1}, {holdingRegisters, 0, 10}, {holdingRegisters, 30, 8}}, nil},
		{"max_gap 64 without no_read runs into it", 64, nil,
			[]readRequest{{coils, 0, 31}, {holdingRegisters, 0, 38}},
			map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true, "k0": true, "k5": true, "k30": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prof := config.Profile{Points: points, MaxGap: tc.gap, NoRead: tc.noRead}
			d := rigDevices(t, p.addr(), 2*time.Second, prof, config.Device{Name: "m", UnitID: intp(1)})
			if got := d.devices[0].reqs; fmt.Sprint(got) != fmt.Sprint(tc.reqs) {
				t.Fatalf("plan %v, want %v", got, tc.reqs)
			}
			s := poll(t, d, 0)
			for i, pt := range points {
				if tc.bad[pt.Name] {
					if s[i].Quality != telemetry.Bad || s[i].Reason != "exception 2 (illegal data address)" {
						t.Errorf("%s: %+v, want exception 2 from the hole", pt.Name, s[i])
					}
				} else if s[i].Quality != telemetry.Good || !s[i].Value.Equal(want[i]) {
					t.Errorf("%s: %v %s %q, want %v", pt.Name, s[i].Value, s[i].Quality, s[i].Reason, want[i])
				}
			}
		})
	}
}

// TestIntegrationRetries: a unit that is slow once (its first answer comes
// after the timeout) is read on the retry, on a new connection; without
// retries the poll times out. The late answer never confuses a later one.
// pymodbus stalls as a whole while the unit is slow, so the retry, sent at
// 500ms, is answered at about 600ms, well within its own 500ms.
func TestIntegrationRetries(t *testing.T) {
	integration(t)
	units := map[string]unitSpec{
		"1": {HR: []typed{{Address: 0, Type: "uint16", Order: "AB", Value: uint64(11)}}},
		"3": {HR: []typed{{Address: 0, Type: "uint16", Order: "AB", Value: uint64(33)}}, DelayOnce: 0.6},
	}
	points := []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}
	for _, tc := range []struct {
		retries int
		ok      bool
	}{{1, true}, {0, false}} {
		t.Run(fmt.Sprintf("retries %d", tc.retries), func(t *testing.T) {
			p := startPeer(t, spec{Units: units}, 0)
			d := rigDevices(t, p.addr(), 5*time.Second, config.Profile{Points: points},
				config.Device{Name: "slow-once", UnitID: intp(3), Timeout: 500 * time.Millisecond, Retries: tc.retries},
				config.Device{Name: "steady", UnitID: intp(1)})
			start := time.Now()
			s, err := d.Poll(t.Context(), 0, nil)
			el := time.Since(start)
			if tc.ok {
				if err != nil || !s[0].Value.Equal(telemetry.Uint(33)) {
					t.Fatalf("slow once with a retry: %v, %v", s, err)
				}
				if el < 500*time.Millisecond || el > 3*time.Second {
					t.Errorf("read on the retry after %v; the first attempt waits 500ms", el)
				}
			} else {
				if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "no reply within 500ms") {
					t.Fatalf("slow once without retries: %v, %v; want ErrTimeout", s, err)
				}
				t.Log(err)
			}
			// the device and the other one on the link read their own values
			for range 3 {
				if s := poll(t, d, 1); !s[0].Value.Equal(telemetry.Uint(11)) {
					t.Fatalf("steady unit read %v", s[0].Value)
				}
				if s := poll(t, d, 0); !s[0].Value.Equal(telemetry.Uint(33)) {
					t.Fatalf("slow-once unit read %v", s[0].Value)
				}
			}
		})
	}
}

// TestIntegrationGatewayExceptions: exceptions 10 and 11, which a gateway
// answers for a device it cannot reach, make the device unreachable (an
// error wrapping ErrTimeout that names the exception), not Bad points, and
// leave the connection to the gateway working for the devices behind it.
func TestIntegrationGatewayExceptions(t *testing.T) {
	integration(t)
	units := map[string]unitSpec{
		"1":  {HR: []typed{{Address: 0, Type: "uint16", Order: "AB", Value: uint64(11)}}},
		"10": {Exception: 10},
		"11": {Exception: 11},
	}
	points := []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}
	p := startPeer(t, spec{Units: units}, 0)
	d := rigDevices(t, p.addr(), 2*time.Second, config.Profile{Points: points},
		config.Device{Name: "ok", UnitID: intp(1)},
		config.Device{Name: "no-path", UnitID: intp(10), Retries: 2},
		config.Device{Name: "no-answer", UnitID: intp(11), Retries: 2})
	for _, tc := range []struct {
		dev  int
		text string
	}{
		{1, "exception 10 (gateway path unavailable)"},
		{2, "exception 11 (gateway target device failed to respond) (3 attempts)"},
	} {
		buf, err := d.Poll(t.Context(), tc.dev, nil)
		if !errors.Is(err, drivers.ErrTimeout) || errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), tc.text) || len(buf) != 0 {
			t.Fatalf("device %d: %v, %v; want ErrTimeout naming %q", tc.dev, buf, err, tc.text)
		}
		t.Log(err)
		if s := poll(t, d, 0); !s[0].Value.Equal(telemetry.Uint(11)) {
			t.Fatalf("unit 1 after a gateway exception: %v", s[0])
		}
	}
}
