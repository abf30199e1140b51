package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// prober is the field tool of one protocol: `edged probe PROTOCOL ...`.
// Every probe_*.go file adds its own under its driver's build tag, so a slim
// binary probes only what it can drive.
type prober struct {
	usage string // the protocol's usage text, flags and examples
	// run parses args (the flags after the protocol name) and probes. It
	// returns the exit code: 0 done, 1 the device or link failed, 2 a
	// mistake in the flags (found before any I/O). ctx ends on Ctrl-C.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var probers = map[string]prober{}

func probeUsage(w io.Writer) {
	names := make([]string, 0, len(probers))
	for n := range probers {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "usage: edged probe PROTOCOL [flags]\n\nprotocols built into this binary: %v\n", names)
	for _, n := range names {
		fmt.Fprintf(w, "\n%s", probers[n].usage)
	}
}

// cmdProbe runs `edged probe PROTOCOL [flags]`: read (or write) a device
// directly, without a config, to find the settings of its points.
func cmdProbe(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		probeUsage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		probeUsage(stdout)
		return 0
	}
	p, ok := probers[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "edged probe: protocol %q is not built into this binary\n\n", args[0])
		probeUsage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return p.run(ctx, args[1:], stdout, stderr)
}
