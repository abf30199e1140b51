package modbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The integration tests talk to a real, independent Modbus peer: pymodbus
// (Debian python3-pymodbus 3.0.0) run by testdata/pymodbus_server.py. They run
// only when EDGED_INTEGRATION=1; then a missing python or pymodbus is a
// failure, not a skip.
const (
	integrationEnv = "EDGED_INTEGRATION"
	python         = "/usr/bin/python3"
	serverScript   = "testdata/pymodbus_server.py"
)

var pymodbusCheck = sync.OnceValue(func() error {
	if _, err := os.Stat(python); err != nil {
		return fmt.Errorf("%s is required by the integration tests: %w", python, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import pymodbus.server, pymodbus.datastore").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pymodbus is required by the integration tests (apt-get install python3-pymodbus): %v: %s", err, out)
	}
	return nil
})

func integration(t *testing.T) {
	t.Helper()
	if os.Getenv(integrationEnv) != "1" {
		t.Skip("integration test: set " + integrationEnv + "=1 to run it against pymodbus")
	}
	if err := pymodbusCheck(); err != nil {
		t.Fatal(err)
	}
}

// spec is the datastore of pymodbus_server.py (see its docstring).
type spec struct {
	Units map[string]unitSpec `json:"units"`
}

type unitSpec struct {
	Size  map[string]int `json:"size,omitempty"`
	HR    []typed        `json:"hr,omitempty"`
	IR    []typed        `json:"ir,omitempty"`
	CO    [][2]any       `json:"co,omitempty"`
	DI    [][2]any       `json:"di,omitempty"`
	Delay float64        `json:"delay,omitempty"`
	// DelayOnce stalls only the unit's first answer; Holes are address
	// ranges per table that answer exception 2; Exception answers every
	// request with that code. See pymodbus_server.py.
	DelayOnce float64             `json:"delay_once,omitempty"`
	Holes     map[string][][2]int `json:"holes,omitempty"`
	Exception int                 `json:"exception,omitempty"`
	// Fields are typed values of any table, strings with their length.
	Fields []field `json:"fields,omitempty"`
}

// field is a typed value in table hr or ir; Length is a string's size in
// registers.
type field struct {
	Table   string `json:"table"`
	Address int    `json:"address"`
	Type    string `json:"type"`
	Order   string `json:"order,omitempty"`
	Length  int    `json:"length,omitempty"`
	Value   any    `json:"value"`
}

// typed is a value that the server encodes with Python's struct module.
type typed struct {
	Address int    `json:"address"`
	Type    string `json:"type"`
	Order   string `json:"order"`
	Value   any    `json:"value"`
}

// peer is one running pymodbus server.
type peer struct {
	port  int
	cmd   *exec.Cmd
	stdin io.Closer
	out   *syncBuffer
	once  sync.Once
	kill  func() // stops the server now (the cleanup does it otherwise)
}

// startPeer starts the server on 127.0.0.1:port (0 for any free port) and
// waits, at most 20 s, for it to say it is ready. The test's cleanup stops it.
func startPeer(t *testing.T, s spec, port int) *peer {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &peer{out: &syncBuffer{ready: make(chan int, 1)}}
	p.cmd = exec.Command(python, serverScript, strconv.Itoa(port), path)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	stdin, err := p.cmd.StdinPipe() // the server exits when this closes
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop(t, exited) })
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case p.port = <-p.out.ready:
	case err := <-exited:
		exited <- err
		t.Fatalf("pymodbus server exited before it was ready: %v\n%s", err, p.out.String())
	case <-timer.C:
		t.Fatalf("pymodbus server not ready after 20s:\n%s", p.out.String())
	}
	p.kill = func() { p.stop(t, exited) }
	return p
}

// stop kills the server by its PID and waits for it; it runs once.
func (p *peer) stop(t *testing.T, exited chan error) {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		_ = p.stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("pymodbus server (pid %d) did not exit after SIGKILL", p.cmd.Process.Pid)
		}
	})
}

