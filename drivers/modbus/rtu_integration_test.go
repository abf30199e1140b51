//go:build linux

package modbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// The RTU integration tests run the driver against pymodbus's RTU server
// (testdata/pymodbus_rtu_server.py) on a socat pty pair, and on TCP with the
// RTU framer. Like the TCP ones, they run only when EDGED_INTEGRATION=1; then
// a missing socat, python or pymodbus is a failure. The ptys carry no
// parity: the kernel refuses PARENB on a pty (EINVAL), so the links here are
// 8N1.

const rtuServerScript = "testdata/pymodbus_rtu_server.py"

// rtuIntegration is integration(t), and socat.
func rtuIntegration(t *testing.T) {
	t.Helper()
	integration(t)
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat is required by the RTU integration tests (apt-get install socat): %v", err)
	}
}

// ptyPair starts socat with a pty pair in a temporary directory and returns
// the paths of its two ends, once both exist. The test's cleanup kills it.
func ptyPair(t *testing.T) (srv, cli string) {
	t.Helper()
	dir := t.TempDir()
	srv, cli = filepath.Join(dir, "ttyS-srv"), filepath.Join(dir, "ttyS-cli")
	out := &rtuOut{ready: make(chan string, 1)}
	cmd := exec.Command("socat", "-d", "-d", "pty,raw,echo=0,link="+srv, "pty,raw,echo=0,link="+cli)
	cmd.Stdout, cmd.Stderr = out, out
	// Should the test binary die before its cleanup (a test timeout),
	// socat goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
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
		case err := <-exited:
			exited <- err
			t.Fatalf("socat exited: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat's ptys not there after 10s")
		}
	}
}

// rtuPeer is a running pymodbus_rtu_server.py.
type rtuPeer struct {
	ready string // the device, or the TCP port
	kill  func()
}

// rtuOut collects the server's output and reports its "ready ..." line.
type rtuOut struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan string
	seen  bool
}

func (o *rtuOut) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if !o.seen {
		for _, line := range strings.Split(o.buf.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, "ready "); ok && strings.Contains(o.buf.String(), line+"\n") {
				o.seen = true
				o.ready <- strings.TrimSpace(rest)
				break
			}
		}
	}
	return len(p), nil
}

func (o *rtuOut) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// startRTUPeer starts pymodbus_rtu_server.py with args (serial DEVICE BAUD,
// or tcp PORT) and the datastore s, and waits at most 20 s for it to be
// ready. The test's cleanup stops it (by its PID).
func startRTUPeer(t *testing.T, s spec, args ...string) *rtuPeer {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out := &rtuOut{ready: make(chan string, 1)}
	cmd := exec.Command(python, append(append([]string{rtuServerScript}, args...), path)...)
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe() // the server exits when this closes
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = stdin.Close()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Errorf("pymodbus RTU server (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
			}
		})
	}
	t.Cleanup(stop)
	p := &rtuPeer{kill: stop}
	select {
	case p.ready = <-out.ready:
	case err := <-exited:
		exited <- err
		t.Fatalf("pymodbus RTU server exited before it was ready: %v\n%s", err, out.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("pymodbus RTU server not ready after 20s:\n%s", out.String())
	}
	return p
}

