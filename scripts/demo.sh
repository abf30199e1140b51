#!/usr/bin/env bash
# The demo: a Modbus TCP simulator, ingestd and edged on loopback with the
# embedded defaults, and a live table of the values arriving at the ingest,
# refreshed every second. Ctrl-C stops everything.
#
# Work files go to ./demo (certificates, data, logs); run `make clean` to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/demo"
mkdir -p "$work"

[ -x bin/edged ] && [ -x bin/ingestd ] || { echo "run 'make demo' (it builds bin/edged and bin/ingestd first)" >&2; exit 1; }

for port in 15020 18883 18080 19100; do
	if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
		echo "demo: port $port on 127.0.0.1 is in use; stop whatever uses it (ss -ltnp 'sport = :$port')" >&2
		exit 1
	fi
done

bin/edged certs dev "$work/certs" -gateway-cn gwDK
cp examples/demo/edged.yaml "$work/edged.yaml"
cp examples/demo/registry.yaml "$work/registry.yaml"
bin/edged validate "$work/edged.yaml"

pids=()
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "demo: stopping"
	for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	echo "demo: stopped; logs are in $work/*.log"
}
trap cleanup INT TERM EXIT

bin/edged sim modbus -config examples/demo/sim.yaml -listen 127.0.0.1:15020 >"$work/sim.log" 2>&1 &
pids+=($!)
bin/ingestd run -mqtt 127.0.0.1:18883 -http 127.0.0.1:18080 -data "$work/ingest-data" \
	-cert "$work/certs/ingestd.pem" -key "$work/certs/ingestd-key.pem" -client-ca "$work/certs/ca.pem" \
	-registry "$work/registry.yaml" >"$work/ingestd.log" 2>&1 &
pids+=($!)
bin/edged run -config "$work/edged.yaml" >"$work/edged.log" 2>&1 &
pids+=($!)

echo "demo: simulator on 127.0.0.1:15020, ingestd on 127.0.0.1:18883 (MQTT/TLS) and http://127.0.0.1:18080,"
echo "      edged metrics and health on http://127.0.0.1:19100 — Ctrl-C stops everything"
# the live table; it returns when interrupted
bin/ingestd watch -http 127.0.0.1:18080 -device meterPK/meter-main -device meterPK/meter-pv -gateway demo-gw || true
