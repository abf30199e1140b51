package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/edged/edged/sim/modbussim"
)

func cmdSim(args []string, stderr io.Writer) int {
	if len(args) < 1 || args[0] != "modbus" {
		fmt.Fprintln(stderr, "usage: edged sim modbus -config FILE [-listen ADDR]")
		return 2
	}
	fs := flag.NewFlagSet("sim modbus", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "simulator register map (YAML)")
	listen := fs.String("listen", "127.0.0.1:5020", "address to serve Modbus TCP on")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "edged sim:", err)
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "edged sim modbus: -config is required")
		return 2
	}
	cfg, err := modbussim.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := modbussim.New(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := srv.Listen(ctx, *listen); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// a line a script or test can wait for
	fmt.Fprintf(os.Stdout, "modbus simulator listening on %s\n", srv.Addr())
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
