package modbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/goburrow/modbus"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
)

// RawClient is a Modbus client addressed by table and address rather than by
// configured points: the field tool (edged probe) reads and writes through it
// before any profile exists. It shares the Driver's transport (bounded,
// cancellable exchanges, no stray goroutines) and its exception names.
//
// A RawClient owns one connection (or serial port) and sends one request at
// a time; it is not safe for concurrent use. On Modbus TCP, after a timeout
// or a broken exchange it closes the connection, so that a late reply can
// never be taken for the answer to the next request, and the next request
// dials again. On an RTU line the transporter drains the line instead.
type RawClient struct {
	link    rawLink
	timeout time.Duration
	client  modbus.Client
	closed  bool
}

// rawLink is one way to reach devices: Modbus TCP (tcpLink), or Modbus RTU on
// a serial port or over TCP to a serial device server (rtuTransport).
type rawLink interface {
	// String names the link in errors: "127.0.0.1:502", "/dev/ttyUSB0".
	String() string
	// open connects; ctx and timeout bound only that. A failure wraps
	// drivers.ErrNotConnected and names the link.
	open(ctx context.Context, timeout time.Duration) error
	isOpen() bool
	// begin readies the next exchange: the unit it addresses, its ctx and
	// its timeout.
	begin(ctx context.Context, unit byte, timeout time.Duration)
	// lastWait is how long the last exchange could wait, and whether that
	// bound was ctx's deadline rather than the timeout.
	lastWait() (time.Duration, bool)
	close() error
}

var (
	_ rawLink = (*tcpLink)(nil)
	_ rawLink = (*rtuTransport)(nil)
)

// tcpLink is Modbus TCP: goburrow's MBAP packager over the driver's transport.
type tcpLink struct {
	addr     string
	packager *modbus.TCPClientHandler // MBAP framing, transaction ids, unit id
	tr       transport
}

func (l *tcpLink) String() string { return l.addr }

func (l *tcpLink) open(ctx context.Context, timeout time.Duration) error {
	dialer := net.Dialer{Timeout: timeout}
	conn, err := dialer.DialContext(ctx, "tcp", l.addr)
	if err != nil {
		return fmt.Errorf("connect %s: %w: %w", l.addr, drivers.ErrNotConnected, err)
	}
	l.tr.conn = conn
	return nil
}

func (l *tcpLink) isOpen() bool { return l.tr.conn != nil }

func (l *tcpLink) begin(ctx context.Context, unit byte, timeout time.Duration) {
	l.packager.SlaveId = unit
	l.tr.ctx, l.tr.timeout = ctx, timeout
}

func (l *tcpLink) lastWait() (time.Duration, bool) { return l.tr.waited, l.tr.ctxDead }

func (l *tcpLink) close() error {
	if l.tr.conn == nil {
		return nil
	}
	err := l.tr.conn.Close()
	l.tr.conn = nil
	return err
}

// DialTCP connects to a Modbus TCP device or gateway at addr (host:port).
// timeout bounds the dial and, later, each request's wait for its reply
// (0 means 1s); ctx bounds only the dial. A failure wraps
// drivers.ErrNotConnected.
func DialTCP(ctx context.Context, addr string, timeout time.Duration) (*RawClient, error) {
	l := &tcpLink{addr: addr, packager: modbus.NewTCPClientHandler(addr)}
	return dialRaw(ctx, l, modbus.NewClient2(l.packager, &l.tr), timeout)
}

// DialRTU opens a Modbus RTU link as the driver would: a serial port
// (link.Protocol modbus-rtu: Device, Baud, DataBits, Parity, StopBits, with
// config's defaults 9600 8E1) or a TCP connection to a serial device server
// (modbus-rtu-tcp: Address). link.Timeout bounds each request's wait for its
// reply (0 means 1s) and the TCP dial; ctx bounds only the opening. Settings
// the driver would refuse are an error before any I/O (see CheckRTU); a
// failure to open wraps drivers.ErrNotConnected.
//
// On an RTU line a request that gets no valid reply (none in time, a CRC
// error, a short frame) is an error wrapping drivers.ErrTimeout; the line
// stays open and is drained before the next request.
func DialRTU(ctx context.Context, link config.Link) (*RawClient, error) {
	t, err := rtuLink(link)
	if err != nil {
		return nil, err
	}
	return dialRaw(ctx, t, modbus.NewClient2(t.packager, t), link.Timeout)
}

// CheckRTU checks an RTU link's settings as DialRTU does, without any I/O.
func CheckRTU(link config.Link) error {
	_, err := rtuLink(link)
	return err
}

func rtuLink(link config.Link) (*rtuTransport, error) {
	t, err := newTransporter(link, nil)
	if err != nil {
		return nil, fmt.Errorf("modbus: %w", err)
	}
	if t == nil {
		return nil, fmt.Errorf("modbus: protocol %q: DialRTU serves %s and %s", link.Protocol, ProtocolRTU, ProtocolRTUOverTCP)
	}
	return t, nil
}

