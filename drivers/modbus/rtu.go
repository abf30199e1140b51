package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/goburrow/modbus"
	"github.com/tarm/serial"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
)

// Modbus RTU (Modbus over Serial Line v1.02): goburrow's RTU packager frames
// each request (unit id, PDU, CRC) and checks the reply's CRC once more; the
// transporter below moves the bytes, on a serial port (tarm/serial) or on a
// TCP connection to a serial device server, and keeps the line's timing.
//
// goburrow's own serial transporter is not used: it sleeps 15e6/baud µs per
// character before reading (7.9 times the wire time at 115200 baud), cannot
// be interrupted, and is not goroutine-safe.

// RTU framing limits: unit id, function, at most 252 bytes of data, CRC.
const (
	rtuMaxADU = 256
	rtuMinADU = 5 // the shortest reply: an exception
)

// Serial port timing.
const (
	// serialReadTimeout is the port's read timeout. tarm/serial sets it as
	// VTIME, in tenths of a second, so 100 ms is the shortest there is. A
	// read returns as soon as a byte arrives, so this bounds only how long
	// the transporter waits before it looks at its deadlines and ctx
	// again: timeouts and cancellation are honoured within 100 ms, and
	// "the line was silent" is known after 100 ms of silence at the least.
	serialReadTimeout = 100 * time.Millisecond
	// hangupRead: a read that ends with nothing sooner than this did not
	// wait for VTIME: the tty hung up (a USB adapter was unplugged), and
	// every read now returns at once with nothing.
	hangupRead = serialReadTimeout / 2
	// interCharFloor: the inter-character timeout, the gap inside a reply
	// that makes it a short frame, is max(1.5 characters, 20 ms). The
	// standard's 1.5 characters (0.14 ms at 115200 baud) is a wire-level
	// timing that user space cannot see: USB adapters hand bytes over in
	// bursts (an FTDI chip's latency timer is 16 ms by default) and a busy
	// 2-core gateway can wake a reader milliseconds late, so 1.5 characters
	// would reject good frames. The longer gap costs nothing on a healthy
	// line: the end of a reply is known from its length, not from a gap;
	// the gap only decides how soon a truncated reply is reported, and the
	// CRC, not the timing, guards the contents.
	interCharFloor = 20 * time.Millisecond
)

// RTU over TCP timing. The serial side's baud rate is the device server's
// business (config has no baud for these links), and TCP hides the byte
// timing, so there is no inter-character timeout; a truncated reply is
// reported at the reply deadline.
const (
	// tcpT35 is kept between the end of a reply and the next request: the
	// 3.5 characters of the standard's 9600 baud 8E1 (4.01 ms), for the
	// serial line behind the device server. Slower lines need
	// inter_request_delay.
	tcpT35 = 35 * 11 * time.Second / 96000
	// tcpSilence ends a drain: the device server forwards a late reply in
	// one or a few segments, well within 50 ms of each other.
	tcpSilence = 50 * time.Millisecond
)

// rtuTiming is the timing of one RTU line.
type rtuTiming struct {
	char      time.Duration // one character on the wire; 0 over TCP (unknown)
	t35       time.Duration // silence kept between the end of a frame and the next request
	interChar time.Duration // a longer gap inside a reply ends it as a short frame; 0: none
	silence   time.Duration // a drain ends when the line has been silent this long
}

// serialTiming is the timing of a serial line at baud with bits per
// character (start, data, parity and stop bits: 11 for 8E1). Above 19200 baud
// t1.5 and t3.5 are the fixed 750 µs and 1.75 ms of the standard (2.5.1.1).
func serialTiming(baud, bits int) rtuTiming {
	chars := func(n int) time.Duration { // n/2 characters
		return time.Duration(n*bits) * time.Second / time.Duration(2*baud)
	}
	tm := rtuTiming{char: chars(2)}
	t15 := 750 * time.Microsecond
	tm.t35 = 1750 * time.Microsecond
	if baud <= 19200 {
		t15 = chars(3)
		tm.t35 = chars(7)
	}
	tm.interChar = max(t15, interCharFloor)
	tm.silence = tm.t35
	return tm
}

