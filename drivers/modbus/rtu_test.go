package modbus

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// fakeRTUClock is the transporter's time in tests: sleeping moves it on at once.
type fakeRTUClock struct {
	t     time.Time
	slept time.Duration
}

func (c *fakeRTUClock) now() time.Time { return c.t }

func (c *fakeRTUClock) sleepUntil(ctx context.Context, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if until.After(c.t) {
		c.slept += until.Sub(c.t)
		c.t = until
	}
	return nil
}

// rtuArrival is bytes that reach the client after a delay.
type rtuArrival struct {
	after time.Duration
	data  []byte
}

type rtuPending struct {
	at   time.Time
	data []byte
}

// fakeRTULine is a scripted peer on a line with the fake clock: answer gives
// the arrivals that follow each request, relative to its write.
type fakeRTULine struct {
	clk    *fakeRTUClock
	answer func(req []byte) []rtuArrival
	queue  []rtuPending
	writes []rtuPending // each request and when it was written
	reads  int
	failOn string // "read", "write": the port fails
	// vtime > 0 reads like a serial port: a read ignores its until and
	// waits up to vtime for the first byte.
	vtime   time.Duration
	flushed int // bytes discarded by flush
	closed  bool
}

func (l *fakeRTULine) schedule(from time.Time, as ...rtuArrival) {
	for _, a := range as {
		p := rtuPending{at: from.Add(a.after), data: bytes.Clone(a.data)}
		i := len(l.queue)
		for i > 0 && l.queue[i-1].at.After(p.at) {
			i--
		}
		l.queue = append(l.queue[:i], append([]rtuPending{p}, l.queue[i:]...)...)
	}
}

func (l *fakeRTULine) read(ctx context.Context, p []byte, until time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l.reads++
	if l.failOn == "read" {
		return 0, errors.New("fake port: read: input/output error")
	}
	if l.vtime > 0 {
		until = l.clk.t.Add(l.vtime)
	}
	if len(l.queue) > 0 && !l.queue[0].at.After(until) {
		if l.queue[0].at.After(l.clk.t) {
			l.clk.t = l.queue[0].at
		}
		n := copy(p, l.queue[0].data)
		l.queue[0].data = l.queue[0].data[n:]
		if len(l.queue[0].data) == 0 {
			l.queue = l.queue[1:]
		}
		return n, nil
	}
	if until.After(l.clk.t) {
		l.clk.t = until
	}
	return 0, nil
}

func (l *fakeRTULine) flush() error {
	for len(l.queue) > 0 && !l.queue[0].at.After(l.clk.t) {
		l.flushed += len(l.queue[0].data)
		l.queue = l.queue[1:]
	}
	return nil
}

func (l *fakeRTULine) write(p []byte, _ time.Time) error {
	if l.failOn == "write" {
		return errors.New("fake port: write: input/output error")
	}
	l.writes = append(l.writes, rtuPending{at: l.clk.t, data: bytes.Clone(p)})
	if l.answer != nil {
		l.schedule(l.clk.t, l.answer(p)...)
	}
	return nil
}

func (l *fakeRTULine) close() error { l.closed = true; return nil }

