package modbus

import (
	"slices"
	"strings"
	"testing"

	"github.com/edged/edged/config"
	"github.com/edged/edged/telemetry"
)

func TestPlanReads(t *testing.T) {
	hr := func(a, n int) span { return span{holdingRegisters, a, n} }
	ir := func(a, n int) span { return span{inputRegisters, a, n} }
	co := func(a int) span { return span{coils, a, 1} }
	di := func(a int) span { return span{discreteInputs, a, 1} }
	req := func(t table, a, n int) readRequest { return readRequest{t, a, n} }
	for _, tc := range []struct {
		name  string
		spans []span
		reqs  []readRequest
		locs  []location
	}{
		{"none", nil, nil, []location{}},
		{"one", []span{hr(10, 2)}, []readRequest{req(holdingRegisters, 10, 2)}, []location{{0, 0}}},
		{
			"adjacent merge",
			[]span{hr(0, 2), hr(2, 1), hr(3, 4)},
			[]readRequest{req(holdingRegisters, 0, 7)},
			[]location{{0, 0}, {0, 2}, {0, 3}},
		},
		{
			"profile order is not address order",
			[]span{hr(3, 4), hr(0, 2), hr(2, 1)},
			[]readRequest{req(holdingRegisters, 0, 7)},
			[]location{{0, 3}, {0, 0}, {0, 2}},
		},
		{
			"overlap merges (the same registers read as two types)",
			[]span{hr(0, 2), hr(1, 1), hr(0, 4)},
			[]readRequest{req(holdingRegisters, 0, 4)},
			[]location{{0, 0}, {0, 1}, {0, 0}},
		},
		{
			"a gap splits",
			[]span{hr(0, 2), hr(3, 1)},
			[]readRequest{req(holdingRegisters, 0, 2), req(holdingRegisters, 3, 1)},
			[]location{{0, 0}, {1, 0}},
		},
		{
			"tables never merge; requests come out by table",
			[]span{hr(0, 1), ir(1, 1), co(2), di(3), hr(1, 1)},
			[]readRequest{req(coils, 2, 1), req(discreteInputs, 3, 1), req(inputRegisters, 1, 1), req(holdingRegisters, 0, 2)},
			[]location{{3, 0}, {2, 0}, {0, 0}, {1, 0}, {3, 1}},
		},
		{
			"125 registers fill one request, the next starts another",
			func() []span {
				var s []span
				for a := 0; a < 128; a += 4 { // 32 x 4 registers = 128
					s = append(s, hr(a, 4))
				}
				return s
			}(),
			[]readRequest{req(holdingRegisters, 0, 124), req(holdingRegisters, 124, 4)},
			func() []location {
				var l []location
				for a := 0; a < 124; a += 4 {
					l = append(l, location{0, a})
				}
				return append(l, location{1, 0})
			}(),
		},
		{
			"exactly 125",
			[]span{hr(0, 4), hr(4, 121)},
			[]readRequest{req(holdingRegisters, 0, 125)},
			[]location{{0, 0}, {0, 4}},
		},
		{
			"a point that would cross 125 moves to the next request",
			[]span{hr(0, 123), hr(123, 4)},
			[]readRequest{req(holdingRegisters, 0, 123), req(holdingRegisters, 123, 4)},
			[]location{{0, 0}, {1, 0}},
		},
		{
			"2000 bits",
			func() []span {
				var s []span
				for a := range 2001 {
					s = append(s, co(a))
				}
				return s
			}(),
			[]readRequest{req(coils, 0, 2000), req(coils, 2000, 1)},
			func() []location {
				var l []location
				for a := range 2000 {
					l = append(l, location{0, a})
				}
				return append(l, location{1, 0})
			}(),
		},
		{
			"top of the address space",
			[]span{hr(65532, 4), hr(65531, 1)},
			[]readRequest{req(holdingRegisters, 65531, 5)},
			[]location{{0, 1}, {0, 0}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs, locs, err := planReads(tc.spans, planLimits{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(reqs, tc.reqs) {
				t.Errorf("requests\n got %v\nwant %v", reqs, tc.reqs)
			}
			if !slices.Equal(locs, tc.locs) {
				t.Errorf("locations\n got %v\nwant %v", locs, tc.locs)
			}
			// every span lies inside its request, and requests keep the limits
			for i, s := range tc.spans {
				r := reqs[locs[i].req]
				if r.table != s.table || s.address != r.address+locs[i].offset || locs[i].offset+s.count > r.count {
					t.Errorf("span %v is not inside request %v at %v", s, r, locs[i])
				}
			}
			for _, r := range reqs {
				if r.count < 1 || r.count > r.table.maxQuantity() {
					t.Errorf("request %v breaks the limit", r)
				}
			}
		})
	}
}

func intp(i int) *int { return &i }

func profileLookup(ps ...config.Profile) func(string) (*config.Profile, bool) {
	return func(name string) (*config.Profile, bool) {
		for i := range ps {
			if ps[i].Name == name {
				return &ps[i], true
			}
		}
		return nil, false
	}
}

func TestNewPlansDevices(t *testing.T) {
	prof := config.Profile{Name: "meter", Points: []config.Point{
		{Name: "v", Table: "holding_register", Address: intp(2), Type: "float32", Order: "CDAB"},
		{Name: "i", Table: "holding", Address: intp(0), Type: "int16", Access: "readwrite"},
		{Name: "e", Table: "holding_register", Address: intp(4), Type: "uint64"},
		{Name: "t", Table: "input_register", Address: intp(0), Type: "int16"},
		{Name: "on", Table: "coil", Address: intp(7), Type: "bool"},
	}}
	d, err := New(config.Link{Name: "l", Protocol: Protocol, Address: "127.0.0.1:1"},
		[]config.Device{{Name: "m1", Profile: "meter", UnitID: intp(3)}}, profileLookup(prof), nil)
	if err != nil {
		t.Fatal(err)
	}
	dv := d.devices[0]
	want := []readRequest{{coils, 7, 1}, {inputRegisters, 0, 1}, {holdingRegisters, 0, 1}, {holdingRegisters, 2, 6}}
	if !slices.Equal(dv.reqs, want) || dv.unit != 3 || len(dv.regs) != 9 {
		t.Fatalf("plan %v unit %d regs %d", dv.reqs, dv.unit, len(dv.regs))
	}
	// no I/O: polling an unconnected driver says so
	_, err = d.Poll(t.Context(), 0, nil)
	if err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("Poll before Connect: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// a float written to a coil or a value out of range fails before I/O
	if err := d.Write(t.Context(), 0, 1, telemetry.Int(70000)); err == nil || !strings.Contains(err.Error(), `device "m1" point "i": 70000 out of range for int16`) {
		t.Fatalf("Write out of range: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	good := config.Point{Name: "ok", Table: "holding_register", Address: intp(0), Type: "int16"}
	for _, tc := range []struct {
		name   string
		link   config.Link
		points []config.Point
		dev    config.Device
		want   []string
	}{
		{"no address", config.Link{Name: "l"}, []config.Point{good}, config.Device{Name: "d", Profile: "p", UnitID: intp(1)}, []string{"address is required"}},
		{"protocol", config.Link{Name: "l", Address: "x:1", Protocol: "opcua"}, []config.Point{good}, config.Device{Name: "d", Profile: "p", UnitID: intp(1)}, []string{`protocol "opcua"`}},
		{"unit", config.Link{Name: "l", Address: "x:1"}, []config.Point{good}, config.Device{Name: "d", Profile: "p"}, []string{`device "d": unit_id is required`}},
		{"unit range", config.Link{Name: "l", Address: "x:1"}, []config.Point{good}, config.Device{Name: "d", Profile: "p", UnitID: intp(256)}, []string{`device "d": unit_id 256`}},
		{"profile", config.Link{Name: "l", Address: "x:1"}, []config.Point{good}, config.Device{Name: "d", Profile: "nope", UnitID: intp(1)}, []string{`device "d": profile "nope"`}},
		{
			"points", config.Link{Name: "l", Address: "x:1"},
			[]config.Point{
				good,
				{Name: "t", Table: "register", Address: intp(0), Type: "int16"},
				{Name: "ty", Table: "holding_register", Address: intp(0), Type: "int8"},
				{Name: "o", Table: "holding_register", Address: intp(0), Type: "int32", Order: "AB"},
				{Name: "b", Table: "holding_register", Address: intp(0), Type: "bool"},
				{Name: "c", Table: "coil", Address: intp(0), Type: "uint16"},
				{Name: "a", Table: "coil", Type: "bool"},
				{Name: "r", Table: "input_register", Address: intp(65535), Type: "float32"},
			},
			config.Device{Name: "d", Profile: "p", UnitID: intp(1)},
			[]string{
				`device "d" point "t": table "register"`,
				`device "d" point "ty": type "int8"`,
				`device "d" point "o": order "AB"`,
				`device "d" point "b": type bool reads a coil`,
				`device "d" point "c": type uint16 needs a register table`,
				`device "d" point "a": address is required`,
				`device "d" point "r": address 65535 out of range`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.link, []config.Device{tc.dev}, profileLookup(config.Profile{Name: "p", Points: tc.points}), nil)
			if err == nil {
				t.Fatal("no error")
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("%d errors, want %d: %v", n, len(tc.want), err)
			}
			for _, w := range tc.want {
				w = `modbus: link "l": ` + w
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestFactory(t *testing.T) {
	cfg := &config.Config{Profiles: []config.Profile{{Name: "p", Points: []config.Point{
		{Name: "x", Table: "input_register", Address: intp(0), Type: "int16"},
	}}}}
	f := Factory(cfg)
	d, err := f(config.Link{Name: "l", Protocol: Protocol, Address: "127.0.0.1:1"}, []config.Device{{Name: "d", Profile: "p", UnitID: intp(1)}}, nil)
	if err != nil || d == nil {
		t.Fatalf("Factory: %v, %v", d, err)
	}
	d, err = f(config.Link{Name: "l", Protocol: Protocol, Address: "127.0.0.1:1"}, []config.Device{{Name: "d", Profile: "q", UnitID: intp(1)}}, nil)
	if err == nil || d != nil {
		t.Fatalf("Factory with a bad profile: %v (nil interface: %v), %v", d, d == nil, err)
	}
}
