package connectivity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scripted is a driver whose devices behave as a test says: it exercises the
// engine's scheduling and fault handling, which no real device can be made
// to do on cue. The real drivers have their own tests against real peers.
type scripted struct {
	mu       sync.Mutex
	devices  []config.Device
	behave   map[string]func() error // per device name; nil = answers
	connects atomic.Int32
	polls    sync.Map // device name -> *atomic.Int32
	active   atomic.Int32
	overlap  atomic.Bool
	failConn atomic.Int32 // Connect fails this many more times
	writeFn  func(ctx context.Context, dev string, pt int, v telemetry.Value) error
}

func (s *scripted) Connect(ctx context.Context) error {
	s.connects.Add(1)
	if s.failConn.Load() > 0 {
		s.failConn.Add(-1)
		return fmt.Errorf("dial: %w", drivers.ErrNotConnected)
	}
	return nil
}

func (s *scripted) Poll(ctx context.Context, dev int, buf []telemetry.Sample) ([]telemetry.Sample, error) {
	if s.active.Add(1) > 1 {
		s.overlap.Store(true)
	}
	defer s.active.Add(-1)
	d := s.devices[dev]
	c, _ := s.polls.LoadOrStore(d.Name, new(atomic.Int32))
	c.(*atomic.Int32).Add(1)
	s.mu.Lock()
	f := s.behave[d.Name]
	s.mu.Unlock()
	if f != nil {
		if err := f(); err != nil {
			if errors.Is(err, errPointBad) {
				return append(buf, telemetry.Sample{Point: 0, Quality: telemetry.Bad, Reason: "exception 2 (illegal data address)", Time: time.Now()}), nil
			}
			return buf, fmt.Errorf("device %s: %w", d.Name, err)
		}
	}
	return append(buf, telemetry.Sample{Point: 0, Value: telemetry.Int(1), Time: time.Now()}), nil
}

// errPointBad makes the scripted driver answer with point 0 bad.
var errPointBad = errors.New("point bad")

func (s *scripted) Write(ctx context.Context, dev, pt int, v telemetry.Value) error {
	if s.active.Add(1) > 1 {
		s.overlap.Store(true)
	}
	defer s.active.Add(-1)
	s.mu.Lock()
	f := s.writeFn
	s.mu.Unlock()
	if f == nil {
		return drivers.ErrUnsupported
	}
	return f(ctx, s.devices[dev].Name, pt, v)
}
func (s *scripted) Close() error { return nil }

func (s *scripted) count(name string) int {
	c, ok := s.polls.Load(name)
	if !ok {
		return 0
	}
	return int(c.(*atomic.Int32).Load())
}

func setup(t *testing.T, drv *scripted, devices ...string) (*Engine, chan Reading) {
	return setupLog(t, drv, slog.New(slog.DiscardHandler), devices...)
}

