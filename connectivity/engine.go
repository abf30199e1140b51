// Package connectivity owns every physical link. One goroutine per link runs
// its driver: it connects (and reconnects with jittered exponential backoff),
// polls each device on the link at its interval, one request at a time, and
// sends the results out through a send-only channel.
//
// Faults stay local. A device that times out or refuses is reported as bad
// quality with its name and the reason, once per change of state, and is
// retried with backoff (a breaker) while the other devices on the link keep
// their rate. A broken link is closed and reconnected; its devices go bad
// until it is back.
package connectivity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
	"github.com/edged/edged/internal/backoff"
	"github.com/edged/edged/telemetry"
)

// Reading is the result of one poll of one device, or of a state change.
type Reading struct {
	Device  int       // index into Config.Devices
	Time    time.Time // when the poll finished
	Samples []telemetry.Sample
}

// Engine runs every link.
type Engine struct {
	links []*link
	byDev []*device // by index in Config.Devices; nil for a device on a link without a driver
	out   chan<- Reading
	log   *slog.Logger
	m     *metrics
}

// Health is a link's state for /healthz.
type Health struct {
	Link      string         `json:"link"`
	Up        bool           `json:"up"`
	LastError string         `json:"last_error,omitempty"`
	Devices   []DeviceHealth `json:"devices"`
}

// DeviceHealth is a device's state.
type DeviceHealth struct {
	Device    string    `json:"device"`
	Up        bool      `json:"up"`
	LastError string    `json:"last_error,omitempty"`
	LastGood  time.Time `json:"last_good,omitzero"`
}

// New builds the engine: one driver per link, from reg. No I/O.
func New(cfg *config.Config, reg *drivers.Registry, out chan<- Reading, log *slog.Logger, pr prometheus.Registerer) (*Engine, error) {
	e := &Engine{out: out, log: log, m: newMetrics(pr), byDev: make([]*device, len(cfg.Devices))}
	index := map[string]int{}
	for i, d := range cfg.Devices {
		index[d.Name] = i
	}
	for _, lc := range cfg.Links {
		devs := cfg.DevicesOn(lc.Name)
		if len(devs) == 0 {
			log.Warn("link has no devices; it will not be opened", "link", lc.Name)
			continue
		}
		drv, err := reg.New(lc, devs, log.With("link", lc.Name))
		if err != nil {
			return nil, err
		}
		l := &link{cfg: lc, drv: drv, e: e, log: log.With("link", lc.Name), writes: make(chan *writeReq)}
		for i, d := range devs {
			prof, _ := cfg.Profile(d.Profile)
			dv := &device{
				link:   l,
				cfg:    d,
				global: index[d.Name],
				local:  i,
				points: len(prof.Points),
				names:  pointNames(prof),
				bad:    make([]bool, len(prof.Points)),
				retry:  backoff.Backoff{Min: d.Poll, Max: max(d.Poll, 60*time.Second)},
				up:     true,
			}
			l.devices = append(l.devices, dv)
			e.byDev[dv.global] = dv
		}
		e.links = append(e.links, l)
	}
	return e, nil
}

// Run runs every link until ctx ends, then closes them. It returns nil on
// cancellation; link faults are handled inside and never end Run.
func (e *Engine) Run(ctx context.Context) error { return e.RunTo(ctx, e.out) }

// RunTo is Run with the readings sent to out. The engine may be run again
// after a run ended (an HA node's next term), never twice at once: each
// link reconnects and every device is polled again from the start.
func (e *Engine) RunTo(ctx context.Context, out chan<- Reading) error {
	e.out = out
	var wg sync.WaitGroup
	for _, l := range e.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// Health reports every link and device.
func (e *Engine) Health() []Health {
	out := make([]Health, 0, len(e.links))
	for _, l := range e.links {
		l.mu.Lock()
		h := Health{Link: l.cfg.Name, Up: l.up, LastError: l.lastErr}
		for _, d := range l.devices {
			h.Devices = append(h.Devices, DeviceHealth{Device: d.cfg.Name, Up: d.up && l.up, LastError: d.lastErr, LastGood: d.lastGood})
		}
		l.mu.Unlock()
		out = append(out, h)
	}
	return out
}

type link struct {
	cfg     config.Link
	drv     drivers.Driver
	e       *Engine
	log     *slog.Logger
	devices []*device
	writes  chan *writeReq // served by the link's goroutine between polls

	connected bool // the driver is connected; only the link's goroutine uses it

	mu      sync.Mutex // guards the health fields below and in devices
	up      bool
	lastErr string
}

type device struct {
	link    *link
	cfg     config.Device
	global  int // index in Config.Devices
	local   int // index among the link's devices, as the driver knows it
	points  int
	names   []string // point names, by index in the profile
	bad     []bool   // which points the last answered poll had bad, to log changes only
	due     time.Time
	retry   backoff.Backoff // breaker: delays between polls of a failing device
	up      bool
	lastErr string
	// lastGood is the time of the last successful poll
	lastGood time.Time
}

func (l *link) run(ctx context.Context) {
	defer func() { l.drv.Close(); l.connected = false }()
	reconnect := backoff.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}
	now := time.Now()
	for i, d := range l.devices {
		// spread the first polls over the interval so devices do not burst together
		d.due = now.Add(d.cfg.Poll * time.Duration(i) / time.Duration(len(l.devices)))
	}
	for ctx.Err() == nil {
		if !l.connected {
			cctx, cancel := context.WithTimeout(ctx, max(l.cfg.Timeout, time.Second))
			err := l.drv.Connect(cctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.linkDown(ctx, err)
				if !l.wait(ctx, time.Now().Add(reconnect.Next())) {
					return
				}
				continue
			}
			l.connected = true
			reconnect.Reset()
			l.linkUp()
		}
		d := l.nextDue()
		if !l.wait(ctx, d.due) {
			return
		}
		if d.due.After(time.Now()) {
			continue // a write was served; the link may be down, another device due
		}
		if err := l.poll(ctx, d); err != nil {
			if ctx.Err() != nil {
				return
			}
			if linkFault(err) {
				l.drv.Close()
				l.connected = false
				l.linkDown(ctx, err)
				if !l.wait(ctx, time.Now().Add(reconnect.Next())) {
					return
				}
			}
		}
	}
}