// wire is how long n characters take on the wire (0 when unknown).
func (tm rtuTiming) wire(n int) time.Duration { return time.Duration(n) * tm.char }

// rtuLine is the byte stream under the RTU framing.
type rtuLine interface {
	// read reads what has arrived into p, waiting for the first byte at
	// most until until (a serial port may return up to serialReadTimeout
	// early or late). It returns 0, nil when nothing arrived, ctx.Err() if
	// ctx is done, and any other error when the port failed.
	read(ctx context.Context, p []byte, until time.Time) (int, error)
	// flush discards what has arrived and not been read, without waiting.
	flush() error
	write(p []byte, until time.Time) error
	close() error
}

// posixBauds are the rates tarm/serial can set on Linux and the BSDs.
var posixBauds = map[int]bool{
	1200: true, 2400: true, 4800: true, 9600: true, 19200: true, 38400: true,
	57600: true, 115200: true, 230400: true,
}

// newTransporter builds the transporter of a modbus-rtu or modbus-rtu-tcp
// link, checking its serial settings (a zero field takes config's default:
// 9600 baud, 8 data bits, even parity, 1 stop bit). It returns nil for a
// modbus-tcp link. It does no I/O.
func newTransporter(link config.Link, log *slog.Logger) (*rtuTransport, error) {
	t := &rtuTransport{
		packager: modbus.NewRTUClientHandler(link.Device),
		delay:    link.InterRequestDelay,
		clock:    wallClock{},
		log:      log,
	}
	switch link.Protocol {
	case ProtocolRTU:
		if link.Device == "" {
			return nil, errors.New("device is required for modbus-rtu (the serial port, e.g. /dev/ttyUSB0)")
		}
		cfg := &serial.Config{Name: link.Device, Baud: link.Baud, ReadTimeout: serialReadTimeout, Size: byte(link.DataBits), StopBits: serial.StopBits(link.StopBits)}
		if cfg.Baud == 0 {
			cfg.Baud = 9600
		}
		if cfg.Size == 0 {
			cfg.Size = 8
		}
		if cfg.StopBits == 0 {
			cfg.StopBits = serial.Stop1
		}
		bits := 1 + int(cfg.Size) + int(cfg.StopBits)
		switch link.Parity {
		case "", "even":
			cfg.Parity = serial.ParityEven
			bits++
		case "odd":
			cfg.Parity = serial.ParityOdd
			bits++
		case "none":
			cfg.Parity = serial.ParityNone
		default:
			return nil, fmt.Errorf("parity %q: none, even or odd", link.Parity)
		}
		if cfg.Baud < 0 || (runtime.GOOS != "windows" && !posixBauds[cfg.Baud]) {
			return nil, fmt.Errorf("baud %d: use 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 or 230400", cfg.Baud)
		}
		if cfg.Size != 7 && cfg.Size != 8 {
			return nil, fmt.Errorf("data_bits %d: 7 or 8", cfg.Size)
		}
		if cfg.StopBits != serial.Stop1 && cfg.StopBits != serial.Stop2 {
			return nil, fmt.Errorf("stop_bits %d: 1 or 2", cfg.StopBits)
		}
		t.where = "serial port " + link.Device
		t.tm = serialTiming(cfg.Baud, bits)
		t.openLine = func(ctx context.Context, _ time.Duration) (rtuLine, error) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			port, err := serial.OpenPort(cfg)
			if err != nil {
				return nil, err
			}
			// What arrived before we opened belongs to nobody.
			_ = port.Flush()
			return &serialLine{port: port, where: t.where}, nil
		}
	case ProtocolRTUOverTCP:
		if link.Address == "" {
			return nil, errors.New("address is required (host:port of the serial device server)")
		}
		t.where = "device server " + link.Address
		t.tm = rtuTiming{t35: tcpT35, silence: tcpSilence}
		t.openLine = func(ctx context.Context, timeout time.Duration) (rtuLine, error) {
			dialer := net.Dialer{Timeout: timeout}
			conn, err := dialer.DialContext(ctx, "tcp", link.Address)
			if err != nil {
				return nil, err
			}
			return &tcpLine{conn: conn, where: t.where}, nil
		}
	default:
		return nil, nil
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	return t, nil
}