// fakeRTU is an open RTU transporter at baud (8N1; 0: RTU over TCP) on a
// fake line.
func fakeRTU(t testing.TB, baud int, answer func([]byte) []rtuArrival) (*rtuTransport, *fakeRTULine) {
	t.Helper()
	link := config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/fake", Baud: baud, Parity: "none", Timeout: time.Second}
	if baud == 0 {
		link = config.Link{Name: "l", Protocol: ProtocolRTUOverTCP, Address: "127.0.0.1:1", Timeout: time.Second}
	}
	tr, err := newTransporter(link, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeRTUClock{t: time.Now()} // near the real time: ctx deadlines are real
	line := &fakeRTULine{clk: clk, answer: answer}
	tr.clock = clk
	tr.openLine = func(context.Context, time.Duration) (rtuLine, error) { return line, nil }
	if err := tr.open(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	return tr, line
}

// frame appends the CRC to b.
func rtuFrame(b ...byte) []byte {
	c := crc16(b)
	return append(b, byte(c), byte(c>>8))
}

func rtuHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestCRC16 checks the CRC against frames pymodbus 3.0.0 built.
func TestCRC16(t *testing.T) {
	for _, f := range []string{
		"01 03 00 00 00 03 05 cb",
		"01 03 06 00 00 00 01 00 02 f1 74",
		"01 83 02 c0 f1",
		"01 03 02 00 01 79 84",
		"02 03 00 00 00 03 05 f8",
	} {
		b := rtuHex(f)
		if !bytes.Equal(rtuFrame(b[:len(b)-2]...), b) {
			t.Errorf("%s: CRC % x, want % x", f, rtuFrame(b[:len(b)-2]...)[len(b)-2:], b[len(b)-2:])
		}
	}
}

func TestSerialTiming(t *testing.T) {
	for _, tc := range []struct {
		baud, bits     int
		t35, interChar time.Duration
	}{
		{9600, 11, 4010416 * time.Nanosecond, interCharFloor},
		{19200, 11, 2005208 * time.Nanosecond, interCharFloor},
		{19200, 10, 1822916 * time.Nanosecond, interCharFloor},
		{38400, 11, 1750 * time.Microsecond, interCharFloor}, // fixed above 19200
		{115200, 11, 1750 * time.Microsecond, interCharFloor},
		{1200, 11, 32083333 * time.Nanosecond, interCharFloor}, // 1.5 chars: 13.75 ms
		{300, 11, 128333333 * time.Nanosecond, 55 * time.Millisecond},
	} {
		tm := serialTiming(tc.baud, tc.bits)
		if tm.t35.Round(time.Microsecond) != tc.t35.Round(time.Microsecond) || tm.interChar != tc.interChar || tm.silence != tm.t35 {
			t.Errorf("%d baud %d bits: t3.5 %v inter-char %v silence %v, want %v %v", tc.baud, tc.bits, tm.t35, tm.interChar, tm.silence, tc.t35, tc.interChar)
		}
	}
}

// TestRTUReplies runs one request against scripted reply streams: byte
// fixtures for every function the driver sends and every way a reply can be
// wrong.
func TestRTUReplies(t *testing.T) {
	rd3 := rtuFrame(1, 3, 0, 0, 0, 3)
	good3 := rtuHex("01 03 06 00 00 00 01 00 02 f1 74") // pymodbus's reply
	now := func(b []byte) []rtuArrival { return []rtuArrival{{time.Millisecond, b}} }
	for _, tc := range []struct {
		name    string
		req     []byte
		reply   []rtuArrival
		want    []byte // nil: an error
		errText string
	}{
		{"FC3", rd3, now(good3), good3, ""},
		{"FC3 in pieces", rd3, []rtuArrival{{time.Millisecond, good3[:1]}, {2 * time.Millisecond, good3[1:3]}, {5 * time.Millisecond, good3[3:]}}, good3, ""},
		{"FC1", rtuFrame(1, 1, 0, 0, 0, 10), now(rtuFrame(1, 1, 2, 0xff, 0x03)), rtuFrame(1, 1, 2, 0xff, 0x03), ""},
		{"FC2", rtuFrame(9, 2, 0, 4, 0, 8), now(rtuFrame(9, 2, 1, 0x81)), rtuFrame(9, 2, 1, 0x81), ""},
		{"FC4", rtuFrame(247, 4, 0, 1, 0, 1), now(rtuFrame(247, 4, 2, 0x12, 0x34)), rtuFrame(247, 4, 2, 0x12, 0x34), ""},
		{"FC5", rtuFrame(1, 5, 0, 3, 0xff, 0), now(rtuFrame(1, 5, 0, 3, 0xff, 0)), rtuFrame(1, 5, 0, 3, 0xff, 0), ""},
		{"FC6", rtuFrame(1, 6, 0, 10, 0x30, 0x39), now(rtuFrame(1, 6, 0, 10, 0x30, 0x39)), rtuFrame(1, 6, 0, 10, 0x30, 0x39), ""},
		{"FC15", rtuFrame(1, 15, 0, 0, 0, 10, 2, 0xff, 0x03), now(rtuFrame(1, 15, 0, 0, 0, 10)), rtuFrame(1, 15, 0, 0, 0, 10), ""},
		{"FC16", rtuFrame(1, 16, 0, 12, 0, 2, 4, 1, 2, 3, 4), now(rtuFrame(1, 16, 0, 12, 0, 2)), rtuFrame(1, 16, 0, 12, 0, 2), ""},
		{"exception", rd3, now(rtuHex("01 83 02 c0 f1")), rtuHex("01 83 02 c0 f1"), ""},
		{"no reply", rd3, nil, nil, "timeout: no reply within 1s on serial port /dev/fake"},
		{"CRC error", rd3, now(append(good3[:9:9], 0, 0)), nil, "CRC error: the frame says 0000, its bytes give 74f1"},
		{"wrong unit", rd3, now(rtuFrame(2, 3, 6, 0, 0, 0, 1, 0, 2)), nil, "wrong unit id: reply from unit 2 to a request to unit 1"},
		{"wrong function", rd3, now(rtuFrame(1, 4, 6, 0, 0, 0, 1, 0, 2)), nil, "wrong function: reply with function 0x04 to a request with function 0x03"},
		{"wrong exception function", rd3, now(rtuFrame(1, 0x84, 2)), nil, "wrong function: reply with function 0x84"},
		{"wrong byte count", rd3, now(rtuFrame(1, 3, 4, 0, 0, 0, 1)), nil, "wrong byte count: 4, the request asks for 6"},
		{"short frame", rd3, now(good3[:7]), nil, "short frame: 7 of 11 bytes, then silence for 20ms"},
		{"short head", rd3, now(good3[:1]), nil, "short frame: an incomplete reply, then silence for 20ms"},
		{"gap inside", rd3, []rtuArrival{{time.Millisecond, good3[:4]}, {30 * time.Millisecond, good3[4:]}}, nil, "short frame: 4 of 11 bytes, then silence for 20ms"},
		{"no echo FC6", rtuFrame(1, 6, 0, 10, 0x30, 0x39), now(rtuFrame(1, 6, 0, 10, 0x30, 0x38)), nil, "the reply does not echo the write: 00 0a 30 38, request 00 0a 30 39"},
		{"no echo FC16", rtuFrame(1, 16, 0, 12, 0, 2, 4, 1, 2, 3, 4), now(rtuFrame(1, 16, 0, 12, 0, 1)), nil, "does not echo the write"},
		{"gap inside, coarse reads", rd3, []rtuArrival{{time.Millisecond, good3[:4]}, {30 * time.Millisecond, good3[4:]}}, nil, "short frame: a gap of 29ms after 4 bytes [01 03 06 00 00 00 01 00 02 f1 74]"},
		{"noise", rd3, now([]byte{0xff, 0xfe, 0xfd}), nil, "wrong unit id: reply from unit 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, line := fakeRTU(t, 19200, func([]byte) []rtuArrival { return tc.reply })
			if strings.Contains(tc.name, "coarse") {
				line.vtime = serialReadTimeout
			}
			tr.begin(context.Background(), tc.req[0], time.Second)
			got, err := tr.Send(tc.req)
			if tc.want != nil {
				if err != nil || !bytes.Equal(got, tc.want) {
					t.Fatalf("Send: % x, %v; want % x", got, err, tc.want)
				}
				if tr.dirty {
					t.Error("a good exchange left the line to be drained")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("Send: % x, %v; want an error containing %q", got, err, tc.errText)
			}
			var re *replyError
			if !errors.As(err, &re) || !errors.Is(err, drivers.ErrTimeout) || errors.Is(err, drivers.ErrLinkBroken) {
				t.Errorf("%v: want a replyError wrapping ErrTimeout only", err)
			}
			if !tr.dirty {
				t.Error("a failed exchange does not drain the line before the next")
			}
			if len(line.writes) != 1 {
				t.Errorf("%d writes", len(line.writes))
			}
		})
	}
}

// TestRTUGoburrowClient runs goburrow's client (the driver's) over the
// transporter: the packager frames, our transporter carries and checks.
func TestRTUGoburrowClient(t *testing.T) {
	regs := map[uint16]uint16{0: 11, 1: 22, 2: 33}
	tr, _ := fakeRTU(t, 9600, func(req []byte) []rtuArrival {
		switch req[1] {
		case 3:
			a, n := int(req[3]), int(req[5])
			out := []byte{req[0], 3, byte(2 * n)}
			for i := range n {
				v := regs[uint16(a+i)]
				out = append(out, byte(v>>8), byte(v))
			}
			return []rtuArrival{{3 * time.Millisecond, rtuFrame(out...)}}
		case 6:
			regs[uint16(req[3])] = uint16(req[4])<<8 | uint16(req[5])
			return []rtuArrival{{3 * time.Millisecond, req}}
		}
		return []rtuArrival{{time.Millisecond, rtuFrame(req[0], req[1]|0x80, 1)}}
	})
	c := modbus.NewClient2(tr.packager, tr)
	tr.begin(context.Background(), 5, time.Second)
	if res, err := c.ReadHoldingRegisters(0, 3); err != nil || !bytes.Equal(res, []byte{0, 11, 0, 22, 0, 33}) {
		t.Fatalf("FC3: % x, %v", res, err)
	}
	if _, err := c.WriteSingleRegister(1, 0x1234); err != nil {
		t.Fatalf("FC6: %v", err)
	}
	if res, err := c.ReadHoldingRegisters(1, 1); err != nil || !bytes.Equal(res, []byte{0x12, 0x34}) {
		t.Fatalf("FC3 after FC6: % x, %v", res, err)
	}
	_, err := c.ReadInputRegisters(0, 1)
	var me *modbus.ModbusError
	if !errors.As(err, &me) || me.ExceptionCode != 1 || me.FunctionCode != 0x84 {
		t.Fatalf("exception: %v", err)
	}
}

// TestRTUSilence: t3.5 is kept from the last byte on the line, the
// inter-request delay when it is longer, and no more.
func TestRTUSilence(t *testing.T) {
	echo := func(req []byte) []rtuArrival {
		return []rtuArrival{{2 * time.Millisecond, rtuFrame(req[0], 3, 2, 0, 7)}}
	}
	req := rtuFrame(1, 3, 0, 0, 0, 1)
	for _, tc := range []struct {
		name  string
		baud  int
		delay time.Duration
		idle  time.Duration // the engine's own pause between the requests
		want  time.Duration // silence between the reply and the next request
	}{
		{"9600", 9600, 0, 0, 3645833 * time.Nanosecond}, // 8N1: 10 bits
		{"19200", 19200, 0, 0, 1822916 * time.Nanosecond},
		{"115200", 115200, 0, 0, 1750 * time.Microsecond},
		{"idle already", 115200, 0, 5 * time.Millisecond, 5 * time.Millisecond},
		{"delay", 115200, 20 * time.Millisecond, 0, 20 * time.Millisecond},
		{"delay partly idle", 9600, 20 * time.Millisecond, 15 * time.Millisecond, 20 * time.Millisecond},
		{"over TCP", 0, 0, 0, tcpT35},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, line := fakeRTU(t, tc.baud, echo)
			tr.delay = tc.delay
			tr.begin(context.Background(), 1, time.Second)
			if _, err := tr.Send(req); err != nil { // drains first: the port is new
				t.Fatal(err)
			}
			end := line.clk.t // the reply's last byte
			line.clk.t = line.clk.t.Add(tc.idle)
			line.clk.slept = 0
			if _, err := tr.Send(req); err != nil {
				t.Fatal(err)
			}
			gap := line.writes[1].at.Sub(end)
			if gap.Round(time.Microsecond) != tc.want.Round(time.Microsecond) {
				t.Errorf("silence before the request: %v, want %v", gap, tc.want)
			}
			if slept := line.clk.slept; slept != max(tc.want-tc.idle, 0) {
				t.Errorf("slept %v, want only what was left: %v", slept, max(tc.want-tc.idle, 0))
			}
		})
	}
}