// wait sleeps until at, serving writes meanwhile: executed when connected,
// refused with drivers.ErrNotConnected when not. It returns early, true,
// after a write that broke the link (the caller sees it down) or that made
// a device due at once. False when ctx ended.
func (l *link) wait(ctx context.Context, at time.Time) bool {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case w := <-l.writes:
			if !l.connected {
				w.done <- fmt.Errorf("device %s: %w: link %s is down (%s)", w.dev.cfg.Name, drivers.ErrNotConnected, l.cfg.Name, l.lastError())
				continue
			}
			l.write(ctx, w)
			return true // re-plan: the device is due for a poll now, or the link broke
		}
	}
}

func (l *link) lastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastErr == "" {
		return "not connected"
	}
	return l.lastErr
}

func linkFault(err error) bool {
	return errors.Is(err, drivers.ErrLinkBroken) || errors.Is(err, drivers.ErrNotConnected)
}

func (l *link) nextDue() *device {
	best := l.devices[0]
	for _, d := range l.devices[1:] {
		if d.due.Before(best.due) {
			best = d
		}
	}
	return best
}

// poll reads one device, schedules its next poll and emits the result.
func (l *link) poll(ctx context.Context, d *device) error {
	start := time.Now()
	// a poll may not run past the device's next slot
	pctx, cancel := context.WithTimeout(ctx, max(d.cfg.Poll, l.cfg.Timeout))
	samples, err := l.drv.Poll(pctx, d.local, make([]telemetry.Sample, 0, d.points))
	cancel()
	end := time.Now()
	labels := []string{l.cfg.Name, d.cfg.Name}
	l.e.m.pollSeconds.WithLabelValues(labels...).Observe(end.Sub(start).Seconds())

	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		l.e.m.pollErrors.WithLabelValues(l.cfg.Name, d.cfg.Name, errKind(err)).Inc()
		d.due = end.Add(d.retry.Next())
		l.deviceDown(ctx, d, err)
		return err
	}
	bad := 0
	for _, s := range samples {
		isBad := s.Quality == telemetry.Bad
		if isBad {
			bad++
		}
		if s.Point < 0 || s.Point >= len(d.bad) || d.bad[s.Point] == isBad {
			continue
		}
		// a point-level fault (a Modbus exception on its request) is logged
		// once when it starts and once when it ends, with device and point
		d.bad[s.Point] = isBad
		if isBad {
			l.log.Warn("point unreadable", "device", d.cfg.Name, "point", d.names[s.Point], "reason", s.Reason)
		} else {
			l.log.Info("point readable again", "device", d.cfg.Name, "point", d.names[s.Point])
		}
	}
	if bad > 0 {
		l.e.m.pointErrors.WithLabelValues(l.cfg.Name, d.cfg.Name).Add(float64(bad))
	}
	d.retry.Reset()
	// keep the schedule anchored: the next slot is one interval after this
	// one, skipping slots a slow poll has already missed
	d.due = d.due.Add(d.cfg.Poll)
	if d.due.Before(end) {
		missed := end.Sub(d.due)/d.cfg.Poll + 1
		l.e.m.overruns.WithLabelValues(l.cfg.Name, d.cfg.Name).Add(float64(missed))
		d.due = d.due.Add(missed * d.cfg.Poll)
	}
	l.mu.Lock()
	wasDown := !d.up
	d.up, d.lastErr, d.lastGood = true, "", end
	l.mu.Unlock()
	l.e.m.deviceUp.WithLabelValues(l.cfg.Name, d.cfg.Name).Set(1)
	if wasDown {
		l.log.Info("device answers again", "device", d.cfg.Name)
	}
	l.emit(ctx, Reading{Device: d.global, Time: end, Samples: samples})
	return nil
}

