package modbussim

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer builds, binds and runs a server on 127.0.0.1:0; the cleanup
// cancels it and checks that Run returned nil.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of cancel")
		}
	})
	return s
}

// client is a minimal Modbus TCP client for tests, independent of the
// server's frame code.
type client struct {
	t    testing.TB
	conn net.Conn
	tid  uint16
}

func dial(t testing.TB, s *Server) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c}
}

// adu builds a request ADU.
func adu(tid uint16, unit byte, pdu ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, tid)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pdu)+1))
	b = append(b, unit)
	return append(b, pdu...)
}

// do sends pdu to unit and returns the response PDU, checking the MBAP
// header. It returns an error (not a test failure) on a timeout, so callers
// can expect silence.
func (c *client) do(unit byte, pdu ...byte) ([]byte, error) {
	c.tid++
	if _, err := c.conn.Write(adu(c.tid, unit, pdu...)); err != nil {
		return nil, err
	}
	return c.read(c.tid, unit, time.Second)
}

func (c *client) read(tid uint16, unit byte, timeout time.Duration) ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	var h [7]byte
	if _, err := io.ReadFull(c.conn, h[:]); err != nil {
		return nil, err
	}
	if got := binary.BigEndian.Uint16(h[0:]); got != tid {
		return nil, fmt.Errorf("transaction id %d, want %d", got, tid)
	}
	if pid := binary.BigEndian.Uint16(h[2:]); pid != 0 {
		return nil, fmt.Errorf("protocol id %d", pid)
	}
	if h[6] != unit {
		return nil, fmt.Errorf("unit %d, want %d", h[6], unit)
	}
	n := int(binary.BigEndian.Uint16(h[4:]))
	if n < 2 || n > 254 {
		return nil, fmt.Errorf("length %d", n)
	}
	pdu := make([]byte, n-1)
	if _, err := io.ReadFull(c.conn, pdu); err != nil {
		return nil, err
	}
	return pdu, nil
}

// must is do that fails the test on an error.
func (c *client) must(unit byte, pdu ...byte) []byte {
	c.t.Helper()
	resp, err := c.do(unit, pdu...)
	if err != nil {
		c.t.Fatalf("request % x to unit %d: %v", pdu, unit, err)
	}
	return resp
}

// readRegs reads n holding (fc 3) or input (fc 4) registers.
func (c *client) readRegs(unit, fc byte, addr, n uint16) []uint16 {
	c.t.Helper()
	resp := c.must(unit, fc, byte(addr>>8), byte(addr), byte(n>>8), byte(n))
	if resp[0] != fc || int(resp[1]) != 2*int(n) || len(resp) != 2+2*int(n) {
		c.t.Fatalf("read %d regs at %d: response % x", n, addr, resp)
	}
	w := make([]uint16, n)
	for i := range w {
		w[i] = binary.BigEndian.Uint16(resp[2+2*i:])
	}
	return w
}

func u16(v uint16) (byte, byte) { return byte(v >> 8), byte(v) }

// waitFor polls cond every 5ms for up to 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