func dialRaw(ctx context.Context, l rawLink, client modbus.Client, timeout time.Duration) (*RawClient, error) {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	c := &RawClient{link: l, client: client, timeout: timeout}
	if err := c.open(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *RawClient) open(ctx context.Context) error {
	if err := c.link.open(ctx, c.timeout); err != nil {
		return fmt.Errorf("modbus: %w", err)
	}
	return nil
}

// Close closes the connection. Later requests fail with
// drivers.ErrNotConnected. It is safe to call more than once.
func (c *RawClient) Close() error {
	c.closed = true
	return c.link.close()
}

// ExceptionError is a Modbus exception reply: the device understood the
// request and refused it. It matches drivers.ErrDevice with errors.Is.
type ExceptionError struct {
	Function byte // the request's function code (without the 0x80 flag)
	Code     byte // the exception code: 2 is illegal data address, ...
}

func (e *ExceptionError) Error() string { return exceptionReason(e.Code) }

// Is makes errors.Is(err, drivers.ErrDevice) true.
func (e *ExceptionError) Is(target error) bool { return target == drivers.ErrDevice }

// ReadRegisters reads count (1-125) registers of table (input_register or
// holding_register) from the zero-based address addr, with FC4 or FC3. It
// blocks for at most min(timeout, ctx deadline).
//
// Errors name the link, unit, table, addresses and function code. A Modbus
// exception is an *ExceptionError (errors.Is drivers.ErrDevice); no reply in
// time wraps drivers.ErrTimeout; a closed, reset or garbled connection wraps
// drivers.ErrLinkBroken; a cancelled ctx wraps context.Canceled; after Close,
// drivers.ErrNotConnected. Invalid arguments are reported before any I/O.
func (c *RawClient) ReadRegisters(ctx context.Context, unit byte, tableName string, addr, count int) ([]uint16, error) {
	t, err := checkRange(tableName, addr, count)
	if err != nil {
		return nil, fmt.Errorf("modbus: %w", err)
	}
	if t.isBits() {
		return nil, fmt.Errorf("modbus: %s holds bits, not registers: read it with ReadBits", t)
	}
	fc := t.readFunction()
	what := fmt.Sprintf("read %s (FC%d)", cells(t, addr, count), fc)
	res, err := c.do(ctx, unit, fc, what, func() ([]byte, error) {
		if t == inputRegisters {
			return c.client.ReadInputRegisters(uint16(addr), uint16(count))
		}
		return c.client.ReadHoldingRegisters(uint16(addr), uint16(count))
	})
	if err != nil {
		return nil, err
	}
	if len(res) != 2*count {
		return nil, c.broken(unit, what, fmt.Errorf("reply has %d bytes of registers, want %d", len(res), 2*count))
	}
	regs := make([]uint16, count)
	for i := range regs {
		regs[i] = uint16(res[2*i])<<8 | uint16(res[2*i+1])
	}
	return regs, nil
}

// ReadBits reads count (1-2000) coils or discrete inputs (table coil or
// discrete_input) from addr, with FC1 or FC2. Blocking and errors are as for
// ReadRegisters.
func (c *RawClient) ReadBits(ctx context.Context, unit byte, tableName string, addr, count int) ([]bool, error) {
	t, err := checkRange(tableName, addr, count)
	if err != nil {
		return nil, fmt.Errorf("modbus: %w", err)
	}
	if !t.isBits() {
		return nil, fmt.Errorf("modbus: %s holds registers, not bits: read it with ReadRegisters", t)
	}
	fc := t.readFunction()
	what := fmt.Sprintf("read %s (FC%d)", cells(t, addr, count), fc)
	res, err := c.do(ctx, unit, fc, what, func() ([]byte, error) {
		if t == coils {
			return c.client.ReadCoils(uint16(addr), uint16(count))
		}
		return c.client.ReadDiscreteInputs(uint16(addr), uint16(count))
	})
	if err != nil {
		return nil, err
	}
	if len(res) != (count+7)/8 {
		return nil, c.broken(unit, what, fmt.Errorf("reply has %d bytes of bits, want %d", len(res), (count+7)/8))
	}
	bits := make([]bool, count)
	for i := range bits {
		bits[i] = res[i/8]>>(i%8)&1 != 0
	}
	return bits, nil
}

// maxWriteRegisters is the most one FC16 request may carry.
const maxWriteRegisters = 123

// WriteRegisters writes regs (1-123 registers) to holding registers from
// addr: one register with FC6, more with FC16. It returns once the device
// has confirmed the write. Blocking and errors are as for ReadRegisters.
func (c *RawClient) WriteRegisters(ctx context.Context, unit byte, addr int, regs []uint16) error {
	if len(regs) == 0 || len(regs) > maxWriteRegisters {
		return fmt.Errorf("modbus: write %d registers: one request carries 1-%d", len(regs), maxWriteRegisters)
	}
	t, err := checkRange(holdingRegisters.String(), addr, len(regs))
	if err != nil {
		return fmt.Errorf("modbus: %w", err)
	}
	if len(regs) == 1 {
		what := fmt.Sprintf("write %s (FC6)", cells(t, addr, 1))
		_, err := c.do(ctx, unit, modbus.FuncCodeWriteSingleRegister, what, func() ([]byte, error) {
			return c.client.WriteSingleRegister(uint16(addr), regs[0])
		})
		return err
	}
	what := fmt.Sprintf("write %s (FC16)", cells(t, addr, len(regs)))
	b := make([]byte, 2*len(regs))
	for i, r := range regs {
		b[2*i], b[2*i+1] = byte(r>>8), byte(r)
	}
	_, err = c.do(ctx, unit, modbus.FuncCodeWriteMultipleRegisters, what, func() ([]byte, error) {
		return c.client.WriteMultipleRegisters(uint16(addr), uint16(len(regs)), b)
	})
	return err
}

// WriteCoil sets one coil with FC5 and returns once the device has confirmed
// it. Blocking and errors are as for ReadRegisters.
func (c *RawClient) WriteCoil(ctx context.Context, unit byte, addr int, v bool) error {
	t, err := checkRange(coils.String(), addr, 1)
	if err != nil {
		return fmt.Errorf("modbus: %w", err)
	}
	val := uint16(0x0000)
	if v {
		val = 0xFF00
	}
	what := fmt.Sprintf("write %s (FC5)", cells(t, addr, 1))
	_, err = c.do(ctx, unit, modbus.FuncCodeWriteSingleCoil, what, func() ([]byte, error) {
		return c.client.WriteSingleCoil(uint16(addr), val)
	})
	return err
}

// CheckRead checks a read request before any I/O: the table (coil,
// discrete_input, input_register or holding_register), a count one request
// may carry (1-2000 bits, 1-125 registers) and addresses within 0-65535. It
// returns the table's canonical name and whether it holds bits.
func CheckRead(tableName string, addr, count int) (canonical string, bits bool, err error) {
	t, err := checkRange(tableName, addr, count)
	if err != nil {
		return "", false, err
	}
	return t.String(), t.isBits(), nil
}

// checkRange parses a table name and checks that count cells from addr are
// one valid request.
func checkRange(tableName string, addr, count int) (table, error) {
	t, ok := parseTable(tableName)
	if !ok {
		return 0, fmt.Errorf("table %q: use coil, discrete_input, input_register or holding_register", tableName)
	}
	if count < 1 || count > t.maxQuantity() {
		return 0, fmt.Errorf("count %d: one request reads 1-%d of a %s", count, t.maxQuantity(), t)
	}
	if addr < 0 || addr+count-1 > 65535 {
		if count == 1 {
			return 0, fmt.Errorf("%s address %d: addresses run 0-65535", t, addr)
		}
		return 0, fmt.Errorf("%s address %d, count %d: addresses run 0-65535", t, addr, count)
	}
	return t, nil
}

// cells names count cells of t from addr, as the driver's errors do:
// "holding_register 10-11".
func cells(t table, addr, count int) string {
	return describe(readRequest{table: t, address: addr, count: count})
}

// do runs one exchange: it dials if a failed exchange closed the connection,
// and turns a failure into an error naming what failed.
func (c *RawClient) do(ctx context.Context, unit byte, fc byte, what string, exchange func() ([]byte, error)) ([]byte, error) {
	if c.closed {
		return nil, fmt.Errorf("modbus: %s unit %d: %s: %w", c.link, unit, what, drivers.ErrNotConnected)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("modbus: %s unit %d: %s: %w", c.link, unit, what, err)
	}
	if !c.link.isOpen() {
		if err := c.open(ctx); err != nil {
			return nil, err
		}
	}
	c.link.begin(ctx, unit, c.timeout)
	res, err := exchange()
	if err == nil {
		return res, nil
	}
	var me *modbus.ModbusError
	if errors.As(err, &me) && me.FunctionCode == fc|0x80 {
		return nil, fmt.Errorf("modbus: %s unit %d: %s: %w", c.link, unit, what, &ExceptionError{Function: fc, Code: me.ExceptionCode})
	}
	if errors.As(err, new(*replyError)) {
		// RTU: no valid reply on a line that works; the transporter
		// drains the line before the next request, so it stays open.
		return nil, fmt.Errorf("modbus: %s unit %d: %s: %w", c.link, unit, what, err)
	}
	_ = c.link.close()
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return nil, fmt.Errorf("modbus: %s unit %d: %s: %w", c.link, unit, what, context.Canceled)
	case isTimeout(err):
		waited, ctxDead := c.link.lastWait()
		if ctxDead || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("modbus: %s unit %d: %s: %w: no reply within %s, the caller's deadline (%w)", c.link, unit, what, drivers.ErrTimeout, waited.Round(time.Millisecond), context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("modbus: %s unit %d: %s: %w: no reply within %s", c.link, unit, what, drivers.ErrTimeout, waited.Round(time.Millisecond))
	}
	return nil, fmt.Errorf("modbus: %s unit %d: %s: %w: %v", c.link, unit, what, drivers.ErrLinkBroken, err)
}

// broken closes the connection after a reply that does not fit its request.
func (c *RawClient) broken(unit byte, what string, err error) error {
	_ = c.link.close()
	return fmt.Errorf("modbus: %s unit %d: %s: %w: %v", c.link, unit, what, drivers.ErrLinkBroken, err)
}
