package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/edged/edged/certs"
)

func cmdCerts(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "dev" {
		fmt.Fprintln(stderr, "usage: edged certs dev DIR [-gateway-cn CN]")
		return 2
	}
	dir := args[1]
	fs := flag.NewFlagSet("certs dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cn := fs.String("gateway-cn", "gwDK", "CommonName of the gateway's client certificate (its device key)")
	if err := fs.Parse(args[2:]); err != nil {
		return 2
	}
	files, err := certs.MakeDev(dir, certs.DevOptions{GatewayCN: *cn})
	if err != nil {
		fmt.Fprintln(stderr, "edged certs:", err)
		return 1
	}
	for _, w := range files.Written {
		fmt.Fprintln(stdout, "wrote", w)
	}
	if len(files.Written) == 0 {
		fmt.Fprintln(stdout, "certificates in", dir, "are valid; nothing to do")
	}
	return 0
}
