// Package control executes commands from the cloud on the devices: a
// measure point set request is mapped back through the device's model to
// raw points (modelsync.Normaliser.Setpoint) and written by the link that
// owns the device (connectivity.Engine.Write).
//
// Every measure point of a request is checked before any is written: an
// unknown device or point, a read-only point or a value the point cannot
// take refuses the whole request and nothing is written. The writes then
// go in the request's order; when one fails, the ones before it stay
// written (a device has no transactions) and the reply says which.
package control

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/modelsync"
	"github.com/edged/edged/telemetry"
)

// Writer writes one raw point; *connectivity.Engine is one.
type Writer interface {
	Write(ctx context.Context, dev, pt int, v telemetry.Value) error
}

// Executor implements cloudlink.Commander.
type Executor struct {
	// Norm holds the normaliser in use, loaded once per command: a new
	// model version applies from the next command on.
	Norm   *modelsync.Live
	Writer Writer
	// Allow, when set, is asked before each write: a node that is not
	// (or no longer surely) the active one refuses with its error.
	Allow func() error
}

// SetMeasurepoints checks every point, then writes them in order. Errors
// carry the reply code (enos.CodeOf): 404 unknown device or measure point,
// 403 read-only, 400 a value the point cannot take, 503 the device's link
// is down, 504 the device did not answer in time, 502 the device refused
// (a Modbus exception), 500 anything else.
func (x *Executor) SetMeasurepoints(ctx context.Context, productKey, deviceKey string, points []enos.SetPoint) error {
	norm := x.Norm.Load()
	dev, err := norm.Device(productKey, deviceKey)
	if err != nil {
		return enos.Coded(enos.CodeNotFound, err)
	}
	sps := make([]modelsync.Setpoint, len(points))
	for i, p := range points {
		sp, err := norm.Setpoint(dev, p.ID, p.Value)
		if err != nil {
			return enos.Coded(setpointCode(err), fmt.Errorf("%w; nothing written", err))
		}
		sps[i] = sp
	}
	for i, sp := range sps {
		if x.Allow != nil {
			if err := x.Allow(); err != nil {
				return fmt.Errorf("measure point %q: %w%s", sp.Measure, err, progress(sps, i))
			}
		}
		if err := x.Writer.Write(ctx, sp.Device, sp.Point, sp.Raw); err != nil {
			return enos.Coded(writeCode(err), fmt.Errorf("measure point %q: %w%s", sp.Measure, err, progress(sps, i)))
		}
	}
	return nil
}

// progress says which points of a failed request were written.
func progress(sps []modelsync.Setpoint, failed int) string {
	ids := func(s []modelsync.Setpoint) string {
		out := make([]string, len(s))
		for i, sp := range s {
			out[i] = sp.Measure
		}
		return strings.Join(out, ", ")
	}
	var b strings.Builder
	if failed > 0 {
		b.WriteString("; written before it: " + ids(sps[:failed]))
	} else {
		b.WriteString("; nothing written")
	}
	if failed+1 < len(sps) {
		b.WriteString("; not attempted: " + ids(sps[failed+1:]))
	}
	return b.String()
}

func setpointCode(err error) int {
	switch {
	case errors.Is(err, modelsync.ErrUnknownDevice), errors.Is(err, modelsync.ErrUnknownPoint):
		return enos.CodeNotFound
	case errors.Is(err, modelsync.ErrReadOnly):
		return enos.CodeForbidden
	case errors.Is(err, modelsync.ErrBadValue):
		return enos.CodeMalformed
	}
	return enos.CodeInternal
}

func writeCode(err error) int {
	switch {
	case errors.Is(err, drivers.ErrNotConnected), errors.Is(err, drivers.ErrLinkBroken):
		return enos.CodeUnavailable
	case errors.Is(err, drivers.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return enos.CodeTimeout
	case errors.Is(err, drivers.ErrDevice):
		return enos.CodeDeviceRefused
	case errors.Is(err, drivers.ErrUnsupported):
		return enos.CodeForbidden
	case errors.Is(err, connectivity.ErrUnknownDevice):
		return enos.CodeNotFound
	}
	return enos.CodeInternal
}
