// Command ingestd is the minimal cloud ingest service: an MQTT broker with
// mutual TLS that speaks the EnOS device protocol, a device registry, an
// embedded store with de-duplication, and an HTTP API.
//
//	ingestd run -mqtt 127.0.0.1:8883 -http 127.0.0.1:8080 -data DIR -cert F -key F -client-ca F -registry F [-postgres DSN] [-admin-token-file F]
//	ingestd watch -http 127.0.0.1:8080 -device PK/DK [-device PK/DK ...] [-gateway ID]
//	ingestd registry list|get|put|delete [PK/DK] -http 127.0.0.1:8080 -token-file F [put flags]
//	ingestd models list|get|put|check [PK] -http 127.0.0.1:8080 -token-file F [-version N] [-f FILE]
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

	"github.com/edged/edged/ingest"
	"github.com/edged/edged/ingest/pgstore"
)

var version = "dev"

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: ingestd <command> [flags]

commands:
  run      serve MQTT (TLS, client certificates required) and the HTTP API
  watch    print the latest values of devices every second (a live table)
  registry list, get, put or delete registered devices (through the HTTP API)
  models   list, get or put the products' thing models (through the HTTP API)
  worker   scale-out: take requests from an external MQTT broker (Mosquitto,
           shared subscription) and store them in PostgreSQL
  version  print the version
`)
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "watch":
		return cmdWatch(args[1:], stdout, stderr)
	case "registry":
		return cmdRegistry(args[1:], stdout, stderr)
	case "models":
		return cmdModels(args[1:], os.Stdin, stdout, stderr)
	case "worker":
		return cmdWorker(args[1:], stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "ingestd", version)
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "ingestd: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg ingest.Config
	fs.StringVar(&cfg.MQTTListen, "mqtt", "127.0.0.1:8883", "MQTT over TLS listen address")
	fs.StringVar(&cfg.HTTPListen, "http", "127.0.0.1:8080", "HTTP API listen address")
	fs.StringVar(&cfg.DataDir, "data", "ingest-data", "data directory (the store)")
	fs.StringVar(&cfg.CertFile, "cert", "", "server certificate (PEM)")
	fs.StringVar(&cfg.KeyFile, "key", "", "server key (PEM)")
	fs.StringVar(&cfg.ClientCAFile, "client-ca", "", "CA that client certificates must chain to")
	fs.StringVar(&cfg.RegistryFile, "registry", "registry.yaml", "device registry (YAML)")
	fs.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "bearer token of the registry and model APIs (/api/v1/registry/..., /api/v1/models/...); without it they are disabled")
	fs.StringVar(&cfg.ModelsDir, "models-dir", "", "the products' thing models, a file per version (default DATA/models)")
	fs.IntVar(&cfg.MaxPayload, "max-payload", 512<<10, "largest accepted MQTT payload in bytes")
	fs.IntVar(&cfg.MaxConns, "max-conns", 10000, "open MQTT connections at most; more are closed before the TLS handshake")
	fs.Float64Var(&cfg.ConnRatePerIP, "conn-rate", 20, "new connections per second from one IP address (burst 100); more are closed before the TLS handshake; negative: no limit")
	fs.DurationVar(&cfg.LoginMaxSkew, "login-max-skew", time.Hour, "how far a secret login's timestamp may be from this clock; negative disables the check (gateways without a real-time clock)")
	pgDSN := fs.String("postgres", "", "store in this PostgreSQL database (a postgres:// URL or key=value DSN) instead of the embedded store in -data; default $EDGED_INGEST_POSTGRES")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(*level))); err != nil {
		fmt.Fprintf(stderr, "ingestd: log level %q: use debug, info, warn or error\n", *level)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg.Gatherer = reg
	if *pgDSN == "" {
		*pgDSN = os.Getenv("EDGED_INGEST_POSTGRES")
	}
	if *pgDSN != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		store, err := pgstore.Open(ctx, *pgDSN, log.With("component", "store"))
		cancel()
		if err != nil {
			fmt.Fprintln(stderr, "ingestd:", err)
			return 1
		}
		defer store.Close()
		cfg.Store = store
	}
	srv, err := ingest.New(cfg, log, reg)
	if err != nil {
		fmt.Fprintln(stderr, "ingestd:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx); err != nil {
		log.Error("ingestd stopped", "err", err)
		return 1
	}
	return 0
}