// rtuRig is a driver on an RTU link with one device per unit id.
func rtuRig(t *testing.T, link config.Link, points []config.Point, units ...int) *Driver {
	t.Helper()
	link.Name = "bus"
	prof := config.Profile{Name: "p", Points: points}
	var devs []config.Device
	for _, u := range units {
		devs = append(devs, config.Device{Name: fmt.Sprintf("unit-%d", u), Profile: "p", UnitID: intp(u)})
	}
	d, err := New(link, devs, profileLookup(prof), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	connect(t, d)
	return d
}

func serialLink(dev string, timeout time.Duration) config.Link {
	return config.Link{Protocol: ProtocolRTU, Device: dev, Baud: 19200, DataBits: 8, Parity: "none", StopBits: 1, Timeout: timeout}
}

// rtuUnit is a datastore with a value in every table.
func rtuUnit(n int64) unitSpec {
	return unitSpec{
		Size: map[string]int{"hr": 40, "ir": 10, "co": 24, "di": 16},
		HR:   []typed{{Address: 0, Type: "int16", Value: n}, {Address: 2, Type: "float32", Order: "CDAB", Value: 2.5}},
		IR:   []typed{{Address: 1, Type: "uint32", Value: uint64(n) * 1000}},
		CO:   [][2]any{{0, true}, {9, true}},
		DI:   [][2]any{{3, true}},
	}
}

var rtuPoints = []config.Point{
	{Name: "hr", Table: "holding_register", Address: intp(0), Type: "int16", Access: "readwrite"},                 // FC3
	{Name: "f", Table: "holding_register", Address: intp(2), Type: "float32", Order: "CDAB", Access: "readwrite"}, // FC3, FC16
	{Name: "ir", Table: "input_register", Address: intp(1), Type: "uint32"},                                       // FC4
	{Name: "co0", Table: "coil", Address: intp(0), Type: "bool", Access: "readwrite"},                             // FC1, FC5
	{Name: "co9", Table: "coil", Address: intp(9), Type: "bool"},
	{Name: "di", Table: "discrete_input", Address: intp(3), Type: "bool"}, // FC2
	{Name: "beyond", Table: "holding_register", Address: intp(1000), Type: "uint16", Access: "readwrite"},
}

// checkRTUUnit checks the samples of rtuPoints from rtuUnit(unit): hr and f
// and co0 as written, ir as unit*1000.
func checkRTUUnit(t *testing.T, s []telemetry.Sample, unit, hr int64, f float64, co0 bool) {
	t.Helper()
	want := []telemetry.Value{telemetry.Int(hr), telemetry.Float(f), telemetry.Uint(uint64(unit) * 1000), telemetry.Bool(co0), telemetry.Bool(true), telemetry.Bool(true)}
	for i, w := range want {
		if s[i].Quality != telemetry.Good || !s[i].Value.Equal(w) {
			t.Errorf("%s: %v %s %q, want %v", rtuPoints[i].Name, s[i].Value, s[i].Quality, s[i].Reason, w)
		}
	}
	if b := s[6]; b.Quality != telemetry.Bad || b.Reason != "exception 2 (illegal data address)" {
		t.Errorf("beyond: %v %s %q, want exception 2", b.Value, b.Quality, b.Reason)
	}
}

// rtuLines runs f on a serial link (socat pty pair) and on RTU over TCP,
// each against pymodbus with the datastore s.
func rtuLines(t *testing.T, s spec, timeout time.Duration, f func(t *testing.T, link config.Link, peer *rtuPeer)) {
	t.Run("serial", func(t *testing.T) {
		rtuIntegration(t)
		srv, cli := ptyPair(t)
		p := startRTUPeer(t, s, "serial", srv, "19200")
		f(t, serialLink(cli, timeout), p)
	})
	t.Run("tcp", func(t *testing.T) {
		integration(t)
		p := startRTUPeer(t, s, "tcp", "0")
		f(t, config.Link{Protocol: ProtocolRTUOverTCP, Address: "127.0.0.1:" + p.ready, Timeout: timeout}, p)
	})
}

// TestIntegrationRTU: every read and write function, several units on one
// line with one absent, exceptions.
func TestIntegrationRTU(t *testing.T) {
	s := spec{Units: map[string]unitSpec{"1": rtuUnit(11), "3": rtuUnit(33)}}
	rtuLines(t, s, 300*time.Millisecond, func(t *testing.T, link config.Link, _ *rtuPeer) {
		d := rtuRig(t, link, rtuPoints, 1, 2, 3)
		ctx := t.Context()
		checkRTUUnit(t, poll(t, d, 0), 11, 11, 2.5, true)
		checkRTUUnit(t, poll(t, d, 2), 33, 33, 2.5, true)
		for range 2 {
			start := time.Now()
			_, err := d.Poll(ctx, 1, nil)
			if !errors.Is(err, drivers.ErrTimeout) || errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), `device "unit-2" (unit 2)`) {
				t.Fatalf("absent unit: %v, want ErrTimeout naming it", err)
			}
			if el := time.Since(start); el < 250*time.Millisecond || el > 900*time.Millisecond {
				t.Errorf("absent unit timed out after %v; timeout 300ms", el)
			}
			t.Log(err)
			// the others keep answering
			checkRTUUnit(t, poll(t, d, 0), 11, 11, 2.5, true)
			checkRTUUnit(t, poll(t, d, 2), 33, 33, 2.5, true)
		}

		// writes: FC5, FC6, FC16, then FC15 through the driver's client
		for pt, v := range map[int]telemetry.Value{3: telemetry.Bool(false), 0: telemetry.Int(-1234), 1: telemetry.Float(-0.75)} {
			if err := d.Write(ctx, 2, pt, v); err != nil {
				t.Fatalf("Write %s = %v: %v", rtuPoints[pt].Name, v, err)
			}
		}
		checkRTUUnit(t, poll(t, d, 2), 33, -1234, -0.75, false)
		checkRTUUnit(t, poll(t, d, 0), 11, 11, 2.5, true) // unit 1 untouched
		d.begin(ctx, &d.devices[2])
		if res, err := d.client.WriteMultipleCoils(0, 10, []byte{0x01, 0x00}); err != nil || !bytes.Equal(res, []byte{0, 10}) {
			t.Fatalf("FC15: % x, %v", res, err)
		}
		s := poll(t, d, 2)
		if !s[3].Value.Equal(telemetry.Bool(true)) || !s[4].Value.Equal(telemetry.Bool(false)) {
			t.Errorf("after FC15 (coils 0-9 = 1000000000): co0 %v co9 %v", s[3].Value, s[4].Value)
		}

		// an exception on a write: the device refuses, the line is fine
		if err := d.Write(ctx, 0, 6, telemetry.Uint(1)); !errors.Is(err, drivers.ErrDevice) || !strings.Contains(err.Error(), "exception 2 (illegal data address)") {
			t.Fatalf("write beyond: %v, want ErrDevice with exception 2", err)
		}
		checkRTUUnit(t, poll(t, d, 0), 11, 11, 2.5, true)
	})
}

