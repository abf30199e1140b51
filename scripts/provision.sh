#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine, idempotently.
# Run as root (CI and the project's machines are root); a developer without
# root gets a clear message listing what to install.
set -euo pipefail

need_pkgs=()
# pymodbus's servers import pyserial, which the package only recommends
/usr/bin/python3 -c 'import pymodbus.server, serial, serial_asyncio' 2>/dev/null || need_pkgs+=(python3-pymodbus python3-serial python3-serial-asyncio)
command -v mbpoll >/dev/null 2>&1 || need_pkgs+=(mbpoll)
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)
# the production backbone: ActiveMQ (started per test by scripts/activemq.sh)
# and Redis (started per test by internal/testsvc)
[ -f /usr/share/activemq/bin/activemq.jar ] || need_pkgs+=(activemq)
command -v java >/dev/null 2>&1 || need_pkgs+=(default-jre-headless)
command -v keytool >/dev/null 2>&1 || need_pkgs+=(default-jre-headless)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need_pkgs+=(redis-tools)
# Mosquitto: the external broker of ingestd's scale-out mode (a private one per test)
[ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
# the EnOS secret-login plugin for Mosquitto (cmd/mosquitto-enos-auth, cgo)
[ -f /usr/include/mosquitto_plugin.h ] || need_pkgs+=(mosquitto-dev)
[ -f /usr/include/mosquitto.h ] || need_pkgs+=(libmosquitto-dev)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
# PostgreSQL for ingest/pgstore (a private cluster per test, by internal/testsvc)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)
# etcd for ha/ (a private 3-member cluster per test, by internal/testsvc)
[ -x /usr/bin/etcd ] || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "provision: Go is not installed (expected /usr/local/go/bin/go)" >&2
	exit 1
fi

if [ ${#need_pkgs[@]} -eq 0 ]; then
	echo "provision: everything is installed"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "provision: please install as root: apt-get install -y ${need_pkgs[*]}" >&2
	exit 1
fi
echo "provision: installing ${need_pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf "%s\n" "${need_pkgs[@]}" | sort -u) >/dev/null
/usr/bin/python3 -c 'import pymodbus.server, serial, serial_asyncio'
command -v mbpoll >/dev/null
command -v socat >/dev/null
[ -f /usr/share/activemq/bin/activemq.jar ]
command -v redis-server >/dev/null
[ -x /usr/sbin/mosquitto ]
[ -f /usr/include/mosquitto_plugin.h ]
[ -f /usr/include/mosquitto.h ]
command -v gcc >/dev/null
[ -x /usr/bin/etcd ]
echo "provision: done"
