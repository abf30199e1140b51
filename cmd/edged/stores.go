package main

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/activemq"
	"github.com/edged/edged/bus/embedded"
	"github.com/edged/edged/cache"
	"github.com/edged/edged/cache/memory"
	rediscache "github.com/edged/edged/cache/redis"
	"github.com/edged/edged/certs"
	"github.com/edged/edged/config"
	"github.com/edged/edged/telemetry"
)

// openBus opens the message engine the config names. Neither kind needs a
// broker to be up: the ActiveMQ bus spills to its local outbox meanwhile.
func openBus(cfg *config.Config, dataDir string, log *slog.Logger, reg prometheus.Registerer) (bus.Bus, error) {
	log = log.With("component", "bus")
	switch cfg.Bus.Kind {
	case "activemq":
		a := cfg.Bus.ActiveMQ
		o := activemq.Options{
			Addr: a.Address, Login: a.Login, Passcode: a.Passcode, Prefix: a.Prefix,
			DataDir: dataDir, MaxBytes: cfg.Bus.MaxBytes, Prefetch: a.Prefetch, HeartBeat: a.HeartBeat,
			Logger: log, Registerer: reg,
		}
		if a.CAFile != "" {
			tlsCfg, _, err := certs.ClientConfig(cfg.Path(a.CAFile), cfg.Path(a.CertFile), cfg.Path(a.KeyFile), a.ServerName)
			if err != nil {
				return nil, fmt.Errorf("bus: activemq TLS: %w", err)
			}
			o.TLS = tlsCfg
		}
		if a.LiveTopic != "off" {
			o.Mirror = map[string]string{bus.Telemetry: a.LiveTopic}
			o.Render = renderLive
		}
		return activemq.Open(o)
	default:
		return embedded.Open(dataDir, embedded.Options{MaxBytes: cfg.Bus.MaxBytes, Logger: log})
	}
}

// renderLive turns a telemetry batch into the JSON local subscribers read.
func renderLive(_ string, body []byte) (string, []byte, error) {
	recs, err := telemetry.DecodeBatch(body, 0)
	if err != nil {
		return "", nil, err
	}
	return "application/json", telemetry.AppendJSON(nil, recs), nil
}

// openCache opens the snapshot cache the config names. Redis being down is
// not an error: the cache is best effort and catches up when Redis returns.
func openCache(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (cache.Cache, func() error, error) {
	switch cfg.Cache.Kind {
	case "redis":
		r := cfg.Cache.Redis
		c, err := rediscache.New(rediscache.Options{
			Addr: r.Address, Password: r.Password, DB: r.DB, Prefix: r.Prefix, TTL: r.TTL,
			Logger: log.With("component", "cache"), Registerer: reg,
		})
		if err != nil {
			return nil, nil, err
		}
		return c, c.Close, nil
	default:
		return memory.New(), func() error { return nil }, nil
	}
}