func (p *peer) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// syncBuffer collects the server's output and reports its "ready PORT" line.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan int
	seen  bool
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if !b.seen {
		for _, line := range strings.Split(b.buf.String(), "\n") {
			if port, ok := strings.CutPrefix(line, "ready "); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(port)); err == nil {
					b.seen = true
					b.ready <- n
					break
				}
			}
		}
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rig is a driver on one link to a peer, with one device per unit id.
func rig(t *testing.T, addr string, timeout time.Duration, points []config.Point, units ...int) *Driver {
	t.Helper()
	prof := config.Profile{Name: "p", Points: points}
	var devs []config.Device
	for _, u := range units {
		devs = append(devs, config.Device{Name: fmt.Sprintf("unit-%d", u), Profile: "p", UnitID: intp(u)})
	}
	d, err := New(config.Link{Name: "plc", Protocol: Protocol, Address: addr, Timeout: timeout}, devs, profileLookup(prof), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func connect(t *testing.T, d *Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
}

func poll(t *testing.T, d *Driver, dev int) []telemetry.Sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := d.Poll(ctx, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != len(d.devices[dev].points) {
		t.Fatalf("Poll gave %d samples for %d points", len(s), len(d.devices[dev].points))
	}
	for i := range s {
		if s[i].Point != i {
			t.Fatalf("sample %d is for point %d", i, s[i].Point)
		}
	}
	return s
}

// typeValues are values whose bytes all differ, so that any byte or word
// put in the wrong place changes the value read. Two sets, so that the two
// copies of each type in the store differ too. Float32 values are exact.
var typeValues = [2]map[string]any{{
	"int16": int64(-12345), "uint16": uint64(54321),
	"int32": int64(-123456789), "uint32": uint64(3000000001),
	"int64": int64(-1234567890123456789), "uint64": uint64(18446744073709551000),
	"float32": -1234.5625, "float64": 123456.789,
}, {
	"int16": int64(4660), "uint16": uint64(43981),
	"int32": int64(305419896), "uint32": uint64(4023233417),
	"int64": int64(81985529216486895), "uint64": uint64(9876543210987654321),
	"float32": 3.0517578125e-05, "float64": -2.718281828459045e-300,
}}

func wantValue(typ string, v any) telemetry.Value {
	switch x := v.(type) {
	case int64:
		return telemetry.Int(x)
	case uint64:
		return telemetry.Uint(x)
	case float64:
		if typ == "float32" {
			return telemetry.Float(float64(float32(x)))
		}
		return telemetry.Float(x)
	case bool:
		return telemetry.Bool(x)
	}
	panic(fmt.Sprintf("value %T", v))
}

func TestIntegrationTypesAndOrders(t *testing.T) {
	integration(t)
	var points []config.Point
	var want []telemetry.Value
	var unit unitSpec
	unit.Size = map[string]int{"hr": 300, "ir": 300}
	types := []string{"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"}
	// two copies of every type x order in holding registers, from 0 (more
	// than 125 registers, so the plan needs two requests), one in input
	// registers from 200
	hr, ir := 0, 200
	for copyN := range 2 {
		for _, typ := range types {
			for _, order := range ordersFor(typ) {
				v := typeValues[copyN][typ]
				c, _ := NewCodec(typ, order)
				unit.HR = append(unit.HR, typed{hr, typ, order, v})
				points = append(points, config.Point{Name: fmt.Sprintf("hr%d-%s-%s", copyN, typ, order), Table: "holding_register", Address: intp(hr), Type: typ, Order: order})
				want = append(want, wantValue(typ, v))
				hr += c.Registers()
				if copyN == 0 {
					unit.IR = append(unit.IR, typed{ir, typ, order, v})
					points = append(points, config.Point{Name: fmt.Sprintf("ir-%s-%s", typ, order), Table: "input_register", Address: intp(ir), Type: typ, Order: order})
					want = append(want, wantValue(typ, v))
					ir += c.Registers()
				}
			}
		}
	}
	coils := map[int]bool{0: true, 1: false, 3: true, 9: true, 10: false, 17: true, 63: true}
	discretes := map[int]bool{0: false, 2: true, 7: true, 8: true, 15: false, 16: true, 40: true}
	for _, a := range []int{17, 0, 1, 3, 63, 9, 10} { // not in address order
		unit.CO = append(unit.CO, [2]any{a, coils[a]})
		points = append(points, config.Point{Name: fmt.Sprintf("co%d", a), Table: "coil", Address: intp(a), Type: "bool"})
		want = append(want, telemetry.Bool(coils[a]))
	}
	for _, a := range []int{0, 2, 7, 8, 15, 16, 40} {
		unit.DI = append(unit.DI, [2]any{a, discretes[a]})
		points = append(points, config.Point{Name: fmt.Sprintf("di%d", a), Table: "discrete_input", Address: intp(a), Type: "bool"})
		want = append(want, telemetry.Bool(discretes[a]))
	}
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": unit}}, 0)
	d := rig(t, p.addr(), 2*time.Second, points, 1)
	var hrReqs int
	for _, r := range d.devices[0].reqs {
		if r.table == holdingRegisters {
			hrReqs++
		}
	}
	if hrReqs != 2 {
		t.Fatalf("holding registers 0-%d planned in %d requests, want 2: %v", hr-1, hrReqs, d.devices[0].reqs)
	}
	connect(t, d)
	before := time.Now()
	for range 2 { // twice: the connection is reused
		samples := poll(t, d, 0)
		for i, s := range samples {
			if s.Quality != telemetry.Good || !sameValue(points[i].Type, s.Value, want[i]) {
				t.Errorf("%s: %v %s %q, want %v (%s)", points[i].Name, s.Value, s.Quality, s.Reason, want[i], want[i].Kind)
			}
			if s.Time.Before(before) {
				t.Errorf("%s: sample time %v is before the poll", points[i].Name, s.Time)
			}
		}
	}
}

func TestIntegrationException(t *testing.T) {
	integration(t)
	unit := unitSpec{
		Size: map[string]int{"hr": 100, "ir": 10, "co": 16, "di": 16},
		HR:   []typed{{0, "int32", "CDAB", int64(-7)}, {98, "uint16", "AB", uint64(9)}},
		IR:   []typed{{4, "float32", "ABCD", 2.5}},
		CO:   [][2]any{{2, true}},
	}
	points := []config.Point{
		{Name: "ok", Table: "holding_register", Address: intp(0), Type: "int32", Order: "CDAB"},
		{Name: "beyond", Table: "holding_register", Address: intp(1000), Type: "int16"},
		{Name: "straddles", Table: "holding_register", Address: intp(99), Type: "uint32"}, // 99-100: 100 is out
		{Name: "input", Table: "input_register", Address: intp(4), Type: "float32"},
		{Name: "coil", Table: "coil", Address: intp(2), Type: "bool"},
		{Name: "no-coil", Table: "coil", Address: intp(500), Type: "bool"},
		{Name: "edge", Table: "holding_register", Address: intp(98), Type: "uint16"}, // merged with straddles: 98-100 fails as a whole
	}
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": unit}}, 0)
	d := rig(t, p.addr(), 2*time.Second, points, 1)
	connect(t, d)
	for range 2 { // the link survives exceptions
		s := poll(t, d, 0)
		good := map[int]telemetry.Value{0: telemetry.Int(-7), 3: telemetry.Float(2.5), 4: telemetry.Bool(true)}
		for i := range s {
			if w, ok := good[i]; ok {
				if s[i].Quality != telemetry.Good || !s[i].Value.Equal(w) {
					t.Errorf("%s: %v %s %q, want good %v", points[i].Name, s[i].Value, s[i].Quality, s[i].Reason, w)
				}
				continue
			}
			if s[i].Quality != telemetry.Bad || s[i].Reason != "exception 2 (illegal data address)" || !s[i].Value.IsNone() {
				t.Errorf("%s: %v %s %q, want bad with exception 2", points[i].Name, s[i].Value, s[i].Quality, s[i].Reason)
			}
		}
	}
}

func TestIntegrationUnknownUnit(t *testing.T) {
	integration(t)
	unit := unitSpec{HR: []typed{{0, "uint16", "AB", uint64(42)}}}
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": unit}}, 0)
	points := []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}
	d := rig(t, p.addr(), 200*time.Millisecond, points, 1, 9)
	connect(t, d)
	start := time.Now()
	buf, err := d.Poll(t.Context(), 1, nil)
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), `device "unit-9"`) {
		t.Fatalf("Poll of a unit nobody answers: %v, want ErrTimeout naming the device", err)
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 2*time.Second {
		t.Errorf("timed out after %v, link timeout is 200ms", el)
	}
	if len(buf) != 0 {
		t.Errorf("appended %d samples on error", len(buf))
	}
	t.Log(err)
	// the other device on the link goes on working: the driver dials again
	// by itself after a timeout, without the engine's Connect
	s := poll(t, d, 0)
	if !s[0].Value.Equal(telemetry.Uint(42)) {
		t.Fatalf("unit 1 after unit 9 timed out: %v", s[0])
	}
}

