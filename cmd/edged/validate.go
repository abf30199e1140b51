package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/edged/edged/config"
	"github.com/edged/edged/drivers"
)

// builtinDrivers registers each driver compiled into this binary; every
// driver_*.go file adds itself under a build tag, so a slim binary can leave
// protocols out (go build -tags edged_no_modbus).
var builtinDrivers []func(*config.Config, *drivers.Registry)

// registry returns every driver built into this binary.
func registry(cfg *config.Config) *drivers.Registry {
	var r drivers.Registry
	for _, add := range builtinDrivers {
		add(cfg, &r)
	}
	return &r
}

// load reads a config and builds (without I/O) every link's driver, so a
// config that passes is one the gateway can run.
func load(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	reg := registry(cfg)
	var errs []error
	for _, l := range cfg.Links {
		devs := cfg.DevicesOn(l.Name)
		if len(devs) == 0 {
			continue
		}
		d, err := reg.New(l, devs, slog.New(slog.DiscardHandler))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", path, l.Line, err))
			continue
		}
		d.Close()
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: edged validate FILE")
		return 2
	}
	cfg, err := load(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	points := 0
	for _, d := range cfg.Devices {
		p, _ := cfg.Profile(d.Profile)
		points += len(p.Points)
	}
	fmt.Fprintf(stdout, "%s: ok: %d links, %d profiles, %d devices, %d points\n", args[0], len(cfg.Links), len(cfg.Profiles), len(cfg.Devices), points)
	return 0
}
