// Package modbus is edged's Modbus driver: a codec that turns a point's
// registers into a value and back in any byte and word order, and a Modbus
// client for one link, built on github.com/goburrow/modbus: Modbus TCP, and
// Modbus RTU on a serial port or over TCP to a serial device server (rtu.go).
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

// The link protocols this package serves.
const (
	Protocol           = "modbus-tcp"
	ProtocolRTU        = "modbus-rtu"     // a serial port: link.Device, Baud, DataBits, Parity, StopBits
	ProtocolRTUOverTCP = "modbus-rtu-tcp" // RTU frames over TCP to a serial device server at link.Address
)

// defaultTimeout applies when a link has none (config sets 1s by default).
const defaultTimeout = time.Second

var _ drivers.Driver = (*Driver)(nil)

// Driver is a Modbus client for one link: one TCP connection (or one serial
// port), shared by every device (unit id) configured on it, one request at a
// time. It follows the drivers.Driver contract: it is never called
// concurrently, starts no goroutines of its own, and reads raw values
// (scaling is the normaliser's).
type Driver struct {
	link    config.Link
	log     *slog.Logger
	devices []device

	packager *modbus.TCPClientHandler // MBAP framing, transaction ids, unit id
	tr       transport
	rtu      *rtuTransport // modbus-rtu, modbus-rtu-tcp: replaces packager and tr
	client   modbus.Client
	state    connState
	regs     [maxStringRegisters]uint16 // write scratch: a string spans up to 123 registers
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
	name    string
	unit    byte
	timeout time.Duration // per request; 0: the link's
	retries int           // how often a request that timed out is sent again
	points  []point
	reqs    []readRequest
	base    []int       // base[r]: where request r's values start in regs
	regs    []uint16    // the values read, one per register or bit
	exc     []byte      // exc[r]: exception code of request r, 0 if it was answered
	at      []time.Time // at[r]: when request r's reply arrived
}

type point struct {
	name    string
	table   table
	address int
	codec   Codec
	access  access
	loc     location // loc.req is -1 for a write-only point: it is not read
	last    string   // a string point's last value, kept while it does not change
}

// access is what may be done with a point (config.Point.Access).
type access uint8

const (
	readOnly  access = iota // "read", the default
	writeOnly               // "write": never read
	readWrite               // "readwrite"
)

func (a access) String() string { return [...]string{"read", "write", "readwrite"}[a] }

