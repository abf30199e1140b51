package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

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
//
// Switching bus.kind moves the backlog the other kind left in the data dir
// (and, from activemq to embedded, on the broker while the config still
// names it) into the one opened, keeping sequence numbers and the counter:
// see activemq.FromEmbedded and activemq.ToEmbedded.
func openBus(ctx context.Context, cfg *config.Config, dataDir string, log *slog.Logger, reg prometheus.Registerer) (bus.Bus, error) {
	log = log.With("component", "bus")
	a := cfg.Bus.ActiveMQ
	o := activemq.Options{
		Addr: a.Address, Login: a.Login, Passcode: a.Passcode, Prefix: a.Prefix,
		DataDir: dataDir, MaxBytes: cfg.Bus.MaxBytes, Prefetch: a.Prefetch, HeartBeat: a.HeartBeat,
		Logger: log,
	}
	if a.CAFile != "" {
		tlsCfg, _, err := certs.ClientConfig(cfg.Path(a.CAFile), cfg.Path(a.CertFile), cfg.Path(a.KeyFile), a.ServerName)
		if err != nil {
			return nil, fmt.Errorf("bus: activemq TLS: %w", err)
		}
		o.TLS = tlsCfg
	}
	switch cfg.Bus.Kind {
	case "activemq":
		sw, err := activemq.FromEmbedded(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("bus: switching from embedded to activemq: %w (the backlog stays in %s)", err, dataDir)
		}
		logSwitch(log, "embedded", "activemq", sw)
		o.Registerer = reg
		if a.LiveTopic != "off" {
			o.Mirror = map[string]string{bus.Telemetry: a.LiveTopic}
			o.Render = renderLive
		}
		return activemq.Open(o)
	default:
		b, err := embedded.Open(dataDir, embedded.Options{MaxBytes: cfg.Bus.MaxBytes, DropOldest: cfg.Bus.WhenFull == "drop_oldest", Logger: log})
		if err != nil {
			return nil, err
		}
		sw, err := activemq.ToEmbedded(ctx, o, b)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("bus: switching from activemq to embedded: %w (the backlog stays in %s and on the broker)", err, filepath.Join(dataDir, "outbox"))
		}
		logSwitch(log, "activemq", "embedded", sw)
		if sw.BrokerLeft != nil {
			log.Error("bus: switched from activemq to embedded, but the broker's queues were not drained: this gateway's backlog there is not delivered. "+
				"Set bus.activemq.address (and TLS) to the broker and restart to move it, or remove "+filepath.Join(dataDir, "outbox")+" to give it up",
				"err", sw.BrokerLeft)
		}
		return b, nil
	}
}

// logSwitch logs what a switch of bus kind moved, if anything.
func logSwitch(log *slog.Logger, from, to string, sw activemq.Switched) {
	if sw.Moved()+sw.Local.Duplicates+sw.Broker.Duplicates == 0 {
		return
	}
	log.Info("bus: backlog moved after a switch of bus kind", "from", from, "to", to,
		"from_local_store", sw.Local.Adopted, "from_broker", sw.Broker.Adopted,
		"already_moved", sw.Local.Duplicates+sw.Broker.Duplicates,
		"renumbered", sw.Local.Renumbered+sw.Broker.Renumbered, "foreign_left_on_broker", sw.BrokerForeign)
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
