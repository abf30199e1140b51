//go:build !edged_no_modbus

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edged/edged/sim/modbussim"
)

func TestMain(m *testing.M) {
	// go-redis starts a process-wide clock goroutine when it is first used
	// (linked in through cache/redis); it is not a leak of ours
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.startGlobalTimeCache.func1"))
}

// run calls the command as main does, with buffers for its output.
func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

func konst(v float64) modbussim.Generator {
	return modbussim.Generator{Const: &modbussim.Const{Value: modbussim.Number(v)}}
}

// simDevice runs the project's Modbus simulator in the test: unit 1 holds
// float32 230.1 (CDAB) at 200, uint16 2301 at 202, zeros at 0-99, 190-199
// and 203-207 (nothing else: other addresses are exception 2); coils 0-15 with 0 and 5 on. Other units get no reply.
func simDevice(t *testing.T) string {
	t.Helper()
	cfg := modbussim.Config{Units: []modbussim.Unit{{ID: 1, Tables: modbussim.Tables{
		HoldingRegisters: []modbussim.Signal{
			{Address: 0, Count: 100, Generator: konst(0)},
			{Address: 190, Count: 10, Generator: konst(0)},
			{Address: 200, Type: "float32", Order: "CDAB", Generator: konst(230.1)},
			{Address: 202, Type: "uint16", Generator: konst(2301)},
			{Address: 203, Count: 5, Generator: konst(0)},
		},
		Coils: []modbussim.Signal{
			{Address: 0, Generator: konst(1)},
			{Address: 1, Count: 4, Generator: konst(0)},
			{Address: 5, Generator: konst(1)},
			{Address: 6, Count: 10, Generator: konst(0)},
		},
	}}}}
	s, err := modbussim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the simulator did not stop")
		}
	})
	return s.Addr().String()
}

