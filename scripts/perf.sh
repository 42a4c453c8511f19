#!/usr/bin/env bash
# Measures Hubbub (and, for comparison, the gorilla hub fixture) with
# `hubbub bench` on this machine, each scenario RUNS times against a fresh
# server, and prints the median of each figure. Loopback only. Hubbub runs
# with its default embedded history store (a fresh data directory per run);
# the ack and rooms scenarios also run with history in memory and, when
# redis-server is installed, in Redis (a private redis-server, appendfsync
# always).
#
#   ./scripts/perf.sh                 everything, 3 runs each
#   RUNS=5 ./scripts/perf.sh fanout   one scenario
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
out=${OUT:-/tmp/hubbub-perf}
mkdir -p "$out"
go build -o "$out/hubbub" ./cmd/hubbub
go build -o "$out/gorillahub" ./loadtest/gorillahub
go build -o "$out/hookbackend" ./internal/hookbackend
only=${1:-all}

port=18180
server_pid=""
serve_flags=()
redis_port=""
if command -v redis-server >/dev/null; then
	redis_port=16379
	mkdir -p "$out/redis"
	redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$out/redis" --save "" --appendonly yes \
		--appendfsync always --daemonize yes --logfile "$out/redis/log" --pidfile "$out/redis/pid"
	trap 'kill "$(cat "$out/redis/pid")" 2>/dev/null || true' EXIT
	sleep 0.5
fi
start_server() { # kind, extra flags...
	local kind=$1; shift
	port=$((port + 1))
	if [ "$kind" = hubbub ]; then
		rm -rf "$out/data"
		[ -z "$redis_port" ] || redis-cli -p "$redis_port" flushall >/dev/null
		${server_pin[@]+"${server_pin[@]}"} "$out/hubbub" serve --listen "127.0.0.1:$port" --log-level warn --command-rate -1 --byte-rate -1 \
			--data-dir "$out/data" ${serve_flags[@]+"${serve_flags[@]}"} "$@" 2>>"$out/server.log" &
	else
		${server_pin[@]+"${server_pin[@]}"} "$out/gorillahub" --listen "127.0.0.1:$port" 2>>"$out/server.log" &
	fi
	server_pid=$!
	for _ in $(seq 50); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
		sleep 0.1
	done
	echo "server did not start" >&2; exit 1
}
stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }

server_pin=()
tool_pin=()
run() { # label, kind, scenario, bench flags...
	local label=$1 kind=$2 scenario=$3; shift 3
	if [ "$only" != all ] && [ "$only" != "$scenario" ]; then return; fi
	for i in $(seq "$RUNS"); do
		start_server "$kind"
		${tool_pin[@]+"${tool_pin[@]}"} "$out/hubbub" bench "$scenario" --url "ws://127.0.0.1:$port/ws" --server-pid "$server_pid" --json "$@" \
			| sed "s/^{/{\"label\":\"$label\",\"run\":$i,/" >>"$out/results.jsonl" || echo "$label run $i failed" >&2
		stop_server
		sleep 1
	done
}

: >"$out/results.jsonl"
run hubbub-fanout-1M hubbub fanout --subscribers 1000 --publishers 10 --rate 1000 --size 128 --duration 10s
run hubbub-fanout-1M-slow hubbub fanout --subscribers 1000 --publishers 10 --rate 1000 --size 128 --duration 10s --slow-readers 1
run hubbub-fanout-200k hubbub fanout --subscribers 1000 --publishers 10 --rate 200 --size 128 --duration 10s
# Subscribers in JSON and with compact pushes (bytes per delivery).
run hubbub-fanout-1M-json hubbub fanout --subscribers 1000 --publishers 10 --rate 1000 --size 128 --duration 10s --encoding json
run hubbub-fanout-1M-json-compact hubbub fanout --subscribers 1000 --publishers 10 --rate 1000 --size 128 --duration 10s --encoding json --compact
run hubbub-fanout-1M-compact hubbub fanout --subscribers 1000 --publishers 10 --rate 1000 --size 128 --duration 10s --compact
run hubbub-maxtp hubbub maxtp --subscribers 1000 --publishers 10 --start-rate 800 --step 1.25 --duration 5s --p99-bound 250ms
run hubbub-rooms hubbub rooms --rooms 10000 --members 10 --rooms-per-conn 100 --rate-per-room 1 --publishers 10 --duration 10s
run hubbub-ack-10k hubbub fanout --subscribers 10 --publishers 10 --rate 10000 --size 128 --duration 10s
run hubbub-ack-40k hubbub fanout --subscribers 10 --publishers 10 --rate 40000 --size 128 --duration 5s
serve_flags=(--history-store memory)
run hubbub-memory-rooms hubbub rooms --rooms 10000 --members 10 --rooms-per-conn 100 --rate-per-room 1 --publishers 10 --duration 10s
run hubbub-memory-ack-10k hubbub fanout --subscribers 10 --publishers 10 --rate 10000 --size 128 --duration 10s
run hubbub-memory-ack-40k hubbub fanout --subscribers 10 --publishers 10 --rate 40000 --size 128 --duration 5s
if [ -n "$redis_port" ]; then
	serve_flags=(--history-store redis --redis-url "redis://127.0.0.1:$redis_port/0")
	run hubbub-redis-rooms hubbub rooms --rooms 10000 --members 10 --rooms-per-conn 100 --rate-per-room 1 --publishers 10 --duration 10s
	run hubbub-redis-ack-10k hubbub fanout --subscribers 10 --publishers 10 --rate 10000 --size 128 --duration 10s
	run hubbub-redis-ack-40k hubbub fanout --subscribers 10 --publishers 10 --rate 40000 --size 128 --duration 5s