// rtuTransport is the goburrow Transporter of a Modbus RTU link: one serial
// port or one TCP connection to a serial device server, shared by every
// device on the link, one request at a time. The driver is never called
// concurrently, so nothing here is locked, and no goroutine of its own reads
// the port: a serial read returns after serialReadTimeout at the latest, and
// the transporter looks at its deadlines and ctx between reads. (Over TCP,
// cancelling ctx also interrupts a blocked read.)
//
// Per request it
//   - drains the line first if the last exchange did not end cleanly (a
//     timeout, a garbled reply, a cancellation, a fresh connection): it
//     discards whatever arrives until the line has been silent for t3.5, so
//     that a late reply is never taken for the answer to the next request;
//   - keeps t3.5 (or link.InterRequestDelay, if longer) of silence after the
//     last byte seen on the line, waiting only for what is left of it;
//   - discards what came in while the line was idle (serial: tcflush);
//   - writes the request and reads the reply, whose length it knows from
//     the function code and byte count as the bytes arrive, never reading
//     beyond it, within the reply deadline (the timeout, from the end of the
//     request on the wire, plus the reply's wire time; or the ctx deadline)
//     and the inter-character timeout;
//   - returns the reply only if its CRC, unit id, function, byte count (or
//     the echo of a write) match the request.
//
// RTU has no transaction id: a late reply from the unit just asked, to the
// same request, arriving after the drain and during the next exchange with
// that unit, looks exactly like the answer. Only the timing can tell, and the
// drain, the flush and a timeout longer than the device's worst answer time
// are what there is.
type rtuTransport struct {
	packager *modbus.RTUClientHandler // used only as the Packager; SlaveId is set per request
	openLine func(ctx context.Context, timeout time.Duration) (rtuLine, error)
	where    string        // "serial port /dev/ttyUSB0", "device server host:port"
	tm       rtuTiming     // the line's timing
	delay    time.Duration // link.InterRequestDelay
	clock    clock
	log      *slog.Logger

	line rtuLine
	// lastSeen is when the last frame on the line ended: the last byte
	// read, or the end of our last request on the wire.
	lastSeen time.Time
	// dirty: the line may still carry the rest of an exchange that did not
	// end cleanly; the next request drains it first.
	dirty bool

	// set by the driver before each request
	ctx     context.Context
	timeout time.Duration

	// of the last exchange: how long it could wait for the reply, and
	// whether that bound was the ctx deadline rather than timeout
	waited  time.Duration
	ctxDead bool

	buf [rtuMaxADU]byte
}

// begin prepares the next request to unit.
func (t *rtuTransport) begin(ctx context.Context, unit byte, timeout time.Duration) {
	t.packager.SlaveId = unit
	t.ctx = ctx
	t.timeout = timeout
}

// String names the line in errors: "serial port /dev/ttyUSB0".
func (t *rtuTransport) String() string { return t.where }

// lastWait is how long the last exchange could wait for its reply, and
// whether that bound was the ctx deadline rather than the timeout.
func (t *rtuTransport) lastWait() (time.Duration, bool) { return t.waited, t.ctxDead }

// open opens the line, closing any previous one. ctx and timeout bound a
// TCP dial; opening a serial port does not block. A failure wraps
// drivers.ErrNotConnected and names the port or device server.
func (t *rtuTransport) open(ctx context.Context, timeout time.Duration) error {
	_ = t.close()
	line, err := t.openLine(ctx, timeout)
	if err != nil {
		return fmt.Errorf("open %s: %w: %w", t.where, drivers.ErrNotConnected, err)
	}
	t.line = line
	t.dirty = true
	return nil
}

func (t *rtuTransport) isOpen() bool { return t.line != nil }

// close closes the line; it is safe to call when it is not open.
func (t *rtuTransport) close() error {
	if t.line == nil {
		return nil
	}
	err := t.line.close()
	t.line = nil
	return err
}

