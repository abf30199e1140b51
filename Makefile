# edged — the two commands a new user needs are `make demo` and `make test`.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin

.PHONY: all build demo test bench fuzz vet clean

all: build

# static binaries (no libc): the same file runs on any Linux gateway;
# cross builds: make build GOARCH=arm64 (or GOARCH=arm GOARM=7)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/edged ./cmd/edged
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ingestd ./cmd/ingestd

## demo: simulator → edged → ingestd on loopback with embedded defaults; Ctrl-C stops it
demo: build
	bash scripts/demo.sh

## test: installs what the tests need (Debian packages) and runs every test
test:
	bash scripts/test.sh

## bench: the end-to-end throughput harness and the micro-benchmarks, as a table
bench: build
	bash scripts/bench.sh

## fuzz: every fuzz target for FUZZTIME each (default 30s)
FUZZTIME ?= 30s
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN) demo
