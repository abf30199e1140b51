package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
)

// fakeDevice is a scripted Modbus TCP peer for byte-level tests: it records
// each request ADU and answers with whatever reply returns (nil: silence).
type fakeDevice struct {
	ln    net.Listener
	rtu   bool // RTU frames over TCP (requests of 8 bytes only) instead of MBAP
	reply func(req []byte) []byte

	mu    sync.Mutex
	reqs  [][]byte
	conns []net.Conn
	wg    sync.WaitGroup
}

func newFakeDevice(t *testing.T, reply func(req []byte) []byte) *fakeDevice {
	return startFakeDevice(t, &fakeDevice{reply: reply})
}

func startFakeDevice(t *testing.T, d *fakeDevice) *fakeDevice {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.ln = ln
	d.wg.Add(1)
	go d.accept()
	t.Cleanup(func() {
		ln.Close()
		d.mu.Lock()
		for _, c := range d.conns {
			c.Close()
		}
		d.mu.Unlock()
		d.wg.Wait()
	})
	return d
}

func (d *fakeDevice) addr() string { return d.ln.Addr().String() }

func (d *fakeDevice) accept() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
		d.wg.Add(1)
		go d.serve(c)
	}
}

func (d *fakeDevice) serve(c net.Conn) {
	defer d.wg.Done()
	for {
		var req []byte
		if d.rtu {
			req = make([]byte, 8) // unit, function, address, count or value, CRC
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
		} else {
			head := make([]byte, mbapHeader)
			if _, err := io.ReadFull(c, head); err != nil {
				return
			}
			req = make([]byte, mbapHeader-1+int(binary.BigEndian.Uint16(head[4:])))
			copy(req, head)
			if _, err := io.ReadFull(c, req[mbapHeader:]); err != nil {
				return
			}
		}
		d.mu.Lock()
		d.reqs = append(d.reqs, req)
		d.mu.Unlock()
		if res := d.reply(req); res != nil {
			if _, err := c.Write(res); err != nil {
				return
			}
		}
	}
}

func (d *fakeDevice) requests() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reqs)
}