fi
# Users: direct messages to one user with 3 devices; the cost of every
# subscriber acking every message (beside the same fanout without acks and
# the gorilla fixture's, gorillahub-fanout-200k).
serve_flags=(--history-store memory)
run hubbub-direct-5k hubbub direct --devices 3 --publishers 4 --rate 5000 --size 128 --duration 5s
run hubbub-direct-20k hubbub direct --devices 3 --publishers 4 --rate 20000 --size 128 --duration 5s
run hubbub-fanout-200k-noack hubbub fanout --subscribers 1000 --publishers 10 --rate 200 --size 128 --duration 5s
run hubbub-fanout-200k-ack hubbub fanout --subscribers 1000 --publishers 10 --rate 200 --size 128 --duration 5s --ack
run gorillahub-fanout-200k gorilla fanout --subscribers 1000 --publishers 10 --rate 200 --size 128 --duration 5s
# The server API beside WebSocket publishes (history in memory, one room).
echo "bench $(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n') publish" >"$out/api-keys"
api_key=$(awk '{print $2}' "$out/api-keys")
serve_flags=(--history-store memory --api-listen 127.0.0.1:18099 --api-key-file "$out/api-keys")
run hubbub-api hubbub api --api-url http://127.0.0.1:18099 --api-key "$api_key" --publishers 10 --batch 100 --duration 5s
# Backend hooks on (a backend process on this machine) against off.
"$out/hookbackend" --listen 127.0.0.1:18098 --accept-all --quiet >/dev/null &
hook_pid=$!
trap 'kill "$hook_pid" 2>/dev/null || true; [ -z "$redis_port" ] || kill "$(cat "$out/redis/pid")" 2>/dev/null || true' EXIT
serve_flags=(--history-store memory)
run hooks-off-storm hubbub storm --conns 5000 --dialers 50
run hooks-off-ack hubbub fanout --subscribers 10 --publishers 10 --rate 5000 --size 128 --duration 5s
serve_flags=(--history-store memory --hook-url http://127.0.0.1:18098)
run hooks-on-storm hubbub storm --conns 5000 --dialers 50
run hooks-on-ack hubbub fanout --subscribers 10 --publishers 10 --rate 5000 --size 128 --duration 5s
# The server pinned to one core and the load tool to the other: deliveries
# per server CPU-second at saturation (the fixture cannot go past 200 k/s).
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	server_pin=(taskset -c 0)
	tool_pin=(taskset -c 1)
	serve_flags=(--history-store memory)
	run hubbub-pinned-fanout-2.9M hubbub fanout --subscribers 1000 --publishers 10 --rate 2900 --size 128 --duration 8s
	run hubbub-pinned-fanout-3.3M hubbub fanout --subscribers 1000 --publishers 10 --rate 3300 --size 128 --duration 8s
	run hubbub-pinned-fanout-5M hubbub fanout --subscribers 1000 --publishers 10 --rate 5000 --size 128 --duration 8s
	run gorillahub-pinned-fanout-200k gorilla fanout --subscribers 1000 --publishers 10 --rate 200 --size 128 --duration 8s
	server_pin=()
	tool_pin=()
fi
serve_flags=()
run hubbub-idle hubbub idle --conns 10000 --duration 5s
run hubbub-idle-connect-only hubbub idle --conns 10000 --duration 5s --connect-only
run hubbub-storm hubbub storm --conns 10000 --dialers 50
# Without the heap floor (GOGC alone from a fresh node's few megabytes).
serve_flags=(--gc-heap-floor 0)
run hubbub-no-heap-floor-idle-connect-only hubbub idle --conns 10000 --duration 5s --connect-only
run hubbub-no-heap-floor-storm hubbub storm --conns 10000 --dialers 50
serve_flags=(--reader goroutine)
run hubbub-goroutine-reader-idle hubbub idle --conns 10000 --duration 5s
run hubbub-goroutine-reader-storm hubbub storm --conns 10000 --dialers 50
serve_flags=()
run hubbub-bigroom-10k hubbub bigroom --conns 10000 --dialers 50
run hubbub-bigroom-19k hubbub bigroom --conns 19000 --dialers 50
run gorillahub-bigroom-10k gorilla bigroom --conns 10000 --dialers 50
run gorillahub-fanout-1M gorilla fanout --subscribers 1000 --publishers 10 --rate 1000 --size 128 --duration 10s
run gorillahub-idle gorilla idle --conns 10000 --duration 5s
run gorillahub-idle-connect-only gorilla idle --conns 10000 --duration 5s --connect-only
run gorillahub-storm gorilla storm --conns 10000 --dialers 50
python3 - "$out/results.jsonl" <<'PY'
import json, sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("scenario") == "maxtp-step":
        continue
    label = r["label"] if r["label"] != "hubbub-api" else r["scenario"]
    rows[label].append(r)
keys = ["deliveries_per_s", "bytes_per_delivery", "loss", "p50_ms", "p99_ms", "max_ms", "ack_p50_ms", "ack_p99_ms", "server_cpu_s",
        "deliveries_per_server_cpu_s", "rss_per_conn_bytes", "conns_per_s", "slow_readers_closed",
        "joins_per_s", "join_p50_ms", "join_p99_ms", "room_members", "presence_page_ms", "publish_all_ms", "publish_cpu_ms",
        "publishes_per_s", "server_cpu_per_publish_us"]
for label, rs in rows.items():
    med = {k: statistics.median(r.get(k, 0) for r in rs) for k in keys if any(k in r for r in rs)}
    print(f"{label} (median of {len(rs)}): " + ", ".join(f"{k}={v:.6g}" for k, v in med.items()))
PY