// TestIntegrationRTULateReply: a unit answers after the client gave up. Its
// reply must never be taken for the answer to a later request: whether it
// arrives while the line is idle (flushed or drained before the next
// request) or during the next exchange (rejected: a reply from the wrong
// unit), the reads that follow are right. And a cancelled request ends
// within the serial read granularity, without breaking the link.
func TestIntegrationRTULateReply(t *testing.T) {
	fast := unitSpec{HR: []typed{{Address: 0, Type: "int16", Value: int64(1111)}}}
	slow := unitSpec{HR: []typed{{Address: 0, Type: "int16", Value: int64(2222)}}, Delay: 0.8}
	s := spec{Units: map[string]unitSpec{"1": fast, "7": slow}}
	points := []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "int16"}}
	rtuLines(t, s, 2*time.Second, func(t *testing.T, link config.Link, _ *rtuPeer) {
		d := rtuRig(t, link, points, 1, 7)
		value := func() telemetry.Value {
			t.Helper()
			return poll(t, d, 0)[0].Value
		}
		slowPoll := func() {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := d.Poll(ctx, 1, nil)
			if !errors.Is(err, drivers.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("slow unit: %v, want ErrTimeout from the ctx deadline", err)
			}
			if el := time.Since(start); el > 500*time.Millisecond {
				t.Errorf("ctx deadline 200ms, returned after %v", el)
			}
		}

		// the late reply arrives while the line is idle
		slowPoll()
		time.Sleep(time.Second)
		for range 3 {
			if v := value(); !v.Equal(telemetry.Int(1111)) {
				t.Fatalf("unit 1 read %v after unit 7's late reply", v)
			}
		}

		// the late reply arrives during the next exchange
		slowPoll()
		_, err := d.Poll(t.Context(), 0, nil)
		if !errors.Is(err, drivers.ErrTimeout) || errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), "wrong unit id: reply from unit 7 to a request to unit 1") {
			t.Fatalf("unit 1 while unit 7's late reply comes in: %v, want a garbled reply from unit 7", err)
		}
		t.Log(err)
		for range 3 {
			if v := value(); !v.Equal(telemetry.Int(1111)) {
				t.Fatalf("unit 1 read %v after unit 7's late reply", v)
			}
		}

		// cancellation
		ctx, cancel := context.WithCancel(t.Context())
		timer := time.AfterFunc(100*time.Millisecond, cancel)
		defer timer.Stop()
		start := time.Now()
		_, err = d.Poll(ctx, 1, nil)
		cancel()
		if !errors.Is(err, context.Canceled) || errors.Is(err, drivers.ErrLinkBroken) {
			t.Fatalf("cancelled poll: %v, want context.Canceled", err)
		}
		if el := time.Since(start); el > 400*time.Millisecond {
			t.Errorf("cancelled after 100ms, returned after %v", el)
		}
		time.Sleep(time.Second) // unit 7's reply comes and goes
		if v := value(); !v.Equal(telemetry.Int(1111)) {
			t.Fatalf("unit 1 read %v after a cancelled poll", v)
		}
	})
}