func setupLog(t *testing.T, drv *scripted, log *slog.Logger, devices ...string) (*Engine, chan Reading) {
	cfg := &config.Config{
		Links:    []config.Link{{Name: "l1", Protocol: "scripted", Timeout: 50 * time.Millisecond}},
		Profiles: []config.Profile{{Name: "p", Points: []config.Point{{Name: "x"}}}},
	}
	for _, d := range devices {
		cfg.Devices = append(cfg.Devices, config.Device{Name: d, Link: "l1", Profile: "p", Poll: 20 * time.Millisecond})
	}
	drv.devices = cfg.Devices
	var reg drivers.Registry
	reg.Register("scripted", func(config.Link, []config.Device, *slog.Logger) (drivers.Driver, error) { return drv, nil })
	out := make(chan Reading, 1024)
	e, err := New(cfg, &reg, out, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e, out
}

func run(t *testing.T, e *Engine, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	e.Run(ctx)
}

func TestDeadDeviceDoesNotStallOthers(t *testing.T) {
	drv := &scripted{behave: map[string]func() error{
		"dead": func() error { time.Sleep(50 * time.Millisecond); return drivers.ErrTimeout },
	}}
	e, out := setup(t, drv, "good", "dead")
	run(t, e, time.Second)
	close(out)
	var goodReadings, deadBad int
	for r := range out {
		switch r.Device {
		case 0:
			goodReadings++
			if r.Samples[0].Quality != telemetry.Good {
				t.Fatalf("good device reading: %+v", r)
			}
		case 1:
			deadBad++
			if s := r.Samples[0]; s.Quality != telemetry.Bad || s.Reason != "timeout" {
				t.Fatalf("dead device reading: %+v", s)
			}
		}
	}
	// 1 s at 20 ms is 50 slots; the breaker keeps the dead device from
	// eating them (without it, every 50 ms timeout would cost the good
	// device more than two slots). Generous bound for a loaded machine.
	if goodReadings < 25 {
		t.Fatalf("good device polled %d times in 1s at 20ms (dead device stalled it)", goodReadings)
	}
	if deadBad != 1 {
		t.Fatalf("dead device reported bad %d times, want once per change of state", deadBad)
	}
	if n := drv.count("dead"); n < 2 || n > 12 {
		t.Fatalf("dead device polled %d times: want retries with backoff (2-12 in 1s)", n)
	}
	if drv.overlap.Load() {
		t.Fatal("two polls ran at once on one link")
	}
	h := e.Health()[0]
	if !h.Up || !h.Devices[0].Up || h.Devices[1].Up || h.Devices[1].LastError == "" {
		t.Fatalf("health = %+v", h)
	}
}

func TestDeviceRecovers(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	drv := &scripted{behave: map[string]func() error{
		"flaky": func() error {
			if broken.Load() {
				return drivers.ErrTimeout
			}
			return nil
		},
	}}
	e, out := setup(t, drv, "flaky")
	go func() { time.Sleep(300 * time.Millisecond); broken.Store(false) }()
	run(t, e, 1500*time.Millisecond)
	close(out)
	var seq []telemetry.Quality
	for r := range out {
		seq = append(seq, r.Samples[0].Quality)
	}
	if len(seq) < 3 || seq[0] != telemetry.Bad || seq[1] != telemetry.Good || seq[len(seq)-1] != telemetry.Good {
		t.Fatalf("qualities = %v, want one bad then good ones", seq)
	}
}

func TestBrokenLinkReconnects(t *testing.T) {
	var breakOnce atomic.Bool
	breakOnce.Store(true)
	drv := &scripted{behave: map[string]func() error{
		"a": func() error {
			if breakOnce.CompareAndSwap(true, false) {
				return drivers.ErrLinkBroken
			}
			return nil
		},
	}}
	drv.failConn.Store(2) // the first two connects fail
	e, out := setup(t, drv, "a", "b")
	run(t, e, 2*time.Second)
	close(out)
	if n := drv.connects.Load(); n < 4 {
		t.Fatalf("connects = %d, want ≥ 4 (2 failed, 1 good, 1 after the break)", n)
	}
	bad := map[int]int{}
	last := map[int]telemetry.Quality{}
	for r := range out {
		if r.Samples[0].Quality == telemetry.Bad {
			bad[r.Device]++
			if r.Samples[0].Reason != "link down" {
				t.Fatalf("reason = %q", r.Samples[0].Reason)
			}
		}
		last[r.Device] = r.Samples[0].Quality
	}
	if bad[0] == 0 || bad[1] == 0 {
		t.Fatalf("bad readings per device = %v: both devices go bad while the link is down", bad)
	}
	if last[0] != telemetry.Good || last[1] != telemetry.Good {
		t.Fatalf("last qualities = %v: both recover", last)
	}
}

// TestPointFaultLoggedOncePerChange: a point that keeps failing is logged
// when it starts failing and when it recovers, not at every poll.
func TestPointFaultLoggedOncePerChange(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	drv := &scripted{behave: map[string]func() error{
		"m1": func() error {
			if failing.Load() {
				return errPointBad
			}
			return nil
		},
	}}
	var logs syncBuf
	e, out := setupLog(t, drv, slog.New(slog.NewTextHandler(&logs, nil)), "m1")
	go func() { time.Sleep(400 * time.Millisecond); failing.Store(false) }()
	run(t, e, 800*time.Millisecond)
	close(out)
	bad := 0
	for r := range out {
		if r.Samples[0].Quality == telemetry.Bad {
			bad++
		}
	}
	text := logs.String()
	if bad < 5 {
		t.Fatalf("only %d bad readings in 400ms at 20ms", bad)
	}
	if n := strings.Count(text, "point unreadable"); n != 1 {
		t.Fatalf("%d 'point unreadable' lines for one fault:\n%s", n, text)
	}
	if !strings.Contains(text, `device=m1 point=x reason="exception 2 (illegal data address)"`) {
		t.Fatalf("the log does not name device, point and reason:\n%s", text)
	}
	if n := strings.Count(text, "point readable again"); n != 1 {
		t.Fatalf("%d 'readable again' lines:\n%s", n, text)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