func (l *link) emit(ctx context.Context, r Reading) {
	select {
	case l.e.out <- r:
	case <-ctx.Done():
	}
}

// deviceDown records a failed poll. The device goes bad once: a reading with
// every point bad and the reason is emitted on the change of state only.
func (l *link) deviceDown(ctx context.Context, d *device, err error) {
	l.mu.Lock()
	wasUp := d.up
	d.up, d.lastErr = false, err.Error()
	l.mu.Unlock()
	l.e.m.deviceUp.WithLabelValues(l.cfg.Name, d.cfg.Name).Set(0)
	if !wasUp {
		return
	}
	l.log.Warn("device not answering; retrying with backoff", "device", d.cfg.Name, "err", err)
	l.emit(ctx, badReading(d, drivers.Reason(err)))
}

func (l *link) linkDown(ctx context.Context, err error) {
	l.mu.Lock()
	wasUp := l.up || l.lastErr == ""
	l.up, l.lastErr = false, err.Error()
	l.mu.Unlock()
	l.e.m.linkUp.WithLabelValues(l.cfg.Name).Set(0)
	l.e.m.linkErrors.WithLabelValues(l.cfg.Name).Inc()
	if !wasUp {
		return
	}
	l.log.Warn("link down; reconnecting with backoff", "address", l.cfg.Address, "err", err)
	for _, d := range l.devices {
		l.deviceDown(ctx, d, fmt.Errorf("link %s down: %w", l.cfg.Name, err))
	}
}

func (l *link) linkUp() {
	l.mu.Lock()
	wasDown := !l.up && l.lastErr != ""
	l.up, l.lastErr = true, ""
	l.mu.Unlock()
	l.e.m.linkUp.WithLabelValues(l.cfg.Name).Set(1)
	if wasDown {
		l.log.Info("link up again", "address", l.cfg.Address)
	} else {
		l.log.Info("link up", "address", l.cfg.Address)
	}
	now := time.Now()
	for _, d := range l.devices {
		// poll every device as soon as the link is back
		if d.due.After(now) {
			d.due = now
		}
		d.retry.Reset()
	}
}

func pointNames(p *config.Profile) []string {
	names := make([]string, len(p.Points))
	for i, pt := range p.Points {
		names[i] = pt.Name
	}
	return names
}

func badReading(d *device, why string) Reading {
	now := time.Now()
	s := make([]telemetry.Sample, d.points)
	for i := range s {
		s[i] = telemetry.Sample{Point: i, Quality: telemetry.Bad, Reason: why, Time: now}
	}
	return Reading{Device: d.global, Time: now, Samples: s}
}

func errKind(err error) string {
	switch {
	case errors.Is(err, drivers.ErrTimeout):
		return "timeout"
	case errors.Is(err, drivers.ErrLinkBroken):
		return "link_broken"
	case errors.Is(err, drivers.ErrNotConnected):
		return "not_connected"
	case errors.Is(err, drivers.ErrDevice):
		return "device"
	default:
		return "other"
	}
}

type metrics struct {
	pollSeconds *prometheus.HistogramVec
	pollErrors  *prometheus.CounterVec
	pointErrors *prometheus.CounterVec
	overruns    *prometheus.CounterVec
	linkUp      *prometheus.GaugeVec
	linkErrors  *prometheus.CounterVec
	deviceUp    *prometheus.GaugeVec
	writes      *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		pollSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edged_poll_duration_seconds", Help: "Time to poll every point of a device (round trips on the link).",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}, []string{"link", "device"}),
		pollErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_poll_errors_total", Help: "Polls that failed as a whole, by kind (timeout, link_broken, ...).",
		}, []string{"link", "device", "kind"}),
		pointErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_point_errors_total", Help: "Points read with bad quality in otherwise answered polls (e.g. Modbus exceptions).",
		}, []string{"link", "device"}),
		overruns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_poll_overruns_total", Help: "Poll slots skipped because the link could not keep the device's interval.",
		}, []string{"link", "device"}),
		linkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_link_up", Help: "1 when the link is connected.",
		}, []string{"link"}),
		linkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_link_errors_total", Help: "Failed connects and broken connections.",
		}, []string{"link"}),
		deviceUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_device_up", Help: "1 when the device's last poll succeeded.",
		}, []string{"link", "device"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_writes_total", Help: "Writes to device points (commands from the cloud), by result (ok, timeout, device, unsupported, not_connected, link_broken, other).",
		}, []string{"link", "device", "result"}),
	}
	if r != nil {
		r.MustRegister(m.pollSeconds, m.pollErrors, m.pointErrors, m.overruns, m.linkUp, m.linkErrors, m.deviceUp, m.writes)
	}
	return m
}