// TestRTUDrain: after a timeout the late reply is read and discarded before
// the next request, which waits for the line to fall silent; bytes that came
// in while the line was idle are flushed; a line that never falls silent
// fails the request.
func TestRTUDrain(t *testing.T) {
	late := rtuFrame(7, 3, 2, 0x08, 0xae) // unit 7's reply to its timed-out request
	tr, line := fakeRTU(t, 19200, func(req []byte) []rtuArrival {
		if req[0] == 7 {
			return []rtuArrival{{1200 * time.Millisecond, late}} // after the 1 s timeout
		}
		return []rtuArrival{{2 * time.Millisecond, rtuFrame(req[0], 3, 2, 0x04, 0x57)}}
	})
	ctx := context.Background()
	tr.begin(ctx, 7, time.Second)
	if _, err := tr.Send(rtuFrame(7, 3, 0, 0, 0, 1)); !errors.Is(err, drivers.ErrTimeout) {
		t.Fatalf("unit 7: %v, want a timeout", err)
	}
	timedOut := line.clk.t
	line.clk.t = line.clk.t.Add(250 * time.Millisecond) // the engine polls unit 1 a little later
	tr.begin(ctx, 1, time.Second)
	got, err := tr.Send(rtuFrame(1, 3, 0, 0, 0, 1))
	if err != nil || !bytes.Equal(got, rtuFrame(1, 3, 2, 0x04, 0x57)) {
		t.Fatalf("unit 1 after unit 7 timed out: % x, %v", got, err)
	}
	w := line.writes[len(line.writes)-1].at
	lateAt := line.writes[0].at.Add(1200 * time.Millisecond)
	if !lateAt.After(timedOut) || w.Before(lateAt.Add(tr.tm.silence)) {
		t.Errorf("unit 1's request went out %v after unit 7 timed out, before its late reply (at %v) was drained", w.Sub(timedOut), lateAt.Sub(timedOut))
	}
	if line.flushed != 0 {
		t.Errorf("flushed %d bytes: the drain should have read them", line.flushed)
	}

	// a late reply that arrived while the line was idle is flushed
	tr.dirty = false
	line.schedule(line.clk.t, rtuArrival{time.Millisecond, late})
	line.clk.t = line.clk.t.Add(time.Second)
	got, err = tr.Send(rtuFrame(1, 3, 0, 0, 0, 1))
	if err != nil || !bytes.Equal(got, rtuFrame(1, 3, 2, 0x04, 0x57)) || line.flushed != len(late) {
		t.Fatalf("after bytes came in on an idle line: % x, %v, flushed %d", got, err, line.flushed)
	}

	// a babbling line
	tr.dirty = true
	for i := range 1100 { // one byte a millisecond for 1.1 s
		line.schedule(line.clk.t, rtuArrival{time.Duration(i) * time.Millisecond, []byte{0x55}})
	}
	_, err = tr.Send(rtuFrame(1, 3, 0, 0, 0, 1))
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "the line was not silent for 1.822916ms before the deadline") {
		t.Fatalf("babbling line: %v", err)
	}
}

