//go:build linux

package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/goburrow/modbus"
	"github.com/tarm/serial"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// openPTY opens a pty pair: the master, for a peer in the test, and the
// path of the slave, the "serial port" under test. The master is
// non-blocking, so closing it ends a Read in progress.
func openPTY(tb testing.TB) (*os.File, string) {
	tb.Helper()
	fd, err := syscall.Open("/dev/ptmx", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open /dev/ptmx: %v", err)
	}
	var unlock int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		syscall.Close(fd)
		tb.Fatalf("unlockpt: %v", errno)
	}
	var n uint32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); errno != 0 {
		syscall.Close(fd)
		tb.Fatalf("ptsname: %v", errno)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	tb.Cleanup(func() { _ = master.Close() })
	return master, "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
}

// answerPeer answers every request of reqLen bytes on master with reply, at
// once (a pty does not pace bytes at the baud rate), until master is closed.
// The returned func closes it and waits for the peer to end.
func answerPeer(master *os.File, reqLen int, reply []byte) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := make([]byte, reqLen)
		for {
			if _, err := io.ReadFull(master, req); err != nil {
				return
			}
			if _, err := master.Write(reply); err != nil {
				return
			}
		}
	}()
	return func() {
		_ = master.Close()
		<-done
	}
}

// BenchmarkRTUOverhead measures the time one RTU transaction (read N holding
// registers, FC3) takes on a pty pair whose other end answers at once, for
// edged's transporter (through Driver.Poll) and for stock goburrow's
// RTUClientHandler, at 9600, 19200 and 115200 baud, 8N1 (a pty refuses
// parity). A pty does not pace bytes, so the time measured is what the
// client adds to the wire time: its own work, the waits it imposes, and the
// peer's turnaround. Reported per transaction:
//
//	wire-µs:    request + reply on a real line at this baud (10 bits a character)
//	t3.5-µs:    the silence the standard requires between frames
//	overhead-µs: measured − t3.5
//	overhead-%wire: overhead as a share of the wire time
//
// goburrow keeps no silence of its own after a reply; it sleeps
// 15e6/baud µs per character of request and reply, plus 35e6/baud µs (1750
// µs above 19200 baud), after writing and before reading: on a real line
// that sleep overlaps the wire time, here it is all there is.
func BenchmarkRTUOverhead(b *testing.B) {
	for _, regs := range []int{1, 10, 125} {
		for _, baud := range []int{9600, 19200, 115200} {
			req := rtuFrame(1, 3, 0, 0, 0, byte(regs))
			data := make([]byte, 3+2*regs)
			data[0], data[1], data[2] = 1, 3, byte(2*regs)
			for i := range regs {
				data[3+2*i+1] = byte(i)
			}
			reply := rtuFrame(data...)
			tm := serialTiming(baud, 10)
			wire := tm.wire(len(req) + len(reply))
			report := func(b *testing.B, elapsed time.Duration) {
				per := elapsed / time.Duration(b.N)
				over := per - tm.t35
				b.ReportMetric(float64(wire)/1e3, "wire-µs")
				b.ReportMetric(float64(tm.t35)/1e3, "t3.5-µs")
				b.ReportMetric(float64(over)/1e3, "overhead-µs")
				b.ReportMetric(100*float64(over)/float64(wire), "overhead-%wire")
			}
			name := fmt.Sprintf("regs=%d/baud=%d", regs, baud)
			b.Run(name+"/edged", func(b *testing.B) {
				master, slave := openPTY(b)
				stop := answerPeer(master, len(req), reply)
				defer stop()
				points := make([]config.Point, regs)
				for i := range points {
					points[i] = config.Point{Name: strconv.Itoa(i), Table: "holding_register", Address: intp(i), Type: "uint16"}
				}
				d, err := New(config.Link{Name: "bench", Protocol: ProtocolRTU, Device: slave, Baud: baud, Parity: "none", Timeout: time.Second},
					[]config.Device{{Name: "d", Profile: "p", UnitID: intp(1)}}, profileLookup(config.Profile{Name: "p", Points: points}), nil)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				if err := d.Connect(ctx); err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				if len(d.devices[0].reqs) != 1 {
					b.Fatalf("plan %v, want one request", d.devices[0].reqs)
				}
				samples, err := d.Poll(ctx, 0, nil) // the first request drains the new port
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					if samples, err = d.Poll(ctx, 0, samples[:0]); err != nil {
						b.Fatal(err)
					}
				}
				elapsed := time.Since(start)
				b.StopTimer()
				report(b, elapsed)
			})
			// floor: the least a client can take here, with no framing,
			// checks or timeouts: wait t3.5, write, read the reply. What it
			// measures beyond t3.5 is the pty's and the peer's (waking a
			// peer that sat idle through t3.5 costs 100-300 µs on this
			// VM), not the client's.
			b.Run(name+"/floor", func(b *testing.B) {
				master, slave := openPTY(b)
				stop := answerPeer(master, len(req), reply)
				defer stop()
				port, err := serial.OpenPort(&serial.Config{Name: slave, Baud: baud, ReadTimeout: serialReadTimeout})
				if err != nil {
					b.Fatal(err)
				}
				defer port.Close()
				buf := make([]byte, len(reply))
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					preciseSleep(tm.t35)
					if _, err := port.Write(req); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(port, buf); err != nil {
						b.Fatal(err)
					}
				}
				elapsed := time.Since(start)
				b.StopTimer()
				report(b, elapsed)
			})
			b.Run(name+"/goburrow", func(b *testing.B) {
				master, slave := openPTY(b)
				stop := answerPeer(master, len(req), reply)
				defer stop()
				h := modbus.NewRTUClientHandler(slave)
				h.BaudRate, h.DataBits, h.Parity, h.StopBits = baud, 8, "N", 1
				h.SlaveId = 1
				h.Timeout = time.Second
				h.IdleTimeout = 0 // no idle-close timer goroutine
				if err := h.Connect(); err != nil {
					b.Fatal(err)
				}
				defer h.Close()
				c := modbus.NewClient(h)
				if _, err := c.ReadHoldingRegisters(0, uint16(regs)); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					if _, err := c.ReadHoldingRegisters(0, uint16(regs)); err != nil {
						b.Fatal(err)
					}
				}
				elapsed := time.Since(start)
				b.StopTimer()
				report(b, elapsed)
			})
		}
	}
}

