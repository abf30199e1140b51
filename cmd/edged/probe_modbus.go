//go:build !edged_no_modbus

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/drivers/modbus"
)

func init() {
	probers["modbus"] = prober{usage: modbusProbeUsage, run: probeModbus}
}

const modbusProbeUsage = `modbus: read registers and see them as every type and byte order at once;
write one value the way a profile point would.

  edged probe modbus LINK [-unit N] (-table TABLE -address A | -register R)
                     [-count N] [-expect X] [-timeout D] [-json]
  edged probe modbus LINK [-unit N] (-table TABLE -address A | -register R)
                     -write VALUE [-type TYPE] [-order ORDER] [-timeout D] [-json]

  LINK is one of
  -addr HOST[:PORT]  Modbus TCP to a device or gateway (port 502 unless given)
  -addr HOST:PORT -rtu-tcp
                     Modbus RTU frames over TCP, to a serial device server
  -rtu DEVICE        Modbus RTU on a serial port, e.g. /dev/ttyUSB0, with
    -baud N          1200-230400 (default 9600)
    -parity P        none, even, odd (default even, the Modbus standard)
    -databits N      7 or 8 (default 8)
    -stopbits N      1 or 2 (default 1)

  -unit N            unit (slave) id, 0-255 (default 1)
  -table TABLE       coil, discrete_input, input_register, holding_register (default holding_register)
  -address A         zero-based protocol address, 0-65535
  -register R        instead of -table and -address: the one-based number of the manual,
                     40001 = holding_register 0, 30001 = input_register 0, 10001, 1
  -count N           registers (default 8, at most 125) or bits (default 16, at most 2000) to read
  -expect X          the value the device shows now: marks the interpretations within 1%
                     (also scaled by 0.1, 0.01, ... 10, 100, ...) and prints their profile lines
  -write VALUE       write VALUE (FC6 for one register, FC16 for more; coils: true/false, FC5),
                     then read it back
  -type TYPE         with -write to registers: int16, uint16, int32, uint32, int64, uint64,
                     float32, float64, bcd16, bcd32, string
  -order ORDER       with -write: ABCD (default), DCBA, BADC, CDAB; ABCDEFGH, ... for 64 bits;
                     AB or BA for a string
  -timeout D         per request (default 1s)
  -json              machine-readable output

  Exit status: 0 done, 1 the device or the link failed (or did not keep a written value),
  2 a mistake in the flags.

  Examples:
    edged probe modbus -addr 192.168.1.20 -register 40001 -count 10 -expect 230.1
    edged probe modbus -addr 192.168.1.20 -unit 3 -table coil -address 0 -count 32
    edged probe modbus -addr 192.168.1.20 -register 40101 -write 50.5 -type float32 -order CDAB
    edged probe modbus -rtu /dev/ttyUSB0 -baud 19200 -parity none -unit 7 -register 30001
`

// modbusProbe is one probe, as the flags give it.
type modbusProbe struct {
	addr    string       // Modbus TCP
	rtu     *config.Link // Modbus RTU: a serial port, or over TCP
	unit    byte
	table   string
	address int
	count   int
	timeout time.Duration
	expect  *float64
	json    bool
	write   *modbus.WriteRequest // with -write
}

func probeModbus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	p, err := parseModbusProbe(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, modbusProbeUsage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "edged probe modbus: %v\n(edged probe modbus -h lists the flags)\n", err)
		return 2
	}
	var c *modbus.RawClient
	if p.rtu != nil {
		c, err = modbus.DialRTU(ctx, *p.rtu)
	} else {
		c, err = modbus.DialTCP(ctx, p.addr, p.timeout)
	}
	if err != nil {
		return probeFailed(stderr, err)
	}
	defer c.Close()
	var out interface {
		WriteText(io.Writer) error
	}
	kept := true
	if p.write != nil {
		w, err := modbus.ProbeWrite(ctx, c, p.unit, p.write)
		if err != nil {
			return probeFailed(stderr, err)
		}
		out, kept = w, w.Kept()
	} else {
		pr, err := modbus.ProbeRead(ctx, c, p.unit, p.table, p.address, p.count, p.expect)
		if err != nil {
			return probeFailed(stderr, err)
		}
		out = pr
	}
	if p.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(out)
	} else {
		err = out.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "edged probe modbus: %v\n", err)
		return 1
	}
	if !kept {
		fmt.Fprintln(stderr, "edged probe modbus: the device does not hold the value written")
		return 1
	}
	return 0
}

