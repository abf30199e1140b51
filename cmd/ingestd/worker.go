package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edged/edged/certs"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/ingest/pgstore"
)

// cmdWorker runs one scale-out worker: a client of an external MQTT broker
// (shared subscription) storing into PostgreSQL.
func cmdWorker(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg ingest.WorkerConfig
	fs.StringVar(&cfg.Broker, "broker", "tls://127.0.0.1:8883", "the external MQTT broker (TLS)")
	caFile := fs.String("ca", "", "CA of the broker's server certificate (PEM)")
	certFile := fs.String("cert", "", "this worker's client certificate (PEM), allowed by the broker's ACL to read every device's requests and write the replies")
	keyFile := fs.String("key", "", "this worker's key (PEM)")
	serverName := fs.String("server-name", "", "TLS server name of the broker; default its host")
	fs.StringVar(&cfg.ClientID, "client-id", "", "MQTT client id, unique per worker and stable across its restarts (its persistent session); default ingestd-{host}-{pid}")
	fs.StringVar(&cfg.Group, "group", "ingest", "shared subscription group")
	fs.IntVar(&cfg.Handlers, "handlers", 8, "requests processed at once")
	fs.StringVar(&cfg.HTTPListen, "http", "127.0.0.1:8080", "HTTP API listen address")
	fs.StringVar(&cfg.RegistryFile, "registry", "registry.yaml", "device registry (YAML); the same file on every worker")
	fs.IntVar(&cfg.MaxPayload, "max-payload", 512<<10, "largest accepted payload in bytes")
	pgDSN := fs.String("postgres", "", "the shared PostgreSQL database (required); default $EDGED_INGEST_POSTGRES")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(*level))); err != nil {
		fmt.Fprintf(stderr, "ingestd: log level %q: use debug, info, warn or error\n", *level)
		return 2
	}
	if *pgDSN == "" {
		*pgDSN = os.Getenv("EDGED_INGEST_POSTGRES")
	}
	if *pgDSN == "" || *caFile == "" || *certFile == "" || *keyFile == "" {
		fmt.Fprintln(stderr, "ingestd worker: -postgres, -ca, -cert and -key are required")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l}))
	tlsCfg, _, err := certs.ClientConfig(*caFile, *certFile, *keyFile, *serverName)
	if err != nil {
		fmt.Fprintln(stderr, "ingestd worker:", err)
		return 1
	}
	cfg.TLS = tlsCfg
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Gatherer = reg
	octx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	store, err := pgstore.Open(octx, *pgDSN, log.With("component", "store"))
	cancel()
	if err != nil {
		fmt.Fprintln(stderr, "ingestd worker:", err)
		return 1
	}
	defer store.Close()
	cfg.Store = store
	w, err := ingest.NewWorker(cfg, log, reg)
	if err != nil {
		fmt.Fprintln(stderr, "ingestd worker:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Error("ingestd worker stopped", "err", err)
		return 1
	}
	return 0
}