// Send writes one request ADU and reads its reply. The reply aliases an
// internal buffer that the next Send overwrites. Errors:
//   - *replyError (wrapping drivers.ErrTimeout, and context.DeadlineExceeded
//     when the caller's deadline was the bound): no reply in time, or a
//     reply that is not the answer; the line itself works;
//   - ctx.Err() when ctx was cancelled;
//   - drivers.ErrNotConnected when the line is not open;
//   - any other error: the port or connection failed.
func (t *rtuTransport) Send(req []byte) ([]byte, error) {
	if t.line == nil {
		return nil, fmt.Errorf("%s: %w", t.where, drivers.ErrNotConnected)
	}
	if len(req) < 4 {
		return nil, fmt.Errorf("modbus: request of %d bytes", len(req))
	}
	ctx := t.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, t.ctxError(ctx, err, "before the request")
	}
	if in, ok := t.line.(interface{ interrupt() }); ok && ctx.Done() != nil {
		stop := context.AfterFunc(ctx, in.interrupt)
		defer stop()
	}
	n, err := t.exchange(ctx, req)
	if err != nil {
		return nil, err
	}
	return t.buf[:n], nil
}

func (t *rtuTransport) exchange(ctx context.Context, req []byte) (int, error) {
	timeout := t.timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	ctxDeadline, hasDeadline := ctx.Deadline()
	// bound limits the drain and the wait for silence
	bound, ctxBound := t.clock.now().Add(timeout), false
	if hasDeadline && ctxDeadline.Before(bound) {
		bound, ctxBound = ctxDeadline, true
	}
	if t.dirty {
		if err := t.drain(ctx, bound, ctxBound); err != nil {
			return 0, err
		}
	}
	// The pause is bounded by ctx only: an inter_request_delay may be
	// longer than the timeout.
	if quiet := t.lastSeen.Add(max(t.tm.t35, t.delay)); quiet.After(t.clock.now()) {
		if hasDeadline && quiet.After(ctxDeadline) {
			return 0, t.timedOut(ctx, fmt.Sprintf("the request could not be sent: the line must first be silent for %s", max(t.tm.t35, t.delay)), true)
		}
		if err := t.clock.sleepUntil(ctx, quiet); err != nil {
			return 0, t.ctxError(ctx, err, "waiting for the line to be silent")
		}
	}

	// From here until a good reply, the line holds an unfinished exchange.
	t.dirty = true
	t.waited, t.ctxDead = 0, false
	// Bytes that arrived since the last exchange (a late reply that came
	// in while the line was idle, noise) are not the answer to this one.
	if err := t.line.flush(); err != nil {
		return 0, err
	}
	sent := t.clock.now()
	if err := t.line.write(req, bound); err != nil {
		if ctx.Err() != nil {
			return 0, t.ctxError(ctx, ctx.Err(), "sending the request")
		}
		return 0, err
	}
	reqEnd := sent.Add(t.tm.wire(len(req)))
	t.lastSeen = reqEnd
	// The timeout is the device's time to answer: the wire time of the
	// request and of the reply come on top of it (a 125-register reply is
	// 292 ms at 9600 baud, 2.3 s at 1200).
	deadline, ctxBound := reqEnd.Add(timeout+t.tm.wire(expectedReplyLen(req))), false
	if hasDeadline && ctxDeadline.Before(deadline) {
		deadline, ctxBound = ctxDeadline, true
	}
	t.waited, t.ctxDead = deadline.Sub(sent), ctxBound
	n, err := t.readReply(ctx, req, sent, timeout, deadline, ctxBound)
	if err != nil {
		return 0, err
	}
	t.dirty = false
	return n, nil
}

