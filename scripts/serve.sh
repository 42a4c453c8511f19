#!/usr/bin/env bash
# Runs a Hubbub server from the source tree: builds the web pages (chat page,
# admin console) into the binary, then `go run ./cmd/hubbub serve` with the
# arguments given (default: 127.0.0.1:8080, embedded history store).
#
#   ./scripts/serve.sh
#   ./scripts/serve.sh --listen 127.0.0.1:9000 --api-listen 127.0.0.1:8081 --api-key-file keys
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-web.sh
exec go run ./cmd/hubbub serve "$@"