func (d *fakeDevice) connections() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// answer builds the reply ADU to req carrying pdu: same transaction id and
// unit.
func answer(req []byte, pdu []byte) []byte {
	res := make([]byte, mbapHeader, mbapHeader+len(pdu))
	copy(res, req[:mbapHeader])
	binary.BigEndian.PutUint16(res[4:], uint16(1+len(pdu)))
	return append(res, pdu...)
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRawClientFrames: each call sends exactly these bytes (unit id and PDU,
// after the MBAP header) and reads this reply.
func TestRawClientFrames(t *testing.T) {
	cases := []struct {
		name      string
		call      func(ctx context.Context, c *RawClient) (any, error)
		req, resp string // hex: unit id + PDU
		want      any
		wantErr   string
	}{
		{"read holding FC3",
			func(ctx context.Context, c *RawClient) (any, error) {
				return c.ReadRegisters(ctx, 1, "holding_register", 10, 2)
			},
			"01 03 000A 0002", "01 03 04 199A 4366", []uint16{0x199A, 0x4366}, ""},
		{"read input FC4, unit 247",
			func(ctx context.Context, c *RawClient) (any, error) {
				return c.ReadRegisters(ctx, 247, "input_register", 0, 1)
			},
			"F7 04 0000 0001", "F7 04 02 8001", []uint16{0x8001}, ""},
		{"read coils FC1",
			func(ctx context.Context, c *RawClient) (any, error) {
				return c.ReadBits(ctx, 1, "coil", 0, 10)
			},
			"01 01 0000 000A", "01 01 02 21 02",
			[]bool{true, false, false, false, false, true, false, false, false, true}, ""},
		{"read discrete inputs FC2",
			func(ctx context.Context, c *RawClient) (any, error) {
				return c.ReadBits(ctx, 1, "discrete_input", 65535, 1)
			},
			"01 02 FFFF 0001", "01 02 01 01", []bool{true}, ""},
		{"write one register FC6",
			func(ctx context.Context, c *RawClient) (any, error) {
				return nil, c.WriteRegisters(ctx, 1, 100, []uint16{0xFFFE})
			},
			"01 06 0064 FFFE", "01 06 0064 FFFE", nil, ""},
		{"write registers FC16",
			func(ctx context.Context, c *RawClient) (any, error) {
				return nil, c.WriteRegisters(ctx, 1, 100, []uint16{0x0000, 0x424A})
			},
			"01 10 0064 0002 04 0000 424A", "01 10 0064 0002", nil, ""},
		{"write coil on FC5",
			func(ctx context.Context, c *RawClient) (any, error) { return nil, c.WriteCoil(ctx, 1, 3, true) },
			"01 05 0003 FF00", "01 05 0003 FF00", nil, ""},
		{"write coil off FC5",
			func(ctx context.Context, c *RawClient) (any, error) { return nil, c.WriteCoil(ctx, 1, 3, false) },
			"01 05 0003 0000", "01 05 0003 0000", nil, ""},
		{"exception by name",
			func(ctx context.Context, c *RawClient) (any, error) {
				return c.ReadRegisters(ctx, 1, "holding_register", 298, 4)
			},
			"01 03 012A 0004", "01 83 02", nil,
			"unit 1: read holding_register 298-301 (FC3): exception 2 (illegal data address)"},
		{"exception on write",
			func(ctx context.Context, c *RawClient) (any, error) {
				return nil, c.WriteRegisters(ctx, 1, 0, []uint16{1, 2})
			},
			"01 10 0000 0002 04 0001 0002", "01 90 01", nil,
			"write holding_register 0-1 (FC16): exception 1 (illegal function)"},
		{"gateway exception",
			func(ctx context.Context, c *RawClient) (any, error) { return c.ReadBits(ctx, 9, "coil", 0, 1) },
			"09 01 0000 0001", "09 81 0B", nil,
			"unit 9: read coil 0 (FC1): exception 11 (gateway target device failed to respond)"},
		{"too few registers",
			func(ctx context.Context, c *RawClient) (any, error) {
				return c.ReadRegisters(ctx, 1, "holding_register", 0, 2)
			},
			"01 03 0000 0002", "01 03 02 0001", nil, "link broken: reply has 2 bytes of registers, want 4"},
		{"reply of another function",
			func(ctx context.Context, c *RawClient) (any, error) {
				return c.ReadRegisters(ctx, 1, "holding_register", 0, 1)
			},
			"01 03 0000 0001", "01 04 02 0001", nil, "link broken"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := unhex(t, tc.resp)
			dev := newFakeDevice(t, func(req []byte) []byte {
				return answer(req, resp[1:])
			})
			c, err := DialTCP(context.Background(), dev.addr(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := tc.call(context.Background(), c)
			reqs := dev.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			if want := unhex(t, tc.req); !bytes.Equal(reqs[0][6:], want) {
				t.Errorf("request % X, want % X", reqs[0][6:], want)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch w := tc.want.(type) {
			case []uint16:
				if !slices.Equal(got.([]uint16), w) {
					t.Errorf("got %04X, want %04X", got, w)
				}
			case []bool:
				if !slices.Equal(got.([]bool), w) {
					t.Errorf("got %v, want %v", got, w)
				}
			}
		})
	}
}

func TestRawClientExceptionError(t *testing.T) {
	dev := newFakeDevice(t, func(req []byte) []byte { return answer(req, []byte{0x83, 0x02}) })
	c, err := DialTCP(context.Background(), dev.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ReadRegisters(context.Background(), 1, "holding_register", 0, 1)
	var exc *ExceptionError
	if !errors.As(err, &exc) || exc.Code != 2 || exc.Function != 3 || !errors.Is(err, drivers.ErrDevice) {
		t.Fatalf("err = %v (%#v), want an ExceptionError 2 of FC3 that is drivers.ErrDevice", err, exc)
	}
	// an exception leaves the connection up
	if _, err := c.ReadRegisters(context.Background(), 1, "holding_register", 0, 1); !errors.As(err, &exc) {
		t.Fatal(err)
	}
	if n := dev.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestRawClientTimeoutRedials: a request that gets no reply fails with
// ErrTimeout within the timeout; the connection is dropped (so a late reply
// can never answer a later request) and the next request dials again.
func TestRawClientTimeoutRedials(t *testing.T) {
	var n int
	var mu sync.Mutex
	dev := newFakeDevice(t, func(req []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n == 1 {
			return nil // silence
		}
		return answer(req, []byte{0x03, 0x02, 0x12, 0x34})
	})
	c, err := DialTCP(context.Background(), dev.addr(), 150*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.ReadRegisters(context.Background(), 5, "holding_register", 0, 1)
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "unit 5: read holding_register 0 (FC3): timeout: no reply within 150ms") {
		t.Fatalf("err = %v, want a timeout naming the unit and request", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the timeout took %s", d)
	}
	regs, err := c.ReadRegisters(context.Background(), 5, "holding_register", 0, 1)
	if err != nil || regs[0] != 0x1234 {
		t.Fatalf("after the timeout: %04X, %v", regs, err)
	}
	if n := dev.connections(); n != 2 {
		t.Errorf("%d connections, want 2 (one dropped after the timeout)", n)
	}
}

func TestRawClientCancel(t *testing.T) {
	dev := newFakeDevice(t, func(req []byte) []byte { return nil })
	c, err := DialTCP(context.Background(), dev.addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = c.ReadBits(ctx, 1, "coil", 0, 1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancellation took %s", d)
	}
	// a deadline shorter than the timeout bounds the wait and says so
	ctx, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_, err = c.ReadBits(ctx, 1, "coil", 0, 1)
	if !errors.Is(err, drivers.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout and DeadlineExceeded", err)
	}
}

func TestRawClientStaleReply(t *testing.T) {
	// a reply with another transaction id is not the answer
	dev := newFakeDevice(t, func(req []byte) []byte {
		res := answer(req, []byte{0x03, 0x02, 0x00, 0x01})
		res[1]++
		return res
	})
	c, err := DialTCP(context.Background(), dev.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ReadRegisters(context.Background(), 1, "holding_register", 0, 1)
	if !errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), "transaction id") {
		t.Fatalf("err = %v, want ErrLinkBroken for the transaction id", err)
	}
}

// TestRawClientArguments: mistakes are reported before any I/O.
func TestRawClientArguments(t *testing.T) {
	dev := newFakeDevice(t, func(req []byte) []byte { return nil })
	c, err := DialTCP(context.Background(), dev.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"unknown table", func() error { _, err := c.ReadRegisters(ctx, 1, "holdings", 0, 1); return err }, `table "holdings": use coil, discrete_input, input_register or holding_register`},
		{"count 0", func() error { _, err := c.ReadRegisters(ctx, 1, "holding_register", 0, 0); return err }, "count 0: one request reads 1-125 of a holding_register"},
		{"count 126", func() error { _, err := c.ReadRegisters(ctx, 1, "input_register", 0, 126); return err }, "count 126: one request reads 1-125"},
		{"2001 bits", func() error { _, err := c.ReadBits(ctx, 1, "coil", 0, 2001); return err }, "count 2001: one request reads 1-2000 of a coil"},
		{"past 65535", func() error { _, err := c.ReadRegisters(ctx, 1, "holding_register", 65535, 2); return err }, "holding_register address 65535, count 2: addresses run 0-65535"},
		{"negative", func() error { _, err := c.ReadBits(ctx, 1, "coil", -1, 1); return err }, "coil address -1: addresses run 0-65535"},
		{"bits as registers", func() error { _, err := c.ReadRegisters(ctx, 1, "coil", 0, 1); return err }, "coil holds bits, not registers"},
		{"registers as bits", func() error { _, err := c.ReadBits(ctx, 1, "holding_register", 0, 1); return err }, "holding_register holds registers, not bits"},
		{"write nothing", func() error { return c.WriteRegisters(ctx, 1, 0, nil) }, "write 0 registers: one request carries 1-123"},
		{"write 124", func() error { return c.WriteRegisters(ctx, 1, 0, make([]uint16, 124)) }, "write 124 registers"},
		{"write past the end", func() error { return c.WriteRegisters(ctx, 1, 65535, []uint16{1, 2}) }, "addresses run 0-65535"},
		{"coil past the end", func() error { return c.WriteCoil(ctx, 1, 65536, true) }, "coil address 65536"},
	} {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if n := len(dev.requests()); n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
}

func TestRawClientClosed(t *testing.T) {
	dev := newFakeDevice(t, func(req []byte) []byte { return nil })
	c, err := DialTCP(context.Background(), dev.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.ReadRegisters(context.Background(), 1, "holding_register", 0, 1); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("after Close: %v, want ErrNotConnected", err)
	}
}

func TestDialTCPRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = DialTCP(context.Background(), addr, time.Second)
	if !errors.Is(err, drivers.ErrNotConnected) || !strings.Contains(err.Error(), "connect "+addr) {
		t.Fatalf("err = %v, want ErrNotConnected naming %s", err, addr)
	}
}

// rtuAnswer builds the RTU reply to req carrying pdu: unit id, PDU, CRC.
func rtuAnswer(req []byte, pdu []byte) []byte {
	f := append([]byte{req[0]}, pdu...)
	crc := crc16(f)
	return append(f, byte(crc), byte(crc>>8))
}

// TestRawClientRTUOverTCP: RTU frames to a serial device server; a request
// that gets no reply is a timeout that leaves the connection open (the line
// is drained, not redialled), and a CRC error is treated as one too.
func TestRawClientRTUOverTCP(t *testing.T) {
	var mu sync.Mutex
	n := 0
	dev := startFakeDevice(t, &fakeDevice{rtu: true, reply: func(req []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		n++
		switch n {
		case 2:
			return nil // silence
		case 3:
			res := rtuAnswer(req, []byte{0x03, 0x02, 0x12, 0x34})
			res[len(res)-1] ^= 0xFF // a CRC error
			return res
		case 4:
			return rtuAnswer(req, []byte{0x83, 0x02})
		}
		return rtuAnswer(req, []byte{0x03, 0x02, 0x12, 0x34})
	}})
	c, err := DialRTU(context.Background(), config.Link{Protocol: ProtocolRTUOverTCP, Address: dev.addr(), Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	regs, err := c.ReadRegisters(ctx, 7, "holding_register", 10, 1)
	if err != nil || regs[0] != 0x1234 {
		t.Fatalf("read: %04X %v", regs, err)
	}
	if want := rtuAnswer([]byte{7}, unhex(t, "03 000A 0001")); !bytes.Equal(dev.requests()[0], want) {
		t.Errorf("request % X, want % X", dev.requests()[0], want)
	}
	_, err = c.ReadRegisters(ctx, 7, "holding_register", 10, 1)
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "device server "+dev.addr()+" unit 7: read holding_register 10 (FC3): timeout") {
		t.Fatalf("silence: %v", err)
	}
	_, err = c.ReadRegisters(ctx, 7, "holding_register", 10, 1)
	if !errors.Is(err, drivers.ErrTimeout) || !strings.Contains(err.Error(), "garbled reply") {
		t.Fatalf("CRC error: %v", err)
	}
	_, err = c.ReadRegisters(ctx, 7, "holding_register", 10, 1)
	var exc *ExceptionError
	if !errors.As(err, &exc) || exc.Code != 2 {
		t.Fatalf("exception: %v", err)
	}
	if regs, err := c.ReadRegisters(ctx, 7, "holding_register", 10, 1); err != nil || regs[0] != 0x1234 {
		t.Fatalf("after: %04X %v", regs, err)
	}
	if n := dev.connections(); n != 1 {
		t.Errorf("%d connections, want 1: an RTU line is drained, not redialled", n)
	}
}

func TestCheckRTU(t *testing.T) {
	for _, c := range []struct {
		link config.Link
		want string
	}{
		{config.Link{Protocol: ProtocolRTU, Device: "/dev/ttyUSB0"}, ""},
		{config.Link{Protocol: ProtocolRTU, Device: "/dev/ttyUSB0", Baud: 19200, Parity: "none", StopBits: 2}, ""},
		{config.Link{Protocol: ProtocolRTU}, "device is required"},
		{config.Link{Protocol: ProtocolRTU, Device: "/dev/ttyUSB0", Baud: 12345}, "baud 12345"},
		{config.Link{Protocol: ProtocolRTU, Device: "/dev/ttyUSB0", Parity: "mark"}, `parity "mark"`},
		{config.Link{Protocol: ProtocolRTUOverTCP}, "address is required"},
		{config.Link{Protocol: Protocol, Address: "h:502"}, `protocol "modbus-tcp": DialRTU serves modbus-rtu and modbus-rtu-tcp`},
	} {
		err := CheckRTU(c.link)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.link, err, c.want)
		}
	}
	// a port that does not exist: not connected, naming it
	_, err := DialRTU(context.Background(), config.Link{Protocol: ProtocolRTU, Device: filepath.Join(t.TempDir(), "ttyNone"), Parity: "none"})
	if !errors.Is(err, drivers.ErrNotConnected) || !strings.Contains(err.Error(), "ttyNone") {
		t.Errorf("missing port: %v", err)
	}
}
