// Package modbus is edged's Modbus driver: a codec that turns a point's
// registers into a value and back in any byte and word order, and a Modbus
// TCP client for one link, built on github.com/goburrow/modbus.
package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/goburrow/modbus"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// Protocol is the link protocol this package serves.
const Protocol = "modbus-tcp"

// defaultTimeout applies when a link has none (config sets 1s by default).
const defaultTimeout = time.Second

var _ drivers.Driver = (*Driver)(nil)

// Driver is a Modbus TCP client for one link: one TCP connection, shared by
// every device (unit id) configured on it, one request at a time. It follows
// the drivers.Driver contract: it is never called concurrently, starts no
// goroutines of its own, and reads raw values (scaling is the normaliser's).
type Driver struct {
	link    config.Link
	log     *slog.Logger
	devices []device

	packager *modbus.TCPClientHandler // MBAP framing, transaction ids, unit id
	tr       transport
	client   modbus.Client
	state    connState
	regs     [4]uint16 // write scratch: the widest type spans 4 registers
}

type connState uint8

const (
	closed connState = iota // not connected: Poll and Write return ErrNotConnected
	open
	// redial: the connection was closed after a timeout or cancellation,
	// not because the link failed; the next request dials again itself.
	redial
)

type device struct {
	name   string
	unit   byte
	points []point
	reqs   []readRequest
	base   []int       // base[r]: where request r's values start in regs
	regs   []uint16    // the values read, one per register or bit
	exc    []byte      // exc[r]: exception code of request r, 0 if it was answered
	at     []time.Time // at[r]: when request r's reply arrived
}

type point struct {
	name    string
	table   table
	address int
	codec   Codec
	loc     location
}

