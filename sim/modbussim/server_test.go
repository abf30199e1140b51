package modbussim

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock lets a test move the server's time.
type fakeClock struct {
	base time.Time
	off  atomic.Int64
}

func (c *fakeClock) now() time.Time          { return c.base.Add(time.Duration(c.off.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// newWithClock builds (does not start) a server whose time stands still
// until advanced.
func newWithClock(t *testing.T, cfg Config) (*Server, *fakeClock) {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{base: s.start}
	s.now = clk.now
	return s, clk
}

// run binds and runs s, like startServer.
func run(t *testing.T, s *Server) {
	t.Helper()
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
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
			t.Errorf("Run did not return")
		}
	})
}

func TestConcurrentClients(t *testing.T) {
	cfg := Config{Units: []Unit{{ID: 1, Tables: Tables{
		HoldingRegisters: []Signal{{Address: 0, Count: 200, Generator: c(0)}},
		InputRegisters: []Signal{{Address: 0, Count: 50, Type: "float32",
			Generator: Generator{RandomWalk: &RandomWalk{Start: 50, Step: 1, Min: 0, Max: 100, Every: time.Millisecond}}}},
	}}}}
	s := startServer(t, cfg)
	const clients, rounds = 32, 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &client{t: t}
			conn, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			cl.conn = conn
			for r := range rounds {
				v := uint16(i*1000 + r)
				hi, lo := u16(v)
				if resp, err := cl.do(1, 6, 0, byte(i), hi, lo); err != nil || resp[0] != 6 {
					errs <- errors.Join(err, errors.New("write failed"))
					return
				}
				resp, err := cl.do(1, 3, 0, 0, 0, 125)
				if err != nil || len(resp) != 252 {
					errs <- errors.Join(err, errors.New("read failed"))
					return
				}
				if got := binary.BigEndian.Uint16(resp[2+2*i:]); got != v {
					errs <- errors.New("read back a different value")
					return
				}
				resp, err = cl.do(1, 4, 0, 0, 0, 100) // all 50 random walks
				if err != nil || len(resp) != 202 {
					errs <- errors.Join(err, errors.New("input read failed"))
					return
				}
				for k := range 50 {
					f := math.Float32frombits(binary.BigEndian.Uint32(resp[2+4*k:]))
					if f < 0 || f > 100 {
						errs <- errors.New("random walk out of bounds")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := s.Stats()
	if st.Requests != clients*rounds*3 || st.Connections != clients || st.Exceptions != 0 || st.Malformed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestPipelining(t *testing.T) {
	s := startServer(t, fixtureConfig())
	cl := dial(t, s)
	var b []byte
	b = append(b, adu(10, 1, 3, 0, 0, 0, 1)...)
	b = append(b, adu(11, 9, 3, 0, 0, 0, 1)...) // unknown unit: skipped
	b = append(b, adu(12, 1, 7)...)
	b = append(b, adu(13, 1, 4, 0, 2, 0, 1)...)
	if _, err := cl.conn.Write(b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		tid uint16
		pdu string
	}{{10, "03 02 1234"}, {12, "87 01"}, {13, "04 02 fffe"}} {
		got, err := cl.read(want.tid, 1, time.Second)
		if err != nil {
			t.Fatalf("tid %d: %v", want.tid, err)
		}
		if !bytes.Equal(got, h(want.pdu)) {
			t.Errorf("tid %d: % x, want %s", want.tid, got, want.pdu)
		}
	}
	st := s.Stats()
	if st.Requests != 4 || st.Unanswered != 1 || st.Exceptions != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnknownUnitSilentOverTCP(t *testing.T) {
	s := startServer(t, fixtureConfig())
	cl := dial(t, s)
	if _, err := cl.conn.Write(adu(1, 2, 3, 0, 0, 0, 1)); err != nil {
		t.Fatal(err)
	}
	if resp, err := cl.read(1, 2, 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unknown unit: got % x, %v; want a timeout", resp, err)
	}
	// the connection still serves known units
	if got := cl.readRegs(1, 3, 0, 1); got[0] != 0x1234 {
		t.Fatalf("after silence: %04x", got)
	}
}

func TestMalformedClosesConnection(t *testing.T) {
	tests := []struct {
		name  string
		bytes string
		half  bool // close our write side after sending (truncation)
	}{
		{name: "protocol id 1", bytes: "0001 0001 0006 01 03 0000 0001"},
		{name: "length 0", bytes: "0001 0000 0000 01"},
		{name: "length 300", bytes: "0001 0000 012c 01 03"},
		{name: "truncated PDU", bytes: "0001 0000 0006 01 03 00", half: true},
		{name: "truncated header", bytes: "0001 00", half: true},
	}
	s := startServer(t, fixtureConfig())
	other := dial(t, s) // a bystander that must keep working
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := dial(t, s)
			if _, err := cl.conn.Write(h(tt.bytes)); err != nil {
				t.Fatal(err)
			}
			if tt.half {
				if err := cl.conn.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			_ = cl.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := cl.conn.Read(make([]byte, 10)); err != io.EOF {
				t.Fatalf("read %d, %v; want EOF (server closed)", n, err)
			}
			waitFor(t, "malformed count", func() bool { return s.Stats().Malformed == uint64(i+1) })
			if got := other.readRegs(1, 3, 0, 1); got[0] != 0x1234 {
				t.Fatalf("bystander: %04x", got)
			}
		})
	}
	if st := s.Stats(); st.Requests != uint64(len(tests)) {
		t.Errorf("requests %d, want %d (the bystander's only)", st.Requests, len(tests))
	}
}

func TestShutdownClosesConnections(t *testing.T) {
	cfg := fixtureConfig()
	cfg.ResponseDelay = time.Hour // a reply in progress must not hold up shutdown
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	if _, err := conns[0].Write(adu(1, 1, 3, 0, 0, 0, 1)); err != nil { // waits in the delay
		t.Fatal(err)
	}
	if _, err := conns[1].Write(h("0001 0000 0006 01 03")); err != nil { // half a frame
		t.Fatal(err)
	}
	waitFor(t, "5 active connections and a request", func() bool {
		st := s.Stats()
		return st.Active == 5 && st.Requests == 1
	})
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("shutdown took %v", d)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("conn %d still open after shutdown: %v", i, err)
		}
	}
	if st := s.Stats(); st.Active != 0 || st.Malformed != 0 {
		t.Errorf("stats after shutdown %+v", st)
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts")
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Run: %v, want ErrClosed", err)
	}
}

func TestLifecycle(t *testing.T) {
	s, err := New(fixtureConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Error("Addr before Listen")
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrNotListening) {
		t.Errorf("Run before Listen: %v", err)
	}
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err == nil {
		t.Error("second Listen succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	dial(t, s).readRegs(1, 3, 0, 1) // served, so Run has started
	if err := s.Close(); !errors.Is(err, ErrRunning) {
		t.Errorf("Close while running: %v", err)
	}
	if err := s.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("concurrent Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}

	// Close releases a listener that never ran.
	s2, _ := New(fixtureConfig(), nil)
	if err := s2.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	// A port in use.
	s3, _ := New(fixtureConfig(), nil)
	if err := s3.Listen(context.Background(), s2.Addr().String()); err != nil {
		t.Logf("(port reused: %v)", err)
	} else {
		s3.Close()
	}
}

func TestMaxConnections(t *testing.T) {
	cfg := fixtureConfig()
	cfg.MaxConnections = 1
	s := startServer(t, cfg)
	first := dial(t, s)
	first.readRegs(1, 3, 0, 1) // the first connection is being served
	second := dial(t, s)
	_ = second.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := second.conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("second connection: %v, want EOF", err)
	}
	waitFor(t, "rejected", func() bool { return s.Stats().Rejected == 1 })
	first.conn.Close()
	waitFor(t, "first to go", func() bool { return s.Stats().Active == 0 })
	third := dial(t, s)
	third.readRegs(1, 3, 0, 1)
}

func TestIdleTimeout(t *testing.T) {
	cfg := fixtureConfig()
	cfg.IdleTimeout = 100 * time.Millisecond
	s := startServer(t, cfg)
	cl := dial(t, s)
	cl.readRegs(1, 3, 0, 1)
	start := time.Now()
	_ = cl.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := cl.conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
}

func TestResponseDelay(t *testing.T) {
	cfg := fixtureConfig()
	cfg.ResponseDelay = 100 * time.Millisecond
	s := startServer(t, cfg)
	cl := dial(t, s)
	for range 2 { // the second reuses the timer
		start := time.Now()
		cl.readRegs(1, 3, 0, 1)
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("reply after %v, want >= 100ms", d)
		}
	}
}

func TestGeneratorsOverTCP(t *testing.T) {
	cfg := Config{Units: []Unit{{ID: 1, Tables: Tables{
		InputRegisters: []Signal{
			{Address: 0, Type: "uint32", Generator: Generator{Counter: &Counter{Start: 0xfffffffe, Step: 1, Per: time.Second}}},
			{Address: 2, Type: "int16", Scale: 0.1, Generator: Generator{Sine: &Sine{Amplitude: 10, Offset: 20, Period: 4 * time.Second}}},
		},
		HoldingRegisters: []Signal{
			{Address: 0, Type: "float32", Order: "CDAB", Generator: Generator{Sine: &Sine{Amplitude: 1, Offset: 5, Period: time.Minute}}},
		},
		Coils: []Signal{{Address: 0, Generator: Generator{Toggle: &Toggle{Period: time.Second}}}},
	}}}}
	s, clk := newWithClock(t, cfg)
	run(t, s)
	cl := dial(t, s)
	check := func(when string, counter uint32, temp int16, coil byte) {
		t.Helper()
		w := cl.readRegs(1, 4, 0, 3)
		if got := uint32(w[0])<<16 | uint32(w[1]); got != counter {
			t.Errorf("%s: counter %d, want %d", when, got, counter)
		}
		if got := int16(w[2]); got != temp {
			t.Errorf("%s: temperature raw %d, want %d", when, got, temp)
		}
		if got := cl.must(1, 1, 0, 0, 0, 1); got[2] != coil {
			t.Errorf("%s: coil %d, want %d", when, got[2], coil)
		}
	}
	check("t=0", 0xfffffffe, 200, 0)
	clk.advance(time.Second) // quarter of the sine's period
	check("t=1s", 0xffffffff, 300, 1)
	clk.advance(time.Second)
	check("t=2s", 0, 200, 0) // the counter wrapped
	clk.advance(time.Second)
	check("t=3s", 1, 100, 1)

	// A write freezes the signal at the written value.
	f := math.Float32bits(-7.25)
	hiHi, hiLo := u16(uint16(f >> 16))
	loHi, loLo := u16(uint16(f))
	cl.must(1, 0x10, 0, 0, 0, 2, 4, loHi, loLo, hiHi, hiLo) // CDAB: low word first
	for range 3 {
		w := cl.readRegs(1, 3, 0, 2)
		if got := math.Float32frombits(uint32(w[1])<<16 | uint32(w[0])); got != -7.25 {
			t.Fatalf("after write: %v, want -7.25", got)
		}
		clk.advance(7 * time.Second)
	}
	cl.must(1, 5, 0, 0, 0, 0) // coil off, and it stays off through toggles
	for range 3 {
		if got := cl.must(1, 1, 0, 0, 0, 1); got[2] != 0 {
			t.Fatalf("written coil toggled")
		}
		clk.advance(time.Second)
	}
}

// TestUnitsAreIndependent: units sharing a profile keep their own writes
// and walk differently.
func TestUnitsAreIndependent(t *testing.T) {
	cfg, err := LoadConfig("testdata/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, clk := newWithClock(t, cfg)
	run(t, s)
	cl := dial(t, s)
	cl.must(1, 6, 0, 0, 0, 42)
	if got := cl.readRegs(2, 3, 0, 1)[0]; got != 100 {
		t.Errorf("unit 2 ct_ratio %d after writing unit 1's", got)
	}
	if got := cl.readRegs(1, 3, 0, 1)[0]; got != 42 {
		t.Errorf("unit 1 ct_ratio %d, want 42", got)
	}
	clk.advance(time.Hour)
	a, b := cl.readRegs(1, 4, 2, 2), cl.readRegs(2, 4, 2, 2)
	if a[0] == b[0] && a[1] == b[1] {
		t.Errorf("units 1 and 2 current walks alike after an hour: %04x", a)
	}
}