// readReply reads the reply to req into t.buf.
func (t *rtuTransport) readReply(ctx context.Context, req []byte, sent time.Time, timeout time.Duration, deadline time.Time, ctxBound bool) (int, error) {
	n, want := 0, 0
	var last time.Time // when the last byte arrived
	for {
		if want == 0 && n >= 2 {
			w, err := replyLength(req, t.buf[:n])
			if err != nil {
				return 0, t.garbled(err.Error(), t.buf[:n])
			}
			want = w
		}
		if want > 0 && n >= want {
			break
		}
		until := deadline
		if n > 0 && t.tm.interChar > 0 {
			until = minTime(until, last.Add(t.tm.interChar))
		}
		if now := t.clock.now(); !now.Before(until) {
			if n == 0 {
				if ctxBound {
					timeout = deadline.Sub(sent)
				}
				return 0, t.timedOut(ctx, fmt.Sprintf("no reply within %s", timeout.Round(time.Millisecond)), ctxBound)
			}
			of := "an incomplete reply"
			if want > 0 {
				of = fmt.Sprintf("%d of %d bytes", n, want)
			}
			if until.Equal(deadline) {
				return 0, t.garbled(fmt.Sprintf("short frame: %s by the deadline (%s)", of, deadline.Sub(sent).Round(time.Millisecond)), t.buf[:n])
			}
			return 0, t.garbled(fmt.Sprintf("short frame: %s, then silence for %s", of, t.tm.interChar), t.buf[:n])
		}
		// Never read beyond the reply: what follows it is not ours. Three
		// bytes are enough to learn the length of any reply.
		end := want
		if end == 0 {
			end = 3
		}
		k, err := t.line.read(ctx, t.buf[n:end], until)
		if k > 0 {
			at := t.clock.now()
			if n > 0 && t.tm.interChar > 0 && at.Sub(last) > t.tm.interChar {
				return 0, t.garbled(fmt.Sprintf("short frame: a gap of %s after %d bytes", at.Sub(last).Round(time.Millisecond), n), t.buf[:n+k])
			}
			n += k
			last = at
			t.lastSeen = at
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, t.ctxError(ctx, ctx.Err(), "waiting for the reply")
			}
			return 0, err
		}
	}
	if err := checkReply(req, t.buf[:n]); err != nil {
		return 0, t.garbled(err.Error(), t.buf[:n])
	}
	return n, nil
}

// drain reads and discards whatever arrives until the line has been silent
// for tm.silence (at least one whole read of that long found nothing).
func (t *rtuTransport) drain(ctx context.Context, bound time.Time, ctxBound bool) error {
	discarded := 0
	for {
		start := t.clock.now()
		if !start.Before(bound) {
			return t.timedOut(ctx, fmt.Sprintf("the line was not silent for %s before the deadline (discarded %d bytes)", t.tm.silence, discarded), ctxBound)
		}
		k, err := t.line.read(ctx, t.buf[:], minTime(start.Add(t.tm.silence), bound))
		at := t.clock.now()
		if k > 0 {
			if discarded == 0 {
				t.log.Debug("modbus rtu: discarding bytes before a request", "line", t.where, "first", fmt.Sprintf("% x", t.buf[:min(k, 16)]))
			}
			discarded += k
			t.lastSeen = at
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return t.ctxError(ctx, ctx.Err(), "draining the line")
			}
			return err
		}
		if at.Sub(start) >= t.tm.silence && at.Sub(t.lastSeen) >= t.tm.silence {
			break
		}
	}
	if discarded > 0 {
		t.log.Debug("modbus rtu: discarded bytes before a request", "line", t.where, "bytes", discarded)
	}
	t.dirty = false
	return nil
}

// replyError is a request that got no valid answer on a line that itself
// works: no reply in time, or a garbled one (CRC error, short frame, wrong
// unit id, function or byte count). It wraps drivers.ErrTimeout, not
// drivers.ErrLinkBroken: a serial line cannot be reconnected the way a TCP
// connection can, and a garbled reply (noise, two devices answering, a late
// reply) says nothing about the port. The engine treats it as that device's
// timeout; the transporter drains the line before the next request.
type replyError struct {
	msg   string
	cause error // context.DeadlineExceeded when the caller's deadline was the bound
}

func (e *replyError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *replyError) Unwrap() []error {
	if e.cause != nil {
		return []error{drivers.ErrTimeout, e.cause}
	}
	return []error{drivers.ErrTimeout}
}

func (t *rtuTransport) timedOut(ctx context.Context, what string, ctxBound bool) error {
	e := &replyError{msg: fmt.Sprintf("%s: %s on %s", drivers.ErrTimeout, what, t.where)}
	if ctxBound {
		e.msg += ", the caller's deadline"
		e.cause = context.DeadlineExceeded
		if err := ctx.Err(); err != nil {
			e.cause = err
		}
	}
	return e
}

