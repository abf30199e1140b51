#!/usr/bin/env bash
# The project's whole test run: provisions what the tests need, then runs
# every test with the integration tests enabled (a missing peer is a failure,
# not a skip), with the race detector and shuffled order.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

bash scripts/provision.sh

echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go mod tidy leaves no diff"
cp go.mod /tmp/edged-go.mod.$$; cp go.sum /tmp/edged-go.sum.$$
go mod tidy
if ! diff -q go.mod /tmp/edged-go.mod.$$ >/dev/null || ! diff -q go.sum /tmp/edged-go.sum.$$ >/dev/null; then
	cp /tmp/edged-go.mod.$$ go.mod; cp /tmp/edged-go.sum.$$ go.sum
	rm -f /tmp/edged-go.mod.$$ /tmp/edged-go.sum.$$
	echo "go mod tidy changes go.mod/go.sum: run it and commit"; exit 1
fi
rm -f /tmp/edged-go.mod.$$ /tmp/edged-go.sum.$$

echo "== go test (integration enabled)"
export EDGED_INTEGRATION=1
go test -race -shuffle=on -count=1 -timeout 15m ./... 2>&1 | tee /tmp/edged-test.log
status=${PIPESTATUS[0]}
exit $status
