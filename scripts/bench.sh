#!/usr/bin/env bash
# The benchmark harness: micro-benchmarks (go test -bench) and the end-to-end
# run (simulator → edged → ingestd on loopback), each printed as a table.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== micro-benchmarks"
go test -run '^$' -bench . -benchmem -count 1 \
	./telemetry/ ./drivers/modbus/ ./modelsync/ ./bus/embedded/ ./cloudlink/enos/ ./ingest/... ./sim/... 2>&1 |
	grep -E '^(Benchmark|goos|cpu|ok|FAIL)' || true
echo
echo "== end to end"
go run ./internal/cmd/e2ebench -bin bin "$@"