// TestIntegrationRTUPeerGone: the peer goes away. Over TCP the connection
// breaks (ErrLinkBroken, then ErrNotConnected until Connect); on a serial
// line nothing tells: the device just stops answering (ErrTimeout), and the
// port stays open.
func TestIntegrationRTUPeerGone(t *testing.T) {
	s := spec{Units: map[string]unitSpec{"1": rtuUnit(5)}}
	rtuLines(t, s, 300*time.Millisecond, func(t *testing.T, link config.Link, p *rtuPeer) {
		d := rtuRig(t, link, rtuPoints, 1)
		checkRTUUnit(t, poll(t, d, 0), 5, 5, 2.5, true)
		p.kill()
		_, err := d.Poll(t.Context(), 0, nil)
		if link.Protocol == ProtocolRTU {
			if !errors.Is(err, drivers.ErrTimeout) {
				t.Fatalf("serial peer gone: %v, want ErrTimeout", err)
			}
			return
		}
		if !errors.Is(err, drivers.ErrLinkBroken) {
			t.Fatalf("device server gone: %v, want ErrLinkBroken", err)
		}
		t.Log(err)
		if _, err := d.Poll(t.Context(), 0, nil); !errors.Is(err, drivers.ErrNotConnected) {
			t.Fatalf("after a broken link: %v, want ErrNotConnected", err)
		}
		if err := d.Connect(t.Context()); !errors.Is(err, drivers.ErrNotConnected) || !strings.Contains(err.Error(), "device server 127.0.0.1:") {
			t.Fatalf("Connect with no server: %v", err)
		}
		port, _ := strconv.Atoi(p.ready)
		startRTUPeer(t, s, "tcp", strconv.Itoa(port))
		var cerr error
		for range 50 {
			if cerr = d.Connect(t.Context()); cerr == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if cerr != nil {
			t.Fatal(cerr)
		}
		checkRTUUnit(t, poll(t, d, 0), 5, 5, 2.5, true)
	})
}

// TestIntegrationRTUGarbled: a scripted peer on the pty answers with a bad
// CRC, a short frame, a reply from another unit, a reply with junk after it:
// each is an error wrapping ErrTimeout that says what was wrong, the port
// stays open, and the next request gets its answer.
func TestIntegrationRTUGarbled(t *testing.T) {
	rtuIntegration(t)
	srv, cli := ptyPair(t)
	peer, err := os.OpenFile(srv, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	good := rtuFrame(1, 3, 2, 0x30, 0x39) // 12345
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1] ^= 0x5a
	script := [][]byte{
		badCRC,
		good[:4], // then nothing
		rtuFrame(4, 3, 2, 0x30, 0x39),
		good,
		append(bytes.Clone(good), 0xde, 0xad, 0xbe, 0xef), // junk after a good reply
		good,
		good,
	}
	done := make(chan struct{}) // closed when the peer has ended, with peerErr
	var peerErr error
	go func() {
		defer close(done)
		var req [8]byte
		for _, reply := range script {
			if _, err := io.ReadFull(peer, req[:]); err != nil {
				peerErr = err
				return
			}
			if !bytes.Equal(req[:], rtuFrame(1, 3, 0, 0, 0, 1)) {
				peerErr = fmt.Errorf("request % x", req)
				return
			}
			if _, err := peer.Write(reply); err != nil {
				peerErr = err
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = peer.Close() // ends a Read in progress
		<-done
	})
	d := rtuRig(t, serialLink(cli, 500*time.Millisecond), []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}, 1)
	for i, want := range []string{
		"CRC error",
		"short frame: 4 of 7 bytes, then silence for 20ms",
		"wrong unit id: reply from unit 4 to a request to unit 1",
		"",
		"", // the junk is not read with the reply...
		"", // ...and flushed before the next request
		"",
	} {
		if i == 5 {
			time.Sleep(50 * time.Millisecond) // the junk is in the port's buffer
		}
		s, err := d.Poll(t.Context(), 0, nil)
		if want == "" {
			if err != nil || !s[0].Value.Equal(telemetry.Uint(12345)) {
				t.Fatalf("poll %d: %v, %v", i, s, err)
			}
			continue
		}
		if !errors.Is(err, drivers.ErrTimeout) || errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `device "unit-1" (unit 1)`) {
			t.Fatalf("poll %d: %v, want ErrTimeout saying %q", i, err, want)
		}
		t.Log(err)
	}
	select {
	case <-done:
		if peerErr != nil {
			t.Fatal(peerErr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer did not finish its script")
	}
}