// TestIntegrationLateReply makes a device answer after the deadline: the reply
// must never be taken for the answer to the next request (goburrow issue
// #64), and the ctx deadline must bound the request even when the link's
// timeout is longer.
func TestIntegrationLateReply(t *testing.T) {
	integration(t)
	fast := unitSpec{HR: []typed{{0, "int16", "AB", int64(1111)}}}
	slow := unitSpec{HR: []typed{{0, "int16", "AB", int64(2222)}}, Delay: 0.5}
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": fast, "7": slow}}, 0)
	points := []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "int16"}}
	d := rig(t, p.addr(), 3*time.Second, points, 1, 7)
	connect(t, d)

	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	start := time.Now()
	_, err := d.Poll(ctx, 1, nil)
	cancel()
	if !errors.Is(err, drivers.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow unit: %v, want ErrTimeout from the ctx deadline", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("ctx deadline 150ms, returned after %v", el)
	}
	// unit 7's reply (2222) arrives later on the old connection; unit 1
	// must read its own 1111
	for range 3 {
		s := poll(t, d, 0)
		if !s[0].Value.Equal(telemetry.Int(1111)) {
			t.Fatalf("unit 1 read %v after unit 7 timed out", s[0].Value)
		}
	}

	// cancellation aborts a request in flight
	ctx, cancel = context.WithCancel(t.Context())
	timer := time.AfterFunc(100*time.Millisecond, cancel)
	defer timer.Stop()
	start = time.Now()
	_, err = d.Poll(ctx, 1, nil)
	cancel()
	if !errors.Is(err, context.Canceled) || errors.Is(err, drivers.ErrLinkBroken) {
		t.Fatalf("cancelled poll: %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("cancelled after 100ms, returned after %v", el)
	}
	if s := poll(t, d, 0); !s[0].Value.Equal(telemetry.Int(1111)) {
		t.Fatalf("unit 1 read %v after a cancelled poll", s[0].Value)
	}
}

