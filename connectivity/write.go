package connectivity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edged/edged/drivers"
	"github.com/edged/edged/telemetry"
)

// ErrUnknownDevice is returned by Write for a device index that no link
// serves.
var ErrUnknownDevice = errors.New("unknown device")

// writeReq is one write handed to a link's goroutine.
type writeReq struct {
	ctx   context.Context
	dev   *device
	point int
	v     telemetry.Value
	done  chan error // buffered: the link never blocks on it
}

// Write writes v to point pt (index in the device's profile) of device dev
// (index into Config.Devices) and returns once the device has confirmed
// it, or with the error that stopped it.
//
// The write runs on the link's own goroutine, between two polls: a link
// carries one request at a time, so a write never interleaves with a
// poll's requests, and it goes before the polls that are due. After a
// write the device is polled at once, so the new value reaches the cloud
// without waiting for the next interval. A link that is down refuses the
// write at once (drivers.ErrNotConnected): a set-point is not queued for
// later, when it may no longer be wanted. ctx bounds the wait for the link
// and the write itself; the driver also bounds each request by the
// device's timeout.
//
// Errors wrap the driver's sentinels (drivers.ErrTimeout,
// drivers.ErrDevice, drivers.ErrUnsupported, ...) and name the device and
// point.
func (e *Engine) Write(ctx context.Context, dev, pt int, v telemetry.Value) error {
	if dev < 0 || dev >= len(e.byDev) || e.byDev[dev] == nil {
		return fmt.Errorf("connectivity: device #%d: %w", dev, ErrUnknownDevice)
	}
	d := e.byDev[dev]
	if pt < 0 || pt >= d.points {
		return fmt.Errorf("connectivity: device %s: no point #%d (it has %d)", d.cfg.Name, pt, d.points)
	}
	l := d.link
	w := &writeReq{ctx: ctx, dev: d, point: pt, v: v, done: make(chan error, 1)}
	select {
	case l.writes <- w:
	case <-ctx.Done():
		err := fmt.Errorf("device %s point %s: waiting for link %s: %w", d.cfg.Name, d.names[pt], l.cfg.Name, ctx.Err())
		e.m.writes.WithLabelValues(l.cfg.Name, d.cfg.Name, "timeout").Inc()
		return err
	}
	// The link goroutine always answers a request it took.
	return <-w.done
}

// write executes w on the link's goroutine.
func (l *link) write(ctx context.Context, w *writeReq) {
	d := w.dev
	start := time.Now()
	err := w.ctx.Err()
	if err != nil {
		err = fmt.Errorf("device %s point %s: %w", d.cfg.Name, d.names[w.point], err)
	} else {
		// the caller's deadline and the engine's life both bound it
		wctx, cancel := context.WithCancel(w.ctx)
		stop := context.AfterFunc(ctx, cancel)
		err = l.drv.Write(wctx, d.local, w.point, w.v)
		stop()
		cancel()
	}
	result := "ok"
	if err != nil {
		result = errKind(err)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			result = "timeout"
		} else if errors.Is(err, drivers.ErrUnsupported) {
			result = "unsupported"
		}
	}
	l.e.m.writes.WithLabelValues(l.cfg.Name, d.cfg.Name, result).Inc()
	if err != nil {
		// the driver's errors name the device and point (the drivers contract)
		l.log.Warn("write failed", "device", d.cfg.Name, "point", d.names[w.point], "value", w.v.String(), "took", time.Since(start).Round(time.Microsecond), "err", err)
	} else {
		l.log.Info("written", "device", d.cfg.Name, "point", d.names[w.point], "value", w.v.String(), "took", time.Since(start).Round(time.Microsecond))
	}
	w.done <- err
	switch {
	case err == nil:
		if d.due.After(time.Now()) {
			d.due = time.Now() // report the new value now
		}
	case linkFault(err) && ctx.Err() == nil:
		l.drv.Close()
		l.connected = false
		l.linkDown(ctx, err)
	}
}