// TestRTUPty runs the driver on a real tty (a pty whose master end is a
// peer in the test): a request gets its answer; when the other end goes
// away, the port failed: ErrLinkBroken, then ErrNotConnected until Connect.
func TestRTUPty(t *testing.T) {
	master, slave := openPTY(t)
	stop := answerPeer(master, 8, rtuFrame(1, 3, 2, 0x12, 0x34))
	d, err := New(config.Link{Name: "pty", Protocol: ProtocolRTU, Device: slave, Baud: 115200, Parity: "none", Timeout: 300 * time.Millisecond},
		[]config.Device{{Name: "d", Profile: "p", UnitID: intp(1)}},
		profileLookup(config.Profile{Name: "p", Points: []config.Point{{Name: "x", Table: "holding_register", Address: intp(0), Type: "uint16"}}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s, err := d.Poll(t.Context(), 0, nil)
		if err != nil || !s[0].Value.Equal(telemetry.Uint(0x1234)) {
			t.Fatalf("Poll: %v, %v", s, err)
		}
	}
	stop() // closes the master: the tty hangs up
	start := time.Now()
	_, err = d.Poll(t.Context(), 0, nil)
	if !errors.Is(err, drivers.ErrLinkBroken) || !strings.Contains(err.Error(), "serial port "+slave) {
		t.Fatalf("Poll after the other end closed: %v, want ErrLinkBroken naming the port", err)
	}
	t.Logf("%v (after %v)", err, time.Since(start).Round(time.Millisecond))
	if _, err := d.Poll(t.Context(), 0, nil); !errors.Is(err, drivers.ErrNotConnected) {
		t.Fatalf("after a failed port: %v", err)
	}
}
