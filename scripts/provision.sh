#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine, idempotently.
# Run as root (CI and the project's machines are root); a developer without
# root gets a clear message listing what to install.
set -euo pipefail

need_pkgs=()
/usr/bin/python3 -c 'import pymodbus' 2>/dev/null || need_pkgs+=(python3-pymodbus)
command -v mbpoll >/dev/null 2>&1 || need_pkgs+=(mbpoll)
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)

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
apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
/usr/bin/python3 -c 'import pymodbus' 
command -v mbpoll >/dev/null
command -v socat >/dev/null
echo "provision: done"
