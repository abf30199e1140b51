// Package drivers defines the contract between a protocol driver and the
// connectivity engine, and a registry of driver factories by protocol name.
//
// A driver is protocol only: it encodes requests and decodes replies on one
// link, one request at a time, with no timers or goroutines of its own. The
// connectivity engine owns the link: it calls Connect (and retries it with
// backoff), decides when each device is polled, and never calls a driver from
// two goroutines at once.
package drivers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/edged/edged/config"
	"github.com/edged/edged/telemetry"
)

// Sentinel errors. Drivers wrap them with %w and the device/point concerned.
var (
	// ErrNotConnected: the link is down; the engine reconnects with backoff.
	ErrNotConnected = errors.New("not connected")
	// ErrTimeout: the device did not answer in time.
	ErrTimeout = errors.New("timeout")
	// ErrLinkBroken: the connection failed mid-exchange (closed, reset, a
	// reply that does not belong to the request). The engine closes the
	// link and reconnects.
	ErrLinkBroken = errors.New("link broken")
	// ErrDevice: the device answered with a protocol-level refusal (a Modbus
	// exception, a bad OPC UA status). The link itself is fine.
	ErrDevice = errors.New("device refused")
	// ErrUnsupported: the driver cannot do this (e.g. write a read-only point).
	ErrUnsupported = errors.New("unsupported")
)

// ReasonError gives a device- or link-level error the short reason the
// engine puts on the samples it makes bad ("exception 11 (gateway target
// device failed to respond)", "CRC error"), where the sentinel alone would
// only say "timeout".
type ReasonError struct {
	Reason string
	Err    error
}

func (e *ReasonError) Error() string { return e.Err.Error() }
func (e *ReasonError) Unwrap() error { return e.Err }

// Reason returns the short reason of err for bad samples: a ReasonError's,
// else the sentinel's name ("timeout", "link down"), else the error text.
func Reason(err error) string {
	var re *ReasonError
	switch {
	case errors.As(err, &re):
		return re.Reason
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrLinkBroken), errors.Is(err, ErrNotConnected):
		return "link down"
	}
	return err.Error()
}

// Driver is one link's protocol client. Devices and points are fixed at
// construction (from config) and addressed by index, so the poll path
// carries no strings and the driver can plan its requests once.
//
// Implementations are never called concurrently. Every blocking call honours
// its ctx deadline and cancellation.
type Driver interface {
	// Connect opens the link. ctx bounds only the connection phase. A
	// failed Connect is retried by the engine with backoff.
	Connect(ctx context.Context) error
	// Poll reads every point of device dev (index into the config's devices
	// on this link) and appends one sample per point, in profile order, to
	// buf. A per-point failure (a Modbus exception on one request) is a
	// sample with Bad quality and a reason. A device- or link-level failure
	// (timeout, broken connection) is returned as an error wrapping
	// ErrTimeout, ErrLinkBroken or ErrNotConnected; the samples appended so
	// far stay valid.
	Poll(ctx context.Context, dev int, buf []telemetry.Sample) ([]telemetry.Sample, error)
	// Write writes v to point pt of device dev and returns once the device
	// has confirmed it.
	Write(ctx context.Context, dev, pt int, v telemetry.Value) error
	// Close closes the link. It is safe to call on a link that is not open.
	Close() error
}

// Streamer is an optional capability of protocols that push data (OPC UA
// subscriptions, IEC 104 spontaneous transmission). Stream blocks until ctx
// ends or the link fails, calling emit for each change.
type Streamer interface {
	Stream(ctx context.Context, emit func(dev int, s telemetry.Sample)) error
}

// Factory builds a driver for one link and the devices configured on it. It
// does no I/O; configuration it cannot serve is an error naming the device
// and point.
type Factory func(link config.Link, devices []config.Device, log *slog.Logger) (Driver, error)

// Registry maps protocol names to factories. It is a value: tests build their
// own, cmd/edged builds the one with every compiled-in driver.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Factory
}

// Register adds a factory. Registering a name twice is a programming error
// and panics.
func (r *Registry) Register(protocol string, f Factory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]Factory)
	}
	if _, dup := r.m[protocol]; dup {
		panic("drivers: protocol registered twice: " + protocol)
	}
	r.m[protocol] = f
}

// New builds the driver for link.
func (r *Registry) New(link config.Link, devices []config.Device, log *slog.Logger) (Driver, error) {
	r.mu.RLock()
	f, ok := r.m[link.Protocol]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("link %q: protocol %q is not built into this binary (have %v)", link.Name, link.Protocol, r.Protocols())
	}
	return f(link, devices, log)
}

// Protocols lists the registered protocol names, sorted.
func (r *Registry) Protocols() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for k := range r.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