// TestRTUContext: the ctx deadline bounds the wait when it is shorter than
// the timeout, and is named; a cancelled ctx ends the request.
func TestRTUContext(t *testing.T) {
	tr, line := fakeRTU(t, 19200, func([]byte) []rtuArrival { return nil })
	ctx, cancel := context.WithDeadline(context.Background(), line.clk.t.Add(300*time.Millisecond))
	defer cancel()
	tr.begin(ctx, 1, time.Second)
	_, err := tr.Send(rtuFrame(1, 3, 0, 0, 0, 1))
	if !errors.Is(err, drivers.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the caller's deadline") {
		t.Fatalf("ctx deadline: %v", err)
	}
	if w, ctxDead := tr.lastWait(); !ctxDead || w <= 0 {
		t.Errorf("lastWait %v %v", w, ctxDead)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	tr.begin(cctx, 1, time.Second)
	if _, err := tr.Send(rtuFrame(1, 3, 0, 0, 0, 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestRTUPortFailure: a failing port is not a timeout.
func TestRTUPortFailure(t *testing.T) {
	for _, op := range []string{"read", "write"} {
		tr, line := fakeRTU(t, 19200, nil)
		tr.dirty = false
		line.failOn = op
		tr.begin(context.Background(), 1, time.Second)
		_, err := tr.Send(rtuFrame(1, 3, 0, 0, 0, 1))
		var re *replyError
		if err == nil || errors.As(err, &re) || errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "input/output error") {
			t.Errorf("%s fails: %v, want the port's error", op, err)
		}
	}
	tr, _ := fakeRTU(t, 19200, nil)
	_ = tr.close()
	if _, err := tr.Send(rtuFrame(1, 3, 0, 0, 0, 1)); !errors.Is(err, drivers.ErrNotConnected) {
		t.Errorf("Send on a closed line: %v", err)
	}
}

func TestNewRTU(t *testing.T) {
	prof := config.Profile{Name: "p", Points: []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "int16"}}}
	devs := []config.Device{{Name: "d", Profile: "p", UnitID: intp(1)}}
	for _, tc := range []struct {
		name string
		link config.Link
		want string // "" : no error
	}{
		{"rtu defaults", config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/ttyUSB0"}, ""},
		{"rtu full", config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/ttyUSB0", Baud: 115200, DataBits: 7, Parity: "odd", StopBits: 2}, ""},
		{"rtu over tcp", config.Link{Name: "l", Protocol: ProtocolRTUOverTCP, Address: "10.0.0.5:4001"}, ""},
		{"tcp", config.Link{Name: "l", Protocol: Protocol, Address: "10.0.0.5:502"}, ""},
		{"no device", config.Link{Name: "l", Protocol: ProtocolRTU}, `modbus: link "l": device is required for modbus-rtu`},
		{"parity", config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/x", Parity: "mark"}, `parity "mark"`},
		{"baud", config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/x", Baud: 14400}, "baud 14400"},
		{"data bits", config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/x", DataBits: 5}, "data_bits 5"},
		{"stop bits", config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/x", StopBits: 3}, "stop_bits 3"},
		{"rtu over tcp address", config.Link{Name: "l", Protocol: ProtocolRTUOverTCP}, "address is required"},
		{"protocol", config.Link{Name: "l", Protocol: "modbus-ascii", Address: "x:1"}, `protocol "modbus-ascii" is not modbus-tcp, modbus-rtu or modbus-rtu-tcp`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(tc.link, devs, profileLookup(prof), nil)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if (d.rtu != nil) != (tc.link.Protocol != Protocol) {
					t.Errorf("rtu transporter %v for %s", d.rtu != nil, tc.link.Protocol)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want an error containing %q", err, tc.want)
			}
		})
	}
	d, err := New(config.Link{Name: "l", Protocol: ProtocolRTU, Device: "/dev/ttyUSB0"}, devs, profileLookup(prof), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.rtu.tm != serialTiming(9600, 11) { // 8E1
		t.Errorf("defaults: timing %+v, want 9600 8E1's", d.rtu.tm)
	}
	// no I/O before Connect, and Connect to a port that is not there fails
	// with ErrNotConnected naming it
	if _, err := d.Poll(t.Context(), 0, nil); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("Poll before Connect: %v", err)
	}
	d.rtu.openLine = func(context.Context, time.Duration) (rtuLine, error) {
		return nil, errors.New("open /dev/ttyUSB0: no such file or directory")
	}
	if err := d.Connect(t.Context()); !errors.Is(err, drivers.ErrNotConnected) || !strings.Contains(err.Error(), `link "l": open serial port /dev/ttyUSB0`) {
		t.Fatalf("Connect: %v", err)
	}
}

// fakeDriver is a driver on an RTU link whose line is a fake; opens counts
// how often the port was opened.
func fakeDriver(t *testing.T, points []config.Point, answer func([]byte) []rtuArrival, units ...int) (*Driver, *fakeRTULine, *int) {
	t.Helper()
	prof := config.Profile{Name: "p", Points: points}
	var devs []config.Device
	for _, u := range units {
		devs = append(devs, config.Device{Name: fmt.Sprintf("unit-%d", u), Profile: "p", UnitID: intp(u)})
	}
	d, err := New(config.Link{Name: "bus", Protocol: ProtocolRTU, Device: "/dev/fake", Baud: 19200, Parity: "none", Timeout: 200 * time.Millisecond}, devs, profileLookup(prof), nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeRTUClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	line := &fakeRTULine{clk: clk, answer: answer}
	opens := new(int)
	d.rtu.clock = clk
	d.rtu.openLine = func(context.Context, time.Duration) (rtuLine, error) {
		*opens++
		line.failOn = ""
		return line, nil
	}
	if err := d.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	return d, line, opens
}

// TestRTUDriverErrors: how the driver reports each failure, and what it does
// with the port.
func TestRTUDriverErrors(t *testing.T) {
	points := []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}
	var corrupt bool
	d, line, opens := fakeDriver(t, points, func(req []byte) []rtuArrival {
		switch {
		case req[0] == 2: // absent
			return nil
		case req[0] == 3 && corrupt:
			f := rtuFrame(req[0], 3, 2, 0, 42)
			f[len(f)-1] ^= 0xff
			return []rtuArrival{{time.Millisecond, f}}
		case req[3] == 100:
			return []rtuArrival{{time.Millisecond, rtuFrame(req[0], 0x83, 2)}}
		}
		return []rtuArrival{{time.Millisecond, rtuFrame(req[0], 3, 2, 0, 40+req[0])}}
	}, 1, 2, 3)
	ctx := t.Context()
	value := func(dev int) telemetry.Value {
		t.Helper()
		s, err := d.Poll(ctx, dev, nil)
		if err != nil {
			t.Fatalf("Poll %d: %v", dev, err)
		}
		return s[0].Value
	}
	if v := value(0); !v.Equal(telemetry.Uint(41)) {
		t.Fatalf("unit 1: %v", v)
	}
	_, err := d.Poll(ctx, 1, nil)
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), `modbus: device "unit-2" (unit 2): read holding_register 0 (FC3): timeout: no reply within 200ms on serial port /dev/fake`) {
		t.Fatalf("absent unit: %v", err)
	}
	if v := value(2); !v.Equal(telemetry.Uint(43)) {
		t.Fatalf("unit 3 after unit 2 timed out: %v", v)
	}
	corrupt = true
	_, err = d.Poll(ctx, 2, nil)
	if !errors.Is(err, drivers.ErrTimeout) || errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), `device "unit-3" (unit 3)`) || !strings.Contains(err.Error(), "garbled reply on serial port /dev/fake (treated as a timeout): CRC error") {
		t.Fatalf("corrupt reply: %v", err)
	}
	corrupt = false
	if v := value(2); !v.Equal(telemetry.Uint(43)) {
		t.Fatalf("unit 3 after a CRC error: %v", v)
	}
	if *opens != 1 {
		t.Errorf("the port was opened %d times: a timeout or a garbled reply must not reopen it", *opens)
	}

	// a port that fails: link broken, then not connected until Connect
	line.failOn = "read"
	if _, err := d.Poll(ctx, 0, nil); !errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("port failure: %v", err)
	}
	if !line.closed {
		t.Error("the failed port was not closed")
	}
	if _, err := d.Poll(ctx, 0, nil); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("after a port failure: %v", err)
	}
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if v := value(0); !v.Equal(telemetry.Uint(41)) || *opens != 2 {
		t.Fatalf("after Connect: %v, %d opens", v, *opens)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRTUDriverException: an exception reply is a Bad point on a good line,
// and a refused write is ErrDevice.
func TestRTUDriverException(t *testing.T) {
	points := []config.Point{
		{Name: "x", Table: "holding_register", Address: intp(100), Type: "uint16", Access: "readwrite"},
	}
	d, _, _ := fakeDriver(t, points, func(req []byte) []rtuArrival {
		return []rtuArrival{{time.Millisecond, rtuFrame(req[0], req[1]|0x80, 2)}}
	}, 1)
	s, err := d.Poll(t.Context(), 0, nil)
	if err != nil || s[0].Quality != telemetry.Bad || s[0].Reason != "exception 2 (illegal data address)" {
		t.Fatalf("Poll: %v, %v", s, err)
	}
	if err := d.Write(t.Context(), 0, 0, telemetry.Uint(5)); !errors.Is(err, drivers.ErrDevice) || !strings.Contains(err.Error(), "exception 2") {
		t.Fatalf("Write: %v", err)
	}
}
