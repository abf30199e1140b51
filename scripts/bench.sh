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
echo "== end to end: 10k points at 50k points/s"
go run ./internal/cmd/e2ebench -bin bin "$@"
echo
echo "== end to end: 500 Modbus TCP devices (a connection each) x 30 points at 1 s"
go run ./internal/cmd/e2ebench -bin bin -points 15000 -points-per-device 30 -links 500 -rate 15000 "$@"
echo
echo "== ActiveMQ bus versus a raw go-stomp pair on the same broker; edged's memory with a 1M-record backlog in ActiveMQ"
go run ./internal/cmd/amqbench -bin bin
echo
echo "== Redis snapshot cache versus redis-benchmark HSET on the same server"
go run ./internal/cmd/redisbench