// parseModbusProbe checks the flags, without any I/O.
func parseModbusProbe(args []string) (*modbusProbe, error) {
	fs := flag.NewFlagSet("probe modbus", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the usage text is ours; errors are returned
	addr := fs.String("addr", "", "")
	rtuDevice := fs.String("rtu", "", "")
	rtuTCP := fs.Bool("rtu-tcp", false, "")
	baud := fs.Int("baud", 0, "")
	parity := fs.String("parity", "", "")
	dataBits := fs.Int("databits", 0, "")
	stopBits := fs.Int("stopbits", 0, "")
	unit := fs.Int("unit", 1, "")
	tableName := fs.String("table", "holding_register", "")
	address := fs.Int("address", 0, "")
	register := fs.Int("register", 0, "")
	count := fs.Int("count", 0, "")
	expect := fs.String("expect", "", "")
	write := fs.String("write", "", "")
	typ := fs.String("type", "", "")
	order := fs.String("order", "", "")
	timeout := fs.Duration("timeout", time.Second, "")
	asJSON := fs.Bool("json", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags take the form -name value)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	p := &modbusProbe{unit: byte(*unit), timeout: *timeout, json: *asJSON}
	var err error
	serial := set["baud"] || set["parity"] || set["databits"] || set["stopbits"]
	switch {
	case set["rtu"] && set["addr"]:
		return nil, errors.New("give -addr (Modbus TCP; with -rtu-tcp, RTU over TCP) or -rtu (a serial port), not both")
	case serial && !set["rtu"]:
		return nil, errors.New("-baud, -parity, -databits and -stopbits are for -rtu (a serial port)")
	case *rtuTCP && !set["addr"]:
		return nil, errors.New("-rtu-tcp needs -addr: the serial device server's HOST:PORT")
	case set["rtu"]:
		p.rtu = &config.Link{Protocol: modbus.ProtocolRTU, Device: *rtuDevice, Baud: *baud, Parity: *parity, DataBits: *dataBits, StopBits: *stopBits, Timeout: *timeout}
		if *rtuDevice == "" {
			return nil, errors.New("-rtu needs the serial port, e.g. -rtu /dev/ttyUSB0")
		}
	case !set["addr"]:
		return nil, errors.New("-addr (Modbus TCP: the device's or gateway's IP address, port 502 unless given as HOST:PORT) or -rtu (a serial port, e.g. /dev/ttyUSB0) is required")
	default:
		if p.addr, err = tcpAddress(*addr); err != nil {
			return nil, err
		}
		if *rtuTCP {
			p.rtu = &config.Link{Protocol: modbus.ProtocolRTUOverTCP, Address: p.addr, Timeout: *timeout}
		}
	}
	if p.rtu != nil {
		if err := modbus.CheckRTU(*p.rtu); err != nil {
			return nil, err
		}
	}
	if *unit < 0 || *unit > 255 {
		return nil, fmt.Errorf("-unit %d: a unit id is 0-255 (1 unless the device says otherwise; often 255 or 0 for a TCP-only device)", *unit)
	}
	if *timeout <= 0 {
		return nil, fmt.Errorf("-timeout %s: give a positive duration such as 1s or 500ms", *timeout)
	}
	switch {
	case set["register"] && (set["table"] || set["address"]):
		return nil, errors.New("give -register (e.g. 40001) or -table and -address, not both")
	case set["register"]:
		if *tableName, *address, err = config.ParseRegister(*register); err != nil {
			return nil, fmt.Errorf("-register: %w", err)
		}
	case !set["address"]:
		return nil, errors.New("-address (zero-based, 0-65535) or -register (one-based, e.g. 40001) is required")
	}
	p.address = *address

	if set["write"] {
		switch {
		case set["count"]:
			return nil, errors.New("-count is for reading; -write writes one value of -type")
		case set["expect"]:
			return nil, errors.New("-expect is for reading; leave it out with -write")
		}
		if p.write, err = modbus.NewWriteRequest(*tableName, *address, *typ, *order, *write); err != nil {
			return nil, fmt.Errorf("-write %s: %w", *write, err)
		}
		return p, nil
	}
	if set["type"] || set["order"] {
		return nil, errors.New("-type and -order describe a value to -write; a read shows every type and order side by side")
	}
	_, bits, err := modbus.CheckRead(*tableName, p.address, 1)
	if err != nil {
		return nil, err
	}
	p.count = *count
	if !set["count"] {
		p.count = 8
		if bits {
			p.count = 16
		}
		p.count = max(1, min(p.count, 65536-p.address)) // near the end of the table
	}
	if p.table, _, err = modbus.CheckRead(*tableName, p.address, p.count); err != nil {
		return nil, err
	}
	if set["expect"] {
		if bits {
			return nil, fmt.Errorf("-expect is for registers; a %s holds bits", p.table)
		}
		x, err := strconv.ParseFloat(*expect, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("-expect %q: give the number the device shows now, e.g. 230.1", *expect)
		}
		if x == 0 {
			return nil, errors.New("-expect 0 would match every empty register: give a reading that is not 0")
		}
		p.expect = &x
	}
	return p, nil
}

// tcpAddress checks HOST[:PORT] and adds Modbus's port 502 when none is given.
func tcpAddress(s string) (string, error) {
	if s == "" {
		return "", errors.New("-addr is empty: give the device's or gateway's IP address")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(s, ":") && strings.Count(s, ":") == 1 || strings.HasPrefix(s, "[") {
			return "", fmt.Errorf("-addr %q: give HOST or HOST:PORT", s)
		}
		return net.JoinHostPort(s, "502"), nil // a name, IPv4 or bare IPv6 address
	}
	if host == "" {
		return "", fmt.Errorf("-addr %q: the host is missing", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("-addr %q: port %q is not 1-65535", s, port)
	}
	return s, nil
}

// probeFailed reports a failed exchange with a hint for the field and
// returns exit code 1.
func probeFailed(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "edged probe modbus: %v\n", err)
	if h := probeHint(err); h != "" {
		fmt.Fprintf(stderr, "hint: %s\n", h)
	}
	return 1
}

func probeHint(err error) string {
	var exc *modbus.ExceptionError
	switch {
	case errors.As(err, &exc):
		switch exc.Code {
		case 1:
			return fmt.Sprintf("the device does not support function %d here: try the other register table, or (for a write) a device that takes only FC6 needs 16-bit values", exc.Function)
		case 2:
			return "the device has no data at (some of) these addresses: check -address (zero-based) or -register (one-based, 40001 = address 0), and try a smaller -count"
		case 3:
			return "the device refused the value or the count"
		case 10, 11:
			return "a gateway could not reach the unit behind it: check -unit and the gateway's serial side"
		}
	case errors.Is(err, drivers.ErrTimeout):
		return "no reply: check -unit (a gateway does not answer for a unit id it does not know), the address, or raise -timeout"
	case errors.Is(err, drivers.ErrNotConnected):
		return "check the IP address and port (Modbus TCP: 502), and that no other client holds a device that accepts a single connection"
	case errors.Is(err, drivers.ErrLinkBroken):
		return "the connection broke or the reply made no sense: another protocol on this port (RTU over TCP?) or a device that closes idle connections"
	}
	return ""
}