func (t *rtuTransport) garbled(what string, got []byte) error {
	const show = 16
	b := fmt.Sprintf("% x", got[:min(len(got), show)])
	if len(got) > show {
		b += " ..."
	}
	return &replyError{msg: fmt.Sprintf("garbled reply on %s (treated as a timeout): %s [%s]", t.where, what, b)}
}

// ctxError turns ctx's end into the request's error: a passed deadline is a
// timeout, a cancellation is returned as it is.
func (t *rtuTransport) ctxError(ctx context.Context, err error, doing string) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &replyError{msg: fmt.Sprintf("%s: the caller's deadline passed %s on %s", drivers.ErrTimeout, doing, t.where), cause: err}
	}
	return err
}

// replyLength is the length of the reply to req whose first bytes are head
// (at least 2), or 0 if it needs a third byte to tell. A head that cannot
// start the reply to req is an error.
func replyLength(req, head []byte) (int, error) {
	if head[0] != req[0] {
		return 0, fmt.Errorf("wrong unit id: reply from unit %d to a request to unit %d", head[0], req[0])
	}
	fc := req[1]
	switch head[1] {
	case fc | 0x80:
		return rtuMinADU, nil
	case fc:
	default:
		return 0, fmt.Errorf("wrong function: reply with function 0x%02x to a request with function 0x%02x", head[1], fc)
	}
	switch fc {
	case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs, modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters:
		if len(head) < 3 {
			return 0, nil
		}
		if want := replyByteCount(req); int(head[2]) != want {
			return 0, fmt.Errorf("wrong byte count: %d, the request asks for %d", head[2], want)
		}
		if 5+int(head[2]) > rtuMaxADU {
			return 0, fmt.Errorf("byte count %d: a reply is at most %d bytes", head[2], rtuMaxADU)
		}
		return 5 + int(head[2]), nil
	case modbus.FuncCodeWriteSingleCoil, modbus.FuncCodeWriteSingleRegister, modbus.FuncCodeWriteMultipleCoils, modbus.FuncCodeWriteMultipleRegisters:
		return 8, nil
	}
	return 0, fmt.Errorf("function 0x%02x is not supported over RTU", fc)
}

// replyByteCount is the byte count of the reply to a read request (FC1-4).
func replyByteCount(req []byte) int {
	if len(req) < 6 {
		return -1
	}
	q := int(req[4])<<8 | int(req[5])
	if req[1] == modbus.FuncCodeReadCoils || req[1] == modbus.FuncCodeReadDiscreteInputs {
		return (q + 7) / 8
	}
	return 2 * q
}

// expectedReplyLen is the length of a normal reply to req.
func expectedReplyLen(req []byte) int {
	switch req[1] {
	case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs, modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters:
		return 5 + max(replyByteCount(req), 0)
	}
	return 8
}

// checkReply checks a whole reply frame against its request: CRC, unit id,
// function (or its exception), byte count, or the echo of a write.
func checkReply(req, f []byte) error {
	n := len(f)
	if n < rtuMinADU {
		return fmt.Errorf("short frame: %d bytes", n)
	}
	if got, want := uint16(f[n-2])|uint16(f[n-1])<<8, crc16(f[:n-2]); got != want {
		return fmt.Errorf("CRC error: the frame says %04x, its bytes give %04x", got, want)
	}
	want, err := replyLength(req, f[:3])
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("frame of %d bytes, want %d", n, want)
	}
	if f[1]&0x80 != 0 {
		return nil
	}
	switch req[1] {
	case modbus.FuncCodeWriteSingleCoil, modbus.FuncCodeWriteSingleRegister, modbus.FuncCodeWriteMultipleCoils, modbus.FuncCodeWriteMultipleRegisters:
		if len(req) < 6 || [4]byte(f[2:6]) != [4]byte(req[2:6]) {
			return fmt.Errorf("the reply does not echo the write: % x, request % x", f[2:6], req[2:min(len(req), 6)])
		}
	}
	return nil
}

