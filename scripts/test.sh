#!/usr/bin/env bash
# Runs Hubbub's whole check and test suite; CI runs it too (.ci/run). It
# installs what is missing: buf and staticcheck (Go module proxy), Debian's chromium,
# etcd-server and redis-server (apt-get, as root or through sudo), the npm packages of the
# TypeScript SDK and of the web pages (npm ci in sdk/ts and web, through scripts/build-web.sh, which
# also bundles the pages) and Jaeger (built from tools/jaeger into ~/.cache/hubbub-tools).
#
#   ./scripts/test.sh            everything
#   FUZZTIME=30s ./scripts/test.sh   also fuzz each decoder for that long
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=v1.75.0
STATICCHECK_VERSION=v0.8.2
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "tools"
if ! buf --version 2>/dev/null | grep -qx "${BUF_VERSION#v}"; then
	go install "github.com/bufbuild/buf/cmd/buf@${BUF_VERSION}"
fi
if ! staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi
# Debian packages: headless Chromium for the browser test, etcd for the
# cluster test, Redis for the durable history tests (each test starts its own
# redis-server on a free loopback port).
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v etcd >/dev/null || missing="$missing etcd-server"
command -v redis-server >/dev/null || missing="$missing redis-server"
if [ -n "$missing" ]; then
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# The chat page and the admin console, bundled before any Go build embeds them.
./scripts/build-web.sh
# Jaeger (a real trace backend) from the tools/jaeger module, built once per machine.
JAEGER_VERSION=$(awk '$1 == "github.com/jaegertracing/jaeger" {print $2}' tools/jaeger/go.mod)
export JAEGER_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/hubbub-tools/jaeger-$JAEGER_VERSION"
if [ ! -x "$JAEGER_BIN" ]; then
	echo "building Jaeger $JAEGER_VERSION (a few minutes, once)"
	go build -C tools/jaeger -o "$JAEGER_BIN" github.com/jaegertracing/jaeger/cmd/jaeger
fi

step "gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "not gofmt-ed:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

step "go mod tidy"
if ! go mod tidy -diff; then
	echo "go.mod or go.sum is not tidy (run: go mod tidy)"; exit 1
fi

step "buf lint"
buf lint

step "buf breaking (against the previous commit)"
if git rev-parse --verify -q HEAD~1 >/dev/null; then
	buf breaking --against '.git#ref=HEAD~1'
else
	echo "skipped: this checkout has no previous commit to compare with"
fi

step "generated code is current"
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
buf generate --output "$gen"
buf generate --template sdk/ts/buf.gen.yaml --path proto/hubbub/v1 --path proto/hubbub/api/v1 --output "$gen"
stale=0
while IFS= read -r f; do
	if ! cmp -s "$gen/$f" "$f"; then echo "stale: $f (run: buf generate; buf generate --template sdk/ts/buf.gen.yaml --path proto/hubbub/v1 --path proto/hubbub/api/v1)"; stale=1; fi
done < <(cd "$gen" && find . -name '*.go' -o -name '*_pb.ts' | sed 's|^\./||')
[ "$stale" = 0 ]

step "chat page and admin console: type check, tests in headless Chromium"
bin="$gen/hubbub"
go build -o "$bin" ./cmd/hubbub
(
	cd web
	npx tsc -p tsconfig.json --noEmit
	# Screenshots of the pages under test are kept in web/test-artifacts (or $ARTIFACTS).
	HUBBUB_BIN="$bin" CHROMIUM="$(command -v chromium)" node --test --test-reporter=spec
)

step "TypeScript SDK: type check, tests against a real server, package"
(
	cd sdk/ts
	npx tsc -p tsconfig.json --noEmit
	npm run --silent build
	HUBBUB_BIN="$bin" CHROMIUM="$(command -v chromium)" node --test --test-reporter=spec
	# The packed package installs and imports on its own.
	tgz="$gen/$(npm pack --silent --pack-destination "$gen" | tail -1)"
	mkdir -p "$gen/sdk-install" && cd "$gen/sdk-install"
	echo '{"name":"sdk-install","private":true,"type":"module"}' >package.json
	npm install --no-audit --no-fund --silent "$tgz" ws
	node --input-type=module -e 'const m = await import("@hubbub-chat/client"); const a = await import("@hubbub-chat/client/api"); if (typeof m.Client !== "function" || !m.closeCodes.length || a.ServerAPI.typeName !== "hubbub.api.v1.ServerAPI") process.exit(1); console.log("package ok")'
)

step "go test -race"
go test -race -count=1 -timeout 10m ./...

if [ -n "${FUZZTIME:-}" ]; then
	step "fuzz ($FUZZTIME each)"
	go test -run '^$' -fuzz '^FuzzDecodeClientFrame$' -fuzztime "$FUZZTIME" ./wire
	go test -run '^$' -fuzz '^FuzzCommandSequences$' -fuzztime "$FUZZTIME" ./actors
	go test -run '^$' -fuzz '^FuzzPermissions$' -fuzztime "$FUZZTIME" ./actors
	go test -run '^$' -fuzz '^FuzzEmbeddedStore$' -fuzztime "$FUZZTIME" ./store
	go test -run '^$' -fuzz '^FuzzPublishRequests$' -fuzztime "$FUZZTIME" ./api
fi
echo
echo "all checks passed"
