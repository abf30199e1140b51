//go:build !cgo

// Without cgo there is no plugin to build; this keeps `go build ./...`
// with CGO_ENABLED=0 (cross builds) working.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "mosquitto-enos-auth is a Mosquitto plugin: build it with CGO_ENABLED=1 go build -buildmode=c-shared")
	os.Exit(2)
}