// TestProbeFlagErrors: every mistake in the flags is exit 2 with a message
// that says what to do, before any I/O (the address is never dialled).
func TestProbeFlagErrors(t *testing.T) {
	a := "-addr=127.0.0.1:1" // nothing listens there
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"probe"}, "usage: edged probe PROTOCOL"},
		{[]string{"probe", "opcua"}, `protocol "opcua" is not built into this binary`},
		{[]string{"probe", "modbus"}, "-addr (Modbus TCP: the device's or gateway's IP address, port 502 unless given as HOST:PORT) or -rtu (a serial port, e.g. /dev/ttyUSB0) is required"},
		{[]string{"probe", "modbus", "-addr", "", "-address", "0"}, "-addr is empty"},
		{[]string{"probe", "modbus", a, "-rtu", "/dev/ttyUSB0", "-address", "0"}, "give -addr (Modbus TCP; with -rtu-tcp, RTU over TCP) or -rtu (a serial port), not both"},
		{[]string{"probe", "modbus", a, "-baud", "19200", "-address", "0"}, "-baud, -parity, -databits and -stopbits are for -rtu"},
		{[]string{"probe", "modbus", "-rtu-tcp", "-address", "0"}, "-rtu-tcp needs -addr"},
		{[]string{"probe", "modbus", "-rtu", "", "-address", "0"}, "-rtu needs the serial port"},
		{[]string{"probe", "modbus", "-rtu", "/dev/ttyUSB0", "-baud", "12345", "-address", "0"}, "baud 12345: use 1200, 2400"},
		{[]string{"probe", "modbus", "-rtu", "/dev/ttyUSB0", "-parity", "mark", "-address", "0"}, `parity "mark": none, even or odd`},
		{[]string{"probe", "modbus", "-rtu", "/dev/ttyUSB0", "-databits", "9", "-address", "0"}, "data_bits 9: 7 or 8"},
		{[]string{"probe", "modbus", "-addr", "10.0.0.1:99999", "-address", "0"}, `port "99999" is not 1-65535`},
		{[]string{"probe", "modbus", "-addr", ":502", "-address", "0"}, "the host is missing"},
		{[]string{"probe", "modbus", a}, "-address (zero-based, 0-65535) or -register (one-based, e.g. 40001) is required"},
		{[]string{"probe", "modbus", a, "-register", "40001", "-address", "0"}, "give -register (e.g. 40001) or -table and -address, not both"},
		{[]string{"probe", "modbus", a, "-register", "50000"}, "-register: register 50000: not a register number"},
		{[]string{"probe", "modbus", a, "-address", "0", "-unit", "256"}, "-unit 256: a unit id is 0-255"},
		{[]string{"probe", "modbus", a, "-address", "0", "-timeout", "0s"}, "-timeout 0s: give a positive duration"},
		{[]string{"probe", "modbus", a, "-table", "holdings", "-address", "0"}, `table "holdings": use coil, discrete_input, input_register or holding_register`},
		{[]string{"probe", "modbus", a, "-address", "0", "-count", "126"}, "count 126: one request reads 1-125 of a holding_register"},
		{[]string{"probe", "modbus", a, "-address", "65535", "-count", "2"}, "holding_register address 65535, count 2: addresses run 0-65535"},
		{[]string{"probe", "modbus", a, "-address", "0", "-expect", "abc"}, `-expect "abc": give the number the device shows now`},
		{[]string{"probe", "modbus", a, "-address", "0", "-expect", "0"}, "-expect 0 would match every empty register"},
		{[]string{"probe", "modbus", a, "-register", "1", "-expect", "1"}, "-expect is for registers; a coil holds bits"},
		{[]string{"probe", "modbus", a, "-address", "0", "-type", "float32"}, "-type and -order describe a value to -write"},
		{[]string{"probe", "modbus", a, "-address", "0", "-write", "1"}, "-write 1: a register value needs a type"},
		{[]string{"probe", "modbus", a, "-address", "0", "-write", "70000", "-type", "int16"}, "-write 70000: 70000 out of range for int16 (-32768 to 32767)"},
		{[]string{"probe", "modbus", a, "-address", "0", "-write", "1.5", "-type", "uint32"}, "-write 1.5: 1.5 is not an integer, so it cannot be written to uint32"},
		{[]string{"probe", "modbus", a, "-address", "0", "-write", "x", "-type", "float32"}, "-write x: not a number"},
		{[]string{"probe", "modbus", a, "-address", "0", "-write", "1", "-type", "float32", "-order", "AB"}, `order "AB" does not fit float32`},
		{[]string{"probe", "modbus", a, "-address", "0", "-write", "1", "-type", "uint16", "-count", "2"}, "-count is for reading"},
		{[]string{"probe", "modbus", a, "-register", "30001", "-write", "1", "-type", "uint16"}, "input_register is read-only"},
		{[]string{"probe", "modbus", a, "-register", "1", "-write", "maybe"}, "a coil takes true or false"},
		{[]string{"probe", "modbus", a, "-address", "0", "extra"}, `unexpected argument "extra"`},
		{[]string{"probe", "modbus", a, "-address", "0", "-bogus"}, "flag provided but not defined: -bogus"},
	} {
		code, stdout, stderr := run(c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want exit 2 and %q", c.args, code, stderr, stdout, c.want)
		}
	}
}

