package modbussim

import (
	"context"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The integration tests check the simulator against an independent client,
// mbpoll (Debian package mbpoll). They run when EDGED_INTEGRATION=1; then a
// missing mbpoll is a failure, not a skip.

func needMbpoll(t *testing.T) string {
	t.Helper()
	if os.Getenv("EDGED_INTEGRATION") != "1" {
		t.Skip("set EDGED_INTEGRATION=1 to run integration tests")
	}
	path, err := exec.LookPath("mbpoll")
	if err != nil {
		t.Fatalf("EDGED_INTEGRATION=1 but mbpoll is not installed (apt-get install mbpoll): %v", err)
	}
	return path
}

// mbpoll runs mbpoll once (-1), zero-based (-0), against s with a bounded
// wait, and returns its combined output and whether it succeeded.
func mbpoll(t *testing.T, bin string, s *Server, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	port := strconv.Itoa(s.Addr().(*net.TCPAddr).Port)
	// options first, then the host, then any values to write ("--" lets
	// negative values through)
	var opts, vals []string
	for i, a := range args {
		if a == "--" {
			opts, vals = args[:i], args[i:]
			break
		}
	}
	if vals == nil {
		opts = args
	}
	argv := append([]string{"-m", "tcp", "-p", port, "-0", "-1", "-o", "2"}, opts...)
	argv = append(argv, "127.0.0.1")
	argv = append(argv, vals...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("mbpoll %s: timed out\n%s", strings.Join(argv, " "), out)
	}
	return string(out), err == nil
}

var valueLine = regexp.MustCompile(`(?m)^\[(\d+)\]:\s+(\S+)`)

// values parses mbpoll's "[ref]: value" lines.
func values(out string) map[int]string {
	m := map[int]string{}
	for _, v := range valueLine.FindAllStringSubmatch(out, -1) {
		ref, _ := strconv.Atoi(v[1])
		m[ref] = v[2]
	}
	return m
}

func integrationConfig() Config {
	return Config{Units: []Unit{{ID: 1, Tables: Tables{
		Coils: []Signal{
			{Address: 0, Generator: c(1)}, {Address: 1, Generator: c(0)},
			{Address: 2, Generator: c(1)}, {Address: 3, Generator: c(1)},
			{Address: 10, Count: 8, Generator: c(0)}, // writable
		},
		DiscreteInputs: []Signal{{Address: 0, Generator: c(0)}, {Address: 1, Generator: c(1)}},
		InputRegisters: []Signal{
			{Address: 0, Generator: Generator{Counter: &Counter{Start: 100, Step: 1, Per: 50 * time.Millisecond}}},
			{Address: 1, Type: "int16", Scale: 0.1, Generator: c(-21.7)},
			{Address: 2, Type: "float32", Order: "ABCD", Generator: c(49.75)},
		},
		HoldingRegisters: []Signal{
			{Address: 0, Generator: c(11)}, {Address: 1, Generator: c(22)},
			{Address: 2, Generator: c(33)}, {Address: 3, Generator: c(44)},
			{Address: 20, Type: "float32", Order: "ABCD", Generator: c(230.5)},
			{Address: 22, Type: "float32", Order: "CDAB", Generator: c(-1.25)},
			{Address: 24, Type: "int32", Order: "ABCD", Generator: c(-123456)},
			{Address: 26, Type: "uint32", Order: "CDAB", Generator: c(305419896)},
			{Address: 100, Count: 10, Generator: c(0)}, // writable
			{Address: 200, Type: "float32", Order: "ABCD", Generator: Generator{Sine: &Sine{Amplitude: 5, Offset: 230, Period: time.Minute}}},
		},
	}}}}
}

func TestMbpoll(t *testing.T) {
	bin := needMbpoll(t)
	s := startServer(t, integrationConfig())

	read := func(t *testing.T, args ...string) map[int]string {
		t.Helper()
		out, ok := mbpoll(t, bin, s, args...)
		if !ok {
			t.Fatalf("mbpoll %v failed:\n%s", args, out)
		}
		return values(out)
	}
	expect := func(t *testing.T, got map[int]string, want map[int]string) {
		t.Helper()
		for ref, w := range want {
			if got[ref] != w {
				t.Errorf("[%d] = %q, want %q (all: %v)", ref, got[ref], w, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("got %d values, want %d: %v", len(got), len(want), got)
		}
	}

	t.Run("holding registers", func(t *testing.T) {
		expect(t, read(t, "-a", "1", "-t", "4", "-r", "0", "-c", "4"),
			map[int]string{0: "11", 1: "22", 2: "33", 3: "44"})
	})
	t.Run("float ABCD with -B", func(t *testing.T) {
		expect(t, read(t, "-t", "4:float", "-B", "-r", "20", "-c", "1"), map[int]string{20: "230.5"})
	})
	t.Run("float CDAB is mbpoll's default word order", func(t *testing.T) {
		expect(t, read(t, "-t", "4:float", "-r", "22", "-c", "1"), map[int]string{22: "-1.25"})
	})
	t.Run("int32 ABCD and CDAB", func(t *testing.T) {
		expect(t, read(t, "-t", "4:int", "-B", "-r", "24", "-c", "1"), map[int]string{24: "-123456"})
		expect(t, read(t, "-t", "4:int", "-r", "26", "-c", "1"), map[int]string{26: "305419896"})
	})
	t.Run("input registers", func(t *testing.T) {
		got := read(t, "-t", "3", "-r", "1", "-c", "1")
		expect(t, got, map[int]string{1: "65319"}) // -217 as uint16
		expect(t, read(t, "-t", "3:float", "-B", "-r", "2", "-c", "1"), map[int]string{2: "49.75"})
	})
	t.Run("coils and discrete inputs", func(t *testing.T) {
		expect(t, read(t, "-t", "0", "-r", "0", "-c", "4"), map[int]string{0: "1", 1: "0", 2: "1", 3: "1"})
		expect(t, read(t, "-t", "1", "-r", "0", "-c", "2"), map[int]string{0: "0", 1: "1"})
	})
	t.Run("counter increases", func(t *testing.T) {
		first, _ := strconv.Atoi(read(t, "-t", "3", "-r", "0", "-c", "1")[0])
		time.Sleep(200 * time.Millisecond) // 4 steps of 50ms
		second, _ := strconv.Atoi(read(t, "-t", "3", "-r", "0", "-c", "1")[0])
		if first < 100 || second < first+3 {
			t.Errorf("counter %d then %d, want >= 100 and rising by >= 3", first, second)
		}
	})
	t.Run("sine stays in range", func(t *testing.T) {
		v, err := strconv.ParseFloat(read(t, "-t", "4:float", "-B", "-r", "200", "-c", "1")[200], 64)
		if err != nil || v < 225 || v > 235 {
			t.Errorf("sine %v (%v), want 225..235", v, err)
		}
	})
	t.Run("illegal data address", func(t *testing.T) {
		out, ok := mbpoll(t, bin, s, "-t", "4", "-r", "50", "-c", "2")
		if ok || !strings.Contains(out, "Illegal data address") {
			t.Errorf("unmapped read: ok=%v\n%s", ok, out)
		}
		out, ok = mbpoll(t, bin, s, "-t", "4", "-r", "2", "-c", "3") // 2, 3 mapped, 4 not
		if ok || !strings.Contains(out, "Illegal data address") {
			t.Errorf("partly mapped read: ok=%v\n%s", ok, out)
		}
	})
	t.Run("write single register (FC6) and read back", func(t *testing.T) {
		if out, ok := mbpoll(t, bin, s, "-t", "4", "-r", "105", "--", "1234"); !ok {
			t.Fatalf("write: %s", out)
		}
		expect(t, read(t, "-t", "4", "-r", "104", "-c", "3"), map[int]string{104: "0", 105: "1234", 106: "0"})
	})
	t.Run("write multiple registers (FC16) and read back", func(t *testing.T) {
		if out, ok := mbpoll(t, bin, s, "-t", "4", "-r", "100", "--", "7", "8", "9"); !ok {
			t.Fatalf("write: %s", out)
		}
		expect(t, read(t, "-t", "4", "-r", "100", "-c", "4"), map[int]string{100: "7", 101: "8", 102: "9", 103: "0"})
	})
	t.Run("write float over a sine and read back", func(t *testing.T) {
		if out, ok := mbpoll(t, bin, s, "-t", "4:float", "-B", "-r", "200", "--", "-12.5"); !ok {
			t.Fatalf("write: %s", out)
		}
		expect(t, read(t, "-t", "4:float", "-B", "-r", "200", "-c", "1"), map[int]string{200: "-12.5"})
	})
	t.Run("write coils (FC5, FC15) and read back", func(t *testing.T) {
		if out, ok := mbpoll(t, bin, s, "-t", "0", "-r", "10", "--", "1"); !ok {
			t.Fatalf("write: %s", out)
		}
		if out, ok := mbpoll(t, bin, s, "-t", "0", "-r", "12", "--", "1", "0", "1"); !ok {
			t.Fatalf("write: %s", out)
		}
		expect(t, read(t, "-t", "0", "-r", "10", "-c", "6"),
			map[int]string{10: "1", 11: "0", 12: "1", 13: "0", 14: "1", 15: "0"})
	})
	t.Run("write to a read-only or unmapped address", func(t *testing.T) {
		out, ok := mbpoll(t, bin, s, "-t", "4", "-r", "50", "--", "1")
		if ok || !strings.Contains(out, "Illegal data address") {
			t.Errorf("ok=%v\n%s", ok, out)
		}
	})
	t.Run("unknown unit times out", func(t *testing.T) {
		out, ok := mbpoll(t, bin, s, "-a", "7", "-o", "0.3", "-t", "4", "-r", "0", "-c", "1")
		if ok || !strings.Contains(out, "timed out") {
			t.Errorf("ok=%v\n%s", ok, out)
		}
	})
	t.Run("parallel clients", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ref := strconv.Itoa(i % 4)
				out, ok := mbpoll(t, bin, s, "-t", "4", "-r", ref, "-c", "1")
				want := strconv.Itoa(11 * (i%4 + 1))
				if v := values(out)[i%4]; !ok || v != want {
					t.Errorf("client %d: %q, want %s\n%s", i, v, want, out)
				}
			}()
		}
		wg.Wait()
	})
	st := s.Stats()
	t.Logf("server stats: %+v", st)
	if st.Malformed != 0 || st.Unanswered != 1 {
		t.Errorf("stats %+v, want no malformed frames and one unanswered request", st)
	}
}

