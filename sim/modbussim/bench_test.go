package modbussim

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// bench10k is 10 000 signals: 5 000 float32 sines in holding registers
// 0..9999 and 5 000 int16 random walks in input registers 0..4999.
func bench10k() Config {
	return Config{Units: []Unit{{ID: 1, Tables: Tables{
		HoldingRegisters: []Signal{{Address: 0, Count: 5000, Type: "float32",
			Generator: Generator{Sine: &Sine{Amplitude: 5, Offset: 230, Period: time.Minute}}}},
		InputRegisters: []Signal{{Address: 0, Count: 5000, Type: "int16", Scale: 0.1,
			Generator: Generator{RandomWalk: &RandomWalk{Start: 20, Step: 0.1, Min: 0, Max: 50, Every: 100 * time.Millisecond}}}},
	}}}}
}

// benchRoundTrip sends 125-register reads over one loopback connection and
// waits for each reply.
func benchRoundTrip(b *testing.B, fc byte, span int) {
	s := startServer(b, bench10k())
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := adu(0, 1, fc, 0, 0, 0, 125)
	resp := make([]byte, 9+250)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint16(req, uint16(i))
		binary.BigEndian.PutUint16(req[8:], uint16(i*125%(span-125)))
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, resp); err != nil {
			b.Fatal(err)
		}
		if resp[7] != fc || binary.BigEndian.Uint16(resp) != uint16(i) {
			b.Fatalf("response % x", resp[:9])
		}
	}
}

// BenchmarkRoundTripFC3 reads 125 holding registers (62.5 float32 sines).
func BenchmarkRoundTripFC3(b *testing.B) { benchRoundTrip(b, 3, 10000) }

// BenchmarkRoundTripFC4 reads 125 input registers (125 random walks).
func BenchmarkRoundTripFC4(b *testing.B) { benchRoundTrip(b, 4, 5000) }

// BenchmarkRoundTripParallel: many clients, each on its own connection.
func BenchmarkRoundTripParallel(b *testing.B) {
	s := startServer(b, bench10k())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		req := adu(1, 1, 3, 0, 0, 0, 125)
		resp := make([]byte, 9+250)
		for pb.Next() {
			if _, err := conn.Write(req); err != nil {
				b.Error(err)
				return
			}
			if _, err := io.ReadFull(conn, resp); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHandleFC3 is the server's own cost of a 125-register read.
func BenchmarkHandleFC3(b *testing.B) {
	s, err := New(bench10k(), nil)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, maxPDULen)
	f := frame{unit: 1, pdu: []byte{3, 0, 0, 0, 125}}
	b.ReportAllocs()
	for b.Loop() {
		if resp, _ := s.respond(f, out); resp[0] != 3 {
			b.Fatalf("response % x", resp)
		}
	}
}

// BenchmarkMemory10k reports the heap a server with 10 000 signals keeps.
func BenchmarkMemory10k(b *testing.B) {
	cfg := bench10k()
	var before, after runtime.MemStats
	var keep []*Server
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		s, err := New(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		keep = append(keep[:0], s)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc), "heap-bytes/10k-signals")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/10000, "heap-bytes/signal")
	runtime.KeepAlive(keep)
}