// New builds the driver for link and the devices on it. profiles looks up a
// device's profile by name (config.(*Config).Profile). New does no I/O: it
// checks every point (table, type, order, address) and plans each device's
// read requests once. Errors name the link, device and point.
func New(link config.Link, devices []config.Device, profiles func(name string) (*config.Profile, bool), log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	where := fmt.Sprintf("modbus: link %q", link.Name)
	switch link.Protocol {
	case "", Protocol, ProtocolRTU, ProtocolRTUOverTCP:
	default:
		return nil, fmt.Errorf("%s: protocol %q is not %s, %s or %s", where, link.Protocol, Protocol, ProtocolRTU, ProtocolRTUOverTCP)
	}
	if link.Address == "" && link.Protocol != ProtocolRTU {
		return nil, fmt.Errorf("%s: address is required (host:port)", where)
	}
	if link.Timeout <= 0 {
		link.Timeout = defaultTimeout
	}
	rtu, err := newTransporter(link, log.With("link", link.Name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
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
	if rtu != nil {
		d.rtu = rtu
		d.client = modbus.NewClient2(rtu.packager, rtu)
	}
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

// newDevice checks a device's points and limits and plans its reads; it
// returns every mistake, each naming the device and point.
//
// The limits are the device's (config.Device MaxRegisters, MaxBits, MaxGap,
// which config resolves from the profile), else the profile's, else the
// protocol's: 125 registers, 2000 bits, no gap. No request covers an address
// of the profile's no_read ranges. Write-only points are not read.
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
	errf := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("device %q: "+format, append([]any{cd.Name}, args...)...))
	}
	if cd.Timeout < 0 {
		errf("timeout must not be negative")
	}
	dev.timeout = cd.Timeout
	if cd.Retries < 0 || cd.Retries > 10 {
		errf("retries %d: 0-10", cd.Retries)
	}
	dev.retries = cd.Retries
	lim := planLimits{maxRegisters: prof.MaxRegisters, maxBits: prof.MaxBits, maxGap: prof.MaxGap}
	if cd.MaxRegisters != 0 {
		lim.maxRegisters = cd.MaxRegisters
	}
	if cd.MaxBits != 0 {
		lim.maxBits = cd.MaxBits
	}
	if cd.MaxGap != nil {
		lim.maxGap = *cd.MaxGap
	}
	if lim.maxRegisters < 0 || lim.maxRegisters > 125 {
		errf("max_registers %d: 1-125 (the Modbus limit)", lim.maxRegisters)
	}
	if lim.maxBits < 0 || lim.maxBits > 2000 {
		errf("max_bits %d: 1-2000 (the Modbus limit)", lim.maxBits)
	}
	if lim.maxGap < 0 {
		errf("max_gap must not be negative")
	}
	for _, r := range prof.NoRead {
		t, ok := parseTable(r.Table)
		if !ok || r.From < 0 || r.From > r.To || r.To > 65535 {
			errf("profile %q: no_read %s %d-%d: give a table and zero-based addresses 0 <= from <= to <= 65535", prof.Name, r.Table, r.From, r.To)
			continue
		}
		lim.noRead = append(lim.noRead, addressRange{table: t, from: r.From, to: r.To})
	}
	// plan the points that are read; spanOf[k] is the point of span k
	spans := make([]span, 0, len(prof.Points))
	spanOf := make([]int, 0, len(prof.Points))
	dev.points = make([]point, len(prof.Points))
	for i, cp := range prof.Points {
		p, err := newPoint(cp)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %q point %q: %w", cd.Name, cp.Name, err))
			continue
		}
		dev.points[i] = p
		if p.access == writeOnly {
			dev.points[i].loc = location{req: -1}
			continue
		}
		spans = append(spans, span{table: p.table, address: p.address, count: p.codec.Registers()})
		spanOf = append(spanOf, i)
	}
	if len(errs) > 0 {
		return dev, errs
	}
	reqs, locs, err := planReads(spans, lim)
	if err != nil {
		var pe *planError
		if errors.As(err, &pe) {
			return dev, []error{fmt.Errorf("device %q point %q: %s", cd.Name, prof.Points[spanOf[pe.Span]].Name, pe.Msg)}
		}
		return dev, []error{fmt.Errorf("device %q: %w", cd.Name, err)}
	}
	dev.reqs = reqs
	for k, i := range spanOf {
		dev.points[i].loc = locs[k]
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
	c, err := PointCodec(cp)
	if err != nil {
		return p, err
	}
	p.codec = c
	_, isBit := c.Bit()
	switch {
	case t.isBits() && isBit:
		return p, fmt.Errorf("bit is for register tables; a %s is already one bit", t)
	case t.isBits() && c.Kind() != telemetry.KindBool:
		return p, fmt.Errorf("type %s needs a register table, not %s", cp.Type, t)
	case !t.isBits() && c.form == formBool:
		return p, fmt.Errorf("type bool reads a coil or discrete_input, or one bit of a register: give bit (0-15) for a bool in %s", t)
	}
	switch cp.Access {
	case "", "read":
		p.access = readOnly
	case "write":
		p.access = writeOnly
	case "readwrite":
		p.access = readWrite
	default:
		return p, fmt.Errorf("access %q: read, write or readwrite", cp.Access)
	}
	if p.access != readOnly && (t == discreteInputs || t == inputRegisters) {
		return p, fmt.Errorf("access %s: a %s cannot be written", p.access, t)
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

// Connect opens the TCP connection (modbus-rtu: the serial port), closing any
// previous one. ctx bounds the dial, and so does the link's timeout. A failure
// wraps drivers.ErrNotConnected.
func (d *Driver) Connect(ctx context.Context) error {
	d.closeConn(closed)
	return d.dial(ctx)
}

func (d *Driver) dial(ctx context.Context) error {
	if d.rtu != nil {
		if err := d.rtu.open(ctx, d.link.Timeout); err != nil {
			d.state = closed
			return fmt.Errorf("modbus: link %q: %w", d.link.Name, err)
		}
		d.state = open
		return nil
	}
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
	if d.rtu != nil {
		if next == redial && d.rtu.isOpen() {
			// A serial line is not re-dialled after a timeout: the
			// transporter drains it before the next request instead.
			d.rtu.dirty = true
			d.state = open
			return nil
		}
		d.state = next
		return d.rtu.close()
	}
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
// "exception 2 (illegal data address)"; the other points stay Good. A point
// whose registers do not decode (a BCD nibble above 9) is Bad with a reason
// such as "invalid BCD 0x12A4". A write-only point is not read: its sample
// is Bad with the reason "write-only point".
//
// Each request waits at most min(device timeout, ctx deadline) for its
// reply; the device timeout defaults to the link's. A request that gets no
// reply in time is sent again, up to the device's retries, each time on a
// new connection (so that the late reply to one attempt cannot be taken for
// the answer to the next); then Poll returns an error wrapping
// drivers.ErrTimeout. Exception 10 or 11 from a gateway (gateway path
// unavailable, gateway target device failed to respond) is the device being
// unreachable: an error wrapping drivers.ErrTimeout, with the exception in
// its text, and exception 11 is retried like a timeout. The connection is
// kept.
//
// On any other transport failure (connection closed or reset, a reply that
// does not belong to the request) Poll closes the connection and returns an
// error wrapping drivers.ErrLinkBroken; the engine must Connect again. If
// ctx is cancelled the error wraps ctx.Err(). On any error, Poll appends
// nothing.
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
	var now time.Time
	for i := range dv.points {
		p := &dv.points[i]
		r := p.loc.req
		if r < 0 {
			if now.IsZero() {
				now = time.Now()
			}
			buf = append(buf, telemetry.Sample{Point: i, Time: now, Quality: telemetry.Bad, Reason: "write-only point"})
			continue
		}
		s := telemetry.Sample{Point: i, Time: dv.at[r]}
		if code := dv.exc[r]; code != 0 {
			s.Quality = telemetry.Bad
			s.Reason = exceptionReason(code)
		} else {
			at := dv.base[r] + p.loc.offset
			v, err := p.codec.decode(dv.regs[at:at+p.codec.Registers()], p.last)
			if err != nil {
				s.Quality = telemetry.Bad
				s.Reason = err.Error()
			} else {
				s.Value = v
				if v.Kind == telemetry.KindString {
					p.last = v.S
				}
			}
		}
		buf = append(buf, s)
	}
	return buf, nil
}

// read executes request r of dv, storing its values, or its exception code.
func (d *Driver) read(ctx context.Context, dv *device, r int) error {
	req := dv.reqs[r]
	o := op{fc: req.table.readFunction(), table: req.table, addr: req.address, count: req.count, out: dv.regs[dv.base[r] : dv.base[r]+req.count]}
	exc, err := d.send(ctx, dv, &o)
	dv.at[r] = time.Now()
	dv.exc[r] = exc
	return err
}

func describe(r readRequest) string {
	if r.count == 1 {
		return fmt.Sprintf("%s %d", r.table, r.address)
	}
	return fmt.Sprintf("%s %d-%d", r.table, r.address, r.address+r.count-1)
}

// Exception codes that a Modbus TCP gateway answers for the serial device
// behind it.
const (
	excGatewayPath   = 10 // gateway path unavailable
	excGatewayTarget = 11 // gateway target device failed to respond
)

// send executes o on dv: it dials again if a timeout closed the connection,
// and sends o again while it times out, up to dv.retries times. It returns
// the exception code of an exception reply, or the error the engine acts on.
//
// Exceptions 10 and 11 are not returned as codes: they are errors wrapping
// drivers.ErrTimeout. A gateway answers them for a device behind it that it
// cannot reach or that did not answer it: the device is as unreachable as
// one that does not answer on the gateway's own link, and every other
// request to it would meet the same fate after the gateway's own serial
// timeout. Reporting them as Bad points would show a device that is gone as
// partly alive and make each poll wait out that timeout once per request;
// as a timeout, the engine treats the device like a silent one, keeps the
// link (the gateway is fine), and the error names the exception.
func (d *Driver) send(ctx context.Context, dv *device, o *op) (byte, error) {
	for attempt := 1; ; attempt++ {
		if err := d.ensureConn(ctx, dv); err != nil {
			return 0, err
		}
		d.begin(ctx, dv)
		exc, err := o.run(d.client)
		if err == nil {
			switch exc {
			case excGatewayTarget:
				if attempt <= dv.retries && !expired(ctx) {
					d.log.Debug("gateway says the device did not respond; sending the request again", "device", dv.name, "request", o.String(), "attempt", attempt+1)
					continue
				}
				fallthrough
			case excGatewayPath:
				return 0, &drivers.ReasonError{Reason: exceptionReason(exc), Err: fmt.Errorf("modbus: device %q (unit %d): %s: %w: unreachable, the gateway answered %s%s", dv.name, dv.unit, o.String(), drivers.ErrTimeout, exceptionReason(exc), attempts(attempt))}
			}
			return exc, nil
		}
		ferr := d.fail(ctx, err, dv, o.String())
		if errors.Is(ferr, drivers.ErrTimeout) && attempt <= dv.retries && !expired(ctx) {
			d.log.Debug("no reply in time; sending the request again", "device", dv.name, "request", o.String(), "attempt", attempt+1)
			continue
		}
		if attempt > 1 {
			ferr = fmt.Errorf("%w%s", ferr, attempts(attempt))
		}
		return 0, ferr
	}
}

// expired reports whether ctx is done or its deadline has passed (its timer
// may not have fired yet when a read deadline set from it already has): a
// request is not sent again then.
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func attempts(n int) string {
	if n == 1 {
		return ""
	}
	return fmt.Sprintf(" (%d attempts)", n)
}

// begin prepares the packager and transport for one request to dv.
func (d *Driver) begin(ctx context.Context, dv *device) {
	d.packager.SlaveId = dv.unit
	d.tr.ctx = ctx
	d.tr.timeout = d.link.Timeout
	if dv.timeout > 0 {
		d.tr.timeout = dv.timeout
	}
	if d.rtu != nil {
		d.rtu.begin(ctx, dv.unit, d.tr.timeout)
	}
}

// fail classifies a request's transport error, closes the connection and
// returns the error the engine acts on.
func (d *Driver) fail(ctx context.Context, err error, dv *device, what string) error {
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		d.closeConn(redial)
		return fmt.Errorf("modbus: device %q: %s: %w", dv.name, what, context.Canceled)
	case errors.As(err, new(*replyError)):
		// RTU: no valid reply in time on a line that works (rtu.go).
		d.closeConn(redial)
		return fmt.Errorf("modbus: device %q (unit %d): %s: %w", dv.name, dv.unit, what, err)
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

// op is one request the driver sends: a planned read, or a write.
type op struct {
	fc    byte // function code
	table table
	addr  int
	count int      // reads: registers or bits
	out   []uint16 // reads: the values, one per register or bit
	regs  []uint16 // writes: the registers (FC5: regs[0] != 0 is on)
	point string   // writes: the point written, for errors
}

// String names the request in errors: `read holding_register 0-9 (FC3)`,
// `point "setpoint": write holding_register 12-13 (FC16)`.
func (o *op) String() string {
	if o.point == "" {
		return fmt.Sprintf("read %s (FC%d)", describe(readRequest{o.table, o.addr, o.count}), o.fc)
	}
	verb := "write"
	if o.out != nil {
		verb = "read-modify-write: read"
	}
	return fmt.Sprintf("point %q: %s %s (FC%d)", o.point, verb, describe(readRequest{o.table, o.addr, max(o.count, len(o.regs), 1)}), o.fc)
}

// errMalformed is a reply that does not fit its request.
var errMalformed = errors.New("malformed reply")

// run sends o with c and decodes the reply: the values of a read into o.out,
// or the exception code of an exception reply (255 for one without a code).
// A reply whose function code, byte count or echo does not match the
// request is an error; values come only from a well-formed reply.
func (o *op) run(c modbus.Client) (exc byte, err error) {
	a, n := uint16(o.addr), uint16(o.count)
	var res []byte
	switch o.fc {
	case modbus.FuncCodeReadCoils:
		res, err = c.ReadCoils(a, n)
	case modbus.FuncCodeReadDiscreteInputs:
		res, err = c.ReadDiscreteInputs(a, n)
	case modbus.FuncCodeReadHoldingRegisters:
		res, err = c.ReadHoldingRegisters(a, n)
	case modbus.FuncCodeReadInputRegisters:
		res, err = c.ReadInputRegisters(a, n)
	case modbus.FuncCodeWriteSingleCoil:
		v := uint16(0x0000)
		if o.regs[0] != 0 {
			v = 0xFF00
		}
		_, err = c.WriteSingleCoil(a, v)
	case modbus.FuncCodeWriteSingleRegister:
		_, err = c.WriteSingleRegister(a, o.regs[0])
	case modbus.FuncCodeWriteMultipleRegisters:
		b := make([]byte, 2*len(o.regs))
		for i, r := range o.regs {
			b[2*i], b[2*i+1] = byte(r>>8), byte(r)
		}
		_, err = c.WriteMultipleRegisters(a, uint16(len(o.regs)), b)
	default:
		return 0, fmt.Errorf("modbus: function code %d is not one the driver sends", o.fc)
	}
	if err != nil {
		var me *modbus.ModbusError
		if errors.As(err, &me) && me.FunctionCode == o.fc|0x80 {
			if me.ExceptionCode == 0 { // a malformed exception reply
				return 0xff, nil
			}
			return me.ExceptionCode, nil
		}
		return 0, err
	}
	if o.out == nil {
		return 0, nil
	}
	switch o.fc {
	case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs:
		if len(res) != (o.count+7)/8 {
			return 0, fmt.Errorf("%w: %d bytes of bits, want %d", errMalformed, len(res), (o.count+7)/8)
		}
		for i := range o.out {
			o.out[i] = uint16(res[i/8]>>(i%8)) & 1
		}
	default:
		if len(res) != 2*o.count {
			return 0, fmt.Errorf("%w: %d bytes, want %d", errMalformed, len(res), 2*o.count)
		}
		for i := range o.out {
			o.out[i] = uint16(res[2*i])<<8 | uint16(res[2*i+1])
		}
	}
	return 0, nil
}

// Write encodes v with the point's codec and writes it: a coil with FC5, one
// holding register with FC6, more (a 32- or 64-bit value, a string) with
// FC16. It returns once the device has confirmed the write.
//
// A bool at a bit of a holding register is written by read-modify-write: Write
// reads the register (FC3), sets or clears the bit and writes the register
// back (FC6). This is not atomic on the device: a change another master
// makes to the register's other bits between the read and the write is
// lost. A bit of an input register cannot be written.
//
// Points whose access is read (the default), discrete inputs and input
// registers are refused with drivers.ErrUnsupported; a value the point's
// type cannot hold (out of range, a string longer than its field) is an
// error; both before any I/O. A Modbus exception wraps drivers.ErrDevice.
// Timeouts, retries, gateway exceptions 10 and 11 and link failures are
// handled as in Poll; the device timeout bounds each request.
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
	if p.access == readOnly {
		return fmt.Errorf("modbus: device %q point %q: %w: the point is read-only (access: read); give it access readwrite or write to write it", dv.name, p.name, drivers.ErrUnsupported)
	}
	regs := d.regs[:p.codec.Registers()]
	// check the value before any I/O (for a bit, against any register)
	if err := p.codec.EncodeInto(regs, v); err != nil {
		return fmt.Errorf("modbus: device %q point %q: %w", dv.name, p.name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("modbus: device %q point %q: %w", dv.name, p.name, err)
	}
	if err := d.ensureConn(ctx, dv); err != nil {
		return err
	}
	o := op{table: p.table, addr: p.address, regs: regs, point: p.name}
	_, isBit := p.codec.Bit()
	switch {
	case p.table == coils:
		o.fc = modbus.FuncCodeWriteSingleCoil
	case isBit:
		rd := op{fc: modbus.FuncCodeReadHoldingRegisters, table: holdingRegisters, addr: p.address, count: 1, out: regs, point: p.name}
		exc, err := d.send(ctx, dv, &rd)
		if err != nil {
			return err
		}
		if exc != 0 {
			return fmt.Errorf("modbus: device %q (unit %d): %s: %w: %s", dv.name, dv.unit, rd.String(), drivers.ErrDevice, exceptionReason(exc))
		}
		if err := p.codec.EncodeInto(regs, v); err != nil { // cannot fail: checked above
			return fmt.Errorf("modbus: device %q point %q: %w", dv.name, p.name, err)
		}
		o.fc = modbus.FuncCodeWriteSingleRegister
	case len(regs) == 1:
		o.fc = modbus.FuncCodeWriteSingleRegister
	default:
		o.fc = modbus.FuncCodeWriteMultipleRegisters
	}
	exc, err := d.send(ctx, dv, &o)
	if err != nil {
		return err
	}
	if exc != 0 {
		return fmt.Errorf("modbus: device %q (unit %d): %s: %w: %s", dv.name, dv.unit, o.String(), drivers.ErrDevice, exceptionReason(exc))
	}
	return nil
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