func TestMbpollUnknownUnitException(t *testing.T) {
	bin := needMbpoll(t)
	cfg := integrationConfig()
	cfg.UnknownUnit = "exception"
	s := startServer(t, cfg)
	out, ok := mbpoll(t, bin, s, "-a", "7", "-t", "4", "-r", "0", "-c", "1")
	if ok || !strings.Contains(out, "Target device failed to respond") {
		t.Errorf("ok=%v\n%s", ok, out)
	}
}

// TestMbpollDemo reads the demo config's meters as a commissioning engineer
// would.
func TestMbpollDemo(t *testing.T) {
	bin := needMbpoll(t)
	cfg, err := LoadConfig("testdata/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)
	for _, unit := range []string{"1", "2"} {
		out, ok := mbpoll(t, bin, s, "-a", unit, "-t", "3:float", "-B", "-r", "0", "-c", "3")
		if !ok {
			t.Fatalf("unit %s: %s", unit, out)
		}
		v := values(out)
		volt, _ := strconv.ParseFloat(v[0], 64)
		amp, _ := strconv.ParseFloat(v[2], 64)
		hz, _ := strconv.ParseFloat(v[4], 64)
		if volt < 226 || volt > 234 || amp < 0 || amp > 40 || hz < 49.9 || hz > 50.1 {
			t.Errorf("unit %s: voltage %v, current %v, frequency %v out of range\n%s", unit, volt, amp, hz, out)
		}
		out, ok = mbpoll(t, bin, s, "-a", unit, "-t", "3:int", "-B", "-r", "6", "-c", "1")
		if e, _ := strconv.Atoi(values(out)[6]); !ok || e < 1200000 {
			t.Errorf("unit %s: energy %d\n%s", unit, e, out)
		}
		out, ok = mbpoll(t, bin, s, "-a", unit, "-t", "3", "-r", "8", "-c", "1")
		if raw, _ := strconv.Atoi(values(out)[8]); !ok || raw < 100 || raw > 450 {
			t.Errorf("unit %s: temperature raw %d, want 100..450 (°C × 10)\n%s", unit, raw, out)
		}
	}
}