func TestIntegrationServerKilled(t *testing.T) {
	integration(t)
	s := spec{Units: map[string]unitSpec{"1": {HR: []typed{{0, "float64", "GHEFCDAB", 6.25}}}}}
	points := []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "float64", Order: "GHEFCDAB", Access: "readwrite"}}
	p := startPeer(t, s, 0)
	d := rig(t, p.addr(), time.Second, points, 1)

	if _, err := d.Poll(t.Context(), 0, nil); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("Poll before Connect: %v, want ErrNotConnected", err)
	}
	connect(t, d)
	if v := poll(t, d, 0)[0].Value; !v.Equal(telemetry.Float(6.25)) {
		t.Fatalf("read %v", v)
	}

	p.kill()
	_, err := d.Poll(t.Context(), 0, nil)
	if !errors.Is(err, drivers.ErrLinkBroken) {
		t.Fatalf("Poll after the server died: %v, want ErrLinkBroken", err)
	}
	t.Log(err)
	if _, err := d.Poll(t.Context(), 0, nil); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("Poll after a broken link: %v, want ErrNotConnected until Connect", err)
	}
	if err := d.Write(t.Context(), 0, 0, telemetry.Float(1)); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("Write after a broken link: %v, want ErrNotConnected until Connect", err)
	}
	if err := d.Connect(t.Context()); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("Connect with no server: %v, want ErrNotConnected", err)
	}

	p2 := startPeer(t, s, p.port)
	var cerr error
	for range 50 { // bounded: the engine's backoff, in short
		if cerr = d.Connect(t.Context()); cerr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cerr != nil {
		t.Fatalf("Connect to the restarted server at %s: %v", p2.addr(), cerr)
	}
	if v := poll(t, d, 0)[0].Value; !v.Equal(telemetry.Float(6.25)) {
		t.Fatalf("after reconnect read %v", v)
	}
}