func TestProbeHelp(t *testing.T) {
	code, stdout, _ := run("probe", "modbus", "-h")
	if code != 0 || !strings.Contains(stdout, "-expect X") || !strings.Contains(stdout, "Exit status: 0 done") {
		t.Errorf("probe modbus -h: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = run("probe", "help")
	if code != 0 || !strings.Contains(stdout, "protocols built into this binary: [modbus]") {
		t.Errorf("probe help: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = run("help")
	if code != 0 || !strings.Contains(stdout, "probe modbus (-addr HOST | -rtu DEVICE)") {
		t.Errorf("edged help lacks probe:\n%s", stdout)
	}
}

// configLine extracts the profile line suggested for a match.
var configLine = regexp.MustCompile(`(?m)^\s+(- \{name: .*\})$`)

func TestProbeReadExpect(t *testing.T) {
	addr := simDevice(t)
	code, stdout, stderr := run("probe", "modbus", "-addr", addr, "-register", "40199", "-count", "8", "-expect", "230.1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := configLine.FindAllStringSubmatch(stdout, -1)
	if len(lines) < 2 ||
		lines[0][1] != "- {name: reg_40201, table: holding_register, address: 200, type: float32, order: CDAB}" {
		t.Fatalf("suggested lines %q in:\n%s", lines, stdout)
	}
	if !strings.Contains(stdout, "- {name: reg_40203, table: holding_register, address: 202, type: uint16, scale: 0.1}") {
		t.Errorf("no scaled uint16:\n%s", stdout)
	}
	if !strings.HasPrefix(stdout, "holding_register 198-205 (40199-40206), unit 1 at "+addr+"\n") {
		t.Errorf("heading:\n%s", stdout)
	}

	// the same as JSON
	code, stdout, stderr = run("probe", "modbus", "-addr", addr, "-table", "holding_register", "-address", "198", "-expect", "230.1", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var doc struct {
		Table     string   `json:"table"`
		Registers []uint16 `json:"registers"`
		Matches   []struct {
			Config string `json:"config"`
		} `json:"matches"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, stdout)
	}
	if len(doc.Registers) != 8 || doc.Registers[2] != 0x199A || doc.Registers[3] != 0x4366 || len(doc.Matches) == 0 ||
		doc.Matches[0].Config != "- {name: reg_40201, table: holding_register, address: 200, type: float32, order: CDAB}" {
		t.Errorf("json:\n%s", stdout)
	}
}

func TestProbeCoils(t *testing.T) {
	addr := simDevice(t)
	code, stdout, stderr := run("probe", "modbus", "-addr", addr, "-register", "00001")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "coil 0-15 (00001-00016), unit 1 at "+addr+"\n2 of 16 on: 0, 5\n") ||
		!strings.Contains(squeeze(stdout), "\n0 00001 1 0 0 0 0 1 0 0\n8 00009 0 0 0 0 0 0 0 0\n") {
		t.Errorf("coils:\n%s", stdout)
	}
}

func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func TestProbeWrite(t *testing.T) {
	addr := simDevice(t)
	code, stdout, stderr := run("probe", "modbus", "-addr", addr, "-register", "40051", "-write", "50.5", "-type", "float32", "-order", "CDAB")
	want := "wrote 50.5 as float32 CDAB to holding_register 50-51 (40051-40052), unit 1 at " + addr + " (FC16): 0x0000 0x424A\n" +
		"read back: 0x0000 0x424A = 50.5 (the device kept it)\n"
	if code != 0 || stdout != want {
		t.Fatalf("exit %d, stderr %s\nstdout:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	// and a read finds it where it was written
	code, stdout, _ = run("probe", "modbus", "-addr", addr, "-address", "50", "-count", "2", "-expect", "50.5")
	if code != 0 || !strings.Contains(stdout, "- {name: reg_40051, table: holding_register, address: 50, type: float32, order: CDAB}") {
		t.Errorf("read after write: exit %d\n%s", code, stdout)
	}
	// one register: FC6
	code, stdout, _ = run("probe", "modbus", "-addr", addr, "-address", "52", "-write", "-2", "-type", "int16", "-json")
	var w struct {
		Function string   `json:"function"`
		Wrote    []uint16 `json:"wrote"`
		ReadBack []uint16 `json:"read_back"`
		Value    int      `json:"read_value"`
		Kept     bool     `json:"kept"`
	}
	if err := json.Unmarshal([]byte(stdout), &w); err != nil || code != 0 || w.Function != "FC6" || w.Value != -2 || !w.Kept || w.ReadBack[0] != 0xFFFE {
		t.Errorf("int16 -2: exit %d, %v, %+v\n%s", code, err, w, stdout)
	}
	// a coil: FC5
	code, stdout, _ = run("probe", "modbus", "-addr", addr, "-table", "coil", "-address", "3", "-write", "on")
	if code != 0 || !strings.Contains(stdout, "wrote true to coil 3 (00004)") || !strings.Contains(stdout, "(FC5)") || !strings.Contains(stdout, "= true (the device kept it)") {
		t.Errorf("coil: exit %d\n%s", code, stdout)
	}
}

func TestProbeDeviceErrors(t *testing.T) {
	addr := simDevice(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-addr", addr, "-register", "40101"}, []string{
			"unit 1: read holding_register 100-107 (FC3): exception 2 (illegal data address)",
			"hint: the device has no data at (some of) these addresses"}},
		{[]string{"-addr", addr, "-register", "40101", "-write", "1", "-type", "uint16"}, []string{
			"write holding_register 100 (FC6): exception 2 (illegal data address)"}},
		{[]string{"-addr", addr, "-unit", "9", "-address", "0", "-timeout", "200ms"}, []string{
			"unit 9: read holding_register 0-7 (FC3): timeout: no reply within 200ms",
			"hint: no reply: check -unit"}},
		{[]string{"-addr", closed, "-address", "0"}, []string{
			"connect " + closed + ": not connected", "hint: check the IP address and port"}},
	} {
		code, stdout, stderr := run(append([]string{"probe", "modbus"}, c.args...)...)
		if code != 1 || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, want exit 1", c.args, code, stdout)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%q: stderr %q lacks %q", c.args, stderr, w)
			}
		}
	}
}

func TestTCPAddress(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.20":       "192.168.1.20:502",
		"192.168.1.20:1502":  "192.168.1.20:1502",
		"plc.local":          "plc.local:502",
		"fe80::1":            "[fe80::1]:502",
		"[fe80::1]:503":      "[fe80::1]:503",
		"192.168.1.20:":      "",
		"192.168.1.20:x":     "",
		"192.168.1.20:70000": "",
	} {
		got, err := tcpAddress(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("tcpAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// The integration tests run the probe against pymodbus (Debian
// python3-pymodbus 3.0.0, drivers/modbus/testdata/pymodbus_server.py) and
// cross-check it with mbpoll, an independent client: what the probe writes,
// mbpoll reads, and the other way round. They run when EDGED_INTEGRATION=1;
// then a missing python, pymodbus or mbpoll is a failure, not a skip.
const (
	python       = "/usr/bin/python3"
	mbpoll       = "/usr/bin/mbpoll"
	socat        = "/usr/bin/socat"
	serverScript = "../../drivers/modbus/testdata/pymodbus_server.py"
	rtuScript    = "../../drivers/modbus/testdata/pymodbus_rtu_server.py"
)

func integration(t *testing.T) {
	t.Helper()
	if os.Getenv("EDGED_INTEGRATION") != "1" {
		t.Skip("integration test: set EDGED_INTEGRATION=1 to run it against pymodbus and mbpoll")
	}
	for _, bin := range []string{python, mbpoll, socat, serverScript, rtuScript} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is required by the integration tests (apt-get install python3-pymodbus mbpoll socat): %v", bin, err)
		}
	}
}

// startPymodbus runs pymodbus_server.py with spec (see its docstring) and
// returns its address once it is ready.
func startPymodbus(t *testing.T, spec string) string {
	t.Helper()
	return "127.0.0.1:" + startPeer(t, serverScript, "0", specFile(t, spec))
}

func specFile(t *testing.T, spec string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(path, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startPeer runs a peer script with args and returns what follows "ready "
// in the line it prints once it serves (at most 20 s). The test's cleanup
// kills it.
func startPeer(t *testing.T, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command(python, append([]string{script}, args...)...)
	stdin, err := cmd.StdinPipe() // the server exits when it closes
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if port, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- port
				break
			}
		}
		close(ready)
		_, _ = io.Copy(io.Discard, out)
	}()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", script, cmd.Process.Pid)
		}
	})
	select {
	case v, ok := <-ready:
		if !ok {
			<-exited
			t.Fatalf("%s exited before it was ready: %s", script, errb.String())
		}
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready after 20s", script)
	}
	return ""
}

// runMbpoll runs mbpoll once against addr (at most 10 s) with opts, writing
// writes if any, and returns the values it printed, by reference.
func runMbpoll(t *testing.T, addr string, opts []string, writes ...string) map[int]string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	args := append([]string{"-m", "tcp", "-a", "1", "-0", "-1", "-o", "2", "-p", port}, opts...)
	args = append(args, host)
	if len(writes) > 0 {
		args = append(append(args, "--"), writes...) // "--": values may be negative
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, mbpoll, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mbpoll %q: %v\n%s", args, err, out)
	}
	vals := map[int]string{}
	for _, m := range regexp.MustCompile(`(?m)^\[(\d+)\]:\s+(\S+)`).FindAllStringSubmatch(string(out), -1) {
		n, _ := strconv.Atoi(m[1])
		vals[n] = m[2]
	}
	return vals
}

// probeOK runs the probe and fails the test unless it exits 0.
func probeOK(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := run(append([]string{"probe", "modbus"}, args...)...)
	if code != 0 {
		t.Fatalf("edged probe modbus %q: exit %d\n%s%s", args, code, stdout, stderr)
	}
	return stdout
}

// TestIntegrationProbeAgainstPymodbus: values placed by Python's struct
// module are found with -expect; coils read; exceptions come by name.
func TestIntegrationProbeAgainstPymodbus(t *testing.T) {
	integration(t)
	addr := startPymodbus(t, `{"units": {"1": {"size": {"hr": 300, "ir": 100},
		"hr": [{"address": 10, "type": "float32", "order": "CDAB", "value": 230.1},
		       {"address": 12, "type": "uint16", "value": 2301}],
		"ir": [{"address": 4, "type": "int32", "order": "DCBA", "value": -40}],
		"co": [[0, true], [5, true]], "di": [[2, true]]}}}`)
	out := probeOK(t, "-addr", addr, "-register", "40011", "-count", "4", "-expect", "230.1")
	if m := configLine.FindStringSubmatch(out); m == nil || m[1] != "- {name: reg_40011, table: holding_register, address: 10, type: float32, order: CDAB}" {
		t.Errorf("float32 CDAB 230.1 not found first:\n%s", out)
	}
	if !strings.Contains(out, "- {name: reg_40013, table: holding_register, address: 12, type: uint16, scale: 0.1}") {
		t.Errorf("uint16 2301 not found as 230.1:\n%s", out)
	}
	out = probeOK(t, "-addr", addr, "-register", "30005", "-count", "2", "-expect", "-40")
	if !strings.Contains(out, "- {name: reg_30005, table: input_register, address: 4, type: int32, order: DCBA}") {
		t.Errorf("int32 DCBA -40 not found:\n%s", out)
	}
	out = probeOK(t, "-addr", addr, "-table", "coil", "-address", "0", "-count", "8")
	if !strings.Contains(out, "2 of 8 on: 0, 5\n") {
		t.Errorf("coils:\n%s", out)
	}
	out = probeOK(t, "-addr", addr, "-register", "10001", "-count", "4")
	if !strings.Contains(out, "1 of 4 on: 2\n") {
		t.Errorf("discrete inputs:\n%s", out)
	}
	code, _, stderr := run("probe", "modbus", "-addr", addr, "-register", "40299", "-count", "4")
	if code != 1 || !strings.Contains(stderr, "read holding_register 298-301 (FC3): exception 2 (illegal data address)") {
		t.Errorf("past the end: exit %d, %s", code, stderr)
	}
	code, _, stderr = run("probe", "modbus", "-addr", addr, "-register", "40300", "-write", "1", "-type", "float32")
	if code != 1 || !strings.Contains(stderr, "write holding_register 299-300 (FC16): exception 2 (illegal data address)") {
		t.Errorf("write past the end: exit %d, %s", code, stderr)
	}
	code, _, stderr = run("probe", "modbus", "-addr", addr, "-unit", "7", "-address", "0", "-timeout", "300ms")
	if code != 1 || !strings.Contains(stderr, "unit 7: read holding_register 0-7 (FC3): timeout: no reply within 300ms") {
		t.Errorf("unknown unit: exit %d, %s", code, stderr)
	}
}

// TestIntegrationProbeMbpoll: what the probe writes, mbpoll reads as the
// same value and registers; what mbpoll writes, the probe finds with the
// right type and order. mbpoll's 32-bit values are little-endian word order
// (CDAB) unless -B (ABCD).
func TestIntegrationProbeMbpoll(t *testing.T) {
	integration(t)
	addr := startPymodbus(t, `{"units": {"1": {"size": {"hr": 300, "co": 64}}}}`)

	// probe writes, mbpoll reads
	var w struct {
		Wrote []uint16 `json:"wrote"`
		Kept  bool     `json:"kept"`
	}
	out := probeOK(t, "-addr", addr, "-register", "40101", "-write", "50.5", "-type", "float32", "-order", "CDAB", "-json")
	if err := json.Unmarshal([]byte(out), &w); err != nil || !w.Kept {
		t.Fatalf("%v: %s", err, out)
	}
	if got := runMbpoll(t, addr, []string{"-r", "100", "-c", "1", "-t", "4:float"}); got[100] != "50.5" {
		t.Errorf("mbpoll reads float32 CDAB at 100 as %v, want 50.5", got)
	}
	hexes := runMbpoll(t, addr, []string{"-r", "100", "-c", "2", "-t", "4:hex"})
	if want := []string{fmt.Sprintf("0x%04X", w.Wrote[0]), fmt.Sprintf("0x%04X", w.Wrote[1])}; hexes[100] != want[0] || hexes[101] != want[1] {
		t.Errorf("mbpoll reads registers %v, the probe wrote %v", hexes, want)
	}
	probeOK(t, "-addr", addr, "-register", "40103", "-write", "-7.25", "-type", "float32")
	if got := runMbpoll(t, addr, []string{"-r", "102", "-c", "1", "-t", "4:float", "-B"}); got[102] != "-7.25" {
		t.Errorf("mbpoll -B reads float32 ABCD at 102 as %v, want -7.25", got)
	}
	probeOK(t, "-addr", addr, "-register", "40105", "-write", "-123456", "-type", "int32", "-order", "CDAB")
	if got := runMbpoll(t, addr, []string{"-r", "104", "-c", "1", "-t", "4:int"}); got[104] != "-123456" {
		t.Errorf("mbpoll reads int32 CDAB at 104 as %v, want -123456", got)
	}
	probeOK(t, "-addr", addr, "-register", "40107", "-write", "-2", "-type", "int16")
	if got := runMbpoll(t, addr, []string{"-r", "106", "-c", "1", "-t", "4:hex"}); got[106] != "0xFFFE" {
		t.Errorf("mbpoll reads int16 -2 at 106 as %v, want 0xFFFE", got)
	}
	probeOK(t, "-addr", addr, "-table", "coil", "-address", "8", "-write", "true")
	if got := runMbpoll(t, addr, []string{"-r", "7", "-c", "3", "-t", "0"}); got[7] != "0" || got[8] != "1" || got[9] != "0" {
		t.Errorf("mbpoll reads coils 7-9 as %v, want 0 1 0", got)
	}

	// mbpoll writes, the probe finds
	runMbpoll(t, addr, []string{"-r", "120", "-t", "4:float", "-B"}, "123.25")
	out = probeOK(t, "-addr", addr, "-register", "40121", "-count", "2", "-expect", "123.25")
	if m := configLine.FindStringSubmatch(out); m == nil || m[1] != "- {name: reg_40121, table: holding_register, address: 120, type: float32, order: ABCD}" {
		t.Errorf("mbpoll -B float 123.25 at 120:\n%s", out)
	}
	runMbpoll(t, addr, []string{"-r", "130", "-t", "4:int"}, "-123456")
	out = probeOK(t, "-addr", addr, "-register", "40131", "-count", "2", "-expect", "-123456")
	if m := configLine.FindStringSubmatch(out); m == nil || m[1] != "- {name: reg_40131, table: holding_register, address: 130, type: int32, order: CDAB}" {
		t.Errorf("mbpoll int -123456 at 130:\n%s", out)
	}
	runMbpoll(t, addr, []string{"-r", "140", "-t", "4:float"}, "0.5", "1000.25")
	out = probeOK(t, "-addr", addr, "-register", "40141", "-count", "4", "-expect", "1000.25", "-json")
	var doc struct {
		Matches []struct {
			Config string `json:"config"`
		} `json:"matches"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Matches) == 0 ||
		doc.Matches[0].Config != "- {name: reg_40143, table: holding_register, address: 142, type: float32, order: CDAB}" {
		t.Errorf("mbpoll float 1000.25 at 142 (%v):\n%s", err, out)
	}
	runMbpoll(t, addr, []string{"-r", "20", "-t", "0"}, "1")
	out = probeOK(t, "-addr", addr, "-table", "coil", "-address", "16", "-count", "8")
	if !strings.Contains(out, "1 of 8 on: 20\n") {
		t.Errorf("mbpoll set coil 20:\n%s", out)
	}
}

// serialPair makes two connected ptys with socat, DIR/ttyS-srv and
// DIR/ttyS-cli, and returns their paths once both exist (at most 10 s). The
// test's cleanup kills socat.
func serialPair(t *testing.T) (srv, cli string) {
	t.Helper()
	dir := t.TempDir()
	srv, cli = filepath.Join(dir, "ttyS-srv"), filepath.Join(dir, "ttyS-cli")
	cmd := exec.Command(socat, "pty,raw,echo=0,link="+srv, "pty,raw,echo=0,link="+cli)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("socat (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, e1 := os.Stat(srv)
		_, e2 := os.Stat(cli)
		if e1 == nil && e2 == nil {
			return srv, cli
		}
		select {
		case <-exited:
			t.Fatalf("socat exited: %s", errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat made no ptys in 10s: %s", errb.String())
		}
	}
}

const rtuSpec = `{"units": {"7": {"size": {"hr": 100, "ir": 100},
	"hr": [{"address": 10, "type": "float32", "order": "CDAB", "value": 230.1}],
	"ir": [{"address": 0, "type": "bcd32", "order": "ABCD", "value": 12345678}],
	"fields": [{"table": "hr", "address": 20, "type": "string", "length": 4, "order": "BA", "value": "PM5560"}],
	"co": [[3, true]]}}}`

// TestIntegrationProbeRTU: the probe on Modbus RTU, against pymodbus's RTU
// server: on a serial line (a socat pty pair, 8N1: a pty refuses parity)
// and over TCP (as a serial device server carries it).
func TestIntegrationProbeRTU(t *testing.T) {
	integration(t)
	spec := specFile(t, rtuSpec)
	srv, cli := serialPair(t)
	startPeer(t, rtuScript, "serial", srv, "19200", spec)
	port := startPeer(t, rtuScript, "tcp", "0", spec)
	for _, link := range [][]string{
		{"-rtu", cli, "-baud", "19200", "-parity", "none"},
		{"-addr", "127.0.0.1:" + port, "-rtu-tcp"},
	} {
		t.Run(link[0], func(t *testing.T) {
			args := func(more ...string) []string { return append(append([]string{"-unit", "7"}, link...), more...) }
			out := probeOK(t, args("-register", "40011", "-count", "4", "-expect", "230.1")...)
			if m := configLine.FindStringSubmatch(out); m == nil || m[1] != "- {name: reg_40011, table: holding_register, address: 10, type: float32, order: CDAB}" {
				t.Errorf("float32 CDAB 230.1:\n%s", out)
			}
			out = probeOK(t, args("-register", "30001", "-count", "2", "-expect", "12345678")...)
			if m := configLine.FindStringSubmatch(out); m == nil || m[1] != "- {name: reg_30001, table: input_register, address: 0, type: bcd32, order: ABCD}" {
				t.Errorf("bcd32 12345678:\n%s", out)
			}
			out = probeOK(t, args("-register", "40021", "-count", "4")...)
			// BA: the two characters of each register swapped
			if !strings.Contains(squeeze(out), "\n20 40021 0x4D50 19792 19792 \"MP\" \"PM\"\n") ||
				!strings.Contains(squeeze(out), "\n22 40023 0x3036 12342 12342 3036 \"06\" \"60\"\n") {
				t.Errorf("text PM5560 in BA:\n%s", out)
			}
			out = probeOK(t, args("-register", "40031", "-write", "-7.25", "-type", "float32", "-order", "CDAB")...)
			if !strings.Contains(out, "read back: 0x0000 0xC0E8 = -7.25 (the device kept it)") {
				t.Errorf("write:\n%s", out)
			}
			out = probeOK(t, args("-register", "4", "-write", "false")...)
			if !strings.Contains(out, "read back: 0x0000 = false (the device kept it)") {
				t.Errorf("coil:\n%s", out)
			}
			code, _, stderr := run(append([]string{"probe", "modbus"}, args("-register", "40099", "-count", "4")...)...)
			if code != 1 || !strings.Contains(stderr, "unit 7: read holding_register 98-101 (FC3): exception 2 (illegal data address)") {
				t.Errorf("past the end: exit %d, %s", code, stderr)
			}
			code, _, stderr = run(append([]string{"probe", "modbus", "-timeout", "300ms", "-unit", "9"}, append(link, "-address", "0")...)...)
			if code != 1 || !strings.Contains(stderr, "unit 9: read holding_register 0-7 (FC3): timeout") {
				t.Errorf("unknown unit: exit %d, %s", code, stderr)
			}
		})
	}
}
