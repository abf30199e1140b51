package connectivity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// runBackground runs the engine until the returned stop is called.
func runBackground(e *Engine) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	return func() { cancel(); <-done }
}

func TestWriteRunsOnTheLinkBetweenPolls(t *testing.T) {
	var mu sync.Mutex
	var got []string
	drv := &scripted{writeFn: func(ctx context.Context, dev string, pt int, v telemetry.Value) error {
		time.Sleep(5 * time.Millisecond) // long enough for a concurrent poll to show as overlap
		mu.Lock()
		got = append(got, dev+"="+v.String())
		mu.Unlock()
		return nil
	}}
	e, out := setup(t, drv, "a", "b")
	e.byDev[1].cfg.Poll = time.Hour // b is polled once at start, then only when written
	stop := runBackground(e)
	defer stop()
	time.Sleep(50 * time.Millisecond)
	polledB := drv.count("b")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := e.Write(ctx, i%2, 0, telemetry.Int(int64(i))); err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	stop()
	if drv.overlap.Load() {
		t.Fatal("a write and a poll (or two writes) ran at once on one link")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 20 {
		t.Fatalf("driver saw %d writes, want 20: %v", len(got), got)
	}
	// b's poll interval is an hour: only the writes can have made it due
	if n := drv.count("b"); n <= polledB {
		t.Fatalf("device b polled %d times after its writes (%d before): a written device is polled at once", n, polledB)
	}
	n := 0
	for r := range drain(out) {
		if r.Device == 1 {
			n++
		}
	}
	if n < 2 {
		t.Fatalf("%d readings of b: want the start's and one after the writes", n)
	}
}

func drain(out chan Reading) chan Reading {
	close(out)
	return out
}

func TestWriteErrors(t *testing.T) {
	drv := &scripted{writeFn: func(ctx context.Context, dev string, pt int, v telemetry.Value) error {
		// as drivers do: the error names the device and point
		return fmt.Errorf("device %s point x: %w", dev, &drivers.ReasonError{Reason: "exception 2 (illegal data address)", Err: drivers.ErrDevice})
	}}
	e, _ := setup(t, drv, "meter")
	stop := runBackground(e)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := e.Write(ctx, 0, 0, telemetry.Int(1))
	if !errors.Is(err, drivers.ErrDevice) || drivers.Reason(err) != "exception 2 (illegal data address)" || !strings.Contains(err.Error(), "device meter point x") {
		t.Fatalf("err = %v, want the driver's ErrDevice with its reason", err)
	}
	if err := e.Write(ctx, 7, 0, telemetry.Int(1)); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("unknown device: %v", err)
	}
	if err := e.Write(ctx, 0, 3, telemetry.Int(1)); err == nil || !strings.Contains(err.Error(), "no point #3") {
		t.Fatalf("unknown point: %v", err)
	}
}

func TestWriteRefusedWhileLinkDown(t *testing.T) {
	var writes atomic.Int32
	drv := &scripted{writeFn: func(context.Context, string, int, telemetry.Value) error { writes.Add(1); return nil }}
	drv.failConn.Store(1 << 20) // never connects
	e, _ := setup(t, drv, "meter")
	stop := runBackground(e)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := e.Write(ctx, 0, 0, telemetry.Int(1))
	if !errors.Is(err, drivers.ErrNotConnected) || !strings.Contains(err.Error(), "link l1 is down") {
		t.Fatalf("err = %v, want ErrNotConnected naming the link", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refused after %s: a down link refuses at once, not at the deadline", d)
	}
	if writes.Load() != 0 {
		t.Fatal("the driver was asked to write on a link that is down")
	}
}

func TestWriteBrokenLinkReconnects(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	drv := &scripted{writeFn: func(context.Context, string, int, telemetry.Value) error {
		if fail.CompareAndSwap(true, false) {
			return drivers.ErrLinkBroken
		}
		return nil
	}}
	e, _ := setup(t, drv, "meter")
	stop := runBackground(e)
	defer stop()
	time.Sleep(30 * time.Millisecond)
	before := drv.connects.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Write(ctx, 0, 0, telemetry.Int(1)); !errors.Is(err, drivers.ErrLinkBroken) {
		t.Fatalf("err = %v, want ErrLinkBroken", err)
	}
	// the link reconnects and the next write goes through
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := e.Write(ctx, 0, 0, telemetry.Int(2))
		if err == nil {
			break
		}
		if !errors.Is(err, drivers.ErrNotConnected) || time.Now().After(deadline) {
			t.Fatalf("write after the break: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if drv.connects.Load() <= before {
		t.Fatal("the link was not reconnected after the write broke it")
	}
}

func TestWriteDeadlineWhileLinkBusy(t *testing.T) {
	release := make(chan struct{})
	drv := &scripted{behave: map[string]func() error{
		"slow": func() error { <-release; return nil },
	}, writeFn: func(context.Context, string, int, telemetry.Value) error { return nil }}
	e, _ := setup(t, drv, "slow")
	stop := runBackground(e)
	defer stop()
	defer close(release)
	time.Sleep(30 * time.Millisecond) // the first poll is stuck
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := e.Write(ctx, 0, 0, telemetry.Int(1))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for link l1") {
		t.Fatalf("err = %v, want the deadline while waiting for the link", err)
	}
}
