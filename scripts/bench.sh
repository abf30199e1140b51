#!/usr/bin/env bash
# The benchmark harness: micro-benchmarks (go test -bench) and the end-to-end
# run (simulator → edged → ingestd on loopback), each printed as a table.
#
# Optional, because it takes longer than the outage it simulates:
#   EDGED_BENCH_DRAIN=1        also run the backlog-drain benchmark
#                              (internal/cmd/drainbench): ingestd down for
#                              EDGED_BENCH_OUTAGE while edged polls 10k points/s,
#                              then the drain of that backlog on resume/batch
#                              while real-time data continues (goal: ≥ 5× the
#                              live rate); fails on any lost record
#   EDGED_BENCH_OUTAGE=10m     the outage (default 10m: about 12-13 minutes in all)
#   EDGED_BENCH_FAILOVER=1     also run the active/standby fail-over benchmark
#                              (internal/cmd/failoverbench): two edged nodes on
#                              a 3-member etcd cluster (Debian etcd-server),
#                              EDGED_BENCH_FAILOVER_RUNS (default 20) kill -9s
#                              of the active and 5 graceful hand-overs; the
#                              gap to the new epoch's first stored record
#                              (goal ≤ 3 s with a 2 s lease; hand-over ≤ 0.5 s);
#                              fails on any lost record or two actives (2-3 min)
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
if [ "${EDGED_BENCH_DRAIN:-}" = 1 ]; then
	echo
	echo "== backlog drain: ingestd down ${EDGED_BENCH_OUTAGE:-10m} at 10k points/s, then the drain while real-time continues"
	go run ./internal/cmd/drainbench -bin bin -rate 10000 -outage "${EDGED_BENCH_OUTAGE:-10m}"
fi
if [ "${EDGED_BENCH_FAILOVER:-}" = 1 ]; then
	echo
	echo "== active/standby fail-over: ${EDGED_BENCH_FAILOVER_RUNS:-20} kill -9s of the active and 5 graceful hand-overs, 2 s lease"
	go run ./internal/cmd/failoverbench -bin bin -runs "${EDGED_BENCH_FAILOVER_RUNS:-20}"
fi