// crcTable drives the Modbus CRC-16 (polynomial 0xA001, reflected).
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 is the Modbus CRC of b; on the wire its low byte comes first.
func crc16(b []byte) uint16 {
	c := uint16(0xFFFF)
	for _, x := range b {
		c = c>>8 ^ crcTable[byte(c)^x]
	}
	return c
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// serialLine is a serial port opened with tarm/serial, VTIME reads.
type serialLine struct {
	port  *serial.Port
	where string
}

func (l *serialLine) read(ctx context.Context, p []byte, _ time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := time.Now()
	n, err := l.port.Read(p)
	if err == io.EOF && n == 0 {
		if time.Since(start) < hangupRead {
			return 0, fmt.Errorf("%s: read: the port hung up", l.where)
		}
		return 0, nil // VTIME passed with nothing to read
	}
	if err != nil {
		return n, fmt.Errorf("%s: read: %v", l.where, err)
	}
	return n, nil
}

func (l *serialLine) flush() error {
	if err := l.port.Flush(); err != nil {
		return fmt.Errorf("%s: flush: %v", l.where, err)
	}
	return nil
}

func (l *serialLine) write(p []byte, _ time.Time) error {
	if _, err := l.port.Write(p); err != nil {
		return fmt.Errorf("%s: write: %v", l.where, err)
	}
	return nil
}

func (l *serialLine) close() error { return l.port.Close() }

// tcpLine is a TCP connection to a serial device server.
type tcpLine struct {
	conn  net.Conn
	where string
}

func (l *tcpLine) read(ctx context.Context, p []byte, until time.Time) (int, error) {
	if err := l.conn.SetReadDeadline(until); err != nil {
		return 0, fmt.Errorf("%s: %v", l.where, err)
	}
	// After SetReadDeadline: an interrupt from now on is not overwritten.
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := l.conn.Read(p)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if cerr := ctx.Err(); cerr != nil {
				return n, cerr
			}
			return n, nil
		}
		if err == io.EOF {
			return n, fmt.Errorf("%s: the device server closed the connection", l.where)
		}
		return n, fmt.Errorf("%s: read: %v", l.where, err)
	}
	return n, nil
}

// flush does nothing: TCP cannot tell without waiting whether bytes are
// pending. A late reply that is pending garbles the next reply, which is then
// rejected and drained.
func (l *tcpLine) flush() error { return nil }

func (l *tcpLine) write(p []byte, until time.Time) error {
	if err := l.conn.SetWriteDeadline(until); err != nil {
		return fmt.Errorf("%s: %v", l.where, err)
	}
	if _, err := l.conn.Write(p); err != nil {
		return fmt.Errorf("%s: write: %v", l.where, err)
	}
	return nil
}

// interrupt fails a blocked read or write at once (ctx was cancelled).
func (l *tcpLine) interrupt() { _ = l.conn.SetDeadline(time.Unix(1, 0)) }

func (l *tcpLine) close() error { return l.conn.Close() }

// clock is the transporter's time; tests replace it.
type clock interface {
	now() time.Time
	// sleepUntil returns at until, or with ctx.Err() when ctx ends first.
	sleepUntil(ctx context.Context, until time.Time) error
}

type wallClock struct{}

func (wallClock) now() time.Time { return time.Now() }

// preciseSpan: the Go runtime's timers wake on a millisecond grid on Linux
// (a 1.75 ms sleep lasts about 2.2 ms, 0.4 ms too long: 14% of the wire time
// of a 10-register read at 115200 baud), and a timer can be late by more
// than a millisecond. So the last preciseSpan of a wait (all of t3.5 from
// 9600 baud up) is slept by preciseSleep instead, which is not cancellable:
// ctx is looked at before it.
const preciseSpan = 5 * time.Millisecond

func (wallClock) sleepUntil(ctx context.Context, until time.Time) error {
	for {
		d := time.Until(until)
		if d <= 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d <= preciseSpan {
			preciseSleep(d)
			continue
		}
		timer := time.NewTimer(d - preciseSpan)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
	}
}