func TestIntegrationWrite(t *testing.T) {
	integration(t)
	unit := unitSpec{
		Size: map[string]int{"hr": 100, "co": 16},
		DI:   [][2]any{{1, true}},
		IR:   []typed{{0, "uint16", "AB", uint64(5)}},
	}
	p := startPeer(t, spec{Units: map[string]unitSpec{"1": unit}}, 0)
	points := []config.Point{
		0:  {Name: "coil", Table: "coil", Address: intp(3), Type: "bool", Access: "readwrite"},
		1:  {Name: "int16", Table: "holding_register", Address: intp(10), Type: "int16", Order: "BA", Access: "readwrite"},
		2:  {Name: "float32", Table: "holding_register", Address: intp(12), Type: "float32", Order: "CDAB", Access: "readwrite"},
		3:  {Name: "uint64", Table: "holding_register", Address: intp(20), Type: "uint64", Order: "HGFEDCBA", Access: "readwrite"},
		4:  {Name: "di", Table: "discrete_input", Address: intp(1), Type: "bool"},
		5:  {Name: "ir", Table: "input_register", Address: intp(0), Type: "uint16"},
		6:  {Name: "nowhere", Table: "holding_register", Address: intp(500), Type: "uint16", Access: "write"},
		7:  {Name: "raw10", Table: "holding_register", Address: intp(10), Type: "uint16"},
		8:  {Name: "raw12", Table: "holding_register", Address: intp(12), Type: "uint16"},
		9:  {Name: "raw13", Table: "holding_register", Address: intp(13), Type: "uint16"},
		10: {Name: "nocoil", Table: "coil", Address: intp(100), Type: "bool", Access: "write"},
	}
	d := rig(t, p.addr(), 2*time.Second, points, 1)
	connect(t, d)
	ctx := t.Context()

	write := func(pt int, v telemetry.Value) {
		t.Helper()
		if err := d.Write(ctx, 0, pt, v); err != nil {
			t.Fatalf("Write %s = %v: %v", points[pt].Name, v, err)
		}
	}
	write(0, telemetry.Bool(true))                // FC5
	write(1, telemetry.Int(12345))                // FC6
	write(2, telemetry.Float(123.45600128173828)) // FC16, 2 registers
	write(3, telemetry.Uint(math.MaxUint64-1))    // FC16, 4 registers
	s := poll(t, d, 0)
	for pt, want := range map[int]telemetry.Value{
		0: telemetry.Bool(true),
		1: telemetry.Int(12345),
		2: telemetry.Float(123.456), // the float32's shortest decimal form
		3: telemetry.Uint(math.MaxUint64 - 1),
		// the raw registers as the vectors (Python's struct) have them:
		// int16 BA 12345 is [14640]; float32 CDAB 123.456... is [59769, 17142]
		7: telemetry.Uint(14640),
		8: telemetry.Uint(59769),
		9: telemetry.Uint(17142),
	} {
		if s[pt].Quality != telemetry.Good || !s[pt].Value.Equal(want) {
			t.Errorf("%s after write: %v %s %q, want %v", points[pt].Name, s[pt].Value, s[pt].Quality, s[pt].Reason, want)
		}
	}
	write(0, telemetry.Bool(false))
	write(1, telemetry.Float(-2)) // an integral float is fine
	s = poll(t, d, 0)
	if !s[0].Value.Equal(telemetry.Bool(false)) || !s[1].Value.Equal(telemetry.Int(-2)) {
		t.Errorf("after second writes: coil %v int16 %v", s[0].Value, s[1].Value)
	}

	for _, tc := range []struct {
		pt   int
		v    telemetry.Value
		want error
		text string
	}{
		{4, telemetry.Bool(true), drivers.ErrUnsupported, `device "unit-1" point "di"`},
		{5, telemetry.Uint(1), drivers.ErrUnsupported, `device "unit-1" point "ir"`},
		{6, telemetry.Uint(1), drivers.ErrDevice, "exception 2 (illegal data address)"},
		{10, telemetry.Bool(true), drivers.ErrDevice, `point "nocoil"`},
		{1, telemetry.Int(70000), nil, "out of range for int16"},
		{1, telemetry.Float(1.5), nil, "not an integer"},
	} {
		err := d.Write(ctx, 0, tc.pt, tc.v)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("Write %s = %v: %v, want %v containing %q", points[tc.pt].Name, tc.v, err, tc.want, tc.text)
		}
	}
	// none of that broke the link, nor changed the value
	if s := poll(t, d, 0); !s[1].Value.Equal(telemetry.Int(-2)) {
		t.Errorf("int16 after refused writes: %v", s[1].Value)
	}
}

// sameValue compares a decoded value with the expected one; a float32 is
// compared as a float32 (it decodes to its shortest decimal form, not to the
// exact widening the expectation may hold).
func sameValue(typ string, got, want telemetry.Value) bool {
	if typ == "float32" && got.Kind == telemetry.KindFloat && want.Kind == telemetry.KindFloat {
		return float32(got.F) == float32(want.F)
	}
	return got.Equal(want)
}