// New builds the driver for link and the devices on it. profiles looks up a
// device's profile by name (config.(*Config).Profile). New does no I/O: it
// checks every point (table, type, order, address) and plans each device's
// read requests once. Errors name the link, device and point.
func New(link config.Link, devices []config.Device, profiles func(name string) (*config.Profile, bool), log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	where := fmt.Sprintf("modbus: link %q", link.Name)
	if link.Protocol != "" && link.Protocol != Protocol {
		return nil, fmt.Errorf("%s: protocol %q is not %s", where, link.Protocol, Protocol)
	}
	if link.Address == "" {
		return nil, fmt.Errorf("%s: address is required (host:port)", where)
	}
	if link.Timeout <= 0 {
		link.Timeout = defaultTimeout
	}
	if profiles == nil {
		return nil, fmt.Errorf("%s: no profile lookup", where)
	}
	d := &Driver{
		link:     link,
		log:      log.With("link", link.Name),
		packager: modbus.NewTCPClientHandler(link.Address),
	}
	d.client = modbus.NewClient2(d.packager, &d.tr)
	var errs []error
	for _, cd := range devices {
		dev, derrs := newDevice(cd, profiles)
		for _, err := range derrs {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if len(derrs) > 0 {
			continue
		}
		d.devices = append(d.devices, dev)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return d, nil
}

// Factory adapts New to drivers.Factory: profiles are looked up in cfg.
//
//	reg.Register(modbus.Protocol, modbus.Factory(cfg))
func Factory(cfg *config.Config) drivers.Factory {
	return func(link config.Link, devices []config.Device, log *slog.Logger) (drivers.Driver, error) {
		d, err := New(link, devices, cfg.Profile, log)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
}

// newDevice checks a device's points and plans its reads; it returns every
// mistake, each naming the device and point.
func newDevice(cd config.Device, profiles func(string) (*config.Profile, bool)) (device, []error) {
	dev := device{name: cd.Name}
	if cd.UnitID == nil {
		return dev, []error{fmt.Errorf("device %q: unit_id is required", cd.Name)}
	}
	if u := *cd.UnitID; u < 0 || u > 255 {
		return dev, []error{fmt.Errorf("device %q: unit_id %d out of range 0-255", cd.Name, u)}
	}
	dev.unit = byte(*cd.UnitID)
	prof, ok := profiles(cd.Profile)
	if !ok || prof == nil {
		return dev, []error{fmt.Errorf("device %q: profile %q is not defined", cd.Name, cd.Profile)}
	}
	var errs []error
	spans := make([]span, len(prof.Points))
	dev.points = make([]point, len(prof.Points))
	for i, cp := range prof.Points {
		p, err := newPoint(cp)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %q point %q: %w", cd.Name, cp.Name, err))
			continue
		}
		dev.points[i] = p
		spans[i] = span{table: p.table, address: p.address, count: p.codec.Registers()}
	}
	if len(errs) > 0 {
		return dev, errs
	}
	var locs []location
	dev.reqs, locs = planReads(spans)
	for i := range dev.points {
		dev.points[i].loc = locs[i]
	}
	dev.base = make([]int, len(dev.reqs))
	total := 0
	for r, req := range dev.reqs {
		dev.base[r] = total
		total += req.count
	}
	dev.regs = make([]uint16, total)
	dev.exc = make([]byte, len(dev.reqs))
	dev.at = make([]time.Time, len(dev.reqs))
	return dev, nil
}

func newPoint(cp config.Point) (point, error) {
	p := point{name: cp.Name}
	t, ok := parseTable(cp.Table)
	if !ok {
		return p, fmt.Errorf("table %q: use coil, discrete_input, input_register or holding_register", cp.Table)
	}
	p.table = t
	c, err := NewCodec(cp.Type, cp.Order)
	if err != nil {
		return p, err
	}
	p.codec = c
	if (c.Kind() == telemetry.KindBool) != t.isBits() {
		if t.isBits() {
			return p, fmt.Errorf("type %s needs a register table, not %s", cp.Type, t)
		}
		return p, fmt.Errorf("type bool reads a coil or discrete_input, not %s", t)
	}
	if cp.Address == nil {
		return p, errors.New("address is required")
	}
	p.address = *cp.Address
	if p.address < 0 || p.address+c.Registers()-1 > 65535 {
		return p, fmt.Errorf("address %d out of range: a %s at it does not fit in 0-65535", p.address, cp.Type)
	}
	return p, nil
}

// Connect opens the TCP connection, closing any previous one. ctx bounds the
// dial, and so does the link's timeout. A failure wraps
// drivers.ErrNotConnected.
func (d *Driver) Connect(ctx context.Context) error {
	d.closeConn(closed)
	return d.dial(ctx)
}

func (d *Driver) dial(ctx context.Context) error {
	dialer := net.Dialer{Timeout: d.link.Timeout}
	conn, err := dialer.DialContext(ctx, "tcp", d.link.Address)
	if err != nil {
		d.state = closed
		return fmt.Errorf("modbus: link %q: connect %s: %w: %w", d.link.Name, d.link.Address, drivers.ErrNotConnected, err)
	}
	d.tr.conn = conn
	d.state = open
	return nil
}

// Close closes the connection. It is safe to call when not connected.
func (d *Driver) Close() error {
	return d.closeConn(closed)
}

func (d *Driver) closeConn(next connState) error {
	d.state = next
	if d.tr.conn == nil {
		return nil
	}
	err := d.tr.conn.Close()
	d.tr.conn = nil
	return err
}

// ensureConn makes sure a connection is open before a request. After a
// timeout the driver closed the connection itself (so that a late reply
// cannot be taken for the answer to the next request); it dials again here,
// without bothering the engine. After Close or a broken link it returns
// ErrNotConnected: reconnecting is the engine's, with backoff.
func (d *Driver) ensureConn(ctx context.Context, dev *device) error {
	switch d.state {
	case open:
		return nil
	case redial:
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("modbus: device %q: %w", dev.name, err)
		}
		d.log.Debug("reconnecting after a timeout", "device", dev.name)
		if err := d.dial(ctx); err != nil {
			return fmt.Errorf("modbus: device %q: %w", dev.name, err)
		}
		return nil
	}
	return fmt.Errorf("modbus: link %q device %q: %w", d.link.Name, dev.name, drivers.ErrNotConnected)
}

func (d *Driver) device(dev int) (*device, error) {
	if dev < 0 || dev >= len(d.devices) {
		return nil, fmt.Errorf("modbus: link %q: no device #%d (have %d)", d.link.Name, dev, len(d.devices))
	}
	return &d.devices[dev], nil
}

// Poll reads every point of device dev, executing its planned requests in
// turn, and appends one sample per profile point, in profile order. A Modbus
// exception makes the points of that request Bad, with a reason such as
// "exception 2 (illegal data address)"; the other points stay Good. Each
// request waits at most min(link timeout, ctx deadline) for its reply.
//
// On a timeout Poll returns an error wrapping drivers.ErrTimeout and closes
// the connection (the next request dials again). On any other transport
// failure (connection closed or reset, a reply that does not belong to the
// request) it closes the connection and returns an error wrapping
// drivers.ErrLinkBroken; the engine must Connect again. If ctx is cancelled
// the error wraps ctx.Err(). On any error, Poll appends nothing.
func (d *Driver) Poll(ctx context.Context, dev int, buf []telemetry.Sample) ([]telemetry.Sample, error) {
	dv, err := d.device(dev)
	if err != nil {
		return buf, err
	}
	if err := d.ensureConn(ctx, dv); err != nil {
		return buf, err
	}
	for r := range dv.reqs {
		if err := ctx.Err(); err != nil { // nothing in flight: keep the connection
			if errors.Is(err, context.DeadlineExceeded) {
				return buf, fmt.Errorf("modbus: device %q: %w: the caller's deadline passed before %s (%w)", dv.name, drivers.ErrTimeout, describe(dv.reqs[r]), err)
			}
			return buf, fmt.Errorf("modbus: device %q: %w", dv.name, err)
		}
		if err := d.read(ctx, dv, r); err != nil {
			return buf, err
		}
	}
	for i := range dv.points {
		p := &dv.points[i]
		r := p.loc.req
		s := telemetry.Sample{Point: i, Time: dv.at[r]}
		if code := dv.exc[r]; code != 0 {
			s.Quality = telemetry.Bad
			s.Reason = exceptionReason(code)
		} else {
			at := dv.base[r] + p.loc.offset
			v, err := p.codec.Decode(dv.regs[at : at+p.codec.Registers()])
			if err != nil { // cannot happen: the plan sized every slice
				s.Quality = telemetry.Bad
				s.Reason = err.Error()
			} else {
				s.Value = v
			}
		}
		buf = append(buf, s)
	}
	return buf, nil
}

// read executes request r of dv, storing its values, or its exception code.
func (d *Driver) read(ctx context.Context, dv *device, r int) error {
	req := dv.reqs[r]
	d.begin(ctx, dv)
	addr, qty := uint16(req.address), uint16(req.count)
	var res []byte
	var err error
	switch req.table {
	case coils:
		res, err = d.client.ReadCoils(addr, qty)
	case discreteInputs:
		res, err = d.client.ReadDiscreteInputs(addr, qty)
	case inputRegisters:
		res, err = d.client.ReadInputRegisters(addr, qty)
	case holdingRegisters:
		res, err = d.client.ReadHoldingRegisters(addr, qty)
	}
	dv.at[r] = time.Now()
	dv.exc[r] = 0
	if err != nil {
		var me *modbus.ModbusError
		if errors.As(err, &me) && me.FunctionCode == req.table.readFunction()|0x80 {
			dv.exc[r] = me.ExceptionCode
			if me.ExceptionCode == 0 { // a malformed exception reply
				dv.exc[r] = 0xff
			}
			return nil
		}
		return d.fail(ctx, err, dv, fmt.Sprintf("read %s", describe(req)))
	}
	out := dv.regs[dv.base[r] : dv.base[r]+req.count]
	if req.table.isBits() {
		if len(res) != (req.count+7)/8 {
			return d.fail(ctx, fmt.Errorf("reply has %d bytes of bits, want %d", len(res), (req.count+7)/8), dv, fmt.Sprintf("read %s", describe(req)))
		}
		for i := range out {
			out[i] = uint16(res[i/8]>>(i%8)) & 1
		}
		return nil
	}
	if len(res) != 2*req.count {
		return d.fail(ctx, fmt.Errorf("reply has %d bytes, want %d", len(res), 2*req.count), dv, fmt.Sprintf("read %s", describe(req)))
	}
	for i := range out {
		out[i] = uint16(res[2*i])<<8 | uint16(res[2*i+1])
	}
	return nil
}

func describe(r readRequest) string {
	if r.count == 1 {
		return fmt.Sprintf("%s %d", r.table, r.address)
	}
	return fmt.Sprintf("%s %d-%d", r.table, r.address, r.address+r.count-1)
}

// begin prepares the packager and transport for one request to dv.
func (d *Driver) begin(ctx context.Context, dv *device) {
	d.packager.SlaveId = dv.unit
	d.tr.ctx = ctx
	d.tr.timeout = d.link.Timeout
}

// fail classifies a request's transport error, closes the connection and
// returns the error the engine acts on.
func (d *Driver) fail(ctx context.Context, err error, dv *device, what string) error {
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		d.closeConn(redial)
		return fmt.Errorf("modbus: device %q: %s: %w", dv.name, what, context.Canceled)
	case isTimeout(err):
		d.closeConn(redial)
		if d.tr.ctxDead || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("modbus: device %q (unit %d): %s: %w: no reply within %s, the caller's deadline (%w)", dv.name, dv.unit, what, drivers.ErrTimeout, d.tr.waited.Round(time.Millisecond), context.DeadlineExceeded)
		}
		return fmt.Errorf("modbus: device %q (unit %d): %s: %w: no reply within %s", dv.name, dv.unit, what, drivers.ErrTimeout, d.tr.waited.Round(time.Millisecond))
	case errors.Is(err, drivers.ErrNotConnected):
		d.closeConn(closed)
		return fmt.Errorf("modbus: device %q: %s: %w", dv.name, what, err)
	}
	d.closeConn(closed)
	return fmt.Errorf("modbus: device %q (unit %d): %s: %w: %v", dv.name, dv.unit, what, drivers.ErrLinkBroken, err)
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Write encodes v with the point's codec and writes it: a coil with FC5, one
// holding register with FC6, more with FC16. It returns once the device has
// confirmed the write. Discrete inputs and input registers are read-only
// (drivers.ErrUnsupported); a value the point's type cannot hold is an error
// before any I/O; a Modbus exception wraps drivers.ErrDevice. Timeouts and
// link failures are handled as in Poll.
func (d *Driver) Write(ctx context.Context, dev, pt int, v telemetry.Value) error {
	dv, err := d.device(dev)
	if err != nil {
		return err
	}
	if pt < 0 || pt >= len(dv.points) {
		return fmt.Errorf("modbus: device %q: no point #%d (have %d)", dv.name, pt, len(dv.points))
	}
	p := &dv.points[pt]
	if p.table == discreteInputs || p.table == inputRegisters {
		return fmt.Errorf("modbus: device %q point %q: %w: %s is read-only", dv.name, p.name, drivers.ErrUnsupported, p.table)
	}
	regs := d.regs[:p.codec.Registers()]
	if err := p.codec.encodeTo(regs, v); err != nil {
		return fmt.Errorf("modbus: device %q point %q: %w", dv.name, p.name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("modbus: device %q point %q: %w", dv.name, p.name, err)
	}
	if err := d.ensureConn(ctx, dv); err != nil {
		return err
	}
	d.begin(ctx, dv)
	addr := uint16(p.address)
	var fc string
	switch {
	case p.table == coils:
		fc = "FC5"
		val := uint16(0x0000)
		if regs[0] != 0 {
			val = 0xFF00
		}
		_, err = d.client.WriteSingleCoil(addr, val)
	case len(regs) == 1:
		fc = "FC6"
		_, err = d.client.WriteSingleRegister(addr, regs[0])
	default:
		fc = "FC16"
		var b [8]byte
		for i, r := range regs {
			b[2*i], b[2*i+1] = byte(r>>8), byte(r)
		}
		_, err = d.client.WriteMultipleRegisters(addr, uint16(len(regs)), b[:2*len(regs)])
	}
	if err == nil {
		return nil
	}
	var me *modbus.ModbusError
	if errors.As(err, &me) && me.FunctionCode&0x80 != 0 {
		return fmt.Errorf("modbus: device %q point %q: write %s %d (%s): %w: %s", dv.name, p.name, p.table, p.address, fc, drivers.ErrDevice, exceptionReason(me.ExceptionCode))
	}
	return d.fail(ctx, err, dv, fmt.Sprintf("point %q: write %s %d (%s)", p.name, p.table, p.address, fc))
}

// exceptionNames are the Modbus exception codes (Modbus Application Protocol
// v1.1b3, section 7), as sample reasons.
var exceptionNames = [...]string{
	1:  "exception 1 (illegal function)",
	2:  "exception 2 (illegal data address)",
	3:  "exception 3 (illegal data value)",
	4:  "exception 4 (server device failure)",
	5:  "exception 5 (acknowledge)",
	6:  "exception 6 (server device busy)",
	8:  "exception 8 (memory parity error)",
	10: "exception 10 (gateway path unavailable)",
	11: "exception 11 (gateway target device failed to respond)",
}

func exceptionReason(code byte) string {
	if int(code) < len(exceptionNames) && exceptionNames[code] != "" {
		return exceptionNames[code]
	}
	return "exception " + strconv.Itoa(int(code))
}
