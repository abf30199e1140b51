// Command edged is the edge gateway: it reads field devices, normalises their
// points, keeps them durably and delivers them to the cloud.
//
//	edged run -config edged.yaml        run the gateway
//	edged validate edged.yaml           check a config without touching the network
//	edged status -config edged.yaml     a running gateway's state (role, links, queue, cloud)
//	edged certs dev DIR                 make a dev CA, an ingestd and a gateway certificate
//	edged sim modbus -config sim.yaml   run a Modbus TCP device simulator
//	edged probe modbus -addr HOST ...   find a device's register types and byte orders
//	edged version
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

var version = "dev"

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: edged <command> [flags]

commands:
  run -config FILE            run the gateway
  validate FILE               check a config file (no network I/O); exit 1 on errors
  status -config FILE | -addr HOST:PORT [-json]
                              a running gateway's state: role and epoch, links and devices,
                              queue, cloud link, models; exit 1 unless all is ok
  certs dev DIR [-gateway-cn CN]
                              create a dev CA, a server certificate for ingestd and a
                              client certificate for the gateway in DIR (idempotent)
  sim modbus -config FILE [-listen ADDR]
                              run a Modbus TCP device simulator
  probe modbus (-addr HOST | -rtu DEVICE) -register 40001 [-count N] [-expect X]
                              read a device's registers as every type and byte order,
                              or write one value; edged probe modbus -h for every flag
  version                     print the version
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
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "certs":
		return cmdCerts(args[1:], stdout, stderr)
	case "sim":
		return cmdSim(args[1:], stderr)
	case "probe":
		return cmdProbe(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "edged", version)
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "edged: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
